"""Falco fields resolved from a hand-built, rotated capture, checked exactly.

One capture of three segments tells a small incident: nginx (alive before
the capture, known only from snapshots) accepts a connection; sshd forks a
child that moves around with relative chdir/open, forks a helper without
exec, execs bash, connects out and dup2()s the socket onto fd 0; in the
next segment bash forks `cat` which writes to fd 0; a pid is reused; a
process is seen only through its events.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.state import open_captures
from tests.state_builder import T0, CaptureBuilder, Proc

O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_DIRECTORY, O_CLOEXEC = 0, 1, 0o100, 0o1000, 0o200000, 0o2000000
NGINX_START = T0 - 3_600_000_000_000


class World:
    """The scenario, and the evt_num of each event the tests look at."""

    def __init__(self, directory: Path):
        self.b = b = CaptureBuilder(directory)
        self.e: dict[str, int] = {}
        init, sshd, cron = Proc(1, 0, "systemd"), Proc(500, 1, "sshd"), Proc(300, 1, "cron")
        nginx = Proc(800, 1, "nginx", uid=1001, gid=1001)
        # ---- segment 1
        b.start_segment()
        self._base_snapshot(init, sshd, cron, nginx)
        self.e["accept"] = b.evt(nginx, "accept4", res=7, fd=6, flags=O_CLOEXEC, sock_family=2, addr_ip="203.0.113.5",
                                 addr_port=51000, local_ip="10.0.0.2", local_port=80)
        child = b.fork(sshd, 600)
        b.evt(child, "chdir", path="/home/alice")
        self.e["open_rel"] = b.evt(child, "openat", res=4, dirfd=-100, path="notes.txt", flags=O_RDONLY | O_CLOEXEC, mode=0)
        b.evt(child, "chdir", path="../bob")
        self.e["open_exec"] = b.evt(child, "open", res=8, path="x/../y.sh", flags=O_WRONLY | O_CREAT | O_TRUNC, mode=0o755)
        self.e["open_dir"] = b.evt(child, "openat", res=5, dirfd=-100, path="/etc", flags=O_DIRECTORY)
        self.e["open_at"] = b.evt(child, "openat", res=6, dirfd=5, path="passwd", flags=O_RDONLY)
        b.evt(child, "fchdir", res=0, fd=5)
        self.e["after_fchdir"] = b.evt(child, "unlinkat", res=-2, dirfd=-100, path="hosts.bak", flags=0)
        b.evt(child, "chdir", path="/home/bob")
        helper = b.fork(child, 601)
        self.e["helper_open"] = b.evt(helper, "openat", res=3, dirfd=-100, path="rel.txt", flags=O_RDONLY)
        b.execve(child, ["bash", "-i"], "/usr/bin/bash")
        self.e["after_exec_close"] = b.evt(child, "fcntl", res=-9, fd=4, arg1=1)
        b.evt(child, "socket", res=7, sock_family=2, sock_type=1, sock_proto=0)
        self.e["connect"] = b.evt(child, "connect", res=0, fd=7, sock_family=2, addr_ip="10.0.0.9", addr_port=4444,
                                  local_ip="10.0.0.2", local_port=41234)
        self.e["dup2"] = b.evt(child, "dup2", res=0, fd=7, arg1=0)
        b.exit(helper)
        b.finish_segment()
        # ---- segment 2: the snapshot lists what is alive
        b.start_segment()
        self._base_snapshot(init, sshd, cron, nginx)
        self._bash_snapshot(child)
        cat = b.fork(child, 602)
        b.execve(cat, ["cat", "/etc/shadow"], "/usr/bin/cat")
        self.e["shadow_denied"] = b.evt(cat, "openat", res=-13, dirfd=-100, path="/etc/shadow", flags=O_RDONLY)
        self.e["write_fd0"] = b.evt(cat, "sendto", res=10, fd=0)
        b.exit(cat)
        # pid 601 is reused by a cron job running as alice
        job = b.fork(cron, 601)
        job.uid = job.gid = 1000
        b.execve(job, ["sh", "-c", "backup"], "/usr/bin/dash", comm="sh")
        b.finish_segment()
        # ---- segment 3
        b.start_segment()
        self._base_snapshot(init, sshd, cron, nginx)
        self._bash_snapshot(child)
        b.snap_proc(job, ["sh", "-c", "backup"], "/usr/bin/dash", "/var/spool/cron", start_ts=T0, sid=300, pgid=601)
        self.e["job_open"] = b.evt(job, "openat", res=3, dirfd=-100, path="data.tar", flags=O_RDONLY)
        self.e["bash_open"] = b.evt(child, "openat", res=9, dirfd=-100, path="/tmp/x", flags=O_RDONLY)
        self.e["nginx_open"] = b.evt(nginx, "openat", res=12, dirfd=-100, path="/var/log/nginx/access.log",
                                     flags=O_WRONLY | 0o2000)
        self.e["mystery"] = b.evt(Proc(900, 1, "mystery"), "unlinkat", res=-2, dirfd=-100, path="gone", flags=0)
        self.segments = [p for p in sorted(directory.glob("seg-*.parquet"))]
        b.finish_segment()
        self.segments = sorted(directory.glob("seg-*.parquet"))

    def _base_snapshot(self, init: Proc, sshd: Proc, cron: Proc, nginx: Proc) -> None:
        b = self.b
        b.snap_proc(init, ["/sbin/init"], "/usr/lib/systemd/systemd", "/", sid=1)
        b.snap_proc(sshd, ["/usr/sbin/sshd", "-D"], "/usr/sbin/sshd", "/")
        b.snap_fd(500, 3, "socket:[11]", sock_family=2, sock_proto=6, local_ip="0.0.0.0", local_port=22,
                  addr_ip="0.0.0.0", addr_port=0)
        b.snap_proc(cron, ["/usr/sbin/cron", "-f"], "/usr/sbin/cron", "/var/spool/cron")
        b.snap_proc(nginx, ["nginx", "-g", "daemon off;"], "/usr/sbin/nginx", "/", start_ts=NGINX_START,
                    loginuid=1000, tty=34816)
        b.snap_fd(800, 6, "socket:[12]", sock_family=2, sock_proto=6, local_ip="0.0.0.0", local_port=80,
                  addr_ip="0.0.0.0", addr_port=0, flags=O_CLOEXEC)

    def _bash_snapshot(self, bash: Proc) -> None:
        b = self.b
        b.snap_proc(bash, ["bash", "-i"], "/usr/bin/bash", "/home/bob", start_ts=T0, sid=500, pgid=500)
        for fd in (0, 7):
            b.snap_fd(600, fd, "socket:[13]", sock_family=2, sock_proto=6, local_ip="10.0.0.2", local_port=41234,
                      addr_ip="10.0.0.9", addr_port=4444)
        b.snap_fd(600, 6, "/etc/passwd", flags=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("world") / "cap")


@pytest.fixture(scope="module")
def cs(world: World):
    with open_captures([str(world.b.directory)]) as opened:
        yield opened


def fields(cs, evt_num: int, *names: str) -> dict:
    cols = ", ".join(f'"{n}"' for n in names)
    rows = cs.con.execute(f"SELECT {cols} FROM events WHERE evt_num = ?", [evt_num]).fetchall()
    assert len(rows) == 1, f"evt {evt_num}: {len(rows)} rows"
    return dict(zip(names, rows[0]))


def test_opens_cleanly(cs):
    assert cs.warnings == []
    assert cs.hosts == ["testhost"]


def test_process_known_only_from_snapshots(cs, world):
    got = fields(cs, world.e["accept"], "proc.name", "proc.exe", "proc.exepath", "proc.args", "proc.cmdline",
                 "proc.pname", "proc.ppid", "proc.cwd", "user.uid", "user.name", "user.loginuid",
                 "user.loginname", "proc.tty", "proc.duration", "proc.pid.ts", "_anc_name")
    ts = cs.con.execute("SELECT ts FROM events WHERE evt_num = ?", [world.e["accept"]]).fetchall()[0][0]
    assert got == {
        "proc.name": "nginx", "proc.exe": "nginx", "proc.exepath": "/usr/sbin/nginx",
        "proc.args": "-g daemon off;", "proc.cmdline": "nginx -g daemon off;", "proc.pname": "systemd",
        "proc.ppid": 1, "proc.cwd": "/", "user.uid": 1001, "user.name": "bob", "user.loginuid": 1000,
        "user.loginname": "alice", "proc.tty": 34816, "proc.duration": ts - NGINX_START,
        "proc.pid.ts": NGINX_START, "_anc_name": ["nginx", "systemd"],
    }


def test_accept_is_the_server_side(cs, world):
    got = fields(cs, world.e["accept"], "fd.num", "fd.type", "fd.typechar", "fd.name", "fd.sip", "fd.sport",
                 "fd.cip", "fd.cport", "fd.lip", "fd.lport", "fd.rip", "fd.rport", "fd.l4proto",
                 "fd.sockfamily", "fd.is_server", "fd.connected", "evt.res")
    assert got == {
        "fd.num": 7, "fd.type": "ipv4", "fd.typechar": "4", "fd.name": "203.0.113.5:51000->10.0.0.2:80",
        "fd.sip": "10.0.0.2", "fd.sport": 80, "fd.cip": "203.0.113.5", "fd.cport": 51000,
        "fd.lip": "10.0.0.2", "fd.lport": 80, "fd.rip": "203.0.113.5", "fd.rport": 51000,
        "fd.l4proto": "tcp", "fd.sockfamily": "ip", "fd.is_server": True, "fd.connected": True,
        "evt.res": "SUCCESS",
    }


def test_relative_open_after_chdir(cs, world):
    got = fields(cs, world.e["open_rel"], "fd.name", "fd.nameraw", "fd.directory", "fd.filename", "fd.typechar",
                 "proc.cwd", "evt.is_open_read", "evt.is_open_write", "evt.is_open_exec", "proc.name",
                 "proc.pname", "_evt_args", "evt.args")
    assert got == {
        "fd.name": "/home/alice/notes.txt", "fd.nameraw": "notes.txt", "fd.directory": "/home/alice",
        "fd.filename": "notes.txt", "fd.typechar": "f", "proc.cwd": "/home/alice/", "evt.is_open_read": True,
        "evt.is_open_write": False, "evt.is_open_exec": False, "proc.name": "sshd", "proc.pname": "sshd",
        "_evt_args": {"fd": "<f>/home/alice/notes.txt", "dirfd": "AT_FDCWD", "name": "/home/alice/notes.txt",
                      "flags": "O_RDONLY|O_CLOEXEC", "mode": "0"},
        "evt.args": "fd=4(<f>/home/alice/notes.txt) dirfd=-100(AT_FDCWD) name=notes.txt(/home/alice/notes.txt) "
                    "flags=524288(O_RDONLY|O_CLOEXEC) mode=0",
    }


def test_dotdot_chdir_and_creating_an_executable(cs, world):
    got = fields(cs, world.e["open_exec"], "fd.name", "proc.cwd", "evt.is_open_read", "evt.is_open_write",
                 "evt.is_open_exec", "_evt_args")
    assert got == {
        "fd.name": "/home/bob/y.sh", "proc.cwd": "/home/bob/", "evt.is_open_read": False,
        "evt.is_open_write": True, "evt.is_open_exec": True,
        "_evt_args": {"fd": "<f>/home/bob/y.sh", "name": "/home/bob/y.sh", "flags": "O_TRUNC|O_CREAT|O_WRONLY",
                      "mode": "S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR"},
    }


def test_directory_fd_and_openat_relative_to_it(cs, world):
    assert fields(cs, world.e["open_dir"], "fd.type", "fd.typechar", "fd.directory", "fd.filename") == {
        "fd.type": "directory", "fd.typechar": "d", "fd.directory": "/etc", "fd.filename": None}
    assert fields(cs, world.e["open_at"], "fd.name", "_evt_args") == {
        "fd.name": "/etc/passwd",
        "_evt_args": {"fd": "<f>/etc/passwd", "dirfd": "5", "name": "/etc/passwd", "flags": "O_RDONLY", "mode": None},
    }


def test_fchdir_moves_to_the_directory_of_the_fd(cs, world):
    assert fields(cs, world.e["after_fchdir"], "proc.cwd", "_evt_args") == {
        "proc.cwd": "/etc/", "_evt_args": {"res": "ENOENT", "dirfd": "AT_FDCWD", "name": "/etc/hosts.bak", "flags": "0"}}


def test_forked_child_without_exec_runs_its_parents_image(cs, world):
    got = fields(cs, world.e["helper_open"], "proc.pid", "proc.name", "proc.exe", "proc.cmdline", "proc.pname",
                 "proc.cwd", "fd.name", "_anc_pid", "_anc_name")
    assert got == {
        "proc.pid": 601, "proc.name": "sshd", "proc.exe": "/usr/sbin/sshd", "proc.cmdline": "sshd -D",
        "proc.pname": "sshd", "proc.cwd": "/home/bob/", "fd.name": "/home/bob/rel.txt",
        "_anc_pid": [601, 600, 500, 1], "_anc_name": ["sshd", "sshd", "sshd", "systemd"],
    }


def test_exec_closes_cloexec_fds_and_keeps_the_others(cs, world):
    # fd 4 was opened O_CLOEXEC before the exec: gone. fd 6 (/etc/passwd) survives.
    assert fields(cs, world.e["after_exec_close"], "fd.num", "fd.name", "fd.type", "evt.res", "proc.name") == {
        "fd.num": 4, "fd.name": None, "fd.type": None, "evt.res": "EBADF", "proc.name": "bash"}
    rows = cs.con.execute(
        "SELECT fd, name FROM fds WHERE pid = 600 AND open_ts <= (SELECT ts FROM events WHERE evt_num = ?) "
        "AND (close_ts IS NULL OR close_ts > (SELECT ts FROM events WHERE evt_num = ?)) ORDER BY fd",
        [world.e["after_exec_close"]] * 2).fetchall()
    assert (6, "/etc/passwd") in rows and all(fd != 4 for fd, _ in rows)


def test_connect_then_dup2_onto_stdin(cs, world):
    assert fields(cs, world.e["connect"], "fd.name", "fd.sip", "fd.sport", "fd.cip", "fd.cport", "fd.is_server",
                  "fd.name_changed", "evt.args") == {
        "fd.name": "10.0.0.2:41234->10.0.0.9:4444", "fd.sip": "10.0.0.9", "fd.sport": 4444,
        "fd.cip": "10.0.0.2", "fd.cport": 41234, "fd.is_server": False, "fd.name_changed": True,
        "evt.args": "res=0 tuple=10.0.0.2:41234->10.0.0.9:4444 fd=7(<4>10.0.0.2:41234->10.0.0.9:4444)"}
    assert fields(cs, world.e["dup2"], "fd.num", "fd.type", "evt.rawres", "_evt_args") == {
        "fd.num": 7, "fd.type": "ipv4", "evt.rawres": 0,
        "_evt_args": {"res": "0", "oldfd": "<4>10.0.0.2:41234->10.0.0.9:4444", "newfd": "0"}}


def test_grandchild_in_the_next_segment_writes_to_the_socket_on_fd0(cs, world):
    got = fields(cs, world.e["write_fd0"], "proc.name", "proc.pname", "proc.pcmdline", "proc.exepath",
                 "fd.num", "fd.type", "fd.typechar", "fd.name", "fd.sip", "fd.sport", "fd.rip", "fd.lport",
                 "fd.connected", "_anc_name", "_anc_cmdline", "proc.sid", "proc.sname")
    assert got == {
        "proc.name": "cat", "proc.pname": "bash", "proc.pcmdline": "bash -i", "proc.exepath": "/usr/bin/cat",
        "fd.num": 0, "fd.type": "ipv4", "fd.typechar": "4", "fd.name": "10.0.0.2:41234->10.0.0.9:4444",
        "fd.sip": "10.0.0.9", "fd.sport": 4444, "fd.rip": "10.0.0.9", "fd.lport": 41234, "fd.connected": True,
        "_anc_name": ["cat", "bash", "sshd", "systemd"],
        "_anc_cmdline": ["cat /etc/shadow", "bash -i", "sshd -D", "systemd"],
        "proc.sid": 500, "proc.sname": "sshd",
    }


def test_failed_open_names_the_file_and_the_errno(cs, world):
    assert fields(cs, world.e["shadow_denied"], "evt.res", "evt.rawres", "fd.num", "fd.name", "fd.typechar",
                  "evt.is_open_read", "_evt_args") == {
        "evt.res": "EACCES", "evt.rawres": -13, "fd.num": -13, "fd.name": "/etc/shadow", "fd.typechar": None,
        "evt.is_open_read": True,
        "_evt_args": {"fd": "EACCES", "dirfd": "AT_FDCWD", "name": "/etc/shadow", "flags": "O_RDONLY", "mode": None}}


def test_pid_reuse_makes_a_new_process(cs, world):
    got = fields(cs, world.e["job_open"], "proc.pid", "proc.name", "proc.cmdline", "proc.pname", "user.name",
                 "proc.cwd", "fd.name", "_anc_name")
    assert got == {
        "proc.pid": 601, "proc.name": "sh", "proc.cmdline": "sh -c backup", "proc.pname": "cron",
        "user.name": "alice", "proc.cwd": "/var/spool/cron/", "fd.name": "/var/spool/cron/data.tar",
        "_anc_name": ["sh", "cron", "systemd"],
    }
    keys = cs.con.execute("SELECT DISTINCT _proc_key FROM events WHERE pid = 601").fetchall()
    assert len(keys) == 3  # the helper (sshd image), the cron job's fork image, its exec image


def test_rotation_neither_loses_nor_duplicates_processes(cs, world):
    got = fields(cs, world.e["bash_open"], "proc.name", "proc.pname", "proc.cmdline", "_anc_pid", "proc.duration")
    assert got["_anc_pid"] == [600, 500, 1] and got["proc.cmdline"] == "bash -i" and got["proc.pname"] == "sshd"
    origins = cs.con.execute("SELECT origin FROM processes WHERE pid = 600 ORDER BY start_ts").fetchall()
    assert origins == [("fork",), ("exec",)]
    nginx = cs.con.execute("SELECT count(*) FROM processes WHERE pid = 800").fetchall()[0][0]
    assert nginx == 1


def test_process_seen_only_through_its_events(cs, world):
    got = fields(cs, world.e["mystery"], "proc.name", "proc.exe", "proc.cmdline", "proc.pname", "proc.cwd",
                 "evt.res", "_evt_args")
    assert got == {"proc.name": "mystery", "proc.exe": None, "proc.cmdline": None, "proc.pname": "systemd",
                   "proc.cwd": None, "evt.res": "ENOENT",
                   "_evt_args": {"res": "ENOENT", "dirfd": "AT_FDCWD", "name": "gone", "flags": "0"}}


def test_a_segment_alone_resolves_through_its_snapshot(world):
    with open_captures([str(world.segments[2])]) as alone:
        got = fields(alone, world.e["bash_open"], "proc.name", "proc.exe", "proc.cmdline", "proc.pname",
                     "proc.cwd", "_anc_pid", "proc.sid")
        assert got == {"proc.name": "bash", "proc.exe": "bash", "proc.cmdline": "bash -i", "proc.pname": "sshd",
                       "proc.cwd": "/home/bob/", "_anc_pid": [600, 500, 1], "proc.sid": 500}


def test_processes_and_fds_views(cs):
    cols = [d[0] for d in cs.con.execute("SELECT * FROM processes LIMIT 0").description]
    for needed in ("_proc_key", "pid", "ppid", "_parent_key", "_prev_key", "start_ts", "end_ts", "comm", "exe",
                   "exepath", "args", "cmdline", "cwd", "uid", "user_name", "loginuid", "tty", "sid", "pgid",
                   "container_id", "_host"):
        assert needed in cols
    fd_cols = [d[0] for d in cs.con.execute("SELECT * FROM fds LIMIT 0").description]
    assert fd_cols[:16] == ["_proc_key", "pid", "fd", "open_ts", "close_ts", "type", "typechar", "name", "l4proto",
                            "sockfamily", "lip", "lport", "rip", "rport", "is_server", "_host"]
    # every event's process is a row of `processes`
    orphans = cs.con.execute(
        "SELECT count(*) FROM events e LEFT JOIN processes p USING (_proc_key) WHERE p.pid IS NULL").fetchall()
    assert orphans == [(0,)]


def test_since_until_select_events_but_keep_state(world):
    ts = {n: t for n, t in _event_times(world).items()}
    with open_captures([str(world.b.directory)], since=ts["write_fd0"], until=ts["write_fd0"] + 1) as cs:
        rows = cs.con.execute('SELECT evt_num, "proc.pname", "fd.name" FROM events').fetchall()
    assert rows == [(world.e["write_fd0"], "bash", "10.0.0.2:41234->10.0.0.9:4444")]


def _event_times(world: World) -> dict[str, int]:
    import pyarrow.parquet as pq

    by_num = {}
    for seg in world.segments:
        table = pq.read_table(seg, columns=["evt_num", "ts"]).to_pylist()
        by_num.update({r["evt_num"]: r["ts"] for r in table if r["evt_num"] is not None})
    return {name: by_num[num] for name, num in world.e.items()}
