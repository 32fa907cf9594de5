"""The rule scan of each batch, over a small plain table instead of the `events` view.

Planning a query costs the follower more than running it: DuckDB binds and
optimizes the rules' wide CASE over the whole `events` view (dozens of joins,
~140 columns) for every batch, whatever the batch's size. So each batch's
candidate events (those whose evt.type some rule can match; in big batches,
those that pass the rules' event-level prefilters) are copied, with only the
columns the compiled rules and outputs read, into one temp table created
once; the scan then reads that table with the optimizer off (a
single-table scan has nothing to gain from it, and optimizing the CASE was
most of its cost). Each rule subset's scan is a statement prepared once and
executed per batch: the rows table never changes shape, and the hunt
engine's lazy `con.sql(...)` would bind the CASE twice per batch. A batch
without a candidate event is not scanned at all, and a batch is scanned with
only the rules its candidates may fire (analyzer.follow.candidates): the
scan and the copy bind in proportion to the rules and the columns they read;
the copy renders event parameters of those rules' syscalls only.

The scan's SQL and its output are the hunt engine's own (analyzer.hunt.engine),
so alerts are exactly those of an offline hunt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

import duckdb

from analyzer.errors import TraceError
from analyzer.fields.catalog import sql_string
from analyzer.follow.state import UNOPTIMIZED_MAX_ROWS, optimizer_off
from analyzer.hunt.engine import BindCheck, HuntRule, Scan, bind_check, build_scan, run_hunt, scan_prefilter
from analyzer.hunt.plan import field_sql
from analyzer.output import Alert

ROWS_TABLE = "follow_rows"
PREFILTER_MIN_ROWS = 5_000  # batches this big copy only what passes the rules' prefilters
_MAX_PLANS = 256  # scans of rule subsets kept (a few distinct subsets recur)
_IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|\b([A-Za-z_][A-Za-z0-9_.]*)\b')
_ARG_KEY = re.compile(r"\"_evt_args\"\['((?:[^']|'')*)'\]")


def candidate_types(rules: Sequence[HuntRule]) -> frozenset[str] | None:
    """The evt.types any rule can match; None when some rule is not restricted by evt.type."""
    if any(not rule.evttypes for rule in rules):
        return None
    return frozenset().union(*(rule.evttypes or () for rule in rules))


def identifiers(sql: str) -> set[str]:
    """Every name `sql` may use, quoted or bare (over-inclusion: words in strings count too)."""
    return {quoted.replace('""', '"') if quoted else bare for quoted, bare in _IDENTIFIER.findall(sql)}


def arg_keys(sql: str) -> list[str]:
    """The `_evt_args` keys `sql` looks up by literal (`"_evt_args"['name']`), in order, repeated."""
    return [key.replace("''", "'") for key in _ARG_KEY.findall(sql)]


def literal_arg_keys(sql: str) -> frozenset[str] | None:
    """The `_evt_args` keys `sql` reads, when it reads the map only by literal keys; else None."""
    keys = arg_keys(sql)
    return frozenset(keys) if sql.count('"_evt_args"') == len(keys) else None


def columns_read(sql: str, available: Sequence[str]) -> list[str]:
    """The columns of `available` that `sql` names (over-inclusion is harmless)."""
    named = identifiers(sql)
    return [column for column in available if column in named]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Plan:
    """What scanning a batch with a set of rules takes: the scan over the rows table, and the copy
    that fills it (the columns those rules read, the filters an event must pass to be copied)."""

    scan: Scan
    select: str  # the copied columns, quoted, in the rows table's order
    columns: tuple[str, ...]  # what the copy reads of the events query
    arg_keys: frozenset[str] | None  # of `_evt_args`, the keys read (None: the whole map)
    arg_syscalls: frozenset[str] | None  # the syscalls whose parameters are rendered (None: all)
    where_small: str
    where_big: str


class BatchScan:
    """The rules, once per batch, over the batch's candidate events.

    Built on the first batch (binding needs an `events` query to bind against);
    the rows table then lives in the connection's temp schema for the whole
    follow, emptied and refilled per batch. A batch is scanned with only the
    rules its candidates may fire (analyzer.follow.candidates): binding the
    scan and the copy costs in proportion to the rules and columns they hold,
    and a probe-sized batch needs a few of them. A rule left out cannot fire
    on any of the batch's events, so the alerts are the same.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, rules: Sequence[HuntRule], *, match: str, events_sql: str):
        events = f"({events_sql}) events"
        checked = bind_check(con, rules, field_sql, relation=events)
        if not checked.rules:
            raise TraceError("none of the selected rules can run on a capture")
        self.checked: BindCheck = checked
        self._match = match
        self._available = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {events}").fetchall()]
        # each runnable rule's position in `rules` (the candidate test's numbering)
        position = {id(rule): index for index, rule in enumerate(rules)}
        self._positions = tuple(position[id(rule)] for rule in checked.rules)
        self._full = self._plan(checked.rules)
        self._plans: dict[frozenset[int], _Plan] = {frozenset(self._positions): self._full}
        self._prepared: dict[str, str] = {}  # a scan's SQL -> the name of its prepared statement
        self.columns, self.arg_keys = self._full.columns, self._full.arg_keys
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ROWS_TABLE} AS SELECT {self._full.select} FROM {events} LIMIT 0")
        try:
            con.execute(f"EXPLAIN {self._full.scan.sql}").fetchall()
        except duckdb.Error as exc:  # a column the compiled SQL reads in a way columns_read missed
            raise TraceError(f"the follower's batch table lacks a column the rules read: {exc}") from exc

    def _plan(self, rules: Sequence[HuntRule]) -> _Plan:
        over_view = build_scan(rules, match=self._match, field_sql=self.checked.sql_for)
        copied = columns_read(over_view.sql, self._available)
        select = ", ".join(_quote(column) for column in copied)
        # What a copied event must pass: its evt.type in some rule's set; on
        # big batches also the rules' event-level prefilters (under load most
        # opens are not of a sensitive file), which cost ~0.1 s more to plan
        # than they save on a small batch.
        types = candidate_types(rules)
        prefilter = scan_prefilter(rules)
        where_small = "" if types is None else ' WHERE "evt.type" IN (' + ", ".join(sql_string(t) for t in sorted(types)) + ")"
        where_big = "" if prefilter is None else f" WHERE {prefilter}"
        # What the copy reads of the events query: binding all of it costs a
        # small batch ~0.2 s (analyzer.state.views.events_sql narrows it).
        columns = tuple(columns_read(" ".join((select, where_small, where_big)), self._available))
        # Of `_evt_args`, only the keys the rules and filters look up: its
        # renderers for every syscall were most of the copy's binding. The
        # whole map when something reads it otherwise (evt.arg[N], evt.args).
        arg_keys = None
        if "_evt_args" in columns and "evt.args" not in columns:
            arg_keys = literal_arg_keys(" ".join((over_view.sql, where_small, where_big)))
        scan = build_scan(rules, match=self._match, field_sql=self.checked.sql_for, relation=ROWS_TABLE)
        # Both filters keep only events of the rules' types (scan_prefilter starts with that test):
        # only their syscalls' parameters are rendered, each renderer costing binding time.
        return _Plan(scan, select, columns, arg_keys, types, where_small, where_big)

    def _plan_for(self, fired: Collection[int] | None) -> _Plan | None:
        """The plan of the runnable rules among `fired` (positions in the rules given; None: all);
        None when there is none."""
        if fired is None:
            return self._full
        key = frozenset(position for position in self._positions if position in fired)
        if not key:
            return None
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans = {frozenset(self._positions): self._full}
            plan = self._plans[key] = self._plan(
                [rule for rule, position in zip(self.checked.rules, self._positions) if position in key])
        return plan

    def alerts(self, con: duckdb.DuckDBPyConnection,
               events_sql: Callable[[Collection[str], Collection[str] | None, Collection[str] | None], str],
               rows: int, *, utc_offset: int, fired: Collection[int] | None = None) -> list[Alert]:
        """The alerts of the batch of `rows` rows in event order. `events_sql(columns, arg_keys,
        arg_syscalls)`: the events view's query over the batch, narrowed (analyzer.state.views.events_sql);
        `fired`: the rules (positions in the rules given) that some event of the batch may fire, None: any."""
        plan = self._plan_for(fired)
        if plan is None:
            return []
        where = plan.where_big if rows >= PREFILTER_MIN_ROWS else plan.where_small
        con.execute(f"DELETE FROM {ROWS_TABLE}")
        with optimizer_off(con, rows < UNOPTIMIZED_MAX_ROWS):  # as the batch was built
            con.execute(f"INSERT INTO {ROWS_TABLE} ({plan.select}) SELECT {plan.select} "
                        f"FROM ({events_sql(plan.columns, plan.arg_keys, plan.arg_syscalls)}) events{where}")
        with optimizer_off(con):
            return list(run_hunt(con, self._prepared_scan(con, plan.scan), utc_offset=utc_offset).alerts())

    def _prepared_scan(self, con: duckdb.DuckDBPyConnection, scan: Scan) -> Scan:
        """`scan` run as a statement prepared once (with the optimizer off, as it runs). DuckDB binds a
        prepared statement again by itself when the catalog it read changed, so this is always the
        answer of `scan.sql`."""
        name = self._prepared.get(scan.sql)
        if name is None:
            if len(self._prepared) >= _MAX_PLANS:
                for stale in self._prepared.values():
                    con.execute(f"DEALLOCATE {stale}")
                self._prepared.clear()
            name = self._prepared[scan.sql] = f"follow_scan_{len(self._prepared)}"
            con.execute(f"PREPARE {name} AS {scan.sql}")
        return replace(scan, sql=f"EXECUTE {name}")
