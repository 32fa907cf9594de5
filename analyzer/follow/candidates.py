"""Which raw rows of a batch can fire a rule, decided before any state is resolved.

Resolving a batch (analyzer/state's builder) and copying it out of the
`events` query cost far more than the rules' own test, so the follower first
asks, on the raw rows, which events could pass the rules' evt.type sets and
event-level prefilters (the hunt engine's `scan_prefilter`):

* an event whose evt.type no rule lists cannot;
* a successful open of an absolute path carries everything its event-level
  fields hold: `fd.name` is the normalized path (the state builder names a
  new file fd so, whatever the cwd or dirfd), the fd is the one it returns,
  of type `directory` with O_DIRECTORY else `file`. On such rows the
  prefilters run over those fields as the `events` view computes them;
* any other event of a listed type is a candidate (its fields need state).

Prefilters reading a field outside `EXACT_FIELDS` are not used here (their
rule counts as evt.type-only). tests/test_follow_units.py checks, row by
row on recorded captures, that these fields equal the `events` view's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.fields.catalog import sql_string
from analyzer.follow.scan import arg_keys, candidate_types, identifiers, literal_arg_keys
from analyzer.follow.source import string_member
from analyzer.hunt.engine import HuntRule, scan_prefilter
from analyzer.render.params import PARAMS, ArgContext
from analyzer.state.sql import OPEN_SYSCALLS, sql_list
from capture.schema import COLUMN_NAMES, KIND_EVENT

RAW_BATCH = "_follow_raw_batch"
# The raw columns the fields of an exact row are computed from (see _fields and the renderers).
SIGNATURE_COLUMNS = ("syscall", "path", "flags", "mode", "res", "dirfd")
_MAX_KNOWN = 100_000
_STRING = re.compile(r"'(?:[^']|'')*'")
_O_DIRECTORY = 0o200000
_O_CREAT = 0o100
_CREAT_FLAGS = 0o1 | 0o100 | 0o1000  # creat() is open(O_WRONLY|O_CREAT|O_TRUNC)

# A successful open of an absolute path: every field below is exact on it.
EXACT_ROW = f"x.kind = 'evt' AND x.syscall IN {sql_list(OPEN_SYSCALLS)} AND x.res >= 0 AND starts_with(x.path, '/')"


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
        errno="NULL::VARCHAR",  # res >= 0
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
        "evt.res": "'SUCCESS'",
        "evt.is_open_read": f"coalesce(({flags} & 3) IN (0, 2), false)",
        "evt.is_open_write": f"coalesce(({flags} & 3) IN (1, 2), false)",
        "evt.is_open_exec": f"coalesce(({flags} & {_O_CREAT}) <> 0 AND (x.mode & 73) <> 0, false)",
        "fd.num": "x.res",
        "fd.type": "x._type",
        "fd.typechar": "trace_typechar(x._type)",
        "fd.name": "x._name",
        "fd.nameraw": "x.path",
        "fd.directory": "CASE WHEN x._type = 'file' THEN trace_dirname(x._name) ELSE x._name END",
        "fd.filename": "CASE WHEN x._type = 'file' THEN trace_basename(x._name) END",
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


class CandidateTest:
    """`mask(con, rows)`: per raw row, whether it may fire a rule (False for snapshot rows).

    Exact rows are answered per distinct signature (their raw columns that the
    fields read), remembered across batches: a busy host opens the same few
    files over and over, and binding the test costs ~0.1 s of DuckDB time.
    """

    def __init__(self, rules: Sequence[HuntRule]):
        usable = [rule if _exact_only(rule.prefilter_sql) else replace(rule, prefilter_sql=None) for rule in rules]
        self._types = candidate_types(rules)
        prefilter = scan_prefilter(usable)
        passes = "true" if prefilter is None else f"coalesce({prefilter}, false)"
        keys = sorted({key for rule in usable for key in arg_keys(rule.prefilter_sql or "")})
        self._sql = (
            f"SELECT _signature, bool_or({passes}) AS candidate "
            f"FROM ({exact_fields_sql(RAW_BATCH, keys)}) events GROUP BY _signature"
        )
        self._known: dict[str, bool] = {}

    def mask(self, con: duckdb.DuckDBPyConnection, rows: pa.Table) -> pa.ChunkedArray:
        candidate = string_member(rows["kind"], (KIND_EVENT,))
        if self._types is not None:
            candidate &= string_member(rows["syscall"], self._types)
        opens = np.flatnonzero(candidate & string_member(rows["syscall"], OPEN_SYSCALLS)
                               & pc.fill_null(pc.greater_equal(rows["res"], 0), False).to_numpy(zero_copy_only=False))
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
                passing = pa.array([s for s in distinct if self._known[s]], pa.string())
                candidate[exact] = pc.is_in(signature, passing).to_numpy(zero_copy_only=False)
        return pa.chunked_array([pa.array(candidate)])

    def _learn(self, con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
        if len(self._known) > _MAX_KNOWN:
            self._known.clear()
        con.register(RAW_BATCH, rows)
        try:
            self._known.update(con.sql(self._sql).fetchall())
        finally:
            con.unregister(RAW_BATCH)


def _exact_only(prefilter: str | None) -> bool:
    """Whether `prefilter` reads no field but EXACT_FIELDS (Falco fields are dotted, view helpers start
    with _), and `_evt_args` only by a literal key."""
    if prefilter is None or literal_arg_keys(prefilter) is None:
        return False
    names = identifiers(_STRING.sub("''", prefilter))
    return all(
        name in EXACT_FIELDS or name in SIGNATURE_COLUMNS
        for name in names
        if "." in name or name.startswith("_") or name in COLUMN_NAMES
    )
