"""Snapshot rows against a real child process with known state, and container ids from cgroups."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from capture import schema
from capture.containers import HOST, CgroupMap, cgroup2_mount, container_id_from_cgroup, container_id_from_proc_cgroup
from capture.snapshot import cgroup_row, parse_inet_address, take_snapshot

CID = "3f1e9c0d2b7a" + "4" * 52

_CHILD = textwrap.dedent(
    """
    import os, socket, sys
    marker = sys.argv[1]
    log = open(os.path.join(os.getcwd(), marker + ".log"), "a")
    listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen()
    client = socket.create_connection(listener.getsockname())
    unix = socket.socket(socket.AF_UNIX); unix.bind(os.path.join(os.getcwd(), marker + ".sock"))
    print(listener.getsockname()[1], client.getsockname()[1], log.fileno(), listener.fileno(), client.fileno(), unix.fileno(), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def child(tmp_path):
    marker = uuid.uuid4().hex
    before = time.time_ns()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, marker],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRACE_TEST_MARKER": marker},
    )
    fields = proc.stdout.readline().split()
    after = time.time_ns()
    try:
        yield proc, marker, [int(f) for f in fields], (before, after)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def rows(table: pa.Table, kind: str, **where) -> list[dict]:
    found = table.filter(pc.equal(table["kind"].cast(pa.string()), kind)).to_pylist()
    return [r for r in found if all(r[k] == v for k, v in where.items())]


def test_process_row_matches_the_live_process(child, tmp_path):
    proc, marker, _, (before, after) = child
    table = take_snapshot(time.time_ns(), CgroupMap())
    assert table.schema.equals(schema.SCHEMA)
    (row,) = rows(table, "proc", pid=proc.pid)
    assert row["ppid"] == os.getpid() and row["tid"] == proc.pid
    assert row["argv"] == [sys.executable, "-c", _CHILD, marker]
    assert row["exepath"] == os.path.realpath(sys.executable)
    assert row["cwd"] == str(tmp_path)
    assert row["comm"] == Path(sys.executable).name[:15] == Path(f"/proc/{proc.pid}/comm").read_text().strip()
    assert (row["uid"], row["gid"]) == (os.geteuid(), os.getegid())
    assert row["sid"] == os.getsid(proc.pid) and row["pgid"] == os.getpgid(proc.pid)
    assert row["tty"] == int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[4])
    assert row["vpid"] == proc.pid
    assert row["loginuid"] == int(Path(f"/proc/{proc.pid}/loginuid").read_text())
    assert before - 20_000_000 <= row["proc_start_ts"] <= after + 20_000_000  # /proc counts in clock ticks
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":\t" in line)
    assert row["cap_effective"] == int(status["CapEff"], 16) and row["cap_permitted"] == int(status["CapPrm"], 16)
    assert row["container_id"] == container_id_from_proc_cgroup(Path(f"/proc/{proc.pid}/cgroup").read_text())
    assert row["exe_from_memfd"] is False
    assert row["env"] is None  # only with --env


def test_environment_only_when_asked(child):
    proc, marker, _, _ = child
    (row,) = rows(take_snapshot(time.time_ns(), CgroupMap(), with_env=True), "proc", pid=proc.pid)
    assert f"TRACE_TEST_MARKER={marker}" in row["env"]


def test_fd_rows_resolve_files_and_sockets(child, tmp_path):
    proc, marker, (port, client_port, log_fd, listen_fd, client_fd, unix_fd), _ = child
    table = take_snapshot(time.time_ns(), CgroupMap())
    fds = {r["fd"]: r for r in rows(table, "fd", pid=proc.pid)}
    assert fds[log_fd]["path"] == str(tmp_path / f"{marker}.log")
    assert fds[log_fd]["flags"] & os.O_APPEND
    listener = fds[listen_fd]
    assert (listener["sock_family"], listener["sock_proto"], listener["sock_type"]) == (socket.AF_INET, 6, socket.SOCK_STREAM)
    assert (listener["local_ip"], listener["local_port"]) == ("127.0.0.1", port)
    client = fds[client_fd]
    assert (client["local_ip"], client["local_port"], client["addr_ip"], client["addr_port"]) == ("127.0.0.1", client_port, "127.0.0.1", port)
    unix = fds[unix_fd]
    assert unix["sock_family"] == socket.AF_UNIX and unix["addr_path"] == unix["path"] == str(tmp_path / f"{marker}.sock")
    assert fds[0]["path"].startswith("pipe:[")


def test_users_groups_and_cgroups(tmp_path):
    table = take_snapshot(time.time_ns(), CgroupMap())
    (root,) = rows(table, "user", uid=0)
    assert (root["user_name"], root["gid"], root["user_home"]) == ("root", 0, "/root")
    assert rows(table, "group", gid=0)[0]["group_name"] == "root"
    mount = cgroup2_mount()
    if mount is not None:
        (top,) = rows(table, "cgroup", cgroup_path="/")
        assert top["cgroup_id"] == os.stat(mount).st_ino and top["container_id"] == HOST


def test_inet_addresses_as_proc_prints_them():
    assert parse_inet_address("0100007F:1F90", socket.AF_INET) == ("127.0.0.1", 8080)
    assert parse_inet_address("00000000000000000000000001000000:0016", socket.AF_INET6) == ("::1", 22)
    assert parse_inet_address("0000000000000000FFFF00000100007F:01BB", socket.AF_INET6) == ("::ffff:127.0.0.1", 443)


@pytest.mark.parametrize(
    "path, expected",
    [
        (f"/docker/{CID}", CID[:12]),
        (f"/system.slice/docker-{CID}.scope", CID[:12]),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{CID}.scope", CID[:12]),
        (f"/kubepods/besteffort/pod0d3f/{CID}", CID[:12]),
        (f"/kubepods.slice/kubepods-pod77.slice/crio-{CID}.scope", CID[:12]),
        (f"/machine.slice/libpod-{CID}.scope", CID[:12]),
        (f"/machine.slice/libpod-{CID}.scope/container", CID[:12]),
        (f"/libpod_parent/libpod-{CID}", CID[:12]),
        (f"/machine.slice/libpod-conmon-{CID}.scope", HOST),
        ("/user.slice/user-0.slice/session-3.scope", HOST),
        ("/", HOST),
        (f"/docker/{CID[:40]}", HOST),
    ],
)
def test_container_id_from_cgroup_path(path, expected):
    assert container_id_from_cgroup(path) == expected


def test_container_id_from_any_v1_hierarchy():
    text = f"12:pids:/docker/{CID}\n0::/\n"
    assert container_id_from_proc_cgroup(text) == CID[:12]
    assert container_id_from_proc_cgroup("0::/init.scope\n") == HOST


@pytest.fixture
def docker_like_cgroup():
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup v2 mount")
    path = mount / f"docker-{CID}.scope"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def test_cgroup_ids_map_to_container_ids_vectorized(docker_like_cgroup, tmp_path):
    cgroups = CgroupMap(refresh_interval=0)
    container_cgroup = os.stat(docker_like_cgroup).st_ino
    root_cgroup = os.stat(cgroups.mount).st_ino
    ids = pa.array([container_cgroup, root_cgroup, None, 987654321, container_cgroup], pa.int64())
    column = cgroups.container_id_column(ids)
    assert column.type == schema.SCHEMA.field("container_id").type
    assert column.to_pylist() == [CID[:12], HOST, None, None, CID[:12]]
    assert None not in column.dictionary.to_pylist()  # Parquet cannot store a null dictionary entry
    table = pa.table({"container_id": column})
    pq.write_table(table, tmp_path / "ids.parquet")
    assert pq.read_table(tmp_path / "ids.parquet")["container_id"].to_pylist() == column.to_pylist()
    assert cgroups.cgroup_ids_of_container(CID[:12]) == {container_cgroup}
    assert cgroups.cgroup_ids_of_container(CID) == {container_cgroup}


def test_process_in_a_container_cgroup_gets_its_id(docker_like_cgroup):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (docker_like_cgroup / "cgroup.procs").write_text(str(sleeper.pid))
        (row,) = rows(take_snapshot(time.time_ns(), CgroupMap()), "proc", pid=sleeper.pid)
        assert row["container_id"] == CID[:12]
        assert row["cgroup_id"] == os.stat(docker_like_cgroup).st_ino
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cgroup_rows_name_docker_containers_from_dockers_state(tmp_path):
    state = tmp_path / "docker" / "containers" / CID
    state.mkdir(parents=True)
    (state / "config.v2.json").write_text(json.dumps({"ID": CID, "Name": "/web-1", "Config": {"Image": "nginx:1.27"}}))
    path = f"/system.slice/docker-{CID}.scope"
    row = cgroup_row(42, path, 7, docker_root=tmp_path / "docker")
    assert (row["container_id"], row["container_name"], row["container_image"]) == (CID[:12], "web-1", "nginx:1.27")
    podman = cgroup_row(43, f"/machine.slice/libpod-{CID[::-1]}.scope", 7, docker_root=tmp_path / "docker")
    assert podman["container_id"] == CID[::-1][:12] and podman["container_name"] is None and podman.get("container_image") is None
    assert cgroup_row(1, "/", 7)["container_id"] == HOST

