"""What the recorder has written and the follower has not read yet, in order.

Finalized segments are read from their Parquet files (row group by row
group); the segment being written is read from the tail, `current.arrows`
(capture.tail.TailReader: offset tracking, a torn last message waits for the
next poll). Rows are handed on once: events by `evt_num`, the snapshot rows of
a segment once per segment, so switching from the tail to the finalized file
(a recorder killed mid-segment and recovered) repeats nothing.

Retention may delete a segment before it is read: the follower warns, skips
it, and goes on; the gap in `evt_num` is reported too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.follow.state import SegmentInfo
from capture import schema
from capture.segments import list_segment_files, parse_segment_name
from capture.tail import TAIL_NAME, TailReader


@dataclass(frozen=True)
class Chunk:
    """Rows of one segment not handed on before: snapshot rows first, then events."""

    segment: SegmentInfo
    rows: pa.Table

    @cached_property
    def event_nums(self) -> pa.ChunkedArray:
        return self.rows["evt_num"].filter(_is_event(self.rows))


def string_member(column: pa.ChunkedArray, values: Iterable[str]) -> np.ndarray:
    """Whether each value of a string column is one of `values` (nulls are not); a
    dictionary-encoded column (the capture's kind and syscall) is tested on its dictionary."""
    wanted = pa.array(sorted(values), pa.string())
    parts = [np.zeros(0, bool)]
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            hit = np.append(pc.is_in(chunk.dictionary.cast(pa.string()), wanted).to_numpy(zero_copy_only=False), False)
            indices = pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)  # -1: the appended False
            parts.append(hit[indices])
        else:
            parts.append(pc.fill_null(pc.is_in(chunk.cast(pa.string()), wanted), False).to_numpy(zero_copy_only=False))
    return np.concatenate(parts)


def _is_event(table: pa.Table) -> pa.Array:
    return pa.array(string_member(table["kind"], (schema.KIND_EVENT,)))


def _host(metadata: dict[bytes, bytes] | None) -> str:
    return (metadata or {}).get(schema.META_HOST, b"").decode() or "unknown"


class CaptureSource:
    def __init__(self, directory: Path, warn: Callable[[str], None], chunk_rows: int | None = None):
        self.directory = Path(directory)
        self._chunk_rows = chunk_rows  # cut finalized segments into chunks of at most this many rows
        self._warn = warn
        self.done_seq = 0  # every segment up to this seq is consumed
        self.fed_through = 0  # the highest evt_num handed on
        self._snapshot_segment: str | None = None  # the segment whose snapshot rows are being handed on
        self._snapshot_fed = 0  # how many of them were handed on
        self._snapshot_seen = 0  # how many the current pass over the segment has read
        self._tail: TailReader | None = None
        self._tail_seq: int | None = None
        self._tail_inode: int | None = None
        self._stale_tail_inode: int | None = None  # a finished tail already consumed from its file

    def poll(self) -> list[Chunk]:
        """Every complete row not handed on yet, as chunks in capture order."""
        chunks: list[Chunk] = []
        if self._tail is not None:
            chunks.extend(self._poll_tail())  # what an open tail holds comes before later segments
        for path in list_segment_files(self.directory):
            seq = parse_segment_name(path.name)
            if seq <= self.done_seq:
                continue
            if seq == self._tail_seq:
                break  # being read through the tail: finish it there
            chunks.extend(self._read_segment(path, seq))
            self.done_seq = seq
        chunks.extend(self._poll_tail())
        return chunks

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    # -- finalized segments ---------------------------------------------------

    def _read_segment(self, path: Path, seq: int) -> list[Chunk]:
        self._snapshot_seen = 0
        try:
            parquet = pq.ParquetFile(path)  # keeps the file open: retention cannot pull it away now
            info = SegmentInfo(path.name, seq, _host(parquet.metadata.metadata))
            chunks = []
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group)
                step = self._chunk_rows or max(table.num_rows, 1)
                for start in range(0, table.num_rows, step):
                    chunk = self._accept(info, table.slice(start, step))
                    if chunk is not None:
                        chunks.append(chunk)
            return chunks
        except FileNotFoundError:
            self._warn(f"segment {path.name} was deleted (retention) before it was read: skipped")
        except (OSError, pa.ArrowException) as exc:
            self._warn(f"skipping unreadable segment {path.name}: {exc}")
        return []

    # -- the tail -------------------------------------------------------------

    def _open_tail(self) -> TailReader | None:
        path = self.directory / TAIL_NAME
        try:
            inode = os.stat(path).st_ino
            if inode == self._stale_tail_inode:
                return None
            reader = TailReader(path)
            if os.stat(path).st_ino != inode:  # replaced while opening: next poll
                reader.close()
                return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn(f"cannot open {path}: {exc}")
            return None
        self._tail_inode = inode
        self._snapshot_seen = 0
        return reader

    def _poll_tail(self) -> list[Chunk]:
        if self._tail is None:
            self._tail = self._open_tail()
            if self._tail is None:
                return []
        reader = self._tail
        replaced = reader.replaced()  # before reading: what is read after this is all the old file holds
        try:
            batches = reader.poll()
        except (OSError, pa.ArrowException) as exc:
            self._warn(f"unreadable tail {reader.path}: {exc}")
            self._drop_tail(stale=True)
            return []
        name = reader.segment_name
        if name is None:
            if replaced:
                self._drop_tail(stale=False)
            return []
        seq = parse_segment_name(name)
        chunks = []
        if seq <= self.done_seq:
            self._drop_tail(stale=True)  # already consumed from the finalized file
            return []
        self._tail_seq = seq
        if batches:
            info = SegmentInfo(name, seq, _host(reader.schema.metadata))
            chunk = self._accept(info, pa.Table.from_batches(batches, schema=reader.schema))
            if chunk is not None:
                chunks.append(chunk)
        if reader.finished:
            self.done_seq = seq
            self._drop_tail(stale=True)
        elif replaced:
            # The writer moved on without ending this stream (it was killed):
            # the rest of the segment comes from the file it is recovered into.
            self._drop_tail(stale=True)
        return chunks

    def _drop_tail(self, stale: bool) -> None:
        if self._tail is not None:
            if stale:
                self._stale_tail_inode = self._tail_inode
            self._tail.close()
        self._tail, self._tail_seq = None, None

    # -- handing rows on once -----------------------------------------------------

    def _accept(self, info: SegmentInfo, table: pa.Table) -> Chunk | None:
        events = _is_event(table)
        if info.name != self._snapshot_segment:
            self._snapshot_segment, self._snapshot_fed = info.name, 0
        # Snapshot rows are handed on by their position in the segment: a
        # second pass over it (tail, then the recovered file) skips those
        # the first pass handed on.
        snapshot = pc.invert(events)
        position = pc.add(pc.cumulative_sum(snapshot.cast(pa.int64())), self._snapshot_seen - 1)
        self._snapshot_seen += pc.sum(snapshot.cast(pa.int64())).as_py() or 0
        keep = pc.or_kleene(
            pc.and_kleene(snapshot, pc.greater_equal(position, self._snapshot_fed)),
            pc.and_kleene(events, pc.greater(table["evt_num"], self.fed_through)),
        )
        keep = pc.fill_null(keep, False)
        rows = table if pc.all(keep).as_py() else table.filter(keep)  # usually all: no copy
        if rows.num_rows == 0:
            return None
        self._snapshot_fed = max(self._snapshot_fed, self._snapshot_seen)
        nums = rows["evt_num"].filter(_is_event(rows))
        if len(nums):
            first, last = pc.min(nums).as_py(), pc.max(nums).as_py()
            if self.fed_through and first > self.fed_through + 1:
                self._warn(
                    f"events {self.fed_through + 1}..{first - 1} are missing: deleted by retention before they"
                    " were read, or lost by a recorder crash"
                )
            self.fed_through = max(self.fed_through, last)
        return Chunk(info, rows.replace_schema_metadata(None))
