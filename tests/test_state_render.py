"""Rendering tables and path macros: the SQL and the Python forms agree (hypothesis)."""

from __future__ import annotations

import posixpath

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.render import flags as rf
from analyzer.render import install_macros as install_render_macros
from analyzer.state.sql import install_macros


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect()
    install_macros(connection)
    install_render_macros(connection)
    yield connection
    connection.close()


def sql_values(con, expr: str, values: list[int]) -> list:
    """`expr` over v for every value, in one query."""
    rows = con.execute(f"SELECT {expr} FROM (SELECT unnest(?::BIGINT[]) AS v, generate_subscripts(?::BIGINT[], 1) AS i) "
                       "ORDER BY i", [values, values]).fetchall()
    return [r[0] for r in rows]


# Each example checks a batch of values in one query: fewer, larger examples.
batched = settings(max_examples=25)


# Linux open(2) flag bits the recorder can see, plus some noise bits libsinsp does not name.
_OPEN_BITS = [0o1, 0o2, *rf.OPEN_FLAG_BITS.values(), 0o400, 0o20000, 0o1000000]
open_flags = st.lists(st.sampled_from(_OPEN_BITS), max_size=8).map(lambda bits: sum(set(bits)))


def test_open_flags_examples():
    assert rf.render_open_flags(0) == "O_RDONLY"
    assert rf.render_open_flags(0o2000000) == "O_RDONLY|O_CLOEXEC"
    assert rf.render_open_flags(0o1 | 0o100 | 0o1000) == "O_TRUNC|O_CREAT|O_WRONLY"
    assert rf.render_open_flags(0o2 | 0o2000) == "O_APPEND|O_RDWR"
    assert rf.render_open_flags(0o20200000) == "O_DIRECTORY|O_RDONLY|O_TMPFILE"


@batched
@given(st.lists(open_flags, min_size=1, max_size=40))
def test_open_flags_sql_matches_python_and_round_trips(con, values):
    assert sql_values(con, rf.open_flags_sql("v"), values) == [rf.render_open_flags(f) for f in values]
    for flags in values:
        named_bits = sum(b for b in rf.OPEN_FLAG_BITS.values() if flags & b) | (flags & 3 if flags & 3 != 3 else 0)
        assert rf.parse_open_flags(rf.render_open_flags(flags)) == named_bits


@pytest.mark.parametrize("table", [rf.CLONE_FLAGS, rf.FILE_MODES, rf.MOUNT_FLAGS, rf.MEMFD_FLAGS, rf.UNLINKAT_FLAGS])
@batched
@given(values=st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=1, max_size=40))
def test_flag_tables_sql_matches_python(con, table, values):
    assert sql_values(con, table.sql("v"), values) == [table.render(v) for v in values]


@batched
@given(values=st.lists(st.integers(min_value=-1, max_value=0x4300), min_size=1, max_size=40))
def test_enum_tables_sql_matches_python(con, values):
    for table in (rf.PTRACE_REQUESTS, rf.FCNTL_COMMANDS, rf.SOCKET_FAMILIES, rf.BPF_COMMANDS):
        assert [r or "" for r in sql_values(con, table.sql("v"), values)] == [table.render(v) for v in values]


@batched
@given(masks=st.lists(st.integers(min_value=0, max_value=2**41 - 1), min_size=1, max_size=40))
def test_capabilities(con, masks):
    assert sql_values(con, rf.caps_sql("v"), masks) == [rf.render_caps(m) for m in masks]
    for mask in masks:
        assert [rf.CAP_NAMES.index(n) for n in rf.render_caps(mask).split()] == [
            bit for bit in range(len(rf.CAP_NAMES)) if mask >> bit & 1]


def test_errno_and_evt_res(con):
    values = list(range(-140, 6))
    assert sql_values(con, rf.evt_res_sql("v"), values) == [rf.render_errno(v) for v in values]
    assert rf.render_errno(-2) == "ENOENT" and rf.render_errno(-13) == "EACCES" and rf.render_errno(3) == "SUCCESS"


def reference_resolve(base: str | None, path: str) -> str | None:
    """libsinsp-style lexical resolution: '..' above / stays at /, no symlinks."""
    if not path.startswith("/"):
        if base is None:
            return None
        path = base + "/" + path
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


segment = st.sampled_from(["", ".", "..", "a", "b c", "..x", ".hidden", "é", "%_'\""])
paths = st.lists(segment, max_size=6).map("/".join)


absolute = paths.map(lambda p: "/" + p)


@batched
@given(st.lists(st.tuples(st.one_of(st.none(), absolute), st.one_of(paths, absolute)), min_size=1, max_size=40))
def test_path_resolution(con, cases):
    got = con.execute("SELECT trace_resolve(b, p) FROM (SELECT unnest(?::VARCHAR[]) AS b, unnest(?::VARCHAR[]) AS p, "
                      "generate_subscripts(?::VARCHAR[], 1) AS i) ORDER BY i",
                      [[b for b, _ in cases], [p for _, p in cases], [p for _, p in cases]]).fetchall()
    assert [r[0] for r in got] == [reference_resolve(b, p) for b, p in cases]


@batched
@given(path=absolute)
def test_dirname_basename(con, path):
    norm = reference_resolve(None, path)
    dirname, basename = con.execute("SELECT trace_dirname(?), trace_basename(?)", [norm, norm]).fetchall()[0]
    assert dirname == posixpath.dirname(norm)
    assert basename == posixpath.basename(norm)
