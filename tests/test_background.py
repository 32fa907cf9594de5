"""The writer thread: everything queued is written in order; a writer error reaches the poll loop."""

from __future__ import annotations

import os
import subprocess

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import mounted_tmpfs

from capture.background import BackgroundWriter
from capture.fsutil import CaptureStoreError
from capture.segments import CaptureIdentity, RotationPolicy, SegmentWriter, list_segment_files
from tests.synthetic import event_batch, proc_snapshot

IDENTITY = CaptureIdentity("testhost", "6.18-test", 0)


def test_queued_batches_are_all_written_in_order(tmp_path):
    writer = SegmentWriter(tmp_path / "cap", IDENTITY, RotationPolicy(max_events=250), snapshot=proc_snapshot)
    background = BackgroundWriter(writer, max_queued_bytes=1)  # tiny: the producer must block, not lose
    for start in range(1, 2001, 50):
        background.write(event_batch(start, 50))
        background.tick()
    background.close()
    writer.close()
    tables = [pq.read_table(p) for p in list_segment_files(tmp_path / "cap")]
    nums = [n for t in tables for n in t.filter(pc.equal(t["kind"].cast(pa.string()), "evt"))["evt_num"].to_pylist()]
    assert nums == list(range(1, 2001)) and len(tables) == 8


@pytest.fixture
def tiny_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "tiny", "512k") as mountpoint:
        yield mountpoint


def test_a_disk_full_in_the_thread_is_raised_to_the_caller(tiny_tmpfs):
    writer = SegmentWriter(tiny_tmpfs / "cap", IDENTITY, RotationPolicy(max_events=100), snapshot=proc_snapshot, row_group_rows=50)
    background = BackgroundWriter(writer, max_queued_bytes=1 << 16)
    with pytest.raises(CaptureStoreError, match="disk full"):
        for start in range(1, 10**6, 50):
            background.write(event_batch(start, 50, path_prefix="/" + os.urandom(200).hex() + "/"))
        background.close()
    background.close()  # the error was delivered once; closing again is quiet
    writer.close()
    assert list_segment_files(tiny_tmpfs / "cap")
