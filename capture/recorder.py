"""The recorder's main loop: EventSource -> evt_num and container_id -> segments and tail.

The loop only polls, numbers and queues; the SegmentWriter runs on its own
thread (capture/background.py) so compression, fsync and snapshots never
keep it from draining the kernel ring.

evt_num is capture-wide: it continues from the manifest's `last_evt_num`
when a capture directory is reused. Stopping (SIGINT, SIGTERM, --duration,
--count) always finalizes the open segment. Drops are never silent: they go
to every segment's metadata and the manifest, a warning goes to stderr each
second in which more than `drop_warn_threshold` events were lost, and the
final summary line repeats the total.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa

from capture import schema
from capture.background import BackgroundWriter
from capture.containers import CgroupMap
from capture.segments import CaptureIdentity, DropCounts, RetentionPolicy, RotationPolicy, SegmentWriter
from capture.snapshot import take_snapshot

_EVT_NUM = schema.SCHEMA.get_field_index("evt_num")
_CONTAINER_ID = schema.SCHEMA.get_field_index("container_id")
STATUS_INTERVAL_S = 1.0
DRAIN_POLLS = 5


@dataclass(frozen=True)
class RecordOptions:
    directory: Path
    probe_config: object  # capture.probe.ProbeConfig
    rotation: RotationPolicy = RotationPolicy()
    retention: RetentionPolicy = RetentionPolicy()
    duration: float | None = None
    count: int | None = None
    with_env: bool = False
    tail: bool = True  # mirror the open segment into current.arrows (followers, crash recovery)
    status_line: bool = False
    drop_warn_threshold: int = 0  # warn when more than this many events are lost in a second
    poll_ms: int = 50


@dataclass
class RecordSummary:
    events: int = 0
    segments: list[str] = field(default_factory=list)
    drops: DropCounts = field(default_factory=DropCounts)
    seconds: float = 0.0


class Recorder:
    def __init__(self, options: RecordOptions, err: TextIO = sys.stderr):
        self.options = options
        self._err = err
        self._stop_reason: str | None = None

    def stop(self, reason: str = "stopped") -> None:
        self._stop_reason = reason

    def run(self) -> RecordSummary:
        options = self.options
        os.umask(0o077)
        cgroups = CgroupMap()
        source = None
        writer = SegmentWriter(
            options.directory,
            CaptureIdentity.of_this_host(boot_ns=0),  # stamped with the probe's clock below
            rotation=options.rotation,
            retention=options.retention,
            snapshot=lambda wall_ns: take_snapshot(wall_ns, cgroups, with_env=options.with_env),
            drops=lambda: DropCounts.of(source.drops()) if source is not None else DropCounts(),
            tail=options.tail,
        )
        first_segment_seq = writer.manifest.next_seq
        source = self._open_source()
        writer.stamp(CaptureIdentity.of_this_host(source.boot_ns))
        previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        summary = RecordSummary()
        self._next_evt_num = writer.last_evt_num + 1
        background = None
        try:
            writer.open_segment()  # the first snapshot, taken once the probe already sees new processes
            background = BackgroundWriter(writer)
            self._loop(source, background, cgroups, summary)
        finally:
            try:
                # Also after a failure: write what was queued and finalize what
                # was captured. (After a store error the writer has already
                # dropped its unfinished segment.)
                try:
                    if background is not None:
                        background.close()
                finally:
                    writer.close()
            finally:
                for sig, handler in previous_handlers.items():
                    signal.signal(sig, handler)
                summary.drops = DropCounts.of(source.drops())
                source.close()
        if options.status_line:
            self._err.write("\r\x1b[K")
        summary.segments = [e.name for e in writer.finalized if e.seq >= first_segment_seq]
        return summary

    def _open_source(self):
        from capture.probe import EventSource  # bcc: loaded only by `trace record`

        return EventSource(self.options.probe_config)

    def _on_signal(self, signum: int, _frame) -> None:
        self.stop(signal.Signals(signum).name)

    def _loop(self, source, writer: BackgroundWriter, cgroups: CgroupMap, summary: RecordSummary) -> None:
        options = self.options
        started = time.monotonic()
        last_report, events_at_report = started, 0
        self._drops_warned = DropCounts()
        while self._stop_reason is None:
            batch = source.poll(options.poll_ms)
            now = time.monotonic()
            if batch is not None and batch.num_rows:
                self._store(batch, writer, cgroups, summary)
            else:
                writer.tick()
            if options.duration is not None and now - started >= options.duration:
                self.stop("duration")
            if now - last_report >= STATUS_INTERVAL_S:
                drops = self._check_drops(source)
                if options.status_line:
                    rate = (summary.events - events_at_report) / (now - last_report)
                    self._err.write(
                        f"\r\x1b[K{summary.events} events  {rate:,.0f}/s  drops {drops.total}  segment {writer.current_segment or '-'}"
                    )
                    self._err.flush()
                last_report, events_at_report = now, summary.events
        # Events of syscalls that returned before the stop are already in the
        # ring: take them too (bounded, since other processes keep running).
        for _ in range(DRAIN_POLLS):
            if options.count is not None and summary.events >= options.count:
                break
            batch = source.poll(0)
            if batch is None or not batch.num_rows:
                break
            self._store(batch, writer, cgroups, summary)
        self._check_drops(source, threshold=0)  # nothing lost goes unreported at the end
        summary.seconds = time.monotonic() - started

    def _store(self, batch: pa.RecordBatch, writer: BackgroundWriter, cgroups: CgroupMap, summary: RecordSummary) -> None:
        """Number the events, name their containers, write them; honour --count."""
        count = self.options.count
        if count is not None:
            batch = batch.slice(0, count - summary.events)
        first = self._next_evt_num
        batch = batch.set_column(_EVT_NUM, schema.SCHEMA.field(_EVT_NUM), pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64)))
        batch = batch.set_column(_CONTAINER_ID, schema.SCHEMA.field(_CONTAINER_ID), cgroups.container_id_column(batch.column("cgroup_id")))
        writer.write(batch)
        self._next_evt_num += batch.num_rows
        summary.events += batch.num_rows
        if count is not None and summary.events >= count:
            self.stop("count")

    def _check_drops(self, source, threshold: int | None = None) -> DropCounts:
        """Warn about the events lost since the last warning, if more than the threshold."""
        drops = DropCounts.of(source.drops())
        lost = drops.since(self._drops_warned)
        if lost.total > (self.options.drop_warn_threshold if threshold is None else threshold):
            self._warn_drops(lost, drops)
            self._drops_warned = drops
        return drops

    def _warn_drops(self, lost: DropCounts, total: DropCounts) -> None:
        per_cpu = ", ".join(f"cpu{cpu}={n}" for cpu, n in sorted(lost.kernel.items())) or "none"
        self._err.write(
            f"\r\x1b[Ktrace: warning: {lost.total} events dropped (kernel ring: {per_cpu}; user side: {lost.user});"
            f" {total.total} since the start\n"
        )
        self._err.flush()

