"""current.arrows: the in-progress segment as a tail-readable Arrow IPC stream.

A Parquet file has no footer until it is closed, so the rows of the segment
being written are mirrored, batch by batch, into an Arrow IPC *stream* file
that a follower can read while it grows. The protocol (docs/contracts.md,
section 1):

* the writer only ever appends whole IPC messages and flushes each batch to
  the kernel (no fsync: the tail is for liveness, the segment for durability);
* the schema message carries the segment's metadata (`trace.segment_seq`,
  `trace.segment_name`); the rows are exactly the segment's rows, in order;
* when the segment is finalized the writer appends the end-of-stream marker,
  closes the file, and only then publishes the next tail by renaming a fresh
  file over `current.arrows`. A reader that reached end-of-stream therefore
  knows the segment is already finalized and listed in the manifest;
* a clean stop removes `current.arrows` after the end-of-stream marker.

`TailReader` implements the reading side: it keeps its own file descriptor
(so a replaced tail is still read to its end), tracks the byte offset of the
last complete message, and never hands an incomplete (torn) message to
Arrow: a half-written batch is simply picked up on a later poll.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from capture.fsutil import create_private_file

TAIL_NAME = "current.arrows"
META_SEGMENT_NAME = b"trace.segment_name"
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_BUFFER_BYTES = 1 << 20
# LZ4 buffers: the mostly-null columns of event rows shrink ~20x for little CPU;
# every Arrow IPC reader decompresses them transparently. Compressed on the
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
        self._stream = pa.ipc.new_stream(self._file, schema, options=_WRITE_OPTIONS)
        self._file.flush()
        self._published = False

    def publish(self) -> None:
        """Rename over the previous tail: readers see the new segment's schema message first."""
        os.replace(self._tmp, self.path)
        self._published = True

    def write(self, batch: pa.RecordBatch) -> None:
        self._stream.write_batch(batch)
        self._file.flush()

    def finish(self) -> None:
        """Append end-of-stream and close; the caller has already finalized the segment."""
        try:
            self._stream.close()
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
        self.offset = 0  # bytes of complete messages scanned so far
        self._batches_ready = 0
        self._reader: pa.ipc.RecordBatchStreamReader | None = None
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
        if self._reader is None:
            if self.offset == 0:
                return []
            self._reader = pa.ipc.open_stream(self._arrow_file)
            self.schema = self._reader.schema
        batches = []
        while self._batches_ready:
            batches.append(self._reader.read_next_batch())
            self._batches_ready -= 1
        return batches

    def _scan(self) -> None:
        """Advance `offset` over the complete messages appended since the last scan."""
        size = os.fstat(self._fd).st_size
        if size <= self.offset:
            return
        data = os.pread(self._fd, size - self.offset, self.offset)
        buffer = pa.py_buffer(data)
        source = pa.BufferReader(buffer)
        messages = pa.ipc.MessageReader.open_stream(source)
        consumed = 0
        while True:
            try:
                message = messages.read_next_message()
            except StopIteration:
                if data[consumed : consumed + len(_EOS)] == _EOS:
                    consumed += len(_EOS)
                    self.finished = True
                break
            except (pa.ArrowInvalid, OSError, EOFError):
                break  # torn last message: wait for the rest of it
            consumed = source.tell()
            if message.type == "record batch":
                self._batches_ready += 1
        self.offset += consumed

    def close(self) -> None:
        self._arrow_file.close()

    def __enter__(self) -> TailReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
