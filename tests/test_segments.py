"""The segment store for real: Parquet files, manifest and tail on disk, no probe needed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import mounted_tmpfs
from hypothesis import given, settings
from hypothesis import strategies as st

from capture import schema
from capture.fsutil import CaptureStoreError
from capture.manifest import Manifest
from capture.segments import (
    META_RECOVERED,
    CaptureIdentity,
    DropCounts,
    RetentionPolicy,
    RotationPolicy,
    SegmentWriter,
    list_segment_files,
    parse_segment_name,
    segment_name,
)
from capture.tail import TAIL_NAME
from tests.synthetic import BASE_TS, event_batch, proc_snapshot

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = CaptureIdentity("testhost", "6.18-test", 1_700_000_000_000_000_000)


class Clock:
    """An explicit clock for time-based rotation and age-based retention."""

    def __init__(self, start_ns: int = BASE_TS):
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


def writer_for(directory: Path, **kw) -> SegmentWriter:
    kw.setdefault("snapshot", proc_snapshot)
    return SegmentWriter(directory, IDENTITY, **kw)


def write_events(writer: SegmentWriter, total: int, batch_rows: int) -> None:
    first = writer.last_evt_num + 1
    for start in range(first, first + total, batch_rows):
        writer.write(event_batch(start, min(batch_rows, first + total - start)))


def read_segments(directory: Path) -> list[pa.Table]:
    return [pq.read_table(p) for p in list_segment_files(directory)]


def events_of(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["kind"].cast(pa.string()), schema.KIND_EVENT))


def kv(path: Path) -> dict[bytes, bytes]:
    return pq.read_metadata(path).metadata


def test_segment_names_sort_by_sequence_and_parse_back():
    name = segment_name(7, BASE_TS)
    assert name == "seg-20261118T110640-000007.parquet"
    assert parse_segment_name(name) == 7
    with pytest.raises(ValueError):
        parse_segment_name("seg-x.parquet")


def test_rotation_by_event_count_is_exact_and_every_segment_stands_alone(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=100))
    write_events(writer, 250, batch_rows=30)
    writer.close()

    files = list_segment_files(capture)
    assert [parse_segment_name(p.name) for p in files] == [1, 2, 3]
    nums = []
    for seq, path in enumerate(files, start=1):
        table = pq.read_table(path)
        kinds = table["kind"].cast(pa.string()).to_pylist()
        assert kinds[:2] == ["proc", "proc"] and set(kinds[2:]) == {"evt"}
        events = events_of(table)
        nums += events["evt_num"].to_pylist()
        meta = kv(path)
        assert meta[schema.META_SCHEMA_VERSION] == schema.SCHEMA_VERSION.encode()
        assert meta[schema.META_HOST] == b"testhost" and meta[schema.META_KERNEL] == b"6.18-test"
        assert int(meta[schema.META_BOOT_NS]) == IDENTITY.boot_ns
        assert int(meta[schema.META_SEGMENT_SEQ]) == seq
        assert int(meta[schema.META_FIRST_EVT_NUM]) == events["evt_num"][0].as_py()
        assert json.loads(meta[schema.META_DROPS]) == {"kernel": {}, "user": 0}
        assert pq.read_schema(path).equals(schema.SCHEMA, check_metadata=False)
    assert [events_of(t).num_rows for t in read_segments(capture)] == [100, 100, 50]
    assert nums == list(range(1, 251))

    manifest = json.loads((capture / "manifest.json").read_text())
    assert [s["name"] for s in manifest["segments"]] == [p.name for p in files]
    assert [(s["first_evt_num"], s["last_evt_num"]) for s in manifest["segments"]] == [(1, 100), (101, 200), (201, 250)]
    assert manifest["last_evt_num"] == 250 and manifest["next_seq"] == 4 and manifest["events"] == 250
    assert manifest["schema_version"] == schema.SCHEMA_VERSION and manifest["host"] == "testhost"
    assert not (capture / TAIL_NAME).exists()


def test_captures_are_private(tmp_path):
    capture = tmp_path / "cap"
    capture.mkdir(mode=0o755)
    old = os.umask(0)
    try:
        writer = writer_for(capture, rotation=RotationPolicy(max_events=10))
        write_events(writer, 15, batch_rows=15)
        assert stat.S_IMODE(os.stat(capture / TAIL_NAME).st_mode) == 0o600
        writer.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(capture).st_mode) == 0o700
    for path in capture.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_rotation_by_size(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_bytes=40_000), row_group_rows=200)
    write_events(writer, 5000, batch_rows=100)
    writer.close()
    files = list_segment_files(capture)
    assert len(files) > 2
    assert all(p.stat().st_size < 3 * 40_000 for p in files)
    assert sum(events_of(t).num_rows for t in read_segments(capture)) == 5000


def test_rotation_by_time_also_while_idle(tmp_path):
    clock = Clock()
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_seconds=60), clock=clock)
    write_events(writer, 10, batch_rows=10)
    clock.advance(59)
    writer.tick()
    assert list_segment_files(capture) == []
    clock.advance(1)
    writer.tick()
    assert len(list_segment_files(capture)) == 1
    assert writer.current_segment is None  # the next segment opens with the next event
    clock.advance(600)
    writer.tick()
    assert len(list_segment_files(capture)) == 1
    write_events(writer, 5, batch_rows=5)
    writer.close()
    assert [events_of(t).num_rows for t in read_segments(capture)] == [10, 5]


def test_retention_by_count(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=10), retention=RetentionPolicy(keep_segments=2))
    write_events(writer, 55, batch_rows=10)
    writer.close()
    files = list_segment_files(capture)
    assert [parse_segment_name(p.name) for p in files] == [5, 6]
    manifest = Manifest.load(capture)
    assert [e.seq for e in manifest.segments] == [5, 6] and manifest.deleted_segments == 4


def test_retention_by_total_bytes_keeps_the_newest(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=50), retention=RetentionPolicy(keep_bytes=1))
    write_events(writer, 200, batch_rows=50)
    writer.close()
    assert [parse_segment_name(p.name) for p in list_segment_files(capture)] == [4]

    capture2 = tmp_path / "cap2"
    writer = writer_for(capture2, rotation=RotationPolicy(max_events=50))
    write_events(writer, 50, batch_rows=50)
    writer.rotate()
    one = list_segment_files(capture2)[0].stat().st_size
    writer.retention = RetentionPolicy(keep_bytes=int(2.5 * one))
    write_events(writer, 250, batch_rows=50)
    writer.close()
    files = list_segment_files(capture2)
    assert len(files) == 2 and sum(p.stat().st_size for p in files) <= 2.5 * one


def test_retention_by_age(tmp_path):
    clock = Clock()
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=10), retention=RetentionPolicy(keep_age_seconds=3600), clock=clock)
    write_events(writer, 30, batch_rows=10)  # events stamped BASE_TS + n us: "now" for the clock
    assert len(list_segment_files(capture)) == 3
    clock.advance(3601)
    write_events(writer, 10, batch_rows=10)
    writer.close()
    assert [parse_segment_name(p.name) for p in list_segment_files(capture)] == [4]


def test_restart_resumes_numbering_and_evt_num_even_after_retention_removed_all(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=10), retention=RetentionPolicy(keep_segments=1))
    write_events(writer, 30, batch_rows=10)
    writer.close()
    for path in list_segment_files(capture):
        path.unlink()

    writer = writer_for(capture, rotation=RotationPolicy(max_events=10))
    assert writer.last_evt_num == 30
    write_events(writer, 10, batch_rows=10)
    writer.close()
    (only,) = list_segment_files(capture)
    assert parse_segment_name(only.name) == 4
    assert events_of(pq.read_table(only))["evt_num"].to_pylist() == list(range(31, 41))


def test_drops_are_written_per_segment(tmp_path):
    counts = {"kernel": {0: 0, 1: 0}, "user": 0}
    current = lambda: DropCounts(dict(counts["kernel"]), counts["user"])  # noqa: E731
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=10), drops=current)
    write_events(writer, 10, batch_rows=5)
    write_events(writer, 5, batch_rows=5)
    counts["kernel"][1] = 7
    counts["user"] = 2
    write_events(writer, 5, batch_rows=5)
    counts["kernel"][0] = 3  # lost while no segment is open: charged to the next one
    write_events(writer, 5, batch_rows=5)
    writer.close()
    drops = [json.loads(kv(p)[schema.META_DROPS]) for p in list_segment_files(capture)]
    assert drops == [{"kernel": {}, "user": 0}, {"kernel": {"1": 7}, "user": 2}, {"kernel": {"0": 3}, "user": 0}]
    assert Manifest.load(capture).segments[1].drops == drops[1]


def test_leftovers_of_a_crash_are_cleaned_and_the_manifest_rebuilt(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=10))
    write_events(writer, 25, batch_rows=5)  # two finalized, one open
    leftovers = {p.name for p in capture.iterdir()}
    assert any(n.startswith(".seg-") and n.endswith(".tmp") for n in leftovers) and TAIL_NAME in leftovers
    (capture / "manifest.json").write_text('{"segments": [')  # torn, as if the crash hit it too
    writer._lock.close()  # no close(): the process "died", and the kernel dropped its lock

    writer = writer_for(capture, rotation=RotationPolicy(max_events=10))
    assert writer.last_evt_num == 25  # the open segment's events were saved from the tail
    assert not [p for p in capture.iterdir() if p.name.endswith(".tmp")] and not (capture / TAIL_NAME).exists()
    write_events(writer, 1, batch_rows=1)
    writer.close()
    files = list_segment_files(capture)
    assert [parse_segment_name(p.name) for p in files] == [1, 2, 3, 4]
    recovered = pq.read_table(files[2])
    assert recovered["kind"].cast(pa.string()).to_pylist()[:2] == ["proc", "proc"]
    assert events_of(recovered)["evt_num"].to_pylist() == list(range(21, 26))
    assert kv(files[2])[META_RECOVERED] == b"tail" and json.loads(kv(files[2])[schema.META_DROPS])["unknown"] is True
    assert events_of(read_segments(capture)[-1])["evt_num"].to_pylist() == [26]
    assert [e.seq for e in Manifest.load(capture).segments] == [1, 2, 3, 4]


def test_unwritable_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CaptureStoreError, match=r"cannot use capture directory .*file/cap"):
        writer_for(blocker / "cap")


@pytest.fixture
def small_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "1m") as mountpoint:
        yield mountpoint


def test_full_disk_stops_cleanly_with_finalized_segments_intact(small_tmpfs):
    capture = small_tmpfs / "cap"
    writer = writer_for(capture, rotation=RotationPolicy(max_events=200), row_group_rows=100)
    with pytest.raises(CaptureStoreError, match="disk full") as error:
        for start in range(1, 10**6, 100):
            writer.write(event_batch(start, 100, path_prefix="/" + os.urandom(300).hex() + "/"))
    writer.close()  # what the recorder does next: nothing left to finalize, the lock released
    assert "\n" not in str(error.value)
    files = list_segment_files(capture)
    assert files, "some segments were finalized before the disk filled"
    manifest = json.loads((capture / "manifest.json").read_text())
    assert [s["name"] for s in manifest["segments"]] == [p.name for p in files]
    nums = [n for t in read_segments(capture) for n in events_of(t)["evt_num"].to_pylist()]
    assert nums == list(range(1, len(nums) + 1)) and manifest["last_evt_num"] >= nums[-1]
    assert not [p for p in capture.iterdir() if p.name.startswith(".seg-")]


_CRASH_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from capture.segments import CaptureIdentity, RotationPolicy, SegmentWriter
    from tests.synthetic import event_batch, proc_snapshot
    writer = SegmentWriter(Path(sys.argv[1]), CaptureIdentity("h", "k", 0), RotationPolicy(max_events=500), snapshot=proc_snapshot, row_group_rows=100)
    n = writer.last_evt_num + 1
    while True:
        writer.write(event_batch(n, 50))
        n += 50
    """
)


def test_sigkill_mid_write_leaves_every_finalized_segment_readable(tmp_path):
    capture = tmp_path / "cap"
    child = subprocess.Popen([sys.executable, "-c", _CRASH_WRITER, str(capture)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while len(list_segment_files(capture)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    files = list_segment_files(capture)
    assert len(files) >= 3
    nums = [n for p in files for n in events_of(pq.read_table(p))["evt_num"].to_pylist()]
    assert nums == list(range(1, len(nums) + 1))

    writer = writer_for(capture)  # the next start cleans up, saves the tail, and continues
    assert not [p for p in capture.iterdir() if p.name.endswith(".tmp")]
    recovered = list_segment_files(capture)
    all_nums = [n for p in recovered for n in events_of(pq.read_table(p))["evt_num"].to_pylist()]
    assert all_nums[: len(nums)] == nums and all_nums == list(range(1, len(all_nums) + 1))
    assert writer.last_evt_num == all_nums[-1]
    write_events(writer, 5, batch_rows=5)
    writer.close()
    assert parse_segment_name(list_segment_files(capture)[-1].name) > parse_segment_name(recovered[-1].name)


batch_sizes = st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=12)
path_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=40)
@given(
    sizes=batch_sizes,
    max_events=st.one_of(st.none(), st.integers(min_value=1, max_value=150)),
    row_group_rows=st.integers(min_value=1, max_value=200),
    prefix=path_text,
)
def test_property_batches_round_trip_through_rotation_exactly(tmp_path_factory, sizes, max_events, row_group_rows, prefix):
    capture = tmp_path_factory.mktemp("prop")
    writer = writer_for(capture, rotation=RotationPolicy(max_events=max_events, max_bytes=None, max_seconds=None), row_group_rows=row_group_rows)
    written = []
    n = 1
    for size in sizes:
        batch = event_batch(n, size, path_prefix=prefix)
        writer.write(batch)
        written.append(batch)
        n += size
    writer.close()
    expected = pa.Table.from_batches(written, schema=schema.SCHEMA) if written else None
    tables = read_segments(capture)
    got = pa.concat_tables([events_of(t) for t in tables]) if tables else None
    total = n - 1
    if total == 0:
        assert all(events_of(t).num_rows == 0 for t in tables)
        return
    assert got.num_rows == total
    assert got.select(["evt_num", "ts", "path", "syscall"]).to_pylist() == expected.select(["evt_num", "ts", "path", "syscall"]).to_pylist()
    for path, table in zip(list_segment_files(capture), tables):
        events = events_of(table)
        if max_events is not None:
            assert events.num_rows <= max_events
        assert table["kind"].cast(pa.string()).to_pylist()[:2] == ["proc", "proc"]
        assert int(kv(path)[schema.META_FIRST_EVT_NUM]) == events["evt_num"][0].as_py()
    manifest = Manifest.load(capture)
    assert manifest.last_evt_num == total and sum(e.events for e in manifest.segments) == total


def test_one_writer_per_directory(tmp_path):
    capture = tmp_path / "cap"
    first = writer_for(capture)
    with pytest.raises(CaptureStoreError, match=rf"in use by another trace record \(pid {os.getpid()}\)"):
        writer_for(capture)
    first.close()
    writer_for(capture).close()


def test_without_tail_no_current_arrows_is_written(tmp_path):
    capture = tmp_path / "cap"
    writer = writer_for(capture, tail=False)
    write_events(writer, 10, batch_rows=5)
    assert not (capture / TAIL_NAME).exists() and writer.current_segment is not None
    writer.close()
    assert events_of(read_segments(capture)[0])["evt_num"].to_pylist() == list(range(1, 11))
