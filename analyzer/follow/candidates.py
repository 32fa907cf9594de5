"""Which raw rows of a batch can fire a rule, decided before any state is resolved.

Resolving a batch (analyzer/state's builder) and copying it out of the
`events` query cost far more than the rules' own test, so the follower first
asks, on the raw rows, which events could pass the rules' evt.type sets and
event-level prefilters (the hunt engine's `scan_prefilter`):

* an event whose evt.type no rule lists cannot;
* an open of an absolute path carries everything its event-level fields
  hold: `fd.name` is the normalized path (the state builder names a new
  file fd so, whatever the cwd or dirfd; a failed open's is the path
  resolved the same way), the fd is the one it returns, of type `directory`
  with O_DIRECTORY else `file` (none when it failed: the result is an
  errno). On such rows the prefilters run over those fields as the `events`
  view computes them;
* any other event of a listed type is a candidate (its fields need state).

Of a prefilter that also reads fields outside `EXACT_FIELDS`, only the
terms of its top-level AND that read none are used (`exact_prefilter`: each
is implied by the whole, so no event the prefilter passes is left out; with
no such term the rule counts as evt.type-only). The hunt runs the same test
over whole captures (analyzer/hunt/candidates.py). tests/test_follow_units.py
checks, row by row on recorded captures, that these fields equal the
`events` view's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.fields.catalog import sql_string
from analyzer.follow.scan import arg_keys, candidate_types, identifiers, literal_arg_keys
from analyzer.follow.source import string_member
from analyzer.hunt.engine import HuntRule
from analyzer.render.flags import errno_sql
from analyzer.render.params import PARAMS, ArgContext
from analyzer.state.sql import OPEN_SYSCALLS, SQL_STRING_LITERAL, sql_list
from capture.schema import COLUMN_NAMES, KIND_EVENT

RAW_BATCH = "_follow_raw_batch"
# The raw columns the fields of an exact row are computed from (see _fields and the renderers).
SIGNATURE_COLUMNS = ("syscall", "path", "flags", "mode", "res", "dirfd")
_MAX_KNOWN = 100_000
_O_DIRECTORY = 0o200000
_O_CREAT = 0o100
_CREAT_FLAGS = 0o1 | 0o100 | 0o1000  # creat() is open(O_WRONLY|O_CREAT|O_TRUNC)

# An open of an absolute path, successful or not: every field below is exact on it.
EXACT_ROW = f"x.kind = 'evt' AND x.syscall IN {sql_list(OPEN_SYSCALLS)} AND x.res IS NOT NULL AND starts_with(x.path, '/')"
_OPENED = "x.res >= 0"  # else the result is an errno and no fd was opened


def _open_args(keys: Sequence[str]) -> str:
    """`_evt_args` of an exact row as a STRUCT of `keys` (what `"_evt_args"['key']` reads), rendered
    by the `events` view's own renderers: the view's MAP over every syscall's parameters costs
    ~0.1 s to bind, per batch. A key an open call does not have is NULL, as in the view's map."""
    ctx = ArgContext(
        col=lambda column: f"x.{column}",
        fd_desc="('<' || trace_typechar(x._type) || '>' || x._name)",
        cwd="NULL::VARCHAR",
        user_name=lambda uid: "NULL::VARCHAR",
        group_name=lambda gid: "NULL::VARCHAR",
        tuple_="NULL::VARCHAR",
        exe_args="NULL::VARCHAR",
        errno=errno_sql("x.res"),
        resolved_path=lambda column: "x._name",  # the only path of an open, absolute here
    )
    members = []
    for key in keys:
        by_value: dict[str, list[str]] = {}  # one rendering, the open calls that share it
        for syscall in OPEN_SYSCALLS:
            for name, render in PARAMS[syscall]:
                if name == key:
                    raw, resolved = render(ctx)
                    value = f"({raw})::VARCHAR" if resolved is None else (
                        f"coalesce(nullif(({resolved})::VARCHAR, ''), ({raw})::VARCHAR)")
                    by_value.setdefault(value, []).append(syscall)
        branches = " ".join(f"WHEN x.syscall IN {sql_list(tuple(calls))} THEN {value}" for value, calls in by_value.items())
        members.append(f"{sql_string(key)}: " + (f"CASE {branches} END" if branches else "NULL::VARCHAR"))
    return "{" + ", ".join(members) + "}" if members else "NULL"


def open_arg_names() -> list[str]:
    """Every parameter name of the open calls (what a full `_evt_args` of an exact row holds)."""
    return sorted({name for syscall in OPEN_SYSCALLS for name, _ in PARAMS[syscall]})


def _fields(arg_keys: Sequence[str] = ()) -> dict[str, str]:
    """The event-level fields of an exact row, from its raw columns (as the `events` view has them)."""
    flags = f"CASE WHEN x.syscall = 'creat' THEN {_CREAT_FLAGS} ELSE x.flags END"
    return {
        "evt.type": "x.syscall",
        "evt.rawres": "x.res",
        "evt.res": f"CASE WHEN {_OPENED} THEN 'SUCCESS' ELSE coalesce({errno_sql('x.res')}, x.res::VARCHAR) END",
        "evt.is_open_read": f"coalesce(({flags} & 3) IN (0, 2), false)",
        "evt.is_open_write": f"coalesce(({flags} & 3) IN (1, 2), false)",
        "evt.is_open_exec": f"coalesce(({flags} & {_O_CREAT}) <> 0 AND (x.mode & 73) <> 0, false)",
        "fd.num": "x.res",
        "fd.type": f"CASE WHEN {_OPENED} THEN x._type END",
        "fd.typechar": f"CASE WHEN {_OPENED} THEN trace_typechar(x._type) END",
        "fd.name": "x._name",
        "fd.nameraw": "x.path",
        "fd.directory": f"CASE WHEN {_OPENED} AND x._type = 'file' THEN trace_dirname(x._name) WHEN {_OPENED} THEN x._name END",
        "fd.filename": f"CASE WHEN {_OPENED} AND x._type = 'file' THEN trace_basename(x._name) END",
        "_evt_args": _open_args(arg_keys),
    }


EXACT_FIELDS = frozenset(_fields())


def exact_fields_sql(relation: str, arg_keys: Sequence[str]) -> str:
    """`relation`'s rows (capture schema) with an `_exact` flag and EXACT_FIELDS by name (trusted where
    `_exact`); `_evt_args` holds `arg_keys` only."""
    inner = (
        f"SELECT r.* REPLACE (r.kind::VARCHAR AS kind, r.syscall::VARCHAR AS syscall), "
        f"trace_normpath(r.path) AS _name, "
        f"CASE WHEN (coalesce(r.flags, 0) & {_O_DIRECTORY}) <> 0 THEN 'directory' ELSE 'file' END AS _type "
        f"FROM {relation} r"
    )
    fields = ", ".join(f'{expr} AS "{name}"' for name, expr in _fields(arg_keys).items())
    return f"SELECT x.*, {EXACT_ROW} AS _exact, {fields} FROM ({inner}) x"


@dataclass(frozen=True)
class Candidates:
    """Of a chunk of raw rows: which may fire a rule, and which rules (positions in the rules tested)."""

    mask: pa.ChunkedArray  # per row; False for snapshot rows
    rules: frozenset[int]


class CandidateTest:
    """`test(con, rows)`: per raw row, whether it may fire a rule, and the rules some row may fire.

    A row may fire the rules whose evt.type set holds its type; an exact row
    only those whose prefilter it also passes. Exact rows are answered per
    distinct signature (their raw columns that the fields read), remembered
    across batches: a busy host opens the same few files over and over, and
    binding the test costs ~0.1 s of DuckDB time.
    """

    def __init__(self, rules: Sequence[HuntRule]):
        self._rules = tuple(rules)
        usable = [replace(rule, prefilter_sql=exact_prefilter(rule.prefilter_sql)) for rule in rules]
        self._types = candidate_types(rules)
        # one test per distinct (evt.type set, prefilter), and the rules it stands for
        tests: dict[str, set[int]] = {}
        for position, rule in enumerate(usable):
            test = rule.prefilter_sql or "true"
            if rule.evttypes:
                test = '"evt.type" IN (' + ", ".join(sql_string(t) for t in sorted(rule.evttypes)) + f") AND ({test})"
            tests.setdefault(f"coalesce({test}, false)", set()).add(position)
        self._test_rules = [frozenset(positions) for positions in tests.values()]
        keys = sorted({key for rule in usable for key in arg_keys(rule.prefilter_sql or "")})
        self._sql = (
            "SELECT _signature, [" + ", ".join(f"bool_or({test})" for test in tests) + "] AS passes "
            f"FROM ({exact_fields_sql(RAW_BATCH, keys)}) events GROUP BY _signature"
        )
        self._known: dict[str, frozenset[int]] = {}  # signature -> the rules an exact row of it may fire
        self._of_type: dict[str, frozenset[int]] = {}  # evt.type -> the rules listing it

    def test(self, con: duckdb.DuckDBPyConnection, rows: pa.Table) -> Candidates:
        candidate = string_member(rows["kind"], (KIND_EVENT,))
        if self._types is not None:
            candidate &= string_member(rows["syscall"], self._types)
        fired: set[int] = set()
        opens = np.flatnonzero(candidate & string_member(rows["syscall"], OPEN_SYSCALLS)
                               & pc.is_valid(rows["res"]).to_numpy(zero_copy_only=False))
        exact = opens[:0]
        if len(opens):
            sub = rows.select(["kind", *SIGNATURE_COLUMNS]).take(pa.array(opens))
            absolute = pc.fill_null(pc.starts_with(sub["path"], "/"), False).to_numpy(zero_copy_only=False)
            exact, sub = opens[absolute], sub.filter(pa.array(absolute))
            if len(exact):
                signature = pc.binary_join_element_wise(
                    *[pc.fill_null(sub[column].cast(pa.string()), "\x00") for column in SIGNATURE_COLUMNS], "\x01"
                )
                distinct = pc.unique(signature).to_pylist()
                unknown = [s for s in distinct if s not in self._known]
                if unknown:
                    self._learn(con, sub.append_column("_signature", signature).filter(
                        pc.is_in(signature, pa.array(unknown, pa.string()))))
                passing = [s for s in distinct if self._known[s]]
                fired.update(*(self._known[s] for s in passing))
                candidate[exact] = pc.is_in(signature, pa.array(passing, pa.string())).to_numpy(zero_copy_only=False)
        # every other candidate may fire every rule of its type
        others = candidate.copy()
        others[exact] = False
        if others.any():
            types = pc.unique(rows["syscall"].cast(pa.string()).filter(pa.array(others))).to_pylist()
            fired.update(*(self._rules_of_type(t) for t in types))
        return Candidates(pa.chunked_array([pa.array(candidate)]), frozenset(fired))

    def _rules_of_type(self, evt_type: str) -> frozenset[int]:
        rules = self._of_type.get(evt_type)
        if rules is None:
            rules = self._of_type[evt_type] = frozenset(
                position for position, rule in enumerate(self._rules) if not rule.evttypes or evt_type in rule.evttypes)
        return rules

    def _learn(self, con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
        if len(self._known) > _MAX_KNOWN:
            self._known.clear()
        con.register(RAW_BATCH, rows)
        try:
            for signature, passes in con.sql(self._sql).fetchall():
                self._known[signature] = frozenset().union(*(rules for rules, ok in zip(self._test_rules, passes) if ok))
        finally:
            con.unregister(RAW_BATCH)


def _exact_only(prefilter: str | None) -> bool:
    """Whether `prefilter` reads no field but EXACT_FIELDS (Falco fields are dotted, view helpers start
    with _), and `_evt_args` only by a literal key."""
    if prefilter is None or literal_arg_keys(prefilter) is None:
        return False
    names = identifiers(SQL_STRING_LITERAL.sub("''", prefilter))
    return all(
        name in EXACT_FIELDS or name in SIGNATURE_COLUMNS
        for name in names
        if "." in name or name.startswith("_") or name in COLUMN_NAMES
    )


def _unquoted(sql: str) -> Iterator[tuple[int, int]]:
    """(index, parenthesis depth after it) of each character of `sql` outside its quoted strings."""
    depth, i = 0, 0
    while i < len(sql):
        char = sql[i]
        if char in "'\"":
            i = sql.index(char, i + 1)
            while sql.startswith(char, i + 1):  # a doubled quote is part of the text
                i = sql.index(char, i + 2)
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        yield i, depth
        i += 1


def _conjuncts(sql: str) -> list[str]:
    """The terms of `sql`'s top-level AND (outer parentheses dropped), quotes respected."""
    while sql.startswith("(") and next((i for i, depth in _unquoted(sql) if depth == 0), -1) == len(sql) - 1:
        sql = sql[1:-1].strip()
    terms, start = [], 0
    for i, depth in _unquoted(sql):
        if depth == 0 and i >= start and sql.startswith(" AND ", i):
            terms.append(sql[start:i].strip())
            start = i + 5
    return [*terms, sql[start:].strip()]


def exact_prefilter(prefilter: str | None) -> str | None:
    """What of `prefilter` the raw row of an exact open decides: the whole, or the terms of its
    top-level AND that read exact fields only (implied by it, so never a missed candidate)."""
    if prefilter is None or _exact_only(prefilter):
        return prefilter
    exact = [term for term in _conjuncts(prefilter) if _exact_only(term)]
    return " AND ".join(f"({term})" for term in exact) if exact else None
