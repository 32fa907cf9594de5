"""Run a SegmentWriter on its own thread, so writing never stalls ring draining.

Compressing a row group, fsyncing a finalized segment and taking the next
segment's /proc snapshot take tens of milliseconds; done inline, the kernel
ring fills meanwhile and, at high rates, drops events. Here the poll loop
only queues batches. pyarrow releases the GIL while it encodes and
compresses, so the two threads overlap.

The queue is bounded in bytes: if the writer falls behind for good, `write`
blocks, the kernel ring absorbs what it can and the rest is counted as drops
(never silently lost in an unbounded queue). A writer error (disk full)
stops the thread and is raised by the next call from the poll loop, with the
number of queued events it could not write.
"""

from __future__ import annotations

import threading
from collections import deque

import pyarrow as pa

from capture.fsutil import CaptureStoreError
from capture.segments import SegmentWriter

_TICK = object()
_STOP = object()
_WAIT_S = 0.1


class BackgroundWriter:
    def __init__(self, writer: SegmentWriter, max_queued_bytes: int = 256 << 20):
        self.writer = writer
        self._max_bytes = max_queued_bytes
        self._items: deque[tuple[object, int]] = deque()
        self._queued_bytes = 0
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trace-segment-writer", daemon=True)
        self._thread.start()

    @property
    def current_segment(self) -> str | None:
        return self.writer.current_segment

    def write(self, batch: pa.RecordBatch) -> None:
        self._put(batch, batch.get_total_buffer_size())  # nbytes costs ~30x more per batch

    def tick(self) -> None:
        """Ask for a time-based rotation check; skipped while the writer has work anyway."""
        if not self._items:
            self._put(_TICK, 0)

    def close(self) -> None:
        """Wait until everything queued is written, then raise the writer's error, if any."""
        if self._thread.is_alive():
            self._put(_STOP, 0)
            self._thread.join()
        self._raise_error()

    def _put(self, item: object, nbytes: int) -> None:
        with self._changed:
            # One oversized batch is still accepted when the queue is empty.
            while self._error is None and self._queued_bytes and self._queued_bytes + nbytes > self._max_bytes:
                self._changed.wait(_WAIT_S)
            self._raise_error()
            self._items.append((item, nbytes))
            self._queued_bytes += nbytes
            self._changed.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._items:
                    self._changed.wait()
                item, nbytes = self._items.popleft()
            if item is _STOP:
                return
            try:
                if item is _TICK:
                    self.writer.tick()
                else:
                    self.writer.write(item)
            except BaseException as exc:  # handed to the poll loop, which decides
                self._fail(exc)
                return
            with self._changed:
                self._queued_bytes -= nbytes
                self._changed.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            unwritten = sum(item.num_rows for item, _ in self._items if isinstance(item, pa.RecordBatch))
            self._items.clear()
            self._queued_bytes = 0
            if isinstance(exc, CaptureStoreError) and unwritten:
                wrapped = CaptureStoreError(f"{exc}; {unwritten} queued event(s) not written")
                wrapped.__cause__ = exc
                exc = wrapped
            self._error = exc
            self._changed.notify_all()
