"""manifest.json: the index of a capture directory, rewritten atomically.

The manifest is a convenience index, never the only record: every fact in it
is also in the segments' own Parquet metadata, and `Manifest.load` rebuilds
entries for finalized segments it does not list (a crash between a segment's
rename and the manifest update) and forgets entries whose file is gone.
What only the manifest knows is `next_seq` and `last_evt_num`, so numbering
never goes back even after retention deleted every segment.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture import schema
from capture.fsutil import write_file_atomically
from capture.layout import list_segment_files, parse_segment_name

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass
class SegmentEntry:
    name: str
    seq: int
    bytes: int
    rows: int
    events: int
    first_ts: int | None  # wall-clock ns of the first event (None: no events)
    last_ts: int | None
    first_evt_num: int | None
    last_evt_num: int | None
    drops: dict = field(default_factory=lambda: {"kernel": {}, "user": 0})
    host: str = ""
    kernel: str = ""
    boot_ns: int = 0


@dataclass
class Manifest:
    directory: Path
    schema_version: str = schema.SCHEMA_VERSION
    host: str = ""
    kernel: str = ""
    boot_ns: int = 0
    next_seq: int = 1
    last_evt_num: int = 0  # evt_num of the last event written; the next one is +1
    deleted_segments: int = 0  # removed by retention, over the capture's life
    segments: list[SegmentEntry] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_NAME

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """The manifest of `directory`, reconciled with the segments on disk."""
        directory = Path(directory)
        manifest = cls(directory)
        try:
            raw = json.loads((directory / MANIFEST_NAME).read_text())
        except FileNotFoundError:
            raw = None
        except (OSError, ValueError) as exc:
            # A torn or foreign manifest: rebuild it from the segments.
            print(f"trace: warning: ignoring unreadable {directory / MANIFEST_NAME}: {exc}", file=sys.stderr)
            raw = None
        if raw is not None:
            manifest.schema_version = raw.get("schema_version", schema.SCHEMA_VERSION)
            manifest.host = raw.get("host", "")
            manifest.kernel = raw.get("kernel", "")
            manifest.boot_ns = int(raw.get("boot_ns", 0))
            manifest.next_seq = int(raw.get("next_seq", 1))
            manifest.last_evt_num = int(raw.get("last_evt_num", 0))
            manifest.deleted_segments = int(raw.get("deleted_segments", 0))
            manifest.segments = [SegmentEntry(**entry) for entry in raw.get("segments", [])]
        manifest._reconcile()
        return manifest

    def _reconcile(self) -> None:
        on_disk = {p.name: p for p in list_segment_files(self.directory)}
        self.segments = [e for e in self.segments if e.name in on_disk]
        listed = {e.name for e in self.segments}
        for name, path in on_disk.items():
            if name not in listed:
                entry = entry_from_segment_file(path)
                if entry is not None:
                    self.segments.append(entry)
        self.segments.sort(key=lambda e: e.seq)
        for name in on_disk:
            self.next_seq = max(self.next_seq, parse_segment_name(name) + 1)
        for entry in self.segments:
            if entry.last_evt_num is not None:
                self.last_evt_num = max(self.last_evt_num, entry.last_evt_num)

    def add(self, entry: SegmentEntry) -> None:
        self.segments.append(entry)
        self.next_seq = max(self.next_seq, entry.seq + 1)
        if entry.last_evt_num is not None:
            self.last_evt_num = max(self.last_evt_num, entry.last_evt_num)

    def remove(self, names: set[str]) -> None:
        before = len(self.segments)
        self.segments = [e for e in self.segments if e.name not in names]
        self.deleted_segments += before - len(self.segments)

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "schema_version": self.schema_version,
            "host": self.host,
            "kernel": self.kernel,
            "boot_ns": self.boot_ns,
            "next_seq": self.next_seq,
            "last_evt_num": self.last_evt_num,
            "deleted_segments": self.deleted_segments,
            "events": sum(e.events for e in self.segments),
            "segments": [asdict(e) for e in self.segments],
        }

    def save(self) -> None:
        write_file_atomically(self.path, (json.dumps(self.to_json(), indent=1) + "\n").encode())


def entry_from_segment_file(path: Path) -> SegmentEntry | None:
    """Rebuild a manifest entry from a finalized segment's footer; None if it does not read."""
    try:
        meta = pq.read_metadata(path)
    except (OSError, ValueError) as exc:
        print(f"trace: warning: skipping unreadable segment {path}: {exc}", file=sys.stderr)
        return None
    kv = meta.metadata or {}
    events, first_ts, last_ts, first_num, last_num = _event_stats(path)
    return SegmentEntry(
        name=path.name,
        seq=parse_segment_name(path.name),
        bytes=os.stat(path).st_size,
        rows=meta.num_rows,
        events=events,
        first_ts=first_ts,
        last_ts=last_ts,
        first_evt_num=first_num,
        last_evt_num=last_num,
        drops=json.loads(kv.get(schema.META_DROPS, b'{"kernel": {}, "user": 0}')),
        host=kv.get(schema.META_HOST, b"").decode(),
        kernel=kv.get(schema.META_KERNEL, b"").decode(),
        boot_ns=int(kv.get(schema.META_BOOT_NS, b"0")),
    )


def _event_stats(path: Path) -> tuple[int, int | None, int | None, int | None, int | None]:
    table = pq.read_table(path, columns=["kind", "ts", "evt_num"])
    events = table.filter(pc.equal(table["kind"].cast("string"), schema.KIND_EVENT))
    if events.num_rows == 0:
        return 0, None, None, None, None
    ts = pc.min_max(events["ts"])
    nums = pc.min_max(events["evt_num"])
    return events.num_rows, ts["min"].as_py(), ts["max"].as_py(), nums["min"].as_py(), nums["max"].as_py()
