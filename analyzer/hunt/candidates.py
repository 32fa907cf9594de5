"""Which raw rows of a capture a hunt resolves: those that can fire a rule.

The same test as the follower's (analyzer.follow.candidates): an event
whose evt.type no rule lists cannot fire; a successful open of an absolute
path carries every event-level field its prefilters read, so the rules'
prefilters (`scan_prefilter`) decide it on the raw row (of a prefilter that
also reads other fields, the terms of its top-level AND that do not); any
other event of a listed type is a candidate. Here it runs as one SQL filter over the
capture's Parquet rows (analyzer.state.candidates keys and resolves what
it keeps), so a busy host's opens of ordinary files never reach the state.
`hunt_source` takes that path only when it leaves few rows to resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from analyzer.fields.catalog import sql_string
from analyzer.follow.candidates import EXACT_ROW, SIGNATURE_COLUMNS, exact_fields_sql, exact_prefilter
from analyzer.follow.scan import arg_keys, candidate_types, columns_read, literal_arg_keys
from analyzer.hunt.engine import HuntRule, build_scan, scan_prefilter
from analyzer.output import OutputField
from analyzer.state import CaptureSet
from analyzer.state.candidates import CandidateSelect


def candidate_select(rules: Sequence[HuntRule]) -> CandidateSelect:
    """raw rows SQL -> the rows among them that may fire one of `rules` (same columns)."""
    usable = [replace(rule, prefilter_sql=exact_prefilter(rule.prefilter_sql)) for rule in rules]
    types = candidate_types(rules)
    prefilter = scan_prefilter(usable)
    passes = "true" if prefilter is None else f"coalesce({prefilter}, false)"
    keys = sorted({key for rule in usable for key in arg_keys(rule.prefilter_sql or "")})
    typed = "true" if types is None else "x.syscall IN (" + ", ".join(sql_string(t) for t in sorted(types)) + ")"
    signature = ", ".join(f"x.{column}" for column in SIGNATURE_COLUMNS)
    same = " AND ".join(f"p.{column} IS NOT DISTINCT FROM x.{column}" for column in SIGNATURE_COLUMNS)

    def select(raw: str) -> str:
        # A busy host opens the same files again and again: the prefilters run once per
        # signature (the raw columns the exact fields are computed from), as the follower does.
        signatures = f"(SELECT DISTINCT 'evt' AS kind, {signature} FROM ({raw}) x WHERE {typed} AND {EXACT_ROW})"
        passing = (f"SELECT {signature.replace('x.', 'events.')} FROM ({exact_fields_sql(signatures, keys)}) events "
                   f"WHERE {passes}")
        return (f"SELECT x.* FROM ({raw}) x WHERE {typed} AND NOT coalesce({EXACT_ROW}, false)\n"
                f"UNION ALL\n"
                f"SELECT x.* FROM ({raw}) x SEMI JOIN ({passing}) p ON {same} WHERE {typed} AND {EXACT_ROW}")

    return select


# The candidate path resolves and scans an event ~2-3x dearer than the `events`
# view's scan does (measured, docs/benchmarks.md): it pays only when the raw test
# leaves at most this share of the rows that the rules' evt.type sets keep.
CANDIDATE_SHARE = 1 / 3


@dataclass(frozen=True)
class HuntSource:
    relation: str  # what the scan reads: the candidates' rows or the `events` rows (both narrowed)
    typed: int  # raw event rows of the rules' evt.types
    candidates: int  # of those, the ones the raw test keeps
    alone: bool  # the candidates resolved alone (else `relation` is over every event)
    parts: tuple[str, ...] = ()  # over every event: its rows a segment range at a time (Hunt.parts)


def scan_reads(capture_set: CaptureSet, rules: Sequence[HuntRule],
               field_sql: Callable[[OutputField], str | None]) -> tuple[list[str], frozenset[str] | None]:
    """The `events` columns the scan of `rules` reads, and of `_evt_args` the keys it looks up
    (None: it reads the map otherwise, so every parameter)."""
    sql = build_scan(rules, field_sql=field_sql).sql
    available = [row[0] for row in capture_set.con.execute("DESCRIBE SELECT * FROM events").fetchall()]
    columns = columns_read(sql, available)
    return columns, (literal_arg_keys(sql) if "_evt_args" in columns else frozenset())


def hunt_source(capture_set: CaptureSet, rules: Sequence[HuntRule], field_sql: Callable[[OutputField], str | None],
                name: str = "hunt_events") -> HuntSource:
    """The relation to scan for `rules`: their candidate events, resolved alone, when the raw
    rows rule out most of the rows of their evt.types; else the `events` rows, a segment range
    at a time (`parts`; the scan pushes the evt.type test into the Parquet read and the
    prefilters below the joins). Either holds only the columns and `_evt_args` keys the scan
    reads (`field_sql`: the output fields' SQL)."""
    columns, keys = scan_reads(capture_set, rules, field_sql)
    select = candidate_select(rules)
    types = candidate_types(rules)
    typed_sql = "true" if types is None else "syscall IN (" + ", ".join(sql_string(t) for t in sorted(types)) + ")"
    typed = capture_set.count_raw(lambda raw: f"SELECT * FROM ({raw}) WHERE {typed_sql}")
    candidates = capture_set.count_raw(select)
    if candidates > typed * CANDIDATE_SHARE:
        return HuntSource(name, typed, candidates, False, tuple(capture_set.event_ranges(columns, keys)))
    relation = capture_set.candidate_view(name, columns, keys)
    capture_set.fill_candidates(select)
    return HuntSource(relation, typed, candidates, True)
