"""`trace query`: Falco field names as columns, table/CSV/JSON output, errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from analyzer.cli import main
from analyzer.query_cli import quote_field_names
from tests.state_builder import CaptureBuilder, Proc

FIELDS = ["proc.name", "fd.name", "evt.type", "proc.aname", "user.name"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    b = CaptureBuilder(tmp_path_factory.mktemp("q") / "cap")
    b.start_segment()
    init, sh = Proc(1, 0, "systemd"), Proc(50, 1, "sh", uid=1000)
    b.snap_proc(init, ["/sbin/init"], "/sbin/init", "/")
    b.snap_proc(sh, ["sh"], "/bin/sh", "/home/alice")
    b.evt(sh, "openat", res=3, dirfd=-100, path="notes\x1b[31m.txt", flags=0)
    b.evt(sh, "openat", res=-2, dirfd=-100, path="/etc/missing", flags=0)
    b.evt(sh, "close", res=0, fd=3)
    b.finish_segment()
    return str(b.directory)


def run(*args: str):
    return CliRunner().invoke(main, ["query", *args], catch_exceptions=False)


def test_quoting_rewrites_bare_field_names_only():
    sql = "select proc.name, e.fd.name, 'proc.name', \"evt.type\", x.y -- proc.name\nfrom events e where user.name = 'a.b'"
    assert quote_field_names(sql, FIELDS) == (
        "select \"proc.name\", e.\"fd.name\", 'proc.name', \"evt.type\", x.y -- proc.name\n"
        "from events e where \"user.name\" = 'a.b'")


literal_text = st.text(alphabet=st.sampled_from(list("proc.nameevt'\"- \\/*%_é")), max_size=30)


@given(st.lists(st.one_of(st.sampled_from(FIELDS), literal_text.map(lambda t: "'" + t.replace("'", "''") + "'")),
                max_size=6))
def test_string_literals_are_never_touched(parts):
    sql = "select " + ", ".join(parts)
    rewritten = quote_field_names(sql, FIELDS)
    literals = [p for p in parts if p.startswith("'")]
    for literal in literals:
        assert literal in rewritten
    for field in FIELDS:
        if field in parts:
            assert f'"{field}"' in rewritten


def test_table_output(capture):
    result = run("select proc.name, fd.name, evt.res from events order by evt.num", capture)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["proc.name", "fd.name", "evt.res"]
    # control characters from the capture are escaped, never sent to the terminal
    assert "\x1b" not in result.output and "notes\\x1b[31m.txt" in result.output
    assert lines[3].split() == ["sh", "|", "/etc/missing", "|", "ENOENT"]
    assert lines[-1] == "(3 rows)"


def test_csv_and_json_output(capture):
    result = run("select evt.num, fd.name, _anc_pid from events order by 1", capture, "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["evt.num", "fd.name", "_anc_pid"]
    assert rows[1][1] == "/home/alice/notes\x1b[31m.txt" and rows[1][2] == "[50, 1]"
    result = run("select evt.num, fd.name, _evt_args from events order by 1", capture, "--format", "json")
    records = [json.loads(line) for line in result.output.splitlines()]
    assert records[1] == {"evt.num": records[1]["evt.num"], "fd.name": "/etc/missing",
                          "_evt_args": {"fd": "ENOENT", "dirfd": "AT_FDCWD", "name": "/etc/missing",
                                        "flags": "O_RDONLY", "mode": None}}


def test_processes_and_fds_views(capture):
    result = run("select pid, cmdline, user_name from processes order by pid", capture, "--format", "json")
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"pid": 1, "cmdline": "systemd", "user_name": "root"}, {"pid": 50, "cmdline": "sh", "user_name": "alice"}]
    result = run("select fd, name, close_ts is not null as closed from fds", capture, "--format", "csv")
    assert result.output.splitlines()[1:] == ["3,/home/alice/notes\x1b[31m.txt,True"]


def test_errors_exit_1_usage_errors_exit_2(capture, tmp_path):
    bad = run("select no_such_column from events", capture)
    assert bad.exit_code == 1 and "query failed" in bad.output
    missing = run("select 1", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "no such capture" in missing.output
    assert run("select 1").exit_code == 2
