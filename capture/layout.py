"""File names in a capture directory: segments and the temporaries of interrupted writes."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

SEGMENT_GLOB = "seg-*.parquet"
SEGMENT_RE = re.compile(r"^seg-(\d{8}T\d{6})-(\d{6,})\.parquet$")
_TEMP_RE = re.compile(r"^\.(seg-.*\.parquet|manifest\.json|current\.arrows)\.tmp$")


def segment_name(seq: int, wall_ns: int) -> str:
    stamp = datetime.fromtimestamp(wall_ns / 1e9, tz=timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"seg-{stamp}-{seq:06d}.parquet"


def parse_segment_name(name: str) -> int:
    """The sequence number in a segment file name."""
    match = SEGMENT_RE.match(name)
    if match is None:
        raise ValueError(f"not a segment name: {name!r}")
    return int(match.group(2))


def list_segment_files(directory: Path) -> list[Path]:
    """Finalized segments of a capture directory, oldest (lowest seq) first."""
    found = [p for p in Path(directory).glob(SEGMENT_GLOB) if SEGMENT_RE.match(p.name)]
    return sorted(found, key=lambda p: parse_segment_name(p.name))


def remove_temporary_files(directory: Path) -> list[Path]:
    """Delete what an interrupted writer left behind; returns what was removed."""
    removed = []
    for path in Path(directory).iterdir():
        if _TEMP_RE.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
