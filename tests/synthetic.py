"""Real capture-schema record batches for exercising the store without a probe."""

from __future__ import annotations

import pyarrow as pa

from capture import schema

BASE_TS = 1_795_000_000_000_000_000


def event_batch(first_evt_num: int, count: int, syscall: str = "openat", path_prefix: str = "/tmp/f", pid: int = 4242) -> pa.RecordBatch:
    rows = [
        {
            "kind": schema.KIND_EVENT,
            "evt_num": first_evt_num + i,
            "ts": BASE_TS + (first_evt_num + i) * 1000,
            "cpu": i % 2,
            "pid": pid,
            "tid": pid,
            "comm": "synthetic",
            "cgroup_id": 1,
            "container_id": "host",
            "syscall": syscall,
            "res": 3,
            "path": f"{path_prefix}{first_evt_num + i}",
        }
        for i in range(count)
    ]
    return pa.RecordBatch.from_pylist(rows, schema=schema.SCHEMA)


def proc_snapshot(wall_ns: int) -> pa.Table:
    """A two-process snapshot (what take_snapshot returns, minus reading /proc)."""
    rows = [
        {"kind": schema.KIND_PROC, "ts": wall_ns, "pid": 1, "tid": 1, "ppid": 0, "comm": "init", "argv": ["/sbin/init"]},
        {"kind": schema.KIND_PROC, "ts": wall_ns, "pid": 4242, "tid": 4242, "ppid": 1, "comm": "synthetic", "argv": ["synthetic", "--x"]},
    ]
    return pa.Table.from_pylist(rows, schema=schema.SCHEMA)
