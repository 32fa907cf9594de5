"""Hand-built captures for the state tests: segments in the real capture schema.

`CaptureBuilder` numbers events across segments like the recorder does
(evt_num increases through rotations) and writes each segment as zstd
Parquet with the recorder's metadata, snapshot rows first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from capture import schema

T0 = 1_800_000_000_000_000_000  # 2027-01-15, wall-clock ns


@dataclass
class Proc:
    """What a process row and the events of a process share."""

    pid: int
    ppid: int
    comm: str
    uid: int = 0
    gid: int = 0
    container_id: str = "host"


@dataclass
class CaptureBuilder:
    directory: Path
    host: str = "testhost"
    evt_num: int = 100
    ts: int = T0
    seq: int = 0
    rows: list[dict] = field(default_factory=list)
    users: tuple[tuple[int, str], ...] = ((0, "root"), (1000, "alice"), (1001, "bob"))
    groups: tuple[tuple[int, str], ...] = ((0, "root"), (1000, "alice"))

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    # --- snapshot rows ---------------------------------------------------
    def start_segment(self) -> None:
        assert not self.rows, "finish the previous segment first"
        self.ts += 1000
        for uid, name in self.users:
            self.rows.append({"kind": "user", "ts": self.ts, "uid": uid, "gid": uid, "user_name": name,
                              "user_home": f"/home/{name}", "user_shell": "/bin/bash"})
        for gid, name in self.groups:
            self.rows.append({"kind": "group", "ts": self.ts, "gid": gid, "group_name": name})

    def snap_proc(self, p: Proc, argv: list[str], exepath: str, cwd: str, start_ts: int | None = None, **extra) -> None:
        self.rows.append({"kind": "proc", "ts": self.ts, "pid": p.pid, "tid": p.pid, "ppid": p.ppid, "uid": p.uid,
                          "gid": p.gid, "comm": p.comm, "container_id": p.container_id, "argv": argv,
                          "exepath": exepath, "cwd": cwd, "loginuid": extra.pop("loginuid", 4294967295),
                          "tty": extra.pop("tty", 0), "sid": extra.pop("sid", p.pid), "pgid": extra.pop("pgid", p.pid),
                          "vpid": p.pid, "proc_start_ts": start_ts if start_ts is not None else T0 - 10**12,
                          **extra})

    def snap_fd(self, pid: int, fd: int, path: str, **extra) -> None:
        self.rows.append({"kind": "fd", "ts": self.ts, "pid": pid, "tid": pid, "fd": fd, "path": path, **extra})

    def cgroup(self, container_id: str, name: str, image: str) -> None:
        self.rows.append({"kind": "cgroup", "ts": self.ts, "cgroup_id": 42, "cgroup_path": f"/docker/{container_id}",
                          "container_id": container_id, "container_name": name, "container_image": image})

    # --- events -----------------------------------------------------------
    def evt(self, p: Proc, syscall: str, res: int = 0, tid: int | None = None, **cols) -> int:
        """Append one event of process `p`; returns its evt_num."""
        self.evt_num += 1
        self.ts += 1_000_000
        row = {"kind": "evt", "evt_num": self.evt_num, "ts": self.ts, "cpu": 0, "pid": p.pid,
               "tid": tid if tid is not None else p.pid, "ppid": p.ppid, "uid": p.uid, "gid": p.gid,
               "comm": p.comm, "container_id": p.container_id, "syscall": syscall, "res": res}
        row.update(cols)
        self.rows.append(row)
        return self.evt_num

    def fork(self, parent: Proc, child_pid: int) -> Proc:
        """clone() in the parent, then the child's own clone exit."""
        self.evt(parent, "clone", res=child_pid, flags=0x01200011)
        child = Proc(child_pid, parent.pid, parent.comm, parent.uid, parent.gid, parent.container_id)
        self.evt(child, "clone", res=0, flags=0x01200011)
        return child

    def execve(self, p: Proc, argv: list[str], exepath: str, comm: str | None = None, **cols) -> Proc:
        p.comm = comm or Path(exepath).name[:15]
        self.evt(p, "execve", res=0, path=exepath, argv=argv, exepath=exepath, **cols)
        return p

    def exit(self, p: Proc) -> None:
        self.evt(p, "procexit", res=0)

    def finish_segment(self) -> Path:
        self.seq += 1
        name = f"seg-20270115T000000-{self.seq:06d}.parquet"
        first = next((r["evt_num"] for r in self.rows if r["kind"] == "evt"), None)
        meta = {schema.META_HOST: self.host.encode(), schema.META_KERNEL: b"6.18.0",
                schema.META_BOOT_NS: b"0", schema.META_SEGMENT_SEQ: str(self.seq).encode()}
        if first is not None:
            meta[schema.META_FIRST_EVT_NUM] = str(first).encode()
        table = pa.Table.from_pylist(self.rows, schema=schema.schema_with_metadata(meta))
        path = self.directory / name
        pq.write_table(table, path, compression="zstd")
        self.rows = []
        return path
