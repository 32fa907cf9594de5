"""A progress bar on stderr for the hunt's one long query.

DuckDB reports a running query's progress through query_progress(), which is
safe to call from another thread; DuckDB's own bar is switched off because
it would print on stdout, between the alerts.
"""

from __future__ import annotations

import threading
from typing import TextIO

import duckdb

_WIDTH = 30


def quiet_duckdb(con: duckdb.DuckDBPyConnection, track: bool) -> None:
    """Never let DuckDB print; keep progress tracking on only when a bar is shown."""
    con.execute("SET enable_progress_bar_print = false")
    con.execute(f"SET enable_progress_bar = {'true' if track else 'false'}")


class QueryProgress:
    """Draws the connection's query progress until the block exits."""

    def __init__(self, con: duckdb.DuckDBPyConnection, stream: TextIO, label: str, interval: float = 0.25) -> None:
        self._con = con
        self._stream = stream
        self._label = label
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hunt-progress", daemon=True)

    def _draw(self, percent: float) -> None:
        filled = int(_WIDTH * percent / 100)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {percent:5.1f}%")
        self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            percent = self._con.query_progress()
            if percent >= 0:
                self._draw(min(percent, 100.0))

    def __enter__(self) -> QueryProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._stream.write("\r" + " " * (len(self._label) + _WIDTH + 12) + "\r")
        self._stream.flush()
