"""A fork return that reaches the parent after its child ran (vfork) starts no new process.

With vfork the child runs first: its own clone return, exec and even exit
are recorded before the parent's vfork returns the child's pid. That late
return must not make a third "fork" image of the child (one that would
start after the child exited). A pid reused by a later fork of the same
parent still gets its own process. Checked on a hand-built capture and on
a real `trace record` of `sh -c 'touch X; true'` (dash vforks for touch).
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from analyzer.state import open_captures
from capture.tail import TAIL_NAME, TailReader
from tests.state_builder import CaptureBuilder, Proc
from tests.test_record_cli import start_recorder, stop_recorder, wait_until



def images(cs, pid: int, before: int | None = None) -> list[tuple]:
    return cs.con.execute(
        "SELECT origin, exe, exited FROM processes WHERE pid = ? AND start_ts < coalesce(?, start_ts + 1) "
        "ORDER BY start_ts", [pid, before]
    ).fetchall()


@pytest.fixture(scope="module")
def handbuilt(tmp_path_factory):
    b = CaptureBuilder(tmp_path_factory.mktemp("vfork") / "cap")
    b.start_segment()
    shell = Proc(700, 1, "sh")
    b.snap_proc(shell, ["sh", "-c", "touch x; true"], "/usr/bin/dash", "/tmp")
    # vfork: the child's side, its exec and exit, then the parent's return
    child = Proc(701, 700, "sh")
    b.evt(child, "vfork", res=0)
    b.execve(child, ["touch", "x"], "/usr/bin/touch")
    b.exit(child)
    b.evt(shell, "vfork", res=701)
    # vfork again, the parent resumes when the child execs (before it exits)
    second = Proc(702, 700, "sh")
    b.evt(second, "vfork", res=0)
    b.execve(second, ["true"], "/usr/bin/true")
    b.evt(shell, "vfork", res=702)
    after_return = b.evt(second, "openat", res=3, dirfd=-100, path="/etc/ld.so.cache", flags=0)
    b.exit(second)
    # pid 701 reused by an ordinary fork, the parent's return first
    b.evt(shell, "wait4", res=701)
    reuse_ts = b.ts + 1_000_000
    b.fork(shell, 701)
    b.finish_segment()
    with open_captures([str(b.directory)]) as cs:
        yield cs, after_return, reuse_ts


def test_late_vfork_return_after_the_child_exited_starts_nothing(handbuilt):
    cs, _, reuse_ts = handbuilt
    assert images(cs, 701, before=reuse_ts) == [("fork", "sh", False), ("exec", "touch", True)]


def test_late_vfork_return_while_the_child_runs_keeps_its_image(handbuilt):
    cs, after_return, _ = handbuilt
    assert images(cs, 702) == [("fork", "sh", False), ("exec", "true", True)]
    row = cs.con.execute('SELECT "proc.exe", "proc.pname" FROM events WHERE evt_num = ?', [after_return]).fetchall()
    assert row == [("true", "sh")]


def test_a_reused_pid_still_gets_a_new_process(handbuilt):
    cs, _, reuse_ts = handbuilt
    assert images(cs, 701) == [("fork", "sh", False), ("exec", "touch", True), ("fork", "sh", None)]
    (start,) = cs.con.execute("SELECT max(start_ts) FROM processes WHERE pid = 701").fetchall()[0]
    assert start == reuse_ts


@pytest.mark.bpf
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="trace record needs root")
def test_recorded_vfork_of_a_shell(tmp_path):
    marker = tmp_path / f"vfork-{uuid.uuid4().hex}"
    capture = tmp_path / "cap"
    recorder = start_recorder(capture, "--comm", "sh", "--comm", "touch")
    try:
        subprocess.run(["/bin/sh", "-c", f"touch {marker}; true"], check=True, timeout=60)
        # touch's exit (its last event) is in the tail before we stop
        with TailReader(capture / TAIL_NAME) as tail:
            seen: list[str] = []

            def touch_exited() -> bool:
                for batch in tail.poll():
                    rows = batch.select(["comm", "syscall"]).to_pylist()
                    seen.extend(r["syscall"] for r in rows if r["comm"] == "touch")
                return "procexit" in seen

            wait_until(touch_exited, 30, "the workload events")
    finally:
        stop_recorder(recorder)
    with open_captures([str(capture)]) as cs:
        (pid,) = cs.con.execute(
            'SELECT DISTINCT "proc.pid" FROM events WHERE "evt.type" = \'execve\' AND list_contains(argv, ?)',
            [str(marker)],
        ).fetchall()[0]
        # the vfork child: the shell's image until it execs touch, nothing after
        found = images(cs, pid)
        assert [(origin, exited) for origin, _, exited in found] == [("fork", False), ("exec", True)]
        assert found[1][1] == "touch"
