"""Golden files: condition -> SQL (or the located unsupported/invalid
reason), the field catalog against libsinsp's field list and docs/fields.md,
and every emitted SQL binding and running on a real DuckDB events table.

tests/golden/conditions.txt holds one condition per line; the expected
output is tests/golden/conditions.golden. Regenerate after an intended
change with TRACE_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.condition.parser import parse
from analyzer.condition.render import quote
from analyzer.errors import TraceError
from analyzer.fields.catalog import AUXILIARY_COLUMNS, CATALOG, render_markdown, sql_string
from analyzer.fields.spec import ArgKind, FieldType
from analyzer.sql.compiler import compile_condition, install_runtime

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
SHARED = ROOT / ".." / "shared" / "falco"


def _render(condition: str) -> str:
    try:
        expr = parse(condition)
    except TraceError as exc:
        return f"parse error: {str(exc).splitlines()[0]}"
    result = compile_condition(expr, rule="golden")
    types = "any" if result.evttypes is None else ", ".join(sorted(result.evttypes)) or "none"
    if result.error is not None:
        return f"invalid: {result.error}"
    if result.sql is None:
        return "\n".join(f"unsupported: {u}" for u in result.unsupported)
    return f"sql: {result.sql}\nevttypes: {types}"


def _conditions() -> list[str]:
    return [line for line in (GOLDEN / "conditions.txt").read_text().splitlines() if line.strip()]


def _golden_text() -> str:
    return "".join(f">>> {c}\n{_render(c)}\n\n" for c in _conditions())


def test_conditions_compile_to_the_golden_sql():
    expected_path = GOLDEN / "conditions.golden"
    actual = _golden_text()
    if os.environ.get("TRACE_UPDATE_GOLDEN"):
        expected_path.write_text(actual)
    expected = expected_path.read_text()
    for want, got in zip(expected.split("\n\n"), actual.split("\n\n")):
        assert got == want
    assert actual == expected


@pytest.fixture(scope="module")
def events_con():
    """An empty events table with every column the catalog reads."""
    con = duckdb.connect()
    install_runtime(con)
    columns = {**CATALOG.event_columns(), **AUXILIARY_COLUMNS}
    ddl = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns.items())
    con.execute(f"CREATE TABLE events ({ddl})")
    yield con
    con.close()


def test_every_golden_sql_binds_on_a_real_events_table(events_con):
    for condition in _conditions():
        try:
            result = compile_condition(parse(condition))
        except TraceError:
            continue
        if result.sql is not None:
            events_con.execute(f"SELECT count(*) FROM events WHERE {result.sql}").fetchall()


def test_every_supported_field_binds(events_con):
    for spec in CATALOG.values():
        if not spec.supported:
            continue
        exprs = [] if spec.arg is ArgKind.REQUIRED else [spec.sql]
        if spec.arg_sql:
            exprs.append(spec.arg_sql.format(index=2, arg=sql_string("x'y")))
        for sql in exprs:
            events_con.execute(f"SELECT {sql} FROM events").fetchall()


def test_unsupported_fields_say_why():
    for spec in CATALOG.values():
        assert spec.supported != bool(spec.unsupported), spec.name
        if not spec.supported:
            assert len(spec.unsupported) > 20, spec.name


_TSV_TYPES = {
    "PT_CHARBUF": FieldType.STRING, "PT_BYTEBUF": FieldType.BUFFER, "PT_BOOL": FieldType.BOOL,
    "PT_IPADDR": FieldType.IPADDR, "PT_IPNET": FieldType.IPNET, "PT_PORT": FieldType.PORT,
    "PT_ABSTIME": FieldType.ABSTIME, "PT_RELTIME": FieldType.RELTIME, "PT_DOUBLE": FieldType.DOUBLE,
    "`string`": FieldType.STRING, "`bool`": FieldType.BOOL, "`abstime`": FieldType.ABSTIME,
    "`reltime`": FieldType.RELTIME,
}


def test_catalog_covers_libsinsp_and_container_fields_with_their_types():
    seen = 0
    for tsv in sorted(SHARED.glob("fields-*.tsv")):
        for line in tsv.read_text().splitlines():
            name, type_name = line.split("\t")[:2]
            if name == "name":
                continue
            assert name in CATALOG, name
            want = _TSV_TYPES.get(type_name, FieldType.INT)
            spec = CATALOG[name]
            if type_name in ("PT_DYN",) or name.startswith("thread.cap_"):
                continue  # rendered as strings (PT_DYN evt.rawarg; capability lists)
            assert spec.type is want, (name, type_name, spec.type)
            seen += 1
    assert seen > 250


def test_docs_fields_md_matches_the_catalog():
    assert (ROOT / "docs" / "fields.md").read_text() == render_markdown(), (
        "docs/fields.md is stale: python -m analyzer.fields.catalog > docs/fields.md"
    )


@pytest.mark.parametrize("hostile", [
    "'; DROP TABLE events; --", "a''b", "100%_", "back\\slash\\", "\"quoted\"", "é ß İ K", "tab\tnew\nline",
    "x') OR true OR ('", "$$dollar$$", "/*comment*/",
])
def test_hostile_literals_reach_sql_escaped(events_con, hostile):
    events_con.execute("DELETE FROM events")
    events_con.execute('INSERT INTO events ("proc.name", "fd.name", "_anc_name") VALUES (?, ?, ?)',
                       [hostile, hostile, [hostile, hostile]])
    quoted = quote(hostile)
    for op, expect in [("=", 1), ("!=", 0), ("contains", 1), ("startswith", 1), ("endswith", 1), ("icontains", 1),
                       ("glob", None), ("in", 1)]:
        value = f"({quoted})" if op == "in" else quoted
        result = compile_condition(parse(f"proc.name {op} {value} and proc.aname[1] {op} {value}"))
        got = events_con.execute(f"SELECT count(*) FROM events WHERE {result.sql}").fetchall()[0][0]
        assert got == (expect if expect is not None else got)
    assert events_con.execute("SELECT count(*) FROM events").fetchall()[0][0] == 1


_FUZZ_FIELDS = sorted(CATALOG) + ["evt.arg.flags", "proc.aname[3]", "evt.arg[0]", "proc.env[HOME]", "proc.aname[x]",
                                  "no.such.field", "container.mount.dest[/proc*]"]
_FUZZ_OPS = ["=", "!=", "<", ">=", "contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith",
             "glob", "iglob", "regex", "in", "intersects", "pmatch", "exists"]
_FUZZ_VALUES = ["1", "0x1f", "-3", "bash", "'it''s'", '"a\\"b"', "10.0.0.0/8", "::1", "true", "cafe", "(a, b)", "()",
                '"(unclosed"', '"%_\\\\"', "val(proc.name)", "tolower(proc.name)", "é"]


@settings(max_examples=300)
@given(parts=st.lists(st.tuples(st.sampled_from(_FUZZ_FIELDS), st.sampled_from(_FUZZ_OPS),
                                st.sampled_from(_FUZZ_VALUES), st.sampled_from([" and ", " or ", " and not "])),
                      min_size=1, max_size=3))
def test_any_parsed_condition_compiles_or_reports(events_con, parts):
    """The compiler never raises: it returns SQL that runs, or says why not."""
    text = "".join(f"{f} {op}" + ("" if op == "exists" else f" {v}") + (j if i < len(parts) - 1 else "")
                   for i, (f, op, v, j) in enumerate(parts))
    try:
        expr = parse(text)
    except TraceError:
        return
    result = compile_condition(expr)
    if result.sql is None:
        assert result.error is not None or result.unsupported
    else:
        events_con.execute(f"SELECT count(*) FROM events WHERE {result.sql}").fetchall()
