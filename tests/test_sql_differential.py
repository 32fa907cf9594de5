"""Differential property test: DuckDB running the compiled SQL over a real
table of events selects exactly what the independent reference evaluator
(tests/reference_eval.py) selects, for random conditions over random events.

Conditions cover every operator, not/and/or nesting, lists, missing values,
ancestors, either-side socket fields, list-valued fields, transformers,
val() and modifiers; literals and values share a pool of hostile atoms
(quotes, %, _, backslashes, glob and regex metacharacters, non-ASCII, the
Kelvin sign that Unicode lower() would fold). Each example evaluates several
conditions over a batch of events in one query.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.condition import ast
from analyzer.fields.catalog import CATALOG, Catalog, col
from analyzer.fields.spec import FieldType
from analyzer.sql.compiler import compile_condition
from tests import reference_eval as ref

# No list-valued field is derived from captures yet (fd.types is catalogued
# as not derived), so the list semantics (`in` = every element in the set,
# `intersects` = some element) run through a test entry making fd.types a
# list column; everything else is the shipped catalog.
TEST_CATALOG = Catalog(tuple(
    col("fd.types", FieldType.STRING, "test list column", is_list=True) if spec.name == "fd.types" else spec
    for spec in CATALOG.values()
))

ATOMS = ["a", "b", "A", "B", "k", "i", "/", ".", "%", "_", "'", '"', "\\", "é", "É", "\u212a", "İ", " ", "*", "?", "[", "]",
         "-", "!", "x", "ab", "/a", "a/", "\\%"]
GLOB_ATOMS = ["a", "b", "A", "/", ".", "%", "_", "'", "é", "*", "?", "[", "]", "!", "-", "\\", "[!a]", "[a-b]",
              "[]a]", "[b-a]", "[[:alpha:]]", "\\*", "x"]
REGEX_PIECES = ["a", "b", "A", "/", "%", "_", "'", '"', "é", " ", "-", "!", ".", ".*", "\\.", "\\[", "\\\\",
                "[ab/]", "[^a]", "(a|b)", "a?", "b+", "\\*", "x{1,2}"]
IPV4 = ["10.0.0.1", "10.1.2.3", "192.168.1.1", "127.0.0.1", "8.8.8.8", "172.16.5.4", "0.0.0.0"]
IPV6 = ["::1", "fe80::1", "2001:db8::1", "::ffff:a00:1", "2001:db8:0:1::5", "ff02::fb", "::"]
INTS = [-2, -1, 0, 1, 2, 3, 16, 443, 2**31]
FD_TYPES = ["ipv4", "ipv6", "unix", "file"]
ARG_NAMES = ["flags", "fd", "name"]

strings = st.lists(st.sampled_from(ATOMS), max_size=4).map("".join)
maybe = lambda s: st.none() | s  # noqa: E731


def _chain(values):
    return st.none() | st.lists(maybe(values), max_size=5)


events = st.fixed_dictionaries({
    "proc.name": maybe(strings),
    "proc.cmdline": maybe(strings),
    "fd.name": maybe(strings),
    "proc.pid": maybe(st.sampled_from(INTS)),
    "evt.rawres": maybe(st.sampled_from(INTS)),
    "fd.sport": maybe(st.sampled_from(INTS)),
    "fd.cport": maybe(st.sampled_from(INTS)),
    "fd.connected": maybe(st.booleans()),
    "fd.sip": maybe(st.sampled_from(IPV4 + IPV6)),
    "fd.cip": maybe(st.sampled_from(IPV4 + IPV6)),
    "_anc_name": _chain(strings),
    "_anc_pid": _chain(st.sampled_from(INTS)),
    "fd.types": st.none() | st.lists(st.sampled_from(FD_TYPES), max_size=3, unique=True),
    "_evt_args": st.none() | st.dictionaries(st.sampled_from(ARG_NAMES), strings, max_size=3),
})

COLUMN_TYPES = {
    "proc.name": pa.string(), "proc.cmdline": pa.string(), "fd.name": pa.string(), "proc.pid": pa.int64(),
    "evt.rawres": pa.int64(), "fd.sport": pa.int64(), "fd.cport": pa.int64(), "fd.connected": pa.bool_(),
    "fd.sip": pa.string(), "fd.cip": pa.string(), "_anc_name": pa.list_(pa.string()),
    "_anc_pid": pa.list_(pa.int64()), "fd.types": pa.list_(pa.string()),
    "_evt_args": pa.map_(pa.string(), pa.string()),
}


def lit(value: str) -> ast.Literal:
    return ast.Literal(value, quoted=True)


def lits(values) -> ast.ListLiteral:
    return ast.ListLiteral(tuple(lit(v) for v in values))


def int_text(value: int) -> st.SearchStrategy[str]:
    return st.sampled_from([str(value), hex(value)] if value >= 0 else [str(value)])


int_literals = st.sampled_from(INTS).flatmap(int_text)
ip_literals = st.sampled_from(IPV4 + IPV6).flatmap(
    lambda a: st.sampled_from([a, ipaddress.ip_address(a).exploded]) if ":" in a else st.just(a))


@st.composite
def cidr_literals(draw):
    address = ipaddress.ip_address(draw(st.sampled_from(IPV4 + IPV6)))
    prefix = draw(st.integers(0, address.max_prefixlen))
    return draw(st.sampled_from([f"{address}/{prefix}", str(ipaddress.ip_network(f"{address}/{prefix}", False))]))


globs = st.lists(st.sampled_from(GLOB_ATOMS), max_size=5).map("".join)
regexes = st.lists(st.sampled_from(REGEX_PIECES), max_size=4).map("".join)
paths = st.lists(st.sampled_from(["a", "b", "", "é", "%", "_"]), max_size=3).map(
    lambda parts: st.sampled_from(["/" + "/".join(parts), "/".join(parts) + "/", "//".join(parts)])).flatmap(lambda s: s)

STRING_FIELDS = [ast.FieldRef("proc.name"), ast.FieldRef("proc.cmdline"), ast.FieldRef("fd.name"),
                 ast.FieldRef("evt.arg.flags"), ast.FieldRef("evt.arg", "0"), ast.FieldRef("evt.arg", "name")]
ANCESTOR_STRINGS = [ast.FieldRef("proc.aname"), *(ast.FieldRef("proc.aname", str(n)) for n in range(4))]
INT_FIELDS = [ast.FieldRef("proc.pid"), ast.FieldRef("evt.rawres"), ast.FieldRef("fd.sport"),
              ast.FieldRef("proc.apid"), ast.FieldRef("proc.apid", "1")]


@st.composite
def string_checks(draw, left=None):
    left = left or draw(st.sampled_from(STRING_FIELDS + ANCESTOR_STRINGS + [
        ast.Transformer("tolower", (ast.FieldRef("proc.name"),)),
        ast.Transformer("toupper", (ast.FieldRef("fd.name"),)),
        ast.Transformer("basename", (ast.FieldRef("fd.name"),)),
        ast.Transformer("concat", (ast.FieldRef("proc.name"), lit("/"), ast.FieldRef("fd.name"))),
    ]))
    op = draw(st.sampled_from(["=", "==", "!=", "contains", "icontains", "startswith", "endswith", "glob", "iglob",
                               "regex", "in", "intersects", "pmatch", "exists", "val", "modifier"]))
    if op == "exists":
        return ast.Comparison(left, "exists")
    if op == "val":
        other = draw(st.sampled_from([ast.FieldRef("proc.name"), ast.FieldRef("fd.name")]))
        op = draw(st.sampled_from(["=", "!=", "contains", "startswith", "endswith", "icontains"]))
        return ast.Comparison(left, op, ast.FieldValue(other))
    if op == "modifier":
        op = draw(st.sampled_from(["contains", "startswith", "endswith", "=", "icontains"]))
        modifier = draw(st.sampled_from(["anyof", "allof", "oneof"]))
        return ast.Comparison(left, op, lits(draw(st.lists(strings, min_size=1, max_size=3))), modifier)
    if op in ("in", "intersects"):
        return ast.Comparison(left, op, lits(draw(st.lists(strings, max_size=3))))
    if op == "pmatch":
        return ast.Comparison(left, op, lits(draw(st.lists(paths, max_size=3))))
    value = draw({"glob": globs, "iglob": globs, "regex": regexes}.get(op, strings))
    return ast.Comparison(left, op, lit(value))


@st.composite
def typed_checks(draw):
    kind = draw(st.sampled_from(["int", "len", "port", "bool", "ip", "net", "sides_ip", "sides_net", "list"]))
    if kind in ("int", "len"):
        left = (draw(st.sampled_from(INT_FIELDS)) if kind == "int"
                else ast.Transformer("len", (draw(st.sampled_from(STRING_FIELDS[:3])),)))
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"]))
        if op == "exists":
            return ast.Comparison(left, op)
        if op in ("in", "intersects"):
            return ast.Comparison(left, op, lits(draw(st.lists(int_literals, max_size=3))))
        return ast.Comparison(left, op, lit(draw(int_literals)))
    if kind == "port":
        op = draw(st.sampled_from(["=", "!=", "in"]))
        right = lits(draw(st.lists(int_literals, max_size=3))) if op == "in" else lit(draw(int_literals))
        return ast.Comparison(ast.FieldRef("fd.port"), op, right)
    if kind == "bool":
        op = draw(st.sampled_from(["=", "!=", "in", "exists"]))
        values = st.sampled_from(["true", "false"])
        if op == "exists":
            return ast.Comparison(ast.FieldRef("fd.connected"), op)
        right = lits(draw(st.lists(values, max_size=2))) if op == "in" else lit(draw(values))
        return ast.Comparison(ast.FieldRef("fd.connected"), op, right)
    if kind == "list":
        op = draw(st.sampled_from(["in", "intersects", "exists"]))
        if op == "exists":
            return ast.Comparison(ast.FieldRef("fd.types"), op)
        return ast.Comparison(ast.FieldRef("fd.types"), op, lits(draw(st.lists(st.sampled_from(FD_TYPES), max_size=3))))
    field = {"ip": ["fd.sip", "fd.cip"], "net": ["fd.snet"], "sides_ip": ["fd.ip"], "sides_net": ["fd.net"]}[kind]
    left = ast.FieldRef(draw(st.sampled_from(field)))
    op = draw(st.sampled_from(["=", "!=", "in", "intersects", "exists"]))
    if op == "exists":
        return ast.Comparison(left, op)
    values = cidr_literals() if kind.endswith("net") else ip_literals
    right = lits(draw(st.lists(values, max_size=3))) if op in ("in", "intersects") else lit(draw(values))
    return ast.Comparison(left, op, right)


def conditions(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            inner.map(ast.Not),
            st.lists(inner, min_size=2, max_size=3).map(lambda ops: ast.And(tuple(ops))),
            st.lists(inner, min_size=2, max_size=3).map(lambda ops: ast.Or(tuple(ops))),
        ),
        max_leaves=6,
    )


def _table(batch: list[dict]) -> pa.Table:
    columns = {"id": pa.array(range(len(batch)), pa.int64())}
    for name, type_ in COLUMN_TYPES.items():
        values = [e[name] for e in batch]
        if name == "_evt_args":
            values = [None if v is None else list(v.items()) for v in values]
        columns[name] = pa.array(values, type_)
    return pa.table(columns)


def check(runtime_con, batch: list[dict], exprs: list[ast.Node]) -> None:
    compiled = [compile_condition(e, TEST_CATALOG) for e in exprs]
    for expr, result in zip(exprs, compiled):
        assert result.sql is not None, (expr.text(), result.error, result.unsupported)
    events_table = _table(batch)  # noqa: F841 (read by DuckDB's replacement scan)
    select = ", ".join(f"({c.sql}) AS c{i}" for i, c in enumerate(compiled))
    rows = runtime_con.execute(f"SELECT id, {select} FROM events_table ORDER BY id").fetchall()
    for row, event in zip(rows, batch):
        for i, expr in enumerate(exprs):
            want = ref.evaluate(expr, event)
            assert row[i + 1] is want, (
                f"condition: {expr.text()}\nsql: {compiled[i].sql}\nevent: {event}\nduckdb: {row[i + 1]} reference: {want}"
            )


batches = st.lists(events, min_size=1, max_size=12)


@settings(max_examples=300)
@given(batch=batches, exprs=st.lists(conditions(string_checks()), min_size=1, max_size=4))
def test_string_conditions_match_the_reference(runtime_con, batch, exprs):
    check(runtime_con, batch, exprs)


@settings(max_examples=300)
@given(batch=batches, exprs=st.lists(conditions(typed_checks()), min_size=1, max_size=4))
def test_typed_conditions_match_the_reference(runtime_con, batch, exprs):
    check(runtime_con, batch, exprs)


@settings(max_examples=300)
@given(batch=batches, exprs=st.lists(conditions(st.one_of(string_checks(), typed_checks())), min_size=1, max_size=4))
def test_mixed_conditions_match_the_reference(runtime_con, batch, exprs):
    check(runtime_con, batch, exprs)


_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_libc.fnmatch.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
ascii_text = st.lists(st.sampled_from(["a", "b", "A", "/", ".", "-", "]", "x", "*", "\\", "["]), max_size=5).map("".join)


@settings(max_examples=500)
@given(pattern=st.lists(st.sampled_from(GLOB_ATOMS[:7] + GLOB_ATOMS[8:12] + GLOB_ATOMS[13:]), max_size=5).map("".join),
       text=ascii_text)
def test_reference_glob_agrees_with_glibc_fnmatch(pattern, text):
    """The oracle itself is anchored to the C library libsinsp calls."""
    assert ref.glob_match(pattern, text) == (_libc.fnmatch(pattern.encode(), text.encode(), 0) == 0), (pattern, text)


def check_filters(runtime_con, batch: list[dict], exprs: list[ast.Node]) -> None:
    """The hunt's forms: ``filter_sql`` in a WHERE selects exactly what the
    reference selects, and ``prefilter_sql`` keeps every one of those."""
    events_table = _table(batch)  # noqa: F841 (read by DuckDB's replacement scan)
    every = set(range(len(batch)))
    for expr in exprs:
        result = compile_condition(expr, TEST_CATALOG)
        want = {i for i, event in enumerate(batch) if ref.evaluate(expr, event)}
        got = {r[0] for r in runtime_con.execute(f"SELECT id FROM events_table WHERE {result.filter_sql}").fetchall()}
        assert got == want, f"condition: {expr.text()}\nfilter: {result.filter_sql}"
        kept = every if result.prefilter_sql is None else {
            r[0] for r in runtime_con.execute(f"SELECT id FROM events_table WHERE {result.prefilter_sql}").fetchall()}
        assert want <= kept, f"condition: {expr.text()}\nprefilter: {result.prefilter_sql}"


@settings(max_examples=200)
@given(batch=batches, exprs=st.lists(conditions(st.one_of(string_checks(), typed_checks())), min_size=1, max_size=4))
def test_filter_and_prefilter_forms_agree_with_the_reference(runtime_con, batch, exprs):
    check_filters(runtime_con, batch, exprs)
