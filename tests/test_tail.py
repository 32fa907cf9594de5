"""The tail protocol: a reader sees every complete batch, never a torn one, and knows when a segment is final."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture import schema
from capture.segments import CaptureIdentity, RotationPolicy, SegmentWriter
from capture.tail import TAIL_NAME, TailReader, TailWriter
from conftest import mounted_tmpfs
from tests.synthetic import event_batch, proc_snapshot

IDENTITY = CaptureIdentity("testhost", "6.18-test", 0)


def _stream_bytes(tmp_path, sizes: list[int]) -> tuple[bytes, list[pa.RecordBatch]]:
    writer = TailWriter(tmp_path, schema.SCHEMA)
    writer.publish()
    batches, n = [], 1
    for size in sizes:
        batch = event_batch(n, size, syscall=["openat", "connect", "execve"][n % 3])
        writer.write(batch)
        batches.append(batch)
        n += size
    writer.finish()
    return (tmp_path / TAIL_NAME).read_bytes(), batches


@settings(max_examples=60)
@given(sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6), cut=st.floats(min_value=0, max_value=1))
def test_property_a_torn_tail_yields_only_complete_batches_then_the_rest(tmp_path_factory, sizes, cut):
    source = tmp_path_factory.mktemp("src")
    data, batches = _stream_bytes(source, sizes)
    target = tmp_path_factory.mktemp("dst") / TAIL_NAME
    split = int(len(data) * cut)
    target.write_bytes(data[:split])
    with TailReader(target) as reader:
        first = reader.poll()
        with open(target, "ab") as f:
            f.write(data[split:])
        rest = reader.poll()
        assert reader.finished and reader.poll() == []
    got = first + rest
    assert [b.to_pylist() for b in got] == [b.to_pylist() for b in batches]
    complete_prefix = 0
    for batch in first:
        assert batch.to_pylist() == batches[complete_prefix].to_pylist()
        complete_prefix += 1


def test_follower_sees_batches_as_written_and_the_switch_at_rotation(tmp_path):
    capture = tmp_path / "cap"
    writer = SegmentWriter(capture, IDENTITY, rotation=RotationPolicy(max_events=10), snapshot=proc_snapshot)
    writer.write(event_batch(1, 4))
    reader = TailReader(capture / TAIL_NAME)
    assert [b.num_rows for b in reader.poll()] == [2, 4]  # snapshot rows, then the events
    first_segment = reader.segment_name
    assert first_segment == writer.current_segment
    writer.write(event_batch(5, 3))
    assert [b.num_rows for b in reader.poll()] == [3]
    assert not reader.finished and not reader.replaced()

    writer.write(event_batch(8, 5))  # fills segment 1 (3 events), rotates, 2 go to segment 2
    rows = reader.poll()
    assert [b.num_rows for b in rows] == [3] and reader.finished and reader.replaced()
    manifest = json.loads((capture / "manifest.json").read_text())
    assert first_segment in [s["name"] for s in manifest["segments"]]  # final before end-of-stream
    reader.close()

    with TailReader(capture / TAIL_NAME) as second:
        batches = second.poll()
        assert second.segment_name == writer.current_segment != first_segment
        assert [b.num_rows for b in batches] == [2, 2]
        assert batches[1].column("evt_num").to_pylist() == [11, 12]
    writer.close()
    assert not (capture / TAIL_NAME).exists()


def test_discarding_a_tail_the_full_disk_cut_short_removes_it(tmp_path):
    """A write that hit ENOSPC leaves bytes in the tail's buffer: discard still closes and removes the file."""
    with mounted_tmpfs(tmp_path / "small", "256k") as small:
        writer = TailWriter(small, schema.SCHEMA)
        writer.publish()
        n = 1
        with pytest.raises(OSError):
            while True:  # incompressible paths, so the small filesystem fills
                batch = event_batch(n, 200, syscall="openat")
                batch = batch.set_column(batch.schema.get_field_index("path"), batch.schema.field("path"),
                                         pa.array([os.urandom(48).hex() for _ in range(200)]))
                writer.write(batch)
                n += 200
        writer.discard()
        assert not (small / TAIL_NAME).exists()
