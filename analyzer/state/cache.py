"""The materialized state of one capture, cached next to it.

`<capture>/.trace-cache/state-<key>.duckdb` (0600 in a 0700 directory: it
holds command lines and paths). The key covers the builder's version and
every segment's name, size and mtime, so adding, rotating, deleting or
rewriting a segment rebuilds the cache. Next to each cache, `<name>.inputs`
lists the segments it was built from. After a build, another cache is removed
when it is stale (of another version, or a segment it read changed or is
gone) or superseded (the new cache read all its segments, as after a
rotation); one built from segments the new one did not read (the whole
capture, when a glob hunts a few of its segments) is kept. A capture
directory that is not writable (evidence mounted read-only) gets its cache
under $XDG_CACHE_HOME/trace instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import duckdb

from analyzer.render import install_macros as install_render_macros
from analyzer.state.inputs import Capture, Segment
from analyzer.state.ranges import RANGE_EVENTS, materialize_by_ranges
from analyzer.state.sql import install_macros

# Bump when the tables or their meaning change: old caches are then rebuilt.
STATE_VERSION = 7
CACHE_DIR_NAME = ".trace-cache"
MEMORY_LIMIT = "1536MB"


def configure(con: duckdb.DuckDBPyConnection, temp_dir: Path) -> None:
    """Bound memory (spilling to `temp_dir`) and install the SQL macros."""
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{str(temp_dir).replace(chr(39), chr(39) * 2)}'")
    con.execute("SET preserve_insertion_order = false")
    # DuckDB's own bar writes to stdout: it would corrupt `trace query` CSV/JSON.
    con.execute("SET enable_progress_bar = false")
    install_macros(con)
    install_render_macros(con)


def cache_dir_for(capture: Capture) -> Path:
    preferred = capture.directory / CACHE_DIR_NAME
    try:
        _private_dir(preferred)
        return preferred
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trace"
        digest = hashlib.sha256(str(capture.directory).encode()).hexdigest()[:16]
        fallback = base / digest
        _private_dir(base)
        _private_dir(fallback)
        return fallback


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path} is not writable")


def ensure_state(capture: Capture, range_events: int = RANGE_EVENTS) -> tuple[Path, list[str]]:
    """The path of the capture's state database, built if missing (a range of
    about `range_events` rows at a time); warnings of the build."""
    directory = cache_dir_for(capture)
    path = directory / f"state-v{STATE_VERSION}-{capture.key}.duckdb"
    if not path.exists():
        _build(capture, directory, path, range_events)
        _remove_replaced(capture, directory, path)
    con = duckdb.connect(str(path), read_only=True)
    try:
        warnings = [row[0] for row in con.execute("SELECT message FROM build_warnings ORDER BY 1").fetchall()]
    finally:
        con.close()
    return path, warnings


def _inputs_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".inputs")


def _input(seg: Segment) -> tuple[str, int, int]:
    return seg.name, seg.size, seg.mtime_ns


def _remove_replaced(capture: Capture, directory: Path, path: Path) -> None:
    """Remove the other caches that are stale or that the one at `path` supersedes."""
    built = {_input(seg) for seg in capture.segments}
    for other in directory.glob("state-*.duckdb"):
        if other != path and not _still_useful(other, capture.directory, built):
            other.unlink(missing_ok=True)
            _inputs_path(other).unlink(missing_ok=True)


def _still_useful(cache: Path, capture_dir: Path, built: set[tuple[str, int, int]]) -> bool:
    """Of this version, and built from unchanged segments that the new cache did not all read."""
    if not cache.name.startswith(f"state-v{STATE_VERSION}-"):
        return False
    try:
        read = {tuple(entry) for entry in json.loads(_inputs_path(cache).read_text())}
    except (OSError, ValueError, TypeError):
        return False  # written before the inputs were recorded
    return not read <= built and all(_unchanged(capture_dir / name, size, mtime) for name, size, mtime in read)


def _unchanged(segment: Path, size: int, mtime_ns: int) -> bool:
    try:
        stat = segment.stat()
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns)


def _build(capture: Capture, directory: Path, path: Path, range_events: int) -> None:
    # DuckDB creates the output's WAL (and spill files) with the umask's mode: private, like the cache
    umask = os.umask(0o077)
    try:
        _build_private(capture, directory, path, range_events)
    finally:
        os.umask(umask)


def _build_private(capture: Capture, directory: Path, path: Path, range_events: int) -> None:
    temp = directory / f".{path.name}.{os.getpid()}.tmp"
    temp.unlink(missing_ok=True)
    spill = directory / "tmp"
    _private_dir(spill)
    # Each range is built in memory (spilling to `spill` past the memory
    # limit) and appended to the file: the intermediate tables never pay for
    # the file's WAL and checkpoints.
    con = duckdb.connect()
    try:
        configure(con, spill)
        con.execute(f"ATTACH '{_quote(str(temp))}' AS out")
        os.chmod(temp, 0o600)  # inside a 0700 directory from the start
        warnings: list[str] = []
        materialize_by_ranges(con, capture, "out", spill, warnings, range_events)
        con.execute("CREATE TABLE out.build_warnings (message VARCHAR)")
        for warning in warnings:
            con.execute("INSERT INTO out.build_warnings VALUES (?)", [warning])
        con.execute("DETACH out")
    except BaseException:
        con.close()
        temp.unlink(missing_ok=True)
        Path(str(temp) + ".wal").unlink(missing_ok=True)
        raise
    con.close()
    os.chmod(temp, 0o600)
    # Before the cache appears: a cache never lacks its inputs (written under the build's umask: 0600).
    _inputs_path(path).write_text(json.dumps(sorted(_input(seg) for seg in capture.segments)))
    os.replace(temp, path)
