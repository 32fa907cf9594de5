"""Rotating, crash-safe zstd Parquet segments of one capture directory.

A segment is written under a temporary dot-name (`.seg-....parquet.tmp`,
which no reader globs), fsynced, renamed to `seg-<UTC yyyymmddThhmmss>-<seq>.parquet`
and the directory fsynced: a finalized name always points at a complete file
with its footer. A crash leaves at most one temporary file, removed on the
next start. Sequence numbers come from the manifest (reserved before a
segment opens), so names are never reused, not even after retention removed
every segment or a crash lost the one being written.

Each segment starts with the snapshot rows (process table, fds, users,
groups, cgroups) taken when it opens, then the events in arrival order.
Events are buffered into row groups of `row_group_rows`; the same rows are
mirrored batch by batch into the tail (capture/tail.py) for live readers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture import schema
from capture.fsutil import (
    CaptureStoreError,
    create_private_file,
    ensure_private_dir,
    fsync_dir,
    fsync_file,
    is_disk_full,
    lock_capture_dir,
    publish,
)
from capture.layout import (  # list_segment_files, parse_segment_name: readers import them from here too
    SEGMENT_RE,
    list_segment_files,
    parse_segment_name,
    remove_temporary_files,
    segment_name,
)
from capture.manifest import Manifest, SegmentEntry
from capture.tail import META_SEGMENT_NAME, TAIL_NAME, TailReader, TailWriter

DEFAULT_ROW_GROUP_ROWS = 128 * 1024
# Set on a segment rebuilt from the tail of a recorder that died: its drop
# counts are unknown (the drops JSON then carries "unknown": true).
META_RECOVERED = b"trace.recovered"
# evt_num counts up by one and ts nearly so: delta encoding stores them in a
# few bits per row (measured: a quarter smaller segments, less CPU than
# dictionary + zstd). Everything else: dictionary where it pays, then zstd.
_DELTA_COLUMNS = ("evt_num", "ts")
# Min/max statistics only where a reader prunes row groups by them (time,
# event ranges, process, syscall, container); elsewhere they cost CPU per
# value and prune nothing.
_STATISTICS_COLUMNS = ["kind", "evt_num", "ts", "pid", "tid", "ppid", "uid", "syscall", "cgroup_id", "container_id"]
_PARQUET_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": [name for name in schema.COLUMN_NAMES if name not in _DELTA_COLUMNS],
    "column_encoding": {name: "DELTA_BINARY_PACKED" for name in _DELTA_COLUMNS},
    "write_statistics": _STATISTICS_COLUMNS,
    # Values are encoded in batches of this many rows per column: the default
    # 1024 pays a per-call overhead ~128 times per column and row group.
    "write_batch_size": 64 * 1024,
    # One data page per column chunk instead of one per 20 000 rows: each page
    # is a separate zstd call (a fresh compression context) and a write; with
    # ~58 columns that was ~400 pages per row group (measured: segments ~10 %
    # smaller, the write a few % cheaper). Readers read whole row groups anyway.
    "max_rows_per_page": DEFAULT_ROW_GROUP_ROWS,
    "data_page_size": 64 << 20,
}
# The Parquet writer writes every page and footer piece on its own and asks
# the file for its position (lseek) around them: a buffer makes those one
# write(2) per MiB. Each syscall of the recorder also runs the BPF program.
_SINK_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class RotationPolicy:
    """Close the segment when any bound is reached (None: no bound)."""

    max_bytes: int | None = 256 << 20
    max_seconds: float | None = 600.0
    max_events: int | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """Delete the oldest finalized segments beyond any bound (None: no bound).

    The newest finalized segment is always kept.
    """

    keep_segments: int | None = None
    keep_bytes: int | None = None
    keep_age_seconds: float | None = None


@dataclass(frozen=True)
class DropCounts:
    """Cumulative lost events: per CPU in the kernel ring, and in user space."""

    kernel: dict[int, int] = field(default_factory=dict)
    user: int = 0

    @classmethod
    def of(cls, drops) -> DropCounts:
        """From any object with `.kernel` (cpu -> n) and `.user` (capture.probe.Drops)."""
        return cls({int(cpu): int(n) for cpu, n in drops.kernel.items()}, int(drops.user))

    @property
    def total(self) -> int:
        return sum(self.kernel.values()) + self.user

    def since(self, earlier: DropCounts) -> DropCounts:
        kernel = {cpu: n - earlier.kernel.get(cpu, 0) for cpu, n in self.kernel.items()}
        return DropCounts({cpu: n for cpu, n in kernel.items() if n}, self.user - earlier.user)

    def to_json(self) -> dict:
        return {"kernel": {str(cpu): n for cpu, n in sorted(self.kernel.items())}, "user": self.user}


NO_DROPS = DropCounts()


@dataclass(frozen=True)
class CaptureIdentity:
    """Where and when a capture was made: stamped on every segment and the manifest."""

    host: str
    kernel: str
    boot_ns: int  # wall-clock ns at boot: ts = ktime + boot_ns

    @classmethod
    def of_this_host(cls, boot_ns: int) -> CaptureIdentity:
        uname = os.uname()
        return cls(uname.nodename, uname.release, boot_ns)


class _OpenSegment:
    """The segment being written: a temporary Parquet file plus its tail mirror."""

    def __init__(self, directory: Path, seq: int, opened_ns: int, identity: CaptureIdentity, with_tail: bool):
        self.seq = seq
        self.name = segment_name(seq, opened_ns)
        self.final_path = directory / self.name
        self.tmp_path = directory / f".{self.name}.tmp"
        self.opened_ns = opened_ns
        self.rows = 0
        self.events = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.first_evt_num: int | None = None
        self.last_evt_num: int | None = None
        self.flushed_bytes = 0
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_nbytes = 0
        self.published = False
        metadata = {
            schema.META_HOST: identity.host.encode(),
            schema.META_KERNEL: identity.kernel.encode(),
            schema.META_BOOT_NS: str(identity.boot_ns).encode(),
            schema.META_SEGMENT_SEQ: str(seq).encode(),
        }
        self.schema = schema.schema_with_metadata(metadata)
        os.close(create_private_file(self.tmp_path))
        self.sink = pa.BufferedOutputStream(pa.OSFile(str(self.tmp_path), "wb"), _SINK_BUFFER_BYTES)
        self.parquet = pq.ParquetWriter(self.sink, self.schema, **_PARQUET_OPTIONS)
        self.tail: TailWriter | None = None
        if with_tail:
            self.tail = TailWriter(directory, self.schema.with_metadata({**self.schema.metadata, META_SEGMENT_NAME: self.name.encode()}))
            self.tail.publish()


class SegmentWriter:
    """Writes a capture directory: segments, manifest, tail; rotation and retention.

    `snapshot(wall_ns)` returns the snapshot rows (a Table in SCHEMA) for a
    segment opened at `wall_ns`; `drops()` returns the cumulative DropCounts.
    Event batches passed to `write` must have `evt_num` assigned, continuing
    from `last_evt_num`.
    """

    def __init__(
        self,
        directory: Path,
        identity: CaptureIdentity,
        rotation: RotationPolicy = RotationPolicy(),
        retention: RetentionPolicy = RetentionPolicy(),
        snapshot: Callable[[int], pa.Table] | None = None,
        drops: Callable[[], DropCounts] = lambda: NO_DROPS,
        tail: bool = True,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        clock: Callable[[], int] = time.time_ns,
    ):
        self.directory = Path(directory)
        self.identity = identity
        self.rotation = rotation
        self.retention = retention
        self._snapshot = snapshot
        self._drops = drops
        self._with_tail = tail
        self._row_group_rows = row_group_rows
        self._clock = clock
        self._segment: _OpenSegment | None = None
        self._drops_charged = NO_DROPS  # cumulative drops already written to a segment
        self._compression_ratio = 0.25  # on-disk / in-memory bytes, learned per row group
        ensure_private_dir(self.directory)
        self._lock = lock_capture_dir(self.directory)
        with self._store_errors():
            for leftover in remove_temporary_files(self.directory):
                print(f"trace: removed unfinished file {leftover.name} left by an interrupted recorder", file=sys.stderr)
            recover_tail(self.directory)
            self.manifest = Manifest.load(self.directory)
            self.stamp(identity)
            self.manifest.save()

    # -- public API ---------------------------------------------------------

    @property
    def last_evt_num(self) -> int:
        return self.manifest.last_evt_num

    @property
    def current_segment(self) -> str | None:
        return self._segment.name if self._segment else None

    @property
    def finalized(self) -> list[SegmentEntry]:
        return list(self.manifest.segments)

    def stamp(self, identity: CaptureIdentity) -> None:
        """Set host, kernel and boot offset for the segments opened from now on."""
        self.identity = identity
        self.manifest.host, self.manifest.kernel, self.manifest.boot_ns = identity.host, identity.kernel, identity.boot_ns

    def open_segment(self) -> None:
        """Start a segment now (it also starts lazily on the first write)."""
        if self._segment is None:
            with self._store_errors():
                self._open()

    def write(self, batch: pa.RecordBatch) -> None:
        """Append event rows, rotating first whenever a bound is reached."""
        if not batch.schema.equals(schema.SCHEMA, check_metadata=False):
            raise ValueError("event batch does not have the capture schema")
        with self._store_errors():
            while batch.num_rows:
                if self._segment is None:
                    self._open()
                head = batch
                if self.rotation.max_events is not None:
                    room = self.rotation.max_events - self._segment.events
                    head = batch.slice(0, room)
                self._append_events(head)
                batch = batch.slice(head.num_rows)
                self._rotate_if_due()

    def tick(self) -> None:
        """Rotate by time while no events arrive; call it on idle polls."""
        with self._store_errors():
            self._rotate_if_due()

    def rotate(self) -> None:
        with self._store_errors():
            if self._segment is not None:
                self._finalize()

    def close(self) -> None:
        """Finalize the open segment and remove the tail: a clean stop."""
        with self._store_errors():
            if self._segment is not None:
                self._finalize()
            (self.directory / TAIL_NAME).unlink(missing_ok=True)
        self._lock.close()

    def abort(self) -> None:
        """Drop the unfinished segment (its temp file) after an error; finalized ones stay."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if not segment.published:
            for closable in (segment.parquet, segment.sink):
                try:
                    closable.close()
                except Exception:  # the file is being thrown away; its writer's state does not matter
                    pass
            segment.tmp_path.unlink(missing_ok=True)
        if segment.tail is not None:
            segment.tail.discard()  # also frees its space, so the manifest can still be saved

    # -- internals ----------------------------------------------------------

    def _store_errors(self):
        return _StoreErrors(self)

    def _open(self) -> None:
        now = self._clock()
        seq = self.manifest.next_seq
        self.manifest.next_seq = seq + 1
        self.manifest.save()  # reserve the number before anything can show it
        segment = _OpenSegment(self.directory, seq, now, self.identity, self._with_tail)
        self._segment = segment
        if self._snapshot is not None:
            snap = self._snapshot(now)
            if snap.num_rows:
                segment.parquet.write_table(snap.replace_schema_metadata(segment.schema.metadata), row_group_size=self._row_group_rows)
                segment.rows += snap.num_rows
                if segment.tail is not None:
                    for batch in snap.to_batches():
                        segment.tail.write(batch)
                segment.flushed_bytes = segment.sink.tell()

    def _append_events(self, batch: pa.RecordBatch) -> None:
        segment = self._segment
        if batch.num_rows == 0:
            return
        nums = pc.min_max(batch.column("evt_num"))
        stamps = pc.min_max(batch.column("ts"))
        if segment.first_evt_num is None:
            segment.first_evt_num = nums["min"].as_py()
            segment.first_ts = stamps["min"].as_py()
        else:
            segment.first_ts = min(segment.first_ts, stamps["min"].as_py())
        segment.last_evt_num = nums["max"].as_py()
        segment.last_ts = max(segment.last_ts or stamps["max"].as_py(), stamps["max"].as_py())
        segment.events += batch.num_rows
        segment.rows += batch.num_rows
        self.manifest.last_evt_num = max(self.manifest.last_evt_num, segment.last_evt_num)
        if segment.tail is not None:
            segment.tail.write(batch)
        segment.pending.append(batch)
        segment.pending_rows += batch.num_rows
        segment.pending_nbytes += batch.get_total_buffer_size()  # an estimate; nbytes costs ~30x more per batch
        if segment.pending_rows >= self._row_group_rows:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        segment = self._segment
        if not segment.pending:
            return
        table = pa.Table.from_batches(segment.pending).replace_schema_metadata(segment.schema.metadata)
        segment.parquet.write_table(table, row_group_size=self._row_group_rows)
        size = segment.sink.tell()  # bytes written, buffered ones included
        if segment.pending_nbytes:
            self._compression_ratio = max(0.01, (size - segment.flushed_bytes) / segment.pending_nbytes)
        segment.flushed_bytes = size
        segment.pending, segment.pending_rows, segment.pending_nbytes = [], 0, 0

    def _estimated_bytes(self) -> int:
        segment = self._segment
        return segment.flushed_bytes + int(segment.pending_nbytes * self._compression_ratio)

    def _rotate_if_due(self) -> None:
        segment, policy = self._segment, self.rotation
        if segment is None or segment.events == 0:
            return
        due = (
            (policy.max_events is not None and segment.events >= policy.max_events)
            or (policy.max_bytes is not None and self._estimated_bytes() >= policy.max_bytes)
            or (policy.max_seconds is not None and self._clock() - segment.opened_ns >= policy.max_seconds * 1e9)
        )
        if due:
            self._finalize()

    def _finalize(self) -> None:
        segment = self._segment
        self._flush_row_group()
        current_drops = self._drops()
        drops = current_drops.since(self._drops_charged)
        self._drops_charged = current_drops
        first_evt_num = segment.first_evt_num if segment.first_evt_num is not None else self.manifest.last_evt_num + 1
        segment.parquet.add_key_value_metadata(
            {
                schema.META_FIRST_EVT_NUM: str(first_evt_num).encode(),
                schema.META_DROPS: json.dumps(drops.to_json()).encode(),
            }
        )
        segment.parquet.close()
        segment.sink.close()  # flushes the buffer; the writer does not close a sink it was handed
        fsync_file(segment.tmp_path)
        publish(segment.tmp_path, segment.final_path)
        segment.published = True
        self.manifest.add(
            SegmentEntry(
                name=segment.name,
                seq=segment.seq,
                bytes=os.stat(segment.final_path).st_size,
                rows=segment.rows,
                events=segment.events,
                first_ts=segment.first_ts,
                last_ts=segment.last_ts,
                first_evt_num=segment.first_evt_num,
                last_evt_num=segment.last_evt_num,
                drops=drops.to_json(),
                host=self.identity.host,
                kernel=self.identity.kernel,
                boot_ns=self.identity.boot_ns,
            )
        )
        self._apply_retention()
        self.manifest.save()
        # End-of-stream only now: a tail reader that sees it finds the segment listed.
        if segment.tail is not None:
            segment.tail.finish()
        self._segment = None

    def _apply_retention(self) -> None:
        policy, entries = self.retention, self.manifest.segments
        victims: list[SegmentEntry] = []
        keep = list(entries)
        if policy.keep_age_seconds is not None:
            horizon = self._clock() - int(policy.keep_age_seconds * 1e9)
            for entry in keep[:-1]:
                newest = entry.last_ts if entry.last_ts is not None else 0
                if newest < horizon:
                    victims.append(entry)
            keep = [e for e in keep if e not in victims]
        if policy.keep_segments is not None:
            while len(keep) > max(1, policy.keep_segments):
                victims.append(keep.pop(0))
        if policy.keep_bytes is not None:
            while len(keep) > 1 and sum(e.bytes for e in keep) > policy.keep_bytes:
                victims.append(keep.pop(0))
        if not victims:
            return
        for entry in victims:
            (self.directory / entry.name).unlink(missing_ok=True)
        fsync_dir(self.directory)
        self.manifest.remove({e.name for e in victims})


def recover_tail(directory: Path) -> int:
    """Finalize the rows a killed recorder left in `current.arrows`; returns the events saved.

    The tail holds every complete batch of the segment that was being
    written (a torn last message is dropped), so a crash loses at most the
    batch in flight. The segment keeps the name the tail announced: its
    sequence number was reserved in the manifest and never used by a
    finalized file. A tail that reached end-of-stream belongs to a segment
    that was already finalized and is just removed.
    """
    path = Path(directory) / TAIL_NAME
    if not path.exists():
        return 0
    try:
        with TailReader(path) as reader:
            batches = reader.poll()
            name, finished, tail_schema = reader.segment_name, reader.finished, reader.schema
    except (OSError, pa.ArrowException) as exc:
        print(f"trace: warning: cannot read the tail left by an interrupted recorder ({exc}); its events are lost", file=sys.stderr)
        path.unlink(missing_ok=True)
        return 0
    events = sum(pc.sum(pc.equal(b.column("kind").cast(pa.string()), schema.KIND_EVENT)).as_py() or 0 for b in batches)
    if finished or name is None or not SEGMENT_RE.match(name) or (path.parent / name).exists() or not events:
        path.unlink()
        return 0
    table = pa.Table.from_batches(batches)
    event_nums = table.filter(pc.equal(table["kind"].cast(pa.string()), schema.KIND_EVENT))["evt_num"]
    metadata = {k: v for k, v in tail_schema.metadata.items() if k != META_SEGMENT_NAME}
    metadata[schema.META_FIRST_EVT_NUM] = str(pc.min(event_nums).as_py()).encode()
    metadata[schema.META_DROPS] = json.dumps({"kernel": {}, "user": 0, "unknown": True}).encode()
    metadata[META_RECOVERED] = b"tail"
    final = path.parent / name
    tmp = path.parent / f".{name}.tmp"
    os.close(create_private_file(tmp))
    pq.write_table(table.replace_schema_metadata(metadata), str(tmp), row_group_size=DEFAULT_ROW_GROUP_ROWS, **_PARQUET_OPTIONS)
    fsync_file(tmp)
    publish(tmp, final)
    path.unlink()
    print(f"trace: recovered {events} events of the unfinished segment {name} from the tail of an interrupted recorder", file=sys.stderr)
    return events


class _StoreErrors:
    """Turns OS (and Arrow I/O) write failures into one-line CaptureStoreErrors.

    A full disk abandons the unfinished segment (freeing its space) and tries
    to leave the manifest matching the finalized segments.
    """

    def __init__(self, writer: SegmentWriter):
        self.writer = writer

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not isinstance(exc, OSError):  # pyarrow's I/O errors are OSErrors too
            return False
        writer = self.writer
        segment = writer._segment
        lost = segment.events if segment is not None and not segment.published else 0
        writer.abort()
        if is_disk_full(exc):
            try:
                writer.manifest.save()
            except OSError:
                pass  # the previous manifest stays in place: still consistent with the segments
            kept = len(getattr(writer, "manifest", Manifest(writer.directory)).segments)
            raise CaptureStoreError(
                f"disk full in {writer.directory}: recording stopped; {kept} finalized segment(s) intact,"
                f" {lost} event(s) of the unfinished segment lost"
            ) from exc
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CaptureStoreError(f"cannot write capture {writer.directory}: {detail}") from exc
