"""The state built a segment range at a time resolves exactly as one build of the whole capture.

Every field of the `events`, `processes` and `fds` views is compared
between a build with a tiny range size (each segment a range of its own, so
every boundary is a carry) and a build with the default size (one range).
Process keys are numbered differently by the two builds: they are compared
as what they identify (the first event of the process, or its pid and start).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import posixpath
import shutil
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.state import open_captures
from analyzer.state.cache import CACHE_DIR_NAME, ensure_state
from analyzer.state.inputs import resolve_captures
from analyzer.state.ranges import split_ranges
from tests.state_builder import T0, CaptureBuilder, Proc
from tests.test_state_resolution import World

REPO = Path(__file__).resolve().parents[1]
O_WRONLY, O_CREAT, O_CLOEXEC = 1, 0o100, 0o2000000


def _views(directory: Path, range_events: int) -> dict[str, list[tuple]]:
    """Every row of the three views, process keys replaced by what they identify, and the
    cache's fd_state row count."""
    shutil.rmtree(directory / CACHE_DIR_NAME, ignore_errors=True)
    warnings: list[str] = []
    path, _ = ensure_state(resolve_captures([str(directory)], warnings)[0], range_events=range_events)
    with contextlib.closing(duckdb.connect(str(path), read_only=True)) as cache:
        fd_rows = cache.execute("SELECT count(*) FROM fd_state").fetchall()
    with open_captures([str(directory)]) as cs:
        con = cs.con
        procs = {
            key: (pid, start, origin) for key, pid, start, origin in
            con.execute("SELECT _proc_key, pid, start_ts, origin FROM processes").fetchall()
        }
        assert len(procs) == con.execute("SELECT count(*) FROM processes").fetchall()[0][0], "duplicate process keys"

        def rows(sql: str, keyed: tuple[str, ...]) -> list[tuple]:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            out = []
            for row in cursor.fetchall():
                record = dict(zip(names, row))
                for name in keyed:
                    record[name] = procs.get(record[name], record[name] and "unknown key")
                out.append(tuple(sorted(record.items(), key=lambda kv: kv[0])))
            return sorted(out, key=repr)

        return {
            "events": rows('SELECT * FROM events ORDER BY "evt.num"', ("_proc_key",)),
            "processes": rows("SELECT * FROM processes", ("_proc_key", "_parent_key", "_prev_key")),
            "fds": rows("SELECT * FROM fds", ("_proc_key",)),
            "fd_state rows": fd_rows,
        }


def _assert_same(directory: Path) -> None:
    whole = _views(directory, 10**9)
    ranged = _views(directory, 1)
    # a carried fd continues its row: a range boundary stores no copy of the open fds
    # (the cache would grow with the live fds times the ranges)
    assert ranged.pop("fd_state rows") <= whole.pop("fd_state rows")
    for view in whole:
        rows = {repr(row): row for row in whole[view] + ranged[view]}
        missing = Counter(map(repr, whole[view])) - Counter(map(repr, ranged[view]))
        extra = Counter(map(repr, ranged[view])) - Counter(map(repr, whole[view]))
        if view == "events" and missing and extra:  # name the fields that differ
            by_num = {dict(rows[r])["evt.num"]: dict(rows[r]) for r in extra}
            row = dict(rows[next(iter(missing))])
            other = by_num.get(row["evt.num"], {})
            diff = {k: (other.get(k), v) for k, v in row.items() if other.get(k) != v}
            raise AssertionError(f"event {row['evt.num']}: (ranged, whole) {diff}")
        assert not missing and not extra, f"{view}: whole only {list(missing)[:3]}, ranged only {list(extra)[:3]}"


def test_ranges_are_cut_by_rows_and_never_split_a_segment(tmp_path):
    world = World(tmp_path / "cap")
    capture = resolve_captures([str(world.b.directory)], [])[0]
    assert [len(r) for r in split_ranges(capture.segments, 1)] == [1, 1, 1]
    assert [len(r) for r in split_ranges(capture.segments, 10**9)] == [3]


def test_the_incident_capture_resolves_the_same_one_segment_per_range(tmp_path):
    # nginx alive before the capture, a socket dup2()ed onto fd 0 in segment 1
    # and written to by a grandchild in segment 2, pid reuse, exec across a
    # boundary: all cross range boundaries here.
    world = World(tmp_path / "cap")
    _assert_same(world.b.directory)
    with open_captures([str(world.b.directory)]) as cs:
        got = cs.con.execute(
            'SELECT "_anc_name"[2], "proc.pcmdline", "fd.name", "fd.typechar" FROM events WHERE evt_num = ?',
            [world.e["write_fd0"]],
        ).fetchall()
    assert got == [("bash", "bash -i", "10.0.0.2:41234->10.0.0.9:4444", "4")]


@dataclass
class _Live:
    proc: Proc
    argv: list[str]
    exepath: str
    cwd: str
    sid: int
    fds: dict[int, tuple[str, bool]] = field(default_factory=dict)  # fd -> (name, cloexec)


class _Workload:
    """Random actions over live processes, written as a rotated capture whose
    snapshots list what is alive (as the recorder's would)."""

    def __init__(self, directory: Path):
        self.b = CaptureBuilder(directory)
        self.live: dict[int, _Live] = {}
        self.next_pid = 2000
        self.dead: list[int] = []
        init = _Live(Proc(1, 0, "systemd"), ["/sbin/init"], "/usr/lib/systemd/systemd", "/", 1)
        sshd = _Live(Proc(500, 1, "sshd"), ["/usr/sbin/sshd", "-D"], "/usr/sbin/sshd", "/", 500,
                     {3: ("/etc/ssh/k", True)})
        self.live = {1: init, 500: sshd}
        self.b.start_segment()
        self._snapshot()

    def _snapshot(self) -> None:
        for p in self.live.values():
            self.b.snap_proc(p.proc, p.argv, p.exepath, p.cwd, start_ts=T0 - 10**9, sid=p.sid, pgid=p.sid)
            for fd, (name, cloexec) in sorted(p.fds.items()):
                if name.startswith("socket:"):  # socket:LPORT:RIP:RPORT
                    _, lport, rip, rport = name.split(":")
                    self.b.snap_fd(p.proc.pid, fd, f"socket:[{lport}]", sock_family=2, sock_proto=6,
                                   local_ip="10.0.0.2", local_port=int(lport), addr_ip=rip, addr_port=int(rport),
                                   flags=O_CLOEXEC if cloexec else 0)
                else:
                    self.b.snap_fd(p.proc.pid, fd, name, flags=O_CLOEXEC if cloexec else 0)

    def rotate(self) -> None:
        # every segment has an event: the snapshots of event-less segments
        # share one order, where even one build picks among them arbitrarily
        if not any(row["kind"] == "evt" for row in self.b.rows):
            self.act("read", 0)
        self.b.finish_segment()
        self.b.start_segment()
        self._snapshot()

    def act(self, action: str, n: int) -> None:
        pids = sorted(self.live)
        p = self.live[pids[n % len(pids)]]
        b = self.b
        free = min(set(range(3, 64)) - set(p.fds))
        if action == "fork":
            pid = self.dead.pop(0) if self.dead and n % 3 == 0 else self.next_pid  # sometimes a reused pid
            self.next_pid += 1
            child = b.fork(p.proc, pid)
            self.live[pid] = _Live(child, list(p.argv), p.exepath, p.cwd, p.sid, dict(p.fds))
        elif action == "exec":
            name = ["bash", "cat", "curl", "python3"][n % 4]
            # as the recorder's exec events: the whole image, session included
            b.execve(p.proc, [name, f"arg{n}"], f"/usr/bin/{name}", cwd=p.cwd, sid=p.sid, pgid=p.sid, tty=0,
                     loginuid=4294967295)
            p.argv, p.exepath = [name, f"arg{n}"], f"/usr/bin/{name}"
            p.fds = {fd: d for fd, d in p.fds.items() if not d[1]}
        elif action == "exit" and p.proc.pid not in (1, 500):
            b.exit(p.proc)
            del self.live[p.proc.pid]
            self.dead.append(p.proc.pid)
            for orphan in self.live.values():  # the kernel reparents them to init
                if orphan.proc.ppid == p.proc.pid:
                    orphan.proc.ppid = 1
        elif action == "open":
            path = ["notes.txt", "/etc/passwd", "../up.log", "sub/x"][n % 4]
            cloexec = n % 2 == 0
            b.evt(p.proc, "openat", res=free, dirfd=-100, path=path,
                  flags=(O_CLOEXEC if cloexec else 0) | (O_WRONLY | O_CREAT if n % 5 == 0 else 0), mode=0o644)
            p.fds[free] = (posixpath.normpath(posixpath.join(p.cwd, path)), cloexec)
        elif action == "close" and p.fds:
            fd = sorted(p.fds)[n % len(p.fds)]
            b.evt(p.proc, "close", res=0, fd=fd)
            del p.fds[fd]
        elif action == "dup2" and p.fds:
            old = sorted(p.fds)[n % len(p.fds)]
            new = n % 3
            b.evt(p.proc, "dup2", res=new, fd=old, arg1=new)
            p.fds[new] = (p.fds[old][0], False)
        elif action == "chdir":
            path = ["/tmp", "..", "work", "/home/alice"][n % 4]
            b.evt(p.proc, "chdir", res=0, path=path)
            p.cwd = posixpath.normpath(posixpath.join(p.cwd, path))
        elif action == "connect":
            b.evt(p.proc, "socket", res=free, sock_family=2, sock_type=1, sock_proto=6)
            b.evt(p.proc, "connect", res=0, fd=free, sock_family=2, addr_ip="10.0.0.9", addr_port=443,
                  local_ip="10.0.0.2", local_port=40000 + free)
            p.fds[free] = (f"socket:{40000 + free}:10.0.0.9:443", False)
        else:  # an fd-based event that only reads the state
            fd = sorted(p.fds)[n % len(p.fds)] if p.fds and n % 4 else n % 6
            b.evt(p.proc, ["read", "write", "sendto"][n % 3], res=1, fd=fd)


_ACTIONS = ("fork", "exec", "exit", "open", "close", "dup2", "chdir", "connect", "read", "rotate")
# A generated workload: (action, number) pairs, `rotate` closing a segment.
workloads = st.lists(st.tuples(st.sampled_from(_ACTIONS), st.integers(0, 1000)), min_size=10, max_size=80)


@contextlib.contextmanager
def workload_capture(tmp_path_factory, actions: list[tuple[str, int]]) -> Iterator[Path]:
    """A capture of the workload `actions` in a fresh directory, removed afterwards (hypothesis
    runs many examples in one test: a function-scoped tmp_path would be shared by all of them)."""
    directory = tmp_path_factory.mktemp("workload") / "cap"
    work = _Workload(directory)
    for action, n in actions:
        if action == "rotate":
            work.rotate()
        else:
            work.act(action, n)
    work.b.finish_segment()
    try:
        yield directory
    finally:
        shutil.rmtree(directory.parent)


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(workloads)
def test_property_any_workload_resolves_the_same_in_ranges_of_one_segment(tmp_path_factory, actions):
    with workload_capture(tmp_path_factory, actions) as directory:
        _assert_same(directory)


@pytest.mark.parametrize("segments", [4])
def test_process_born_in_segment_1_acting_in_segment_3_keeps_its_ancestry_and_fds(tmp_path, segments):
    work = _Workload(tmp_path / "cap")
    shell = work.b.fork(work.live[500].proc, 700)
    work.b.execve(shell, ["bash", "-i"], "/usr/bin/bash")
    work.live[700] = _Live(shell, ["bash", "-i"], "/usr/bin/bash", "/", 500, {3: ("/etc/ssh/k", True)})
    work.b.evt(shell, "socket", res=4, sock_family=2, sock_type=1, sock_proto=6)
    work.b.evt(shell, "connect", res=0, fd=4, sock_family=2, addr_ip="10.0.0.9", addr_port=4444,
               local_ip="10.0.0.2", local_port=41000)
    work.live[700].fds = {4: ("socket:41000:10.0.0.9:4444", False)}
    for _ in range(segments - 2):
        work.rotate()
        work.act("read", 1)
    work.rotate()
    child = work.b.fork(shell, 701)
    work.b.evt(child, "dup2", res=0, fd=4, arg1=0)
    marker = work.b.evt(child, "write", res=5, fd=0)
    work.b.finish_segment()
    _assert_same(work.b.directory)
    with open_captures([str(work.b.directory)]) as cs:
        got = cs.con.execute(
            'SELECT "_anc_name"[1:3], "proc.pcmdline", "fd.name", "fd.typechar" '
            "FROM events WHERE evt_num = ?",
            [marker],
        ).fetchall()
    assert got == [(["bash", "bash", "sshd"], "bash -i", "10.0.0.2:41000->10.0.0.9:4444", "4")]


def test_the_benchmark_capture_resolves_the_same_in_ranges_of_one_segment(tmp_path, monkeypatch):
    # bench/state_bench's busy host: 200 processes in trees, forks that exit,
    # execs, fd-heavy calls, five rotated segments with their snapshots
    loader = importlib.machinery.SourceFileLoader("state_bench", str(REPO / "bench" / "state_bench"))
    bench = types.ModuleType(loader.name)
    bench.__file__ = loader.path
    loader.exec_module(bench)
    monkeypatch.setattr(bench, "SEGMENT_EVENTS", 1500)
    bench.generate(tmp_path / "cap", 7500)
    _assert_same(tmp_path / "cap")
