"""Run every rule in one scan of the `events` view.

One SELECT evaluates all the rules side by side, each behind a prefilter on
its evt.type set, the way Falco's ruleset indexes rules by event type:

* ``--match first`` (Falco's default): a CASE in rule-definition order, so
  an event stops at its first matching rule and later rules never run on it;
* ``--match all``: one CASE per rule, gathered into a list of rule indexes.

Output fields are computed in the same SELECT, after the row filter, so only
matched events pay for them. Results stream in event order as Arrow batches.
A relation given as several parts (a capture's segment ranges) is scanned
one part at a time and the hits merged back into event order.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from analyzer.errors import TraceError
from analyzer.fields.catalog import sql_string
from analyzer.output import Alert, OutputField, OutputFormat, build_alert

MATCH_FIRST = "first"
MATCH_ALL = "all"
MATCH_MODES = (MATCH_FIRST, MATCH_ALL)

# Per-event columns carried into every alert (docs/contracts.md, section 3).
_ID_COLUMNS = (
    ("ts", "ts"),
    ("evt_num", "evt_num"),
    ("_host", "_host"),
    ("CAST(_proc_key AS VARCHAR)", "_proc_key"),
    ("pid", "pid"),
    ("CAST(container_id AS VARCHAR)", "container_id"),
    ("_segment", "_segment"),
)
_EVENT_ORDER = "ts, _host, evt_num"
_HITS = "_hunt_hits"  # the matched rows of a scan by parts, before they are put in event order


@dataclass(frozen=True)
class HuntRule:
    """A compiled, supported rule ready to run."""

    name: str
    condition_sql: str  # a boolean over the events view, run where NULL means false (CASE WHEN)
    evttypes: frozenset[str] | None  # None: the condition does not restrict evt.type
    priority: str  # Falco's spelling (Priority.falco_name)
    output: OutputFormat
    tags: tuple[str, ...] = ()
    source: str = "syscall"
    desc: str = ""
    # Implied by the condition and reading event fields only (analyzer.sql.prefilter);
    # None: the evt.type set is the rule's only prefilter.
    prefilter_sql: str | None = None


@dataclass(frozen=True)
class UnsupportedRule:
    """A rule that cannot run on a capture, and why: never silently skipped."""

    rule: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.rule}{where}: {self.reason}"


@dataclass(frozen=True)
class Scan:
    """The single query, and how to read its rows back into alerts."""

    sql: str
    rules: tuple[HuntRule, ...]
    match: str
    columns: dict[str, str]  # output field key -> result column
    relation: str = "events"


def _guarded(rule: HuntRule, condition: str | None = None) -> str:
    return _typed(rule.evttypes, rule.condition_sql if condition is None else condition)


def _typed(evttypes: frozenset[str] | None, condition: str) -> str:
    if not evttypes:
        return f"({condition})"
    types = ", ".join(sql_string(t) for t in sorted(evttypes))
    return f'("evt.type" IN ({types}) AND ({condition}))'


def scan_prefilter(rules: Sequence[HuntRule]) -> str | None:
    """What an event must pass to fire any rule: one of the rules' evt.type
    sets (a filter the Parquet scan applies itself), and one rule's event
    prefilter, which DuckDB pushes below the process-state joins so that
    only the few candidate events are joined and see the full conditions.
    Rules with the same evt.type set share one test of it, and identical
    prefilters run once."""
    if any(not rule.evttypes and not rule.prefilter_sql for rule in rules):
        return None
    terms = []
    if all(rule.evttypes for rule in rules):
        types = sorted(set().union(*(rule.evttypes or () for rule in rules)))
        terms.append('"evt.type" IN (' + ", ".join(sql_string(t) for t in types) + ")")
    if any(rule.prefilter_sql for rule in rules):
        groups: dict[frozenset[str] | None, list[str | None]] = {}
        for rule in rules:
            group = groups.setdefault(rule.evttypes or None, [])
            if rule.prefilter_sql not in group:
                group.append(rule.prefilter_sql)
        terms.append("(" + "\n    OR ".join(
            _typed(types, "true" if None in group else " OR ".join(f"({p})" for p in group))
            for types, group in groups.items()
        ) + ")")
    return " AND ".join(terms)


def build_scan(
    rules: Sequence[HuntRule],
    *,
    match: str = MATCH_FIRST,
    field_sql: Callable[[OutputField], str | None],
    relation: str = "events",
) -> Scan:
    """One SELECT over ``relation`` that yields the matched events only.

    ``field_sql`` maps an output field to its SQL over the events view, or
    None when the capture cannot supply it (rendered ``<NA>``, as Falco does
    for a value it does not have).
    """
    if match not in MATCH_MODES:
        raise TraceError(f"--match must be one of {', '.join(MATCH_MODES)}, not {match!r}")
    if not rules:
        raise TraceError("no rule to run")
    if match == MATCH_FIRST:
        branches = "\n    ".join(f"WHEN {_guarded(rule)} THEN {i}" for i, rule in enumerate(rules))
        hit = f"CASE\n    {branches}\n  END"
        has_hit = "_hit IS NOT NULL"
    else:
        cases = ",\n    ".join(f"CASE WHEN {_guarded(rule)} THEN {i} END" for i, rule in enumerate(rules))
        hit = f"list_filter([\n    {cases}\n  ], lambda i: i IS NOT NULL)"
        has_hit = "len(_hit) > 0"

    prefilter = scan_prefilter(rules)

    columns: dict[str, str] = {}
    field_exprs: list[str] = []
    for rule in rules:
        for out_field in rule.output.fields:
            if out_field.key in columns or out_field.is_clock:
                continue
            alias = f"_f{len(columns)}"
            columns[out_field.key] = alias
            field_exprs.append(f"{field_sql(out_field) or 'NULL'} AS {alias}")

    select = [f"{expr} AS {alias}" for expr, alias in _ID_COLUMNS] + field_exprs
    sql = (
        f"SELECT _hit, {', '.join(select)}\n"
        f"FROM (SELECT *, {hit} AS _hit FROM {relation}"
        + (f"\n  WHERE {prefilter}" if prefilter else "")
        + f")\nWHERE {has_hit}\nORDER BY {_EVENT_ORDER}"
    )
    return Scan(sql, tuple(rules), match, columns, relation)


@dataclass
class Hunt:
    """Runs a Scan and turns its rows into alerts, counting hits per rule.

    execute() does the scan (the long part: callers show progress around
    it); alerts() then streams the matched events in event order.
    `parts`: the rows of the scan's relation as several queries (a capture's
    segment ranges, CaptureSet.event_ranges): the relation is each in turn,
    so a scan holds one part's joins at a time; none: the relation as it is.
    """

    con: duckdb.DuckDBPyConnection
    scan: Scan
    utc_offset: int
    batch_rows: int = 4096
    parts: Sequence[str] = ()
    hits: Counter[str] = field(default_factory=Counter)
    _batches: Iterator[pa.RecordBatch] | None = None

    def execute(self) -> None:
        try:
            reader = self.con.sql(self._hits_sql()).to_arrow_reader(self.batch_rows)
            first = reader.read_next_batch()
        except StopIteration:
            self._batches = iter(())
            return
        except duckdb.Error as exc:
            raise TraceError(f"the hunt query failed: {exc}") from exc
        self._batches = itertools.chain([first], reader)

    def _hits_sql(self) -> str:
        """The scan; over `parts`, each part's hits gathered first (few rows), then put in event
        order: the parts of several captures interleave in time."""
        if not self.parts:
            return self.scan.sql
        for index, rows in enumerate(self.parts):
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {self.scan.relation} AS {rows}")
            into = f"CREATE OR REPLACE TEMP TABLE {_HITS} AS" if index == 0 else f"INSERT INTO {_HITS}"
            self.con.execute(f"{into} {self.scan.sql}")
        return f"SELECT * FROM {_HITS} ORDER BY {_EVENT_ORDER}"

    def alerts(self) -> Iterator[Alert]:
        if self._batches is None:
            self.execute()
        for batch in self._batches:  # type: ignore[union-attr]
            for row in batch.to_pylist():
                hit = row["_hit"]
                for index in [hit] if self.scan.match == MATCH_FIRST else hit:
                    yield self._alert(self.scan.rules[index], row)

    def _alert(self, rule: HuntRule, row: dict[str, object]) -> Alert:
        self.hits[rule.name] += 1
        values = {key: row[alias] for key, alias in self.scan.columns.items()}
        return build_alert(
            rule=rule.name,
            priority=rule.priority,
            source=rule.source,
            tags=rule.tags,
            output=rule.output,
            values=values,
            ts_ns=row["ts"],  # type: ignore[arg-type]
            hostname=row["_host"] or "",
            utc_offset=self.utc_offset,
            evt_num=row["evt_num"],
            proc_key=row["_proc_key"],
            pid=row["pid"],
            container_id=row["container_id"],
            segment=row["_segment"],
        )


@dataclass(frozen=True)
class BindCheck:
    """What DuckDB accepted: the rules to run, each output field's SQL (None:
    rendered <NA>), and everything set aside, with DuckDB's reason."""

    rules: list[HuntRule]
    field_sql: dict[str, str | None]
    rejected: list[UnsupportedRule]
    field_gaps: list[UnsupportedRule]

    def sql_for(self, out_field: OutputField) -> str | None:
        return self.field_sql.get(out_field.key)


def bind_check(
    con: duckdb.DuckDBPyConnection,
    rules: Sequence[HuntRule],
    field_sql: Callable[[OutputField], str | None],
    relation: str = "events",
) -> BindCheck:
    """Bind every rule condition and output field before the scan, so one bad
    rule or field cannot sink the scan of all the others.

    Each expression binds against an empty table with the relation's columns:
    binding against the view itself would re-plan the whole view each time.
    """
    probe = "_hunt_bind_probe"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {probe} AS SELECT * FROM {relation} LIMIT 0")

    def refusal(expr: str) -> str | None:
        try:
            con.execute(f"SELECT {expr} FROM {probe}").fetchall()
        except duckdb.Error as exc:
            return "DuckDB rejected the compiled SQL: " + str(exc).split("\n", 1)[0]
        return None

    good, rejected, fields, gaps = [], [], {}, []
    try:
        for rule in rules:
            reason = refusal(_guarded(rule)) or (refusal(_guarded(rule, rule.prefilter_sql)) if rule.prefilter_sql else None)
            if reason:
                rejected.append(UnsupportedRule(rule.name, None, reason))
                continue
            good.append(rule)
            for out_field in rule.output.fields:
                if out_field.key in fields or out_field.is_clock:
                    continue
                sql = field_sql(out_field)
                reason = refusal(sql) if sql else None
                if reason:
                    gaps.append(UnsupportedRule(rule.name, out_field.key, reason))
                fields[out_field.key] = None if reason else sql
    finally:
        con.execute(f"DROP TABLE IF EXISTS {probe}")
    return BindCheck(good, fields, rejected, gaps)


def run_hunt(con: duckdb.DuckDBPyConnection, scan: Scan, *, utc_offset: int, parts: Sequence[str] = ()) -> Hunt:
    return Hunt(con, scan, utc_offset, parts=parts)
