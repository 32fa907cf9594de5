"""Run a SegmentWriter on its own thread, so writing never stalls ring draining.

Compressing a row group, fsyncing a finalized segment and taking the next
segment's /proc snapshot take tens of milliseconds; done inline, the kernel
ring fills meanwhile and, at high rates, drops events. Here the poll loop
only queues batches. pyarrow releases the GIL while it encodes and
compresses, so the two threads overlap.

The queue is bounded: if the writer falls behind for good, `write` blocks,
the kernel ring absorbs what it can and the rest is counted as drops (never
silently lost in an unbounded queue). A writer error (disk full) stops the
thread and is raised by the next call from the poll loop.
"""

from __future__ import annotations

import queue
import threading

import pyarrow as pa

from capture.segments import SegmentWriter

_TICK = object()
_STOP = object()
_PUT_WAIT_S = 0.1


class BackgroundWriter:
    def __init__(self, writer: SegmentWriter, max_batches: int = 256):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max_batches)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trace-segment-writer", daemon=True)
        self._thread.start()

    @property
    def current_segment(self) -> str | None:
        return self.writer.current_segment

    def write(self, batch: pa.RecordBatch) -> None:
        self._put(batch)

    def tick(self) -> None:
        """Ask for a time-based rotation check; skipped when the writer is busy anyway."""
        if self._queue.empty():
            self._put(_TICK)

    def close(self) -> None:
        """Wait until everything queued is written, then raise the writer's error, if any."""
        if self._thread.is_alive():
            self._put(_STOP)
            self._thread.join()
        self._raise_error()

    def _put(self, item: object) -> None:
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=_PUT_WAIT_S)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                if item is _TICK:
                    self.writer.tick()
                else:
                    self.writer.write(item)
            except BaseException as exc:  # handed to the poll loop, which decides
                self._error = exc
                return
