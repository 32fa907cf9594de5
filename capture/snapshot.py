"""Snapshot rows: the host's process, fd, user, group and cgroup tables from /proc.

Written at the start of every segment (kinds proc, fd, user, group, cgroup;
see capture/schema.py), so a segment can be hunted without the ones before
it, as sysdig does with the process list in each capture file. Processes and
fds come and go while /proc is read: whatever vanished mid-read is skipped.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from capture import schema
from capture.containers import (
    HOST,
    CgroupMap,
    container_id_from_cgroup,
    container_id_from_proc_cgroup,
    docker_name_and_image,
    full_container_id,
)

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_GONE = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)
SOCK_STREAM, SOCK_DGRAM = 1, 2
IPPROTO_TCP, IPPROTO_UDP = 6, 17


@dataclass(frozen=True)
class Socket:
    family: int
    proto: int | None
    type: int | None
    local_ip: str | None = None
    local_port: int | None = None
    remote_ip: str | None = None
    remote_port: int | None = None
    path: str | None = None


def take_snapshot(
    wall_ns: int,
    cgroups: CgroupMap,
    with_env: bool = False,
    proc: Path = Path("/proc"),
    etc: Path = Path("/etc"),
) -> pa.Table:
    """All snapshot rows at `wall_ns`, proc rows first, as a Table in the capture schema."""
    rows: list[dict] = []
    sockets = _SocketTables(proc)
    boot_wall_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    fd_rows: list[dict] = []
    for pid in _pids(proc):
        process = read_process(proc / str(pid), pid, boot_wall_ns, with_env, cgroups.mount)
        if process is None:
            continue
        process["ts"] = wall_ns
        rows.append(process)
        fd_rows.extend(read_fds(proc / str(pid), pid, wall_ns, sockets))
    rows.extend(fd_rows)
    rows.extend(read_users(etc / "passwd", wall_ns))
    rows.extend(read_groups(etc / "group", wall_ns))
    rows.extend(cgroup_row(cgroup_id, path, wall_ns) for cgroup_id, path in cgroups.items())
    return pa.Table.from_pylist(rows, schema=schema.SCHEMA)


def cgroup_row(cgroup_id: int, path: str, wall_ns: int, docker_root: Path = Path("/var/lib/docker")) -> dict:
    row = {"kind": schema.KIND_CGROUP, "ts": wall_ns, "cgroup_id": cgroup_id, "cgroup_path": path, "container_id": HOST}
    full_id = full_container_id(path)
    if full_id is not None:
        name, image = docker_name_and_image(full_id, docker_root)
        row.update(container_id=container_id_from_cgroup(path), container_name=name, container_image=image)
    return row


def _pids(proc: Path) -> list[int]:
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_process(pid_dir: Path, pid: int, boot_wall_ns: int, with_env: bool, cgroup_mount: Path | None) -> dict | None:
    """One `proc` row from /proc/PID, or None if the process exited meanwhile."""
    try:
        stat = _read(pid_dir / "stat")
        status = _read(pid_dir / "status")
        cmdline = _read(pid_dir / "cmdline")
        cgroup_text = _read(pid_dir / "cgroup")
        loginuid = _read(pid_dir / "loginuid").strip()
        environ = _read(pid_dir / "environ") if with_env else None
    except _GONE:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid=4, pgrp=5, session=6, tty_nr=7, starttime=22
    ppid, pgid, sid, tty_nr, start_ticks = (int(fields[i]) for i in (1, 2, 3, 4, 19))
    info = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    exepath = _readlink(pid_dir / "exe")
    cgroup_path = _cgroup2_path(cgroup_text)
    return {
        "kind": schema.KIND_PROC,
        "pid": pid,
        "tid": pid,
        "ppid": ppid,
        "uid": int(info["Uid"].split()[1]),
        "gid": int(info["Gid"].split()[1]),
        "comm": comm,
        "cgroup_id": _cgroup_inode(cgroup_mount, cgroup_path),
        "container_id": container_id_from_proc_cgroup(cgroup_text),
        "exepath": exepath,
        "argv": cmdline.split("\0")[:-1] if cmdline else [],
        "cwd": _readlink(pid_dir / "cwd"),
        "env": environ.split("\0")[:-1] if environ else None,
        "loginuid": int(loginuid) if loginuid else None,
        "tty": tty_nr,
        "sid": sid,
        "pgid": pgid,
        "vpid": int(info["NSpid"].split()[-1]) if "NSpid" in info else pid,
        "proc_start_ts": boot_wall_ns + start_ticks * 1_000_000_000 // _CLK_TCK,
        "cap_effective": int(info["CapEff"], 16),
        "cap_permitted": int(info["CapPrm"], 16),
        "cap_inheritable": int(info["CapInh"], 16),
        "exe_from_memfd": exepath.startswith("/memfd:") if exepath else None,
    }


def _cgroup2_path(cgroup_text: str) -> str | None:
    for line in cgroup_text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _cgroup_inode(mount: Path | None, path: str | None) -> int | None:
    """The cgroup v2 id of `path`: what bpf_get_current_cgroup_id() returns for its members."""
    if mount is None or path is None:
        return None
    try:
        return os.stat(str(mount) + path.rstrip("/")).st_ino
    except OSError:
        return None


def read_fds(pid_dir: Path, pid: int, wall_ns: int, sockets: _SocketTables) -> Iterator[dict]:
    """`fd` rows for the open descriptors of one process."""
    try:
        names = os.listdir(pid_dir / "fd")
    except (*_GONE, OSError):
        return
    for name in sorted(names, key=int):
        target = _readlink(pid_dir / "fd" / name)
        if target is None:
            continue
        row = {"kind": schema.KIND_FD, "ts": wall_ns, "pid": pid, "tid": pid, "fd": int(name), "path": target, "flags": _fd_flags(pid_dir / "fdinfo" / name)}
        if target.startswith("socket:["):
            sock = sockets.lookup(pid_dir, int(target[8:-1]))
            if sock is not None:
                row.update(
                    sock_family=sock.family, sock_type=sock.type, sock_proto=sock.proto,
                    local_ip=sock.local_ip, local_port=sock.local_port,
                    addr_ip=sock.remote_ip, addr_port=sock.remote_port, addr_path=sock.path,
                )
                if sock.path:
                    row["path"] = sock.path
        yield row


def _fd_flags(fdinfo: Path) -> int | None:
    try:
        for line in _read(fdinfo).splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return None


class _SocketTables:
    """Socket inode -> addresses, from /proc/PID/net/* read once per network namespace."""

    def __init__(self, proc: Path):
        self.proc = proc
        self._by_netns: dict[str, dict[int, Socket]] = {}

    def lookup(self, pid_dir: Path, inode: int) -> Socket | None:
        netns = _readlink(pid_dir / "ns" / "net") or ""
        table = self._by_netns.get(netns)
        if table is None:
            table = self._by_netns[netns] = dict(_read_net_tables(pid_dir / "net"))
        return table.get(inode)


def _read_net_tables(net: Path) -> Iterator[tuple[int, Socket]]:
    for name, family, proto, sock_type in (
        ("tcp", socket.AF_INET, IPPROTO_TCP, SOCK_STREAM),
        ("tcp6", socket.AF_INET6, IPPROTO_TCP, SOCK_STREAM),
        ("udp", socket.AF_INET, IPPROTO_UDP, SOCK_DGRAM),
        ("udp6", socket.AF_INET6, IPPROTO_UDP, SOCK_DGRAM),
    ):
        for fields in _table_lines(net / name):
            local_ip, local_port = parse_inet_address(fields[1], family)
            remote_ip, remote_port = parse_inet_address(fields[2], family)
            yield int(fields[9]), Socket(int(family), proto, sock_type, local_ip, local_port, remote_ip, remote_port)
    for fields in _table_lines(net / "unix"):
        if len(fields) < 7:
            continue
        path = fields[7] if len(fields) > 7 else None
        yield int(fields[6]), Socket(int(socket.AF_UNIX), None, int(fields[4], 16), path=path)


def _table_lines(path: Path) -> Iterable[list[str]]:
    try:
        lines = _read(path).splitlines()[1:]
    except OSError:
        return []
    return [line.split() for line in lines if line.strip()]


def parse_inet_address(text: str, family: int) -> tuple[str, int]:
    """'0100007F:1F90' (as /proc/net/tcp prints it: 32-bit words in host order) -> ('127.0.0.1', 8080)."""
    hex_ip, hex_port = text.split(":")
    raw = bytes.fromhex(hex_ip)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw), int(hex_port, 16)


def read_users(passwd: Path, wall_ns: int) -> Iterator[dict]:
    for fields in _colon_table(passwd, 7):
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        yield {"kind": schema.KIND_USER, "ts": wall_ns, "uid": uid, "gid": gid, "user_name": fields[0], "user_home": fields[5], "user_shell": fields[6]}


def read_groups(group: Path, wall_ns: int) -> Iterator[dict]:
    for fields in _colon_table(group, 3):
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        yield {"kind": schema.KIND_GROUP, "ts": wall_ns, "gid": gid, "group_name": fields[0]}


def _colon_table(path: Path, min_fields: int) -> Iterator[list[str]]:
    try:
        text = _read(path)
    except OSError:
        return
    for line in text.splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            if len(fields) >= min_fields:
                yield fields
