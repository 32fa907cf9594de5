"""Captures opened in DuckDB with libsinsp's state rebuilt: the analyzer's views.

Public API (used by `trace hunt`, `trace query` and `trace report`)::

    from analyzer.state import open_captures

    with open_captures(["cap/", "other-host/seg-*.parquet"], since=ns, until=ns) as cs:
        cs.con.execute('SELECT "proc.name", count(*) FROM events GROUP BY 1').fetchall()
        cs.hosts       # hostnames found in the segments
        cs.warnings    # segments skipped (corrupt, truncated, unknown schema)
        cs.captures    # the Capture objects (directory, segments)

    # `events` narrowed to what a scan reads, as one query per segment range, scanned in turn
    cs.event_ranges(columns, arg_keys)
    # a hunt resolves its candidate events only (analyzer/state/candidates.py)
    cs.count_raw(select)               # how many raw event rows select(raw rows SQL) picks
    cs.candidate_view("hunt_events", columns, arg_keys)  # those columns, over no row yet
    cs.fill_candidates(select)         # select(raw rows SQL) -> the candidate rows SQL

`open_captures(paths, since=None, until=None, *, con=None) -> CaptureSet`

* `paths`: capture directories, manifest.json files, Parquet files or globs;
  files are grouped by directory, one directory being one capture;
* `since`/`until`: ns since the epoch, `since <= ts < until` on `events`
  (state is always rebuilt from the whole capture: a process born before
  `since` still has its ancestry). `parse_time` turns CLI text into ns;
* raises TraceError for a missing path or an empty capture; corrupt
  segments are skipped and listed in `.warnings`.

The views (`events`, `processes`, `fds`) are the contract of
docs/contracts.md section 2. Each capture's state is materialized once in
`<capture>/.trace-cache/` (see analyzer/state/cache.py) and attached
read-only; the events themselves are read lazily from the segments.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from analyzer.errors import TraceError
from analyzer.state.cache import configure, ensure_state
from analyzer.state.candidates import CandidateSelect, candidate_events_sql, count_raw, fill_candidates
from analyzer.state.inputs import Capture, resolve_captures
from analyzer.state.ranges import RANGE_EVENTS, split_ranges
from analyzer.state.views import CaptureSource, events_sql, fds_sql, processes_sql

__all__ = ["CaptureSet", "open_captures", "parse_time"]


@dataclass
class CaptureSet:
    con: duckdb.DuckDBPyConnection
    captures: list[Capture]
    hosts: list[str]
    warnings: list[str] = field(default_factory=list)
    _tempdir: tempfile.TemporaryDirectory | None = None
    sources: list[CaptureSource] = field(default_factory=list)
    since: int | None = None
    until: int | None = None

    def event_ranges(self, columns: Collection[str] | None, arg_keys: Collection[str] | None,
                     range_events: int = RANGE_EVENTS) -> list[str]:
        """The `events` rows with only `columns` (None: all) and, of `_evt_args`, only the
        `arg_keys` parameters (None: all), so that a scan reads no more, as one query per run of
        consecutive segments of about `range_events` events, each joined only to the state rows
        its events reach (events_sql `scoped`): scanned one after the other, they need memory
        for a run, not for the capture. A capture of one run reads its state unscoped: the
        scoping semi-joins cost the scan ~1.35x its CPU (10 M events), and one run reaches every row."""
        parts = []
        for capture, src in zip(self.captures, self.sources):
            readable = tuple(s for s in capture.segments if s.path in src.paths)
            runs = split_ranges(readable, range_events)
            for segments in runs:
                part = replace(src, paths=tuple(s.path for s in segments), hosts=tuple(s.host for s in segments))
                parts.append(events_sql(part, self.since, self.until, columns, arg_keys, scoped=len(runs) > 1))
        return parts

    def candidate_view(self, name: str, columns: Collection[str] | None = None,
                       arg_keys: Collection[str] | None = None) -> str:
        """A view `name` with the `events` view's columns (as `event_ranges` narrows them) over
        the keyed rows that `fill_candidates` adds (none yet): rules and fields bind against it."""
        selects = [candidate_events_sql(self.con, src, i, self.since, self.until, columns, arg_keys)
                   for i, src in enumerate(self.sources)]
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS " + " UNION ALL ".join(selects))
        return name

    def count_raw(self, select: CandidateSelect) -> int:
        """How many raw event rows `select` picks (no state read)."""
        return sum(count_raw(self.con, src, self.since, self.until, select) for src in self.sources)

    def fill_candidates(self, select: CandidateSelect | None) -> int:
        """Resolve the events that `select` picks from the raw rows (every event for None)
        into `candidate_view`'s view; returns how many."""
        return sum(fill_candidates(self.con, src, i, self.since, self.until, select)
                   for i, src in enumerate(self.sources))

    def close(self) -> None:
        self.con.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> CaptureSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_captures(
    paths: list[str] | tuple[str, ...],
    since: int | None = None,
    until: int | None = None,
) -> CaptureSet:
    warnings: list[str] = []
    captures = resolve_captures([str(p) for p in paths], warnings)
    spill = tempfile.TemporaryDirectory(prefix="trace-duckdb-")
    con = duckdb.connect()
    configure(con, Path(spill.name))
    usable: list[Capture] = []
    sources: list[CaptureSource] = []
    parts: dict[str, list[str]] = {"events": [], "processes": [], "fds": []}
    for index, capture in enumerate(captures):
        db_path, build_warnings = ensure_state(capture)
        warnings.extend(build_warnings)
        alias = f"cap{index}"
        con.execute(f"ATTACH '{_quote(str(db_path))}' AS {alias} (READ_ONLY)")
        good = {row[0] for row in con.execute(f"SELECT name FROM {alias}.segments").fetchall()}
        readable = [s for s in capture.segments if s.name in good]
        source = CaptureSource(alias, tuple(s.path for s in readable), tuple(s.host for s in readable),
                               capture.id_prefix)
        if not source.paths:
            continue
        usable.append(capture)
        sources.append(source)
        for view, build in (("events", lambda s: events_sql(s, since, until)), ("processes", processes_sql), ("fds", fds_sql)):
            name = f"_{view}_{index}"
            con.execute(f"CREATE TEMP VIEW {name} AS {build(source)}")
            parts[view].append(f"SELECT * FROM {name}")
    if not usable:
        con.close()
        spill.cleanup()
        raise TraceError("no readable segment in " + ", ".join(map(str, paths)) + ": " + "; ".join(warnings))
    for view, selects in parts.items():
        con.execute(f"CREATE TEMP VIEW {view} AS " + " UNION ALL ".join(selects))
    hosts = sorted({h for c in usable for h in c.hosts})
    return CaptureSet(con, usable, hosts, warnings, spill, sources, since, until)


def _quote(text: str) -> str:
    return text.replace("'", "''")


_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def parse_time(text: str) -> int:
    """ns since the epoch from ISO-8601 (naive = UTC), epoch seconds, or epoch ns (>= 1e15)."""
    text = text.strip()
    if _NUMBER.match(text):
        value = float(text)
        return int(text) if value >= 1e15 and "." not in text else int(value * 1_000_000_000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TraceError(f"cannot read time {text!r}: use ISO-8601 (2026-01-31T12:00:00Z) or epoch seconds") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
