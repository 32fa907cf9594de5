"""CAPTURE arguments -> the segment files of each capture, checked and grouped.

A CAPTURE is a capture directory, its manifest.json, a Parquet file or a glob
of them. Files are grouped by their directory: one directory is one capture
(one pid namespace, one evt_num sequence). A segment whose footer does not
read or whose schema major version is unknown is skipped with a warning.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from analyzer.errors import TraceError
from capture import schema
from capture.manifest import MANIFEST_NAME
from capture.segments import list_segment_files


@dataclass(frozen=True)
class Segment:
    path: Path
    size: int
    mtime_ns: int
    host: str
    seq: int

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def of_file(cls, path: Path, host: str, seq: int) -> Segment:
        """A segment file written here (a follower batch, a carry), sized and dated as it is now."""
        stat = os.stat(path)
        return cls(path, stat.st_size, stat.st_mtime_ns, host, seq)


@dataclass(frozen=True)
class Capture:
    """The readable segments of one capture directory, oldest first."""

    directory: Path
    segments: tuple[Segment, ...]

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted({s.host for s in self.segments}))

    @property
    def key(self) -> str:
        """Identifies the segment set: names, sizes and mtimes."""
        digest = hashlib.sha256()
        for seg in self.segments:
            digest.update(f"{seg.name}\0{seg.size}\0{seg.mtime_ns}\n".encode())
        return digest.hexdigest()[:24]

    @property
    def id_prefix(self) -> int:
        """A stable 22-bit number for this capture, the high bits of its process keys."""
        digest = hashlib.sha256(str(self.directory).encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x3FFFFF


def resolve_captures(arguments: list[str] | tuple[str, ...], warnings: list[str]) -> list[Capture]:
    """The captures named by CAPTURE arguments; unreadable segments become warnings."""
    if not arguments:
        raise TraceError("no capture given")
    by_dir: dict[Path, dict[Path, None]] = {}
    for argument in arguments:
        for path in _expand(argument):
            by_dir.setdefault(path.parent, {})[path] = None
    captures = []
    for directory, paths in by_dir.items():
        segments = [seg for seg in (_check_segment(p, warnings) for p in paths) if seg is not None]
        segments.sort(key=lambda s: (s.seq, s.name))
        if segments:
            captures.append(Capture(directory, tuple(segments)))
    if not captures:
        raise TraceError(f"no readable segment in {', '.join(arguments)}: the capture is empty")
    return captures


def _expand(argument: str) -> list[Path]:
    path = Path(argument)
    if path.is_dir():
        found = list_segment_files(path)
        if not found:
            raise TraceError(f"{argument}: empty capture (no segment files)")
        return [p.resolve() for p in found]
    if path.name == MANIFEST_NAME and path.is_file():
        return _expand(str(path.parent))
    if path.is_file():
        return [path.resolve()]
    if glob.has_magic(argument):
        matches = sorted(Path(p) for p in glob.glob(argument) if Path(p).is_file())
        if not matches:
            raise TraceError(f"{argument}: no file matches")
        return [p.resolve() for p in matches]
    raise TraceError(f"{argument}: no such capture, manifest or segment file")


def _check_segment(path: Path, warnings: list[str]) -> Segment | None:
    try:
        meta = pq.read_metadata(path)
        stat = os.stat(path)
    except (OSError, ValueError) as exc:
        warnings.append(f"skipping unreadable segment {path}: {exc}")
        return None
    kv = meta.metadata or {}
    version = kv.get(schema.META_SCHEMA_VERSION, b"").decode() or "0"
    try:
        major = schema.schema_major(version)
    except ValueError:
        major = -1
    if major != schema.schema_major(schema.SCHEMA_VERSION):
        warnings.append(f"skipping segment {path}: capture schema version {version!r} is not supported")
        return None
    missing = {"kind", "evt_num", "ts", "pid", "syscall"} - set(meta.schema.names)
    if missing:
        warnings.append(f"skipping segment {path}: missing columns {sorted(missing)}")
        return None
    try:
        seq = int(kv.get(schema.META_SEGMENT_SEQ, b"0"))
    except ValueError:
        seq = 0
    return Segment(path, stat.st_size, stat.st_mtime_ns, kv.get(schema.META_HOST, b"").decode() or "unknown", seq)
