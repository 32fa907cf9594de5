"""`trace info`: what a capture holds, read from the segments themselves.

Every figure comes from the finalized segments' data and footers, not from
the manifest, so the summary is right even when the manifest is stale or
missing. A segment that does not read is skipped with a warning.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture import schema
from capture.errors import RecorderError
from capture.layout import list_segment_files
from capture.segments import META_RECOVERED, DropCounts
from capture.tail import TAIL_NAME

_COLUMNS = ["kind", "ts", "evt_num", "syscall", "pid"]


@dataclass
class SegmentSummary:
    name: str
    bytes: int
    events: int
    first_ts: int | None
    last_ts: int | None
    drops: DropCounts
    recovered: bool = False  # rebuilt from the tail after a crash: its drops are unknown


@dataclass
class CaptureSummary:
    path: Path
    host: str = ""
    kernel: str = ""
    schema_version: str = ""
    segments: list[SegmentSummary] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    deleted_segments: int = 0
    recording: bool = False  # a tail file exists: a recorder is running (or was killed)
    by_syscall: Counter = field(default_factory=Counter)
    pids: set[int] = field(default_factory=set)
    first_evt_num: int | None = None
    last_evt_num: int | None = None
    drops: DropCounts = field(default_factory=DropCounts)

    @property
    def events(self) -> int:
        return sum(s.events for s in self.segments)

    @property
    def first_ts(self) -> int | None:
        return min((s.first_ts for s in self.segments if s.first_ts is not None), default=None)

    @property
    def last_ts(self) -> int | None:
        return max((s.last_ts for s in self.segments if s.last_ts is not None), default=None)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "host": self.host,
            "kernel": self.kernel,
            "schema_version": self.schema_version,
            "segments": [
                {"name": s.name, "bytes": s.bytes, "events": s.events, "first_ts": s.first_ts, "last_ts": s.last_ts,
                 "drops": s.drops.to_json(), "recovered": s.recovered}
                for s in self.segments
            ],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
            "deleted_segments": self.deleted_segments,
            "recording": self.recording,
            "events": self.events,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "first_evt_num": self.first_evt_num,
            "last_evt_num": self.last_evt_num,
            "events_by_syscall": dict(self.by_syscall.most_common()),
            "processes": len(self.pids),
            "drops": self.drops.to_json(),
        }


def summarize(capture: Path) -> CaptureSummary:
    capture = Path(capture)
    summary = CaptureSummary(capture)
    if capture.is_dir():
        files = list_segment_files(capture)
        summary.recording = (capture / TAIL_NAME).exists()
        try:
            manifest = json.loads((capture / "manifest.json").read_text())
            summary.deleted_segments = int(manifest.get("deleted_segments", 0))
        except (OSError, ValueError):
            pass
    else:
        files = [capture]
    if not files:
        raise RecorderError(f"{capture}: no capture segments (seg-*.parquet) found")
    kernel_drops: Counter = Counter()
    user_drops = 0
    for path in files:
        try:
            segment, table, meta = _read_segment(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"trace: warning: skipping corrupt segment {path.name}: {reason}", file=sys.stderr)
            summary.skipped.append((path.name, reason))
            continue
        summary.segments.append(segment)
        summary.host = meta.get(schema.META_HOST, b"").decode() or summary.host
        summary.kernel = meta.get(schema.META_KERNEL, b"").decode() or summary.kernel
        summary.schema_version = meta.get(schema.META_SCHEMA_VERSION, b"").decode() or summary.schema_version
        kernel_drops.update(segment.drops.kernel)
        user_drops += segment.drops.user
        _count_events(summary, table)
    summary.drops = DropCounts(dict(kernel_drops), user_drops)
    return summary


def _read_segment(path: Path) -> tuple[SegmentSummary, pa.Table, dict[bytes, bytes]]:
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata.metadata or {}
    version = meta.get(schema.META_SCHEMA_VERSION, b"").decode()
    if not version:
        raise ValueError("not a trace segment (no trace.schema_version)")
    if schema.schema_major(version) != schema.schema_major(schema.SCHEMA_VERSION):
        raise ValueError(f"schema version {version} is not supported (this trace reads {schema.SCHEMA_VERSION})")
    table = parquet.read(columns=_COLUMNS)
    events = table.filter(pc.equal(table["kind"].cast(pa.string()), schema.KIND_EVENT))
    stamps = pc.min_max(events["ts"])
    drops = json.loads(meta.get(schema.META_DROPS, b'{"kernel": {}, "user": 0}'))
    segment = SegmentSummary(
        name=path.name,
        bytes=path.stat().st_size,
        events=events.num_rows,
        first_ts=stamps["min"].as_py(),
        last_ts=stamps["max"].as_py(),
        drops=DropCounts({int(cpu): int(n) for cpu, n in drops.get("kernel", {}).items()}, int(drops.get("user", 0))),
        recovered=META_RECOVERED in meta,
    )
    return segment, table, meta


def _count_events(summary: CaptureSummary, table: pa.Table) -> None:
    kinds = table["kind"].cast(pa.string())
    events = table.filter(pc.equal(kinds, schema.KIND_EVENT))
    for row in pc.value_counts(events["syscall"].cast(pa.string())).to_pylist():
        summary.by_syscall[row["values"]] += row["counts"]
    processes = table.filter(pc.is_in(kinds, pa.array([schema.KIND_EVENT, schema.KIND_PROC])))
    summary.pids.update(p for p in pc.unique(processes["pid"]).to_pylist() if p is not None)
    if events.num_rows:
        nums = pc.min_max(events["evt_num"])
        lo, hi = nums["min"].as_py(), nums["max"].as_py()
        summary.first_evt_num = lo if summary.first_evt_num is None else min(lo, summary.first_evt_num)
        summary.last_evt_num = hi if summary.last_evt_num is None else max(hi, summary.last_evt_num)


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def render_text(summary: CaptureSummary) -> str:
    lines = [f"capture     {summary.path}"]
    lines.append(f"host        {summary.host or '-'}  kernel {summary.kernel or '-'}  schema {summary.schema_version or '-'}")
    total_bytes = sum(s.bytes for s in summary.segments)
    extra = []
    if summary.skipped:
        extra.append(f"{len(summary.skipped)} skipped (unreadable)")
    if summary.deleted_segments:
        extra.append(f"{summary.deleted_segments} deleted by retention")
    if summary.recording:
        extra.append("recording in progress (current.arrows present)")
    lines.append(f"segments    {len(summary.segments)} ({_bytes(total_bytes)})" + (f"; {'; '.join(extra)}" if extra else ""))
    for s in summary.segments:
        drops = "unknown (recovered after a crash)" if s.recovered else s.drops.total
        lines.append(f"  {s.name}  {s.events:>10,} events  {_bytes(s.bytes):>10}  drops {drops}")
    span = ""
    if summary.first_ts is not None and summary.last_ts is not None:
        span = f"  ({(summary.last_ts - summary.first_ts) / 1e9:.3f} s)"
    lines.append(f"time span   {_time(summary.first_ts)} .. {_time(summary.last_ts)}{span}")
    numbers = f" (evt_num {summary.first_evt_num}..{summary.last_evt_num})" if summary.first_evt_num is not None else ""
    lines.append(f"events      {summary.events:,}{numbers}")
    lines.append(f"processes   {len(summary.pids):,} (distinct pids in snapshots and events)")
    per_cpu = ", ".join(f"cpu{cpu}={n}" for cpu, n in sorted(summary.drops.kernel.items()) if n)
    lines.append(f"drops       {summary.drops.total:,} (kernel {sum(summary.drops.kernel.values()):,}{': ' + per_cpu if per_cpu else ''}; user {summary.drops.user:,})")
    lines.append("events by syscall")
    width = max((len(name) for name in summary.by_syscall), default=0)
    for name, count in summary.by_syscall.most_common():
        lines.append(f"  {name:<{width}}  {count:>12,}")
    return "\n".join(lines)
