"""The follow loop: new rows -> candidates -> state carried forward -> one rule scan -> sinks -> checkpoint.

Each chunk of new rows (a poll of the tail, or a row group of a finalized
segment) is first tested, raw, for events a rule could fire on
(analyzer.follow.candidates). Rows without one wait for the next chunk that
has one. Before a build, open/close pairs that leave the state as they found
it are dropped (analyzer.follow.compact); the rest is resolved by
analyzer/state's builder starting from the state the previous build ended
with (analyzer.follow.state), then scanned once with every rule by the hunt
engine's own query, over a plain table of the candidate events
(analyzer.follow.scan). The checkpoint advances only after every alert of
the rows reached the sinks.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.follow.checkpoint import Checkpoint
from analyzer.follow.candidates import Candidates, CandidateTest
from analyzer.follow.compact import droppable_pairs
from analyzer.follow.scan import BatchScan
from analyzer.follow.sinks import JsonlSink
from analyzer.follow.source import CaptureSource, Chunk
from analyzer.follow.state import (
    BatchState,
    SegmentInfo,
    StateCarry,
    events_only,
    merge_carry,
    open_connection,
    split_carry,
    touched_pids,
)
from analyzer.hunt.engine import HuntRule, UnsupportedRule
from analyzer.output import Alert, utc_offset_now
from analyzer.state.cache import cache_dir_for
from analyzer.state.inputs import Capture
from capture import schema

DEFAULT_INTERVAL_S = 0.5
# Rows no rule can fire on wait for the next chunk that needs a scan, up to this
# many: a build's fixed cost is paid once for them, its per-row cost stays bounded.
DEFER_MAX_ROWS = 50_000
WORKDIR_PREFIX = "follow-"


def _work_root(capture_dir: Path) -> Path:
    """Where batches are staged: the capture's private cache dir; leftovers of dead followers go."""
    root = cache_dir_for(Capture(capture_dir, ()))
    for stale in root.glob(f"{WORKDIR_PREFIX}*"):
        pid = stale.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    return root


@dataclass
class FollowResult:
    hits: Counter[str] = field(default_factory=Counter)
    rejected: list[UnsupportedRule] = field(default_factory=list)
    field_gaps: list[UnsupportedRule] = field(default_factory=list)
    chunks: int = 0  # batches resolved
    scanned: int = 0  # of them, scanned by the rules
    events: int = 0  # events handed on by the source
    dropped: int = 0  # of them, left out of builds as neutral open/close pairs
    cpu_s: Counter[str] = field(default_factory=Counter)  # this thread's CPU seconds per phase

    def summary(self) -> str:
        """One line on where the follower's CPU went (the bench reads it)."""
        phases = " ".join(f"{phase}_cpu_s={self.cpu_s[phase]:.3f}" for phase in _PHASES)
        return (f"follow stats: batches={self.chunks} scanned={self.scanned} events={self.events} "
                f"dropped={self.dropped} {phases}")


_PHASES = ("poll", "candidates", "resolve", "scan", "carry")


class _Phase:
    """Adds the CPU time (time.thread_time: DuckDB runs on this thread, threads=1) of a block to a phase."""

    def __init__(self, result: FollowResult, phase: str):
        self._result, self._phase = result, phase

    def __enter__(self) -> None:
        self._start = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        self._result.cpu_s[self._phase] += time.thread_time() - self._start


@dataclass(frozen=True)
class _Batch:
    """Rows of one segment on their way to a build, with their candidate mask, the rules they may
    fire and their event range."""

    segment: SegmentInfo
    rows: pa.Table
    candidate: pa.ChunkedArray
    fired: frozenset[int]  # positions of the rules some row may fire (analyzer.follow.candidates)
    first: int | None  # evt_num range of the events handed on (compaction may drop some)
    last: int | None

    @classmethod
    def of(cls, chunk: Chunk, candidates: Candidates) -> _Batch:
        nums = chunk.event_nums
        if len(nums) == 0:
            return cls(chunk.segment, chunk.rows, candidates.mask, candidates.rules, None, None)
        return cls(chunk.segment, chunk.rows, candidates.mask, candidates.rules, pc.min(nums).as_py(),
                   pc.max(nums).as_py())

    @property
    def has_candidates(self) -> bool:
        return bool(pc.any(self.candidate).as_py())

    @property
    def has_events(self) -> bool:
        return bool(pc.any(pc.equal(self.rows["kind"].cast(pa.string()), schema.KIND_EVENT)).as_py())

    def followed_by(self, later: _Batch) -> _Batch:
        return _Batch(
            self.segment,
            pa.concat_tables([self.rows, later.rows]),
            pa.chunked_array(self.candidate.chunks + later.candidate.chunks, pa.bool_()),
            self.fired | later.fired,
            self.first if self.first is not None else later.first,
            later.last if later.last is not None else self.last,
        )

    def compacted(self, *, more_may_follow: bool) -> _Batch:
        """Without its neutral open/close pairs (analyzer.follow.compact); whole if that would leave a
        segment's snapshot rows without any event (the builder orders a snapshot at its first event)."""
        keep = pa.array(~droppable_pairs(self.rows, self.candidate, more_may_follow=more_may_follow))
        smaller = replace(self, rows=self.rows.filter(keep), candidate=self.candidate.filter(keep))
        if not smaller.has_events and not events_only(smaller.rows):
            return self
        return smaller


class Follower:
    def __init__(
        self,
        capture_dir: Path,
        rules: Sequence[HuntRule],
        *,
        match: str,
        checkpoint: Checkpoint,
        sinks: Sequence,
        jsonl: JsonlSink | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        warn: Callable[[str], None] | None = None,
    ):
        self.capture_dir = Path(capture_dir)
        self._rules = tuple(rules)
        self._match = match
        self.checkpoint = checkpoint
        self._sinks = tuple(sinks)
        self._jsonl = jsonl
        self._interval_s = interval_s
        self._warn = warn or (lambda message: print(f"trace: warning: {message}", file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._utc_offset = utc_offset_now()
        self._scan: BatchScan | None = None
        self._candidates = CandidateTest(self._rules)  # before binding: a superset of what the scan runs
        self._con: duckdb.DuckDBPyConnection | None = None
        self._carry: StateCarry | None = None
        self._pending: _Batch | None = None  # rows waiting: a snapshot without events yet, or deferred events
        self._resume_after = checkpoint.last_evt_num
        self._replayed = jsonl.replayed(checkpoint.outputs.get(jsonl.key)) if jsonl is not None else None
        self.result = FollowResult()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> FollowResult:
        source = CaptureSource(self.capture_dir, self._warn)
        with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=_work_root(self.capture_dir)) as workdir:
            try:
                while not self._stop.is_set():
                    if not self.step(source, Path(workdir)):
                        self._stop.wait(self._interval_s)
            finally:
                source.close()
                if self._con is not None:
                    self._con.close()
                    self._con = None
        return self.result

    def step(self, source: CaptureSource, workdir: Path) -> bool:
        """Process what is new; False when nothing was."""
        with _Phase(self.result, "poll"):
            chunks = source.poll()
        for chunk in chunks:
            self.result.events += len(chunk.event_nums)
            if self._stop.is_set():
                break  # not checkpointed: a restart reads it again
            self._process(chunk, workdir)
        return bool(chunks)

    def _process(self, chunk: Chunk, workdir: Path) -> None:
        if self._con is None:
            self._con = open_connection(workdir)
        with _Phase(self.result, "candidates"):
            batch = _Batch.of(chunk, self._candidates.test(self._con, chunk.rows))
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.segment == batch.segment:
                batch = pending.followed_by(batch)
            elif pending.last is not None:
                self._resolve(pending, workdir, scan=False)  # deferred events of the previous segment
            # else the pending rows were the snapshot of a segment without events:
            # the next segment's own snapshot supersedes it.
        if batch.last is None:
            self._pending = batch
            return
        scan = batch.last > self._resume_after and batch.has_candidates
        if not scan:
            # No rule can fire on these rows: resolving them can wait for the
            # next batch that needs a scan (one build instead of many, same
            # state); neutral open/close pairs go now, so what waits stays small.
            if batch.rows.num_rows >= DEFER_MAX_ROWS:
                with _Phase(self.result, "candidates"):
                    batch = self._compacted(batch, more_may_follow=True)
            if batch.rows.num_rows < DEFER_MAX_ROWS:
                self._pending = batch
                return
        self._resolve(batch, workdir, scan)

    def _resolve(self, batch: _Batch, workdir: Path, scan: bool) -> None:
        """Carry the state through `batch`, scanning it when `scan`; then checkpoint."""
        with _Phase(self.result, "candidates"):
            batch = self._compacted(batch, more_may_follow=False)
        assert batch.first is not None and batch.last is not None
        if batch.rows.num_rows:
            self._build(batch, workdir, scan)
        # else every row was part of a neutral pair: the state is what it was
        if batch.last > self.checkpoint.last_evt_num:
            self.checkpoint.last_evt_num = batch.last
            if self._jsonl is not None:
                self.checkpoint.outputs[self._jsonl.key] = self._jsonl.offset
            self.checkpoint.save()

    def _compacted(self, batch: _Batch, *, more_may_follow: bool) -> _Batch:
        smaller = batch.compacted(more_may_follow=more_may_follow)
        self.result.dropped += batch.rows.num_rows - smaller.rows.num_rows
        return smaller

    def _build(self, batch: _Batch, workdir: Path, scan: bool) -> None:
        assert self._con is not None and batch.first is not None
        warnings: list[str] = []
        with _Phase(self.result, "resolve"):
            carry, idle = self._carry, None
            if carry is not None and events_only(batch.rows):
                # only the processes the events touch are built (analyzer.follow.state)
                carry, idle = split_carry(carry, touched_pids(batch.rows))
            state = BatchState(self._con, workdir, self.capture_dir, batch.segment, batch.rows, batch.first, carry,
                               warnings)
        try:
            for warning in warnings:
                self._warn(warning)
            if scan:
                with _Phase(self.result, "scan"):
                    self._hunt(state, batch.fired)
                self.result.scanned += 1
            with _Phase(self.result, "carry"):
                built = state.carry()
                self._carry = built if idle is None else merge_carry(built, idle)
        finally:
            state.close()
        self.result.chunks += 1

    def _hunt(self, state: BatchState, fired: frozenset[int]) -> None:
        if self._scan is None:
            self._scan = BatchScan(state.con, self._rules, match=self._match, events_sql=state.events_sql())
            self.result.rejected, self.result.field_gaps = self._scan.checked.rejected, self._scan.checked.field_gaps
        for alert in self._scan.alerts(state.con, state.events_sql, state.rows, utc_offset=self._utc_offset, fired=fired):
            if alert.evt_num > self._resume_after:
                self._deliver(alert)

    def _deliver(self, alert: Alert) -> None:
        self.result.hits[alert.rule] += 1
        if self._replayed:
            line = alert.to_json()
            if line == self._replayed[0]:
                self._replayed.popleft()  # written before a crash, after the last checkpoint
                return
            self._warn(f"{self._jsonl.path} holds lines past the checkpoint that this replay does not produce; keeping them")
            self._replayed.clear()
        for sink in self._sinks:
            sink.emit(alert)
