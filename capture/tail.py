"""current.arrows: the in-progress segment as a tail-readable Arrow IPC stream.

A Parquet file has no footer until it is closed, so the rows of the segment
being written are mirrored, batch by batch, into a file of Arrow IPC
messages that a follower can read while it grows. The protocol
(docs/contracts.md, section 1):

* the writer only ever appends whole IPC messages and flushes each batch to
  the kernel (no fsync: the tail is for liveness, the segment for durability);
* each batch is one *unit*: a schema message, its dictionary batches and the
  record batch, i.e. a small IPC stream without end-of-stream. A unit holds
  only the columns that have a value in some row of the batch: most
  columns are null in most event rows, and writing (and LZ4-compressing)
  their zero-filled buffers cost 30-40 % of the tail (session 5). Every
  unit's schema carries the segment's metadata (`trace.segment_seq`,
  `trace.segment_name`, and `trace.tail_units`, which tells this layout from
  the single stream written before it); the rows are exactly the segment's
  rows, in order;
* when the segment is finalized the writer appends the end-of-stream marker,
  closes the file, and only then publishes the next tail by renaming a fresh
  file over `current.arrows`. A reader that reached end-of-stream therefore
  knows the segment is already finalized and listed in the manifest;
* a clean stop removes `current.arrows` after the end-of-stream marker.

`TailReader` implements the reading side: it keeps its own file descriptor
(so a replaced tail is still read to its end), tracks the byte offset of the
last complete unit, never hands an incomplete (torn) unit to Arrow (a
half-written batch is simply picked up on a later poll), and gives every
batch back with all the capture schema's columns. It also reads a tail in
the single-stream layout of earlier versions (one schema message, then
batches), so a tail left by an older recorder is still recovered.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from capture import schema as capture_schema
from capture.fsutil import create_private_file
from capture.nulls import NullColumns

TAIL_NAME = "current.arrows"
META_SEGMENT_NAME = b"trace.segment_name"
# On every unit's schema: this tail is a sequence of units (absent: one stream).
META_TAIL_UNITS = b"trace.tail_units"
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_BUFFER_BYTES = 1 << 20
# LZ4 buffers: event columns shrink several-fold for little CPU; every Arrow
# IPC reader decompresses them transparently. Compressed on the
# writing thread: handing each of a batch's ~100 buffers to Arrow's thread
# pool cost more CPU than it saved (measured: 20-30 % of the tail's cost).
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)


class TailWriter:
    """Appends batches to a fresh tail file; `publish` makes it `current.arrows`."""

    def __init__(self, directory: Path, schema: pa.Schema):
        self.directory = directory
        self.path = directory / TAIL_NAME
        self._tmp = directory / f".{TAIL_NAME}.tmp"
        fd = create_private_file(self._tmp)
        # Arrow writes each buffer of a batch separately: collect them, then one flush per batch.
        self._file = open(fd, "wb", buffering=_BUFFER_BYTES)
        self.schema = schema
        self._metadata = {**(schema.metadata or {}), META_TAIL_UNITS: b"1"}
        self._unit_schemas: dict[tuple[int, ...], pa.Schema] = {}
        self._units = 0
        self._published = False

    def publish(self) -> None:
        """Rename over the previous tail: readers see the new segment's schema message first."""
        os.replace(self._tmp, self.path)
        self._published = True

    def write(self, batch: pa.RecordBatch) -> None:
        """One unit: the columns with a value in some row (at least the first, so the row count is kept)."""
        columns = batch.columns
        held = tuple(i for i, column in enumerate(columns) if i == 0 or column.null_count < len(column))
        unit_schema = self._unit_schemas.get(held)
        if unit_schema is None:
            unit_schema = pa.schema([self.schema.field(i) for i in held], metadata=self._metadata)
            self._unit_schemas[held] = unit_schema
        unit = pa.RecordBatch.from_arrays([columns[i] for i in held], schema=unit_schema)
        # Never closed: closing would append end-of-stream, which ends the whole tail.
        pa.ipc.new_stream(self._file, unit_schema, options=_WRITE_OPTIONS).write_batch(unit)
        self._file.flush()
        self._units += 1

    def finish(self) -> None:
        """Append end-of-stream and close; the caller has already finalized the segment."""
        try:
            if not self._units:  # a reader still learns which segment this tail was
                self.write(pa.RecordBatch.from_pylist([], schema=self.schema))
            self._file.write(_EOS)
        finally:
            self._file.close()

    def discard(self) -> None:
        """Close without end-of-stream and remove the file (clean stop or abandoned segment)."""
        try:
            self._file.close()
        except OSError:
            pass  # the buffered bytes of a file being removed could not be flushed (a full disk): nothing is lost
        finally:
            (self.path if self._published else self._tmp).unlink(missing_ok=True)


def _runs_of_one_layout(units: list[pa.RecordBatch]) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive units with the same columns."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(units) + 1):
        if i == len(units) or units[i].schema.names != units[start].schema.names:
            runs.append((start, i))
            start = i
    return runs


class TailReader:
    """Incremental reader of one tail file: returns new complete batches per poll.

    `poll()` returns the batches completed since the last poll; `finished` is
    True once end-of-stream was read (the segment `segment_name` is then in
    the manifest). `replaced()` tells whether `current.arrows` now names a
    different file, i.e. the writer moved on (or crashed and restarted).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._arrow_file = pa.OSFile(str(self.path), "r")
        self._fd = self._arrow_file.fileno()  # os.pread on it leaves Arrow's position alone
        self._inode = os.fstat(self._fd).st_ino
        self.offset = 0  # bytes of complete units (single stream: messages) scanned so far
        self._ready: list[pa.RecordBatch] = []
        self._units: bool | None = None  # the layout, known from the first schema message
        self._single_stream: pa.ipc.RecordBatchStreamReader | None = None
        self._single_batches = 0
        self._nulls = NullColumns()
        self._positions: dict[tuple[str, ...], list[int | None]] = {}  # per unit layout: each column's place in it
        self.schema: pa.Schema | None = None
        self.finished = False

    @property
    def segment_name(self) -> str | None:
        if self.schema is None or not self.schema.metadata:
            return None
        return self.schema.metadata.get(META_SEGMENT_NAME, b"").decode() or None

    def replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def poll(self) -> list[pa.RecordBatch]:
        if self.finished:
            return []
        self._scan()
        if self._single_batches:
            if self._single_stream is None:
                self._single_stream = pa.ipc.open_stream(self._arrow_file)
                self.schema = self._single_stream.schema
            batches = [self._single_stream.read_next_batch() for _ in range(self._single_batches)]
            self._single_batches = 0
            return batches
        units, self._ready = self._ready, []
        batches = []
        for start, end in _runs_of_one_layout(units):
            batches.extend(self._logical(units[start:end]))
        return batches

    def _scan(self) -> None:
        """Decode the units completed since the last scan; advance `offset` past them."""
        size = os.fstat(self._fd).st_size
        if size <= self.offset:
            return
        data = os.pread(self._fd, size - self.offset, self.offset)
        buffer = pa.py_buffer(data)
        source = pa.BufferReader(buffer)
        messages = pa.ipc.MessageReader.open_stream(source)
        consumed = unit_start = 0
        while True:
            start = source.tell()
            try:
                message = messages.read_next_message()
            except StopIteration:
                if data[consumed : consumed + len(_EOS)] == _EOS:
                    consumed += len(_EOS)
                    self.finished = True
                break
            except (pa.ArrowInvalid, OSError, EOFError):
                break  # torn last message: wait for the rest of it
            if self._units is None and message.type == "schema":
                self._units = META_TAIL_UNITS in (pa.ipc.read_schema(message).metadata or {})
            if not self._units:  # one stream: its reader keeps the dictionaries, poll() reads the batches
                consumed = source.tell()
                self._single_batches += message.type == "record batch"
            elif message.type == "schema":
                unit_start = start
            elif message.type == "record batch":
                unit = pa.ipc.open_stream(buffer.slice(unit_start, source.tell() - unit_start)).read_next_batch()
                self._ready.append(unit)
                consumed = source.tell()
        self.offset += consumed

    def _logical(self, units: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """Units of one layout as batches of the capture schema: the columns they left out as nulls.

        Expanded a run of units at a time: each column handled from Python
        costs ~1.5 us, ~60 of them a batch. The nulls share one zero buffer."""
        layout = units[0].schema
        if self.schema is None:
            metadata = {k: v for k, v in layout.metadata.items() if k != META_TAIL_UNITS}
            self.schema = capture_schema.SCHEMA.with_metadata(metadata)
        positions = self._positions.get(tuple(layout.names))
        if positions is None:
            unknown = set(layout.names) - set(self.schema.names)
            if unknown:
                raise pa.ArrowInvalid(f"tail columns not in the capture schema: {', '.join(sorted(unknown))}")
            place = {name: i for i, name in enumerate(layout.names)}
            positions = self._positions[tuple(layout.names)] = [place.get(f.name) for f in self.schema]
        held = pa.Table.from_batches(units)
        rows = held.num_rows
        columns = [self._nulls.column(f.name, rows) if i is None else held.column(i) for f, i in zip(self.schema, positions)]
        return pa.Table.from_arrays(columns, schema=self.schema).to_batches()

    def close(self) -> None:
        self._arrow_file.close()

    def __enter__(self) -> TailReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
