"""Where followed alerts go: stdout, an appended JSON-lines file, a webhook.

The webhook posts Falco's JSON alert, one per request, the way Falco's
http_output feeds falcosidekick. A sender thread drains a bounded queue with
retries; when the endpoint cannot keep up the queue overflows and alerts are
dropped, counted and reported, never blocking the follower.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from analyzer.errors import TraceError
from analyzer.output import Alert


class StdoutSink:
    def __init__(self, output_format: str, stream: TextIO | None = None):
        self._json = output_format == "json"
        self._stream = stream

    def emit(self, alert: Alert) -> None:
        stream = self._stream or sys.stdout
        stream.write((alert.to_json() if self._json else alert.output) + "\n")
        stream.flush()

    def close(self) -> None:
        pass


class JsonlSink:
    """`-o FILE`: Falco JSON lines, appended and flushed per alert (0600)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.key = str(self.path.resolve())
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise TraceError(f"cannot open {self.path}: {exc.strerror}") from exc
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    @property
    def offset(self) -> int:
        return self._file.tell()

    def replayed(self, checkpoint_offset: int | None) -> deque[str]:
        """Lines written after the checkpoint (by a follower that died before saving it).

        A torn last line is cut off; the complete ones are returned so the
        replay can skip exactly those alerts.
        """
        size = os.fstat(self._file.fileno()).st_size
        if checkpoint_offset is None or size <= checkpoint_offset:
            return deque()
        with open(self.path, "rb") as source:
            source.seek(checkpoint_offset)
            tail = source.read(size - checkpoint_offset)
        complete = tail[: tail.rfind(b"\n") + 1]
        if len(complete) < len(tail):
            os.truncate(self.path, checkpoint_offset + len(complete))
            self._file.seek(0, os.SEEK_END)
        return deque(line.decode("utf-8", "replace") for line in complete.splitlines())

    def emit(self, alert: Alert) -> None:
        self._file.write(alert.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def check_webhook_url(url: str | None) -> None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise TraceError(f"--webhook needs an http:// or https:// URL, not {url!r}")


@dataclass
class WebhookStats:
    delivered: int = 0
    dropped: int = 0  # the queue was full
    failed: int = 0  # every retry failed
    last_error: str = ""


class WebhookSink:
    """HTTP POST of each alert's Falco JSON, from a bounded queue, with retries."""

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 10_000,
        retries: int = 5,
        backoff_s: float = 0.2,
        timeout_s: float = 5.0,
        drain_s: float = 5.0,
    ):
        check_webhook_url(url)
        self.url = url
        self.stats = WebhookStats()
        self._retries, self._backoff_s, self._timeout_s, self._drain_s = retries, backoff_s, timeout_s, drain_s
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trace-webhook", daemon=True)
        self._thread.start()

    def emit(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert.to_json().encode())
        except queue.Full:
            self.stats.dropped += 1

    def close(self) -> None:
        """Deliver what is queued, for at most `drain_s`; the rest counts as dropped."""
        deadline = time.monotonic() + self._drain_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)  # queued or still being retried
        self._closing.set()
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    self.stats.dropped += 1
                self._queue.task_done()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join(timeout=self._timeout_s + 1)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                self._send(body)
            finally:
                self._queue.task_done()

    def _send(self, body: bytes) -> None:
        for attempt in range(self._retries + 1):
            if attempt:
                if self._closing.wait(self._backoff_s * 2 ** (attempt - 1)):
                    break
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "trace"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    response.read()
                self.stats.delivered += 1
                return
            except urllib.error.HTTPError as exc:
                self.stats.last_error = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # the endpoint refuses this alert: retrying will not help
            except (urllib.error.URLError, OSError) as exc:
                self.stats.last_error = str(getattr(exc, "reason", exc))
        self.stats.failed += 1

    def summary(self) -> str:
        text = f"webhook {self.url}: {self.stats.delivered} delivered, {self.stats.dropped} dropped (queue full)"
        text += f", {self.stats.failed} failed after retries"
        if self.stats.last_error:
            text += f" (last error: {self.stats.last_error})"
        return text
