"""Real eBPF capture: a workload with known counts appears with the right fields.

One EventSource is loaded for the module (bcc compiles for seconds). The
workload runs in a child process; its events are found by the process tree
rooted at its pid and by uuid markers in paths and argv, with bounded
polling (until the workload's procexit arrives, or a deadline).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from capture import syscalls as sc
from capture.probe import EventSource, ProbeConfig
from capture.schema import SCHEMA

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF needs root"),
]

O_CREAT, O_WRONLY, O_ACCMODE = 0o100, 0o1, 0o3
AT_FDCWD = -100


@pytest.fixture(scope="module")
def source():
    with EventSource(ProbeConfig(exclude_pids=frozenset({os.getpid()}))) as src:
        yield src


def collect_tree(src: EventSource, root_pid: int, done, deadline_s: float = 20.0) -> list[dict]:
    """Rows of root_pid and its descendants, polled until done(rows) or the deadline."""
    tracked = {root_pid}
    rows: list[dict] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        batch = src.poll(50)
        if batch is None:
            if done(rows):
                return rows
            continue
        assert not pc.any(pc.equal(batch.column("pid"), os.getpid())).as_py(), "the excluded recorder pid was recorded"
        while True:  # a fork chain may sit in one batch: grow the tree to a fixed point
            mask = pc.or_(pc.is_in(batch.column("pid"), pa.array(sorted(tracked), pa.int32())),
                          pc.is_in(batch.column("ppid"), pa.array(sorted(tracked), pa.int32())))
            new = set(batch.filter(mask).column("pid").to_pylist()) - tracked
            if not new:
                break
            tracked |= new
        rows.extend(batch.filter(mask).to_pylist())
        if done(rows):
            return rows
    pytest.fail(f"workload events incomplete after {deadline_s}s: {len(rows)} rows (ring drops so far: {src.drops()})")


def exited(pid: int):
    return lambda rows: any(r["syscall"] == "procexit" and r["tid"] == pid for r in rows)


WORKLOAD = textwrap.dedent(
    """
    import os, socket, stat, subprocess, sys
    tag, workdir = sys.argv[1], sys.argv[2]
    target = os.path.join(workdir, "open-" + tag)
    os.mknod(target, 0o600 | stat.S_IFREG)
    for _ in range(23):
        os.close(os.open(target, os.O_RDONLY))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()

    subdir = os.path.join(workdir, "cd-" + tag)
    os.mkdir(subdir)
    os.chdir(subdir)
    os.close(os.open("rel-" + tag, os.O_CREAT | os.O_WRONLY, 0o640))
    subprocess.run(["/bin/echo", "exec-" + tag, "two words"], check=True, stdout=subprocess.DEVNULL)

    def chain(level):
        os.close(os.open(os.path.join(workdir, f"fork-{tag}-{level}"), os.O_CREAT | os.O_WRONLY, 0o600))
        if level == 3:
            os._exit(0)
        child = os.fork()
        if child == 0:
            chain(level + 1)
        os.waitpid(child, 0)
    child = os.fork()
    if child == 0:
        chain(1)
    os.waitpid(child, 0)

    print("ready", client.fileno(), client.getsockname()[1], listener.getsockname()[1], flush=True)
    sys.stdin.readline()  # the test reads /proc/<pid> meanwhile
    os.dup2(client.fileno(), 0)
    """
)


@pytest.fixture(scope="module")
def workload(source, tmp_path_factory):
    """Runs the workload once under the module's source; returns what the tests check."""
    workdir = tmp_path_factory.mktemp("bpf-workload")
    tag = uuid.uuid4().hex
    drops_before = source.drops()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, tag, str(workdir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "ready", f"workload failed: {ready}"
        status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        proc_info = {
            "ppid": int(status["PPid"]),
            "euid": int(status["Uid"].split()[1]),
            "egid": int(status["Gid"].split()[1]),
            "loginuid": int(Path(f"/proc/{proc.pid}/loginuid").read_text()),
        }
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = collect_tree(source, proc.pid, exited(proc.pid))
    return {
        "drops": (drops_before, source.drops()),
        "rows": rows, "tag": tag, "workdir": workdir, "pid": proc.pid, "proc": proc_info,
        "client_fd": int(ready[1]), "client_port": int(ready[2]), "listen_port": int(ready[3]),
    }


def of(rows: list[dict], syscall: str, **match) -> list[dict]:
    return [r for r in rows if r["syscall"] == syscall and all(r[k] == v for k, v in match.items())]


def test_23_opens_of_a_unique_path(workload):
    target = str(workload["workdir"] / f"open-{workload['tag']}")
    opens = of(workload["rows"], "openat", path=target)
    assert len(opens) == 23
    for r in opens:
        assert r["pid"] == workload["pid"] and r["res"] >= 0
        assert r["dirfd"] == AT_FDCWD and r["flags"] & O_ACCMODE == os.O_RDONLY
        assert r["comm"] and r["kind"] == "evt" and r["evt_num"] is None and r["container_id"] is None
    closes = {r["fd"] for r in of(workload["rows"], "close", pid=workload["pid"])}
    assert {r["res"] for r in opens} <= closes


def test_process_identity_matches_proc(workload):
    mine = [r for r in workload["rows"] if r["pid"] == workload["pid"] and r["syscall"] != "procexit"]
    assert mine
    info = workload["proc"]
    for r in mine:
        assert (r["ppid"], r["uid"], r["gid"]) == (info["ppid"], info["euid"], info["egid"])
    assert info["ppid"] == os.getpid()
    now = time.time_ns()
    assert all(now - 120 * 10**9 < r["ts"] <= now for r in mine), "ts is not wall-clock ns"
    # the workload has exited; it ran in the test's own cgroup (the cgroup v2 id is the directory's inode)
    own = Path("/proc/self/cgroup").read_text().strip().rsplit(":", 1)[1]
    assert {r["cgroup_id"] for r in mine} == {os.stat(f"/sys/fs/cgroup{own}").st_ino}


def test_execve_with_distinctive_argv_and_cwd(workload):
    tag = workload["tag"]
    execs = [r for r in of(workload["rows"], "execve", res=0) if r["argv"] and f"exec-{tag}" in r["argv"]]
    assert len(execs) == 1
    e = execs[0]
    assert e["argv"] == ["/bin/echo", f"exec-{tag}", "two words"] and e["argv_truncated"] is False
    assert e["env"] is None  # only with ProbeConfig(env=True)
    assert e["exepath"] == "/bin/echo" and e["path"] == "/bin/echo"
    assert e["cwd"] == str(workload["workdir"] / f"cd-{tag}")
    assert e["comm"] == "echo" and e["ppid"] == workload["pid"]
    assert e["loginuid"] == workload["proc"]["loginuid"]
    assert e["uid"] == workload["proc"]["euid"]
    assert e["vpid"] == e["pid"]  # same pid namespace as the host here
    assert e["sid"] == os.getsid(0) and e["pgid"] == os.getpgid(0)
    assert e["tty"] is not None and e["cap_effective"] is not None and e["exe_from_memfd"] is False
    assert e["proc_start_ts"] <= e["ts"]
    assert e["arg0"] is not None  # the entry's raw pointer arguments are kept


def test_tcp_connect_to_loopback_listener(workload):
    rows, port, cport = workload["rows"], workload["listen_port"], workload["client_port"]
    connects = of(rows, "connect", addr_port=port)
    assert len(connects) == 1
    c = connects[0]
    assert c["res"] == 0 and c["fd"] == workload["client_fd"]
    assert c["sock_family"] == 2 and c["addr_ip"] == "127.0.0.1"
    assert (c["local_ip"], c["local_port"]) == ("127.0.0.1", cport)
    accepts = [r for r in rows if r["syscall"] in ("accept", "accept4") and r["local_port"] == port]
    assert len(accepts) == 1
    a = accepts[0]
    assert a["res"] >= 0 and (a["addr_ip"], a["addr_port"]) == ("127.0.0.1", cport)
    binds = of(rows, "bind", local_port=port)
    assert binds and binds[0]["addr_ip"] == "127.0.0.1" and binds[0]["addr_port"] == 0
    assert of(rows, "listen", local_port=port)
    sockets = of(rows, "socket", pid=workload["pid"], sock_family=2)
    assert sockets and all(s["sock_type"] & 0xF == 1 for s in sockets)  # SOCK_STREAM


def test_dup2_of_a_socket_onto_fd_0(workload):
    dups = of(workload["rows"], "dup2", pid=workload["pid"], fd=workload["client_fd"])
    assert len(dups) == 1
    assert dups[0]["arg1"] == 0 and dups[0]["res"] == 0


def test_chdir_then_relative_open(workload):
    tag, rows = workload["tag"], workload["rows"]
    subdir = str(workload["workdir"] / f"cd-{tag}")
    chdirs = of(rows, "chdir", path=subdir, res=0)
    rel = of(rows, "openat", path=f"rel-{tag}")
    assert len(chdirs) == 1 and len(rel) == 1
    o = rel[0]
    assert o["dirfd"] == AT_FDCWD and o["flags"] & O_CREAT and o["flags"] & O_ACCMODE == O_WRONLY
    assert o["mode"] == 0o640 and o["res"] >= 0
    assert chdirs[0]["ts"] < o["ts"] and chdirs[0]["pid"] == o["pid"]
    assert of(rows, "mkdir", path=subdir, mode=0o777)


def test_fork_chain_three_deep(workload):
    tag, rows = workload["tag"], workload["rows"]
    level_rows = {}
    for level in (1, 2, 3):
        path = str(workload["workdir"] / f"fork-{tag}-{level}")
        found = of(rows, "openat", path=path)
        assert len(found) == 1, level
        level_rows[level] = found[0]
    assert level_rows[1]["ppid"] == workload["pid"]
    assert level_rows[2]["ppid"] == level_rows[1]["pid"]
    assert level_rows[3]["ppid"] == level_rows[2]["pid"]
    assert len({r["pid"] for r in level_rows.values()} | {workload["pid"]}) == 4
    # each fork is seen in the parent (res = child pid) and in the child (res = 0)
    for level in (1, 2, 3):
        child = level_rows[level]["pid"]
        forks = [r for r in rows if r["syscall"] in ("clone", "clone3", "fork", "vfork") and r["res"] == child]
        assert forks and forks[0]["pid"] == level_rows[level]["ppid"]
        assert [r for r in rows if r["syscall"] in ("clone", "clone3", "fork", "vfork") and r["pid"] == child and r["res"] == 0]
        assert of(rows, "procexit", pid=child)


def test_no_drops_while_the_workload_ran(workload):
    before, after = workload["drops"]
    assert after.user == before.user == 0
    assert after.kernel == before.kernel
    assert set(after.kernel) == set(range(len(after.kernel))) and after.kernel  # one counter per CPU


def test_pipe_fds_and_unlink_rename_paths(source, tmp_path):
    tag = uuid.uuid4().hex
    a, b = tmp_path / f"a-{tag}", tmp_path / f"b-{tag}"
    script = textwrap.dedent(
        f"""
        import os
        r, w = os.pipe()
        print(r, w, flush=True)
        os.mknod({str(a)!r})
        os.rename({str(a)!r}, {str(b)!r})
        os.symlink({str(b)!r}, {str(a)!r})
        os.unlink({str(a)!r})
        long = {str(tmp_path)!r} + "/" + "L" * 200 + "-{tag}"
        try:
            os.open(long, os.O_RDONLY)
        except OSError:
            pass
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    read_fd, write_fd = map(int, proc.stdout.split())
    found: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r["syscall"] == "unlink" for r in found):
        batch = source.poll(50)
        if batch is not None:
            found.extend(r for r in batch.to_pylist() if any(tag in (r[k] or "") for k in ("path", "path2"))
                         or (r["syscall"] in ("pipe", "pipe2") and r["fd"] == read_fd and r["fd2"] == write_fd))
    pipes = [r for r in found if r["syscall"] in ("pipe", "pipe2")]
    assert pipes and pipes[0]["res"] == 0
    renames = [r for r in found if r["syscall"] in ("rename", "renameat", "renameat2")]
    assert len(renames) == 1 and (renames[0]["path"], renames[0]["path2"]) == (str(a), str(b))
    links = [r for r in found if r["syscall"] in ("symlink", "symlinkat")]
    assert len(links) == 1 and (links[0]["path"], links[0]["path2"]) == (str(b), str(a))
    assert [r for r in found if r["syscall"] in ("unlink", "unlinkat") and r["path"] == str(a)]
    longs = [r for r in found if r["syscall"] == "openat" and r["path"] and r["path"].endswith("L" * 200 + f"-{tag}")]
    assert len(longs) == 1 and longs[0]["res"] == -2  # a path longer than the fixed slot, whole


def test_exec_from_memfd_is_flagged(source):
    tag = uuid.uuid4().hex
    script = textwrap.dedent(
        f"""
        import os
        fd = os.memfd_create("img-{tag}", 0)
        with open("/bin/true", "rb") as image:
            os.write(fd, image.read())
        os.execve(fd, ["true", "memfd-{tag}"], {{}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=True)
    assert proc.returncode == 0
    found: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not found:
        batch = source.poll(50)
        if batch is not None:
            found = [r for r in batch.to_pylist() if r["syscall"] in ("execve", "execveat") and r["argv"]
                     and f"memfd-{tag}" in r["argv"]]
    assert len(found) == 1
    e = found[0]
    assert e["exe_from_memfd"] is True and e["res"] == 0
    assert e["syscall"] == "execveat" and e["dirfd"] is not None  # fexecve: execveat(fd, "", AT_EMPTY_PATH)


def test_exec_from_an_overlay_upper_layer_is_flagged(source, tmp_path):
    """A binary written into an overlay mount (upper layer) vs one shipped in the lower layer."""
    tag = uuid.uuid4().hex
    lower, upper, work, merged = (tmp_path / d for d in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "shipped").write_bytes(Path("/bin/true").read_bytes())
    (lower / "shipped").chmod(0o755)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        (merged / "dropped").write_bytes(Path("/bin/true").read_bytes())  # lands in the upper layer
        (merged / "dropped").chmod(0o755)
        for name in ("shipped", "dropped"):
            subprocess.run([str(merged / name), f"{name}-{tag}"], check=True)
        found: dict[str, dict] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(found) < 2:
            batch = source.poll(50)
            if batch is not None:
                for r in batch.to_pylist():
                    for name in ("shipped", "dropped"):
                        if r["syscall"] == "execve" and r["argv"] and f"{name}-{tag}" in r["argv"]:
                            found[name] = r
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert found["dropped"]["exe_upper_layer"] is True
    assert found["shipped"]["exe_upper_layer"] is False
    assert found["dropped"]["exepath"] == str(merged / "dropped")


PLAN_WORKLOAD = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tag = sys.argv[1]
    rel = ("rel-" + tag).encode()
    missing = ("/nonexistent-" + tag + "/x").encode()
    BAD, CLOEXEC = 1000, 0o2000000  # an fd that is not open; O_CLOEXEC

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    def call(nr, *args):
        return libc.syscall(ctypes.c_long(nr), *[a if isinstance(a, (bytes, ctypes._Pointer)) else ctypes.c_long(a)
                                                 for a in args])

    # Distinct values in every argument a column comes from; all but openat2 fail harmlessly.
    for nr, *args in [
        (32, BAD + 1), (33, BAD + 2, BAD + 3), (292, BAD + 4, BAD + 5, CLOEXEC), (72, BAD + 6, 1), (3, BAD + 7),
        (91, BAD + 8, 0o751), (81, BAD + 9), (308, BAD + 10, 0), (313, BAD + 11, b"", 0),
        (257, BAD + 12, rel, CLOEXEC, 0o600), (258, BAD + 13, rel, 0o711), (268, BAD + 14, rel, 0o755),
        (263, BAD + 15, rel, 0x200), (316, BAD + 16, rel, BAD + 17, rel, 1), (265, BAD + 18, rel, BAD + 19, rel, 0),
        (266, rel, BAD + 20, rel), (322, BAD + 21, rel, 0, 0, 0x1000),
        (41, 12345, 1, 0), (53, 12346, 2, 0, 8), (288, BAD + 22, 0, 0, CLOEXEC), (293, 8, CLOEXEC),
        (319, rel, 0x100), (323, 0x100), (2, missing, CLOEXEC, 0o644), (85, missing, 0o600), (83, missing, 0o700),
        (90, missing, 0o700), (50, BAD + 23, 5), (49, BAD + 24, 0, 0), (42, BAD + 25, 0, 0),
        (44, BAD + 26, 0, 0, 0, 0, 0), (45, BAD + 27, 0, 0, 0, 0, 0), (46, BAD + 28, 0, 0), (47, BAD + 29, 0, 0),
    ]:
        assert call(nr, *args) < 0, nr
    how = OpenHow(os.O_RDONLY | CLOEXEC, 0, 0)
    fd = call(437, -100, b"/dev/null", ctypes.pointer(how), ctypes.sizeof(how))
    assert fd >= 0
    os.close(fd)
    """
)


def test_kernel_decodes_every_argument_column_by_the_plan(source):
    """The BPF program fills fd, dirfd, flags, mode, ... from each syscall's plan (capture/syscalls.py)."""
    proc = subprocess.Popen([sys.executable, "-c", PLAN_WORKLOAD, uuid.uuid4().hex])
    try:
        # Read while it runs: a busy host could fill the ring during a wait.
        rows = collect_tree(source, proc.pid, exited(proc.pid))
    finally:
        assert proc.wait(timeout=30) == 0
    checked: set[str] = set()
    for row in rows:
        s = sc.BY_NAME.get(row["syscall"])
        if s is None:
            continue
        for column in (*sc.DECODED_COLUMNS, "sock_family"):
            source_of = getattr(s, column)
            if column == "sock_family" and source_of == sc.NONE:
                continue  # from the address or the socket: test_tcp_connect_and_socket
            if source_of == sc.NONE:
                assert row[column] is None, (s.name, column)
                continue
            if source_of >= sc.AUX_LO:  # from the user struct copied after a successful call only
                if row["res"] < 0:
                    assert row[column] is None, (s.name, column)
                continue
            raw = row["res"] if source_of == sc.RES else row[f"arg{source_of}"]
            bits = SCHEMA.field(column).type.bit_width
            expected = raw if bits == 64 else (raw + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))
            assert row[column] == expected, (s.name, column, row[column], expected)
        checked.add(s.name)
    called = {"dup", "dup2", "dup3", "fcntl", "close", "fchmod", "fchdir", "setns", "finit_module", "openat", "mkdirat",
              "fchmodat", "unlinkat", "renameat2", "linkat", "symlinkat", "execveat", "socket", "socketpair", "accept4",
              "pipe2", "memfd_create", "userfaultfd", "open", "creat", "mkdir", "chmod", "listen", "bind", "connect",
              "sendto", "recvfrom", "sendmsg", "recvmsg", "openat2"}
    assert called <= checked, sorted(called - checked)
    [how] = [r for r in rows if r["syscall"] == "openat2" and r["path"] == "/dev/null"]
    assert (how["res"] >= 0, how["flags"], how["mode"]) == (True, os.O_RDONLY | 0o2000000, 0)  # open_how, copied
