"""Every rule in Falco's shipped rules files loads and compiles to SQL that
runs on a real DuckDB events table, except rules naming fields whose data
cannot exist in a host syscall capture; those are listed with their reason
(run with -s to see the report) and must be named in docs/fields.md.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from analyzer.fields.catalog import AUXILIARY_COLUMNS, CATALOG
from analyzer.rules.loader import load_rules
from analyzer.sql.compiler import compile_ruleset, install_runtime

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / ".." / "shared" / "falco" / "rules"

# file -> (rules, compiled). Every rule that does not compile names a field
# from docs/fields.md's "cannot exist" table (DNS names, Kubernetes metadata,
# the container runtime's privileged flag and mounts, I/O buffers).
EXPECTED = {
    "falco_rules.yaml": (25, 23),
    "falco-incubating_rules.yaml": (31, 27),
    "falco-sandbox_rules.yaml": (37, 31),
    "falco-deprecated_rules.yaml": (4, 2),
    "falco_rules_2021-03_with_exceptions.yaml": (65, 53),
}


@pytest.fixture(scope="module")
def events_con():
    con = duckdb.connect()
    install_runtime(con)
    columns = {**CATALOG.event_columns(), **AUXILIARY_COLUMNS}
    con.execute("CREATE TABLE events (" + ", ".join(f'"{n}" {t}' for n, t in columns.items()) + ")")
    con.execute("INSERT INTO events DEFAULT VALUES")  # one all-NULL event: every check is false
    yield con
    con.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_falco_rules_file_compiles(name, events_con):
    ruleset = load_rules([RULES / name])
    assert not ruleset.errors, [f.format() for f in ruleset.errors]
    compiled = compile_ruleset(ruleset)
    supported = [c for c in compiled if c.supported]
    print(f"\n{name}: {len(supported)}/{len(compiled)} rules compile")
    fields_doc = (ROOT / "docs" / "fields.md").read_text()
    cannot_exist = fields_doc.split("## Unsupported: the data cannot exist", 1)[1].split("\n## ", 1)[0]
    for rule in compiled:
        if rule.supported:
            continue
        assert rule.error is None, str(rule.error)
        for item in rule.unsupported:
            print(f"  unsupported: {item}")
            spec = CATALOG.lookup(item.field.split("[", 1)[0])
            assert spec is not None and not spec.derivable, f"{rule.name}: {item} (the analyzer should derive it)"
            assert f"| `{spec.name}` |" in cannot_exist, f"{spec.name} is not named in docs/fields.md"
            assert item.location is not None and item.location.line > 0
    for rule in supported:
        assert rule.unsupported == [] and rule.error is None
        hits = events_con.execute(f"SELECT count(*) FROM events WHERE {rule.sql}").fetchall()[0][0]
        assert hits in (0, 1), rule.name
    assert (len(compiled), len(supported)) == EXPECTED[name]


def test_one_scan_of_every_stable_rule_binds(events_con):
    """The hunt runs all rules side by side in one SELECT; it must bind."""
    compiled = [c for c in compile_ruleset(load_rules([RULES / "falco_rules.yaml"])) if c.supported]
    select = ", ".join(f"({c.sql}) AS r{i}" for i, c in enumerate(compiled))
    assert len(events_con.execute(f"SELECT {select} FROM events").fetchall()) == 1


def test_rules_check_prints_sql_unsupported_fields_and_compile_errors(tmp_path):
    from click.testing import CliRunner

    from analyzer.cli import main

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: shell\n  desc: d\n  condition: evt.type = execve and proc.name = \"it's\"\n  output: o\n  priority: INFO\n"
        "- rule: k8s\n  desc: d\n  condition: evt.type = open and k8s.ns.name = x\n  output: o\n  priority: INFO\n"
        "- rule: bad\n  desc: d\n  condition: evt.type = open and proc.pid contains 1\n  output: o\n  priority: INFO\n"
    )
    result = CliRunner().invoke(main, ["rules", "check", "--sql", str(rules)])
    assert result.exit_code == 1  # libsinsp rejects `proc.pid contains`
    assert "sql: coalesce(((\"evt.type\" = 'execve') AND (\"proc.name\" = 'it''s')), false)" in result.output
    assert f"{rules}:8:34: rule 'k8s': field k8s.ns.name: needs the Kubernetes API server" in result.output
    assert f"{rules}:13:34: error: operator 'contains' is not supported for int fields [rule 'bad']" in result.output
    assert "1/3 rules compile to SQL (1 unsupported, 1 invalid)" in result.output


def test_compiled_sql_runs_on_the_real_events_view(tmp_path):
    """The compiler against the state builder's events view (the contract
    between analyzer/sql and analyzer/state): every supported rule of every
    Falco file runs in one scan, and typed checks (IPv4/IPv6 CIDR, either
    side, ancestors, rendered args) select the events they should."""
    from analyzer.condition.parser import parse
    from analyzer.sql.compiler import compile_condition
    from analyzer.state import open_captures
    from tests.state_builder import CaptureBuilder, Proc

    b = CaptureBuilder(tmp_path / "cap")
    init, sshd = Proc(1, 0, "systemd"), Proc(500, 1, "sshd")
    b.start_segment()
    b.snap_proc(init, ["/sbin/init"], "/sbin/init", "/")
    b.snap_proc(sshd, ["/usr/sbin/sshd", "-D"], "/usr/sbin/sshd", "/")
    shell = b.execve(b.fork(sshd, 600), ["bash", "-i"], "/usr/bin/bash")
    b.evt(shell, "socket", res=7, sock_family=2, sock_type=1, sock_proto=0)
    v4 = b.evt(shell, "connect", res=0, fd=7, sock_family=2, addr_ip="10.0.0.9", addr_port=4444,
               local_ip="10.0.0.2", local_port=41234)
    b.evt(shell, "socket", res=8, sock_family=10, sock_type=1, sock_proto=0)
    v6 = b.evt(shell, "connect", res=0, fd=8, sock_family=10, addr_ip="2001:db8::9", addr_port=443,
               local_ip="2001:db8::2", local_port=41235)
    opened = b.evt(shell, "openat", res=3, dirfd=-100, path="/etc/shadow", flags=0o2000000, mode=0)
    b.finish_segment()

    with open_captures([str(tmp_path / "cap")]) as captures:
        con = captures.con
        install_runtime(con)

        def selected(condition: str) -> set[int]:
            sql = compile_condition(parse(condition)).sql
            return {row[0] for row in con.execute(f'SELECT "evt.num" FROM events WHERE {sql}').fetchall()}

        assert selected('fd.net = "10.0.0.0/8"') == {v4}
        assert selected('fd.snet in ("2001:db8::/32")') == {v6}
        assert selected('fd.ip = "2001:0db8:0:0:0:0:0:9"') == {v6}
        assert selected("fd.sport in (443, 4444) and not fd.rnet = \"192.168.0.0/16\"") == {v4, v6}
        assert selected("fd.port != 4444 and evt.type = connect") == {v6}
        assert selected("proc.aname = sshd and proc.aname[1] = sshd and proc.name = bash") >= {v4, v6, opened}
        assert selected("evt.arg.flags contains O_CLOEXEC and fd.name pmatch (/etc)") == {opened}

        for name in sorted(EXPECTED):
            compiled = [c for c in compile_ruleset(load_rules([RULES / name])) if c.supported]
            select = ", ".join(f"({c.sql}) AS r{i}" for i, c in enumerate(compiled))
            assert con.execute(f"SELECT {select} FROM events").fetchall()
