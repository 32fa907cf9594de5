"""Kernel-side filters and start-up errors of the EventSource (real eBPF, root)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from capture.errors import RecorderError
from capture.probe import EventSource, ProbeConfig

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF needs root"),
]

# Renames itself (prctl PR_SET_NAME), then opens a marker path.
OPENER = textwrap.dedent(
    """
    import ctypes, os, sys
    comm, path = sys.argv[1], sys.argv[2]
    ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)
    try:
        os.close(os.open(path, os.O_RDONLY))
    except FileNotFoundError:
        pass
    os.close(os.open("/dev/null", os.O_RDONLY))
    """
)


def run_opener(comm: str, path: str) -> int:
    proc = subprocess.run([sys.executable, "-c", OPENER, comm, path], check=True)
    return proc.returncode


def drain_until(src: EventSource, done, deadline_s: float = 15.0) -> list[dict]:
    rows: list[dict] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        batch = src.poll(50)
        if batch is not None:
            rows.extend(batch.to_pylist())
        if done(rows):
            return rows
    return rows


def test_comm_filter_and_syscall_selection(tmp_path):
    tag = uuid.uuid4().hex[:8]
    wanted, other = f"trc-{tag}", f"oth-{tag}"
    config = ProbeConfig(syscalls=frozenset({"openat"}), comms=frozenset({wanted}),
                         exclude_pids=frozenset({os.getpid()}))
    with EventSource(config) as src:
        run_opener(other, str(tmp_path / f"other-{tag}"))
        run_opener(wanted, str(tmp_path / f"wanted-{tag}"))
        rows = drain_until(src, lambda rows: any(r["path"] == "/dev/null" and r["comm"] == wanted for r in rows))
    assert {r["comm"] for r in rows} == {wanted}, "the comm filter let other processes through"
    assert {r["syscall"] for r in rows} <= {"openat", "procexit"}, "unselected syscalls were recorded"
    assert [r for r in rows if r["path"] == str(tmp_path / f"wanted-{tag}")]
    assert not [r for r in rows if r["path"] and f"other-{tag}" in r["path"]]


def test_pid_filter_and_exclusion_are_kernel_side(tmp_path):
    tag = uuid.uuid4().hex[:8]
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys, os; sys.stdin.readline();"
                                " [os.close(os.open('/dev/null', os.O_RDONLY)) for _ in range(5)]"],
                               stdin=subprocess.PIPE, text=True)
    try:
        config = ProbeConfig(syscalls=frozenset({"openat", "close"}), pids=frozenset({sleeper.pid, os.getpid()}),
                             exclude_pids=frozenset({os.getpid()}))
        with EventSource(config) as src:
            os.close(os.open(tmp_path / f"self-{tag}", os.O_CREAT | os.O_WRONLY, 0o600))  # excluded
            run_opener(f"x-{tag}", str(tmp_path / f"nope-{tag}"))  # not in pids
            sleeper.stdin.write("go\n")
            sleeper.stdin.flush()
            sleeper.wait(timeout=30)
            rows = drain_until(src, lambda rows: sum(r["path"] == "/dev/null" for r in rows) >= 5)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert rows and {r["pid"] for r in rows} == {sleeper.pid}
    assert sum(r["path"] == "/dev/null" for r in rows) == 5


def test_bad_configuration_is_a_one_line_error():
    with pytest.raises(RecorderError, match="unknown syscall"):
        EventSource(ProbeConfig(syscalls=frozenset({"openat", "nosuchcall"})))
    with pytest.raises(RecorderError, match="power of two"):
        EventSource(ProbeConfig(ring_bytes=3 << 20))
    with pytest.raises(RecorderError, match="argv_max"):
        EventSource(ProbeConfig(argv_max=0))


def test_not_root_is_a_one_line_error():
    script = textwrap.dedent(
        """
        import os, sys
        os.setgid(65534); os.setuid(65534)
        from capture.errors import RecorderError
        from capture.probe import EventSource, ProbeConfig
        try:
            EventSource(ProbeConfig())
        except RecorderError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "trace record must run as root (it loads an eBPF program)"


def test_close_is_idempotent_and_reading_after_close_fails():
    src = EventSource(ProbeConfig(syscalls=frozenset({"close"}), exclude_pids=frozenset({os.getpid()})))
    src.close()
    src.close()
    with pytest.raises(RecorderError, match="closed"):
        src.poll(0)
    assert src.drops().user == 0


def test_environment_is_recorded_only_when_asked():
    tag = uuid.uuid4().hex
    config = ProbeConfig(syscalls=frozenset({"execve"}), env=True, exclude_pids=frozenset({os.getpid()}))
    with EventSource(config) as src:
        subprocess.run(["/bin/true", f"env-{tag}"], env={"TRACE_MARK": tag, "PATH": "/usr/bin:/bin"}, check=True)
        rows = drain_until(src, lambda rows: any(r["argv"] and f"env-{tag}" in r["argv"] for r in rows))
    [e] = [r for r in rows if r["argv"] and f"env-{tag}" in r["argv"]]
    assert sorted(e["env"]) == ["PATH=/usr/bin:/bin", f"TRACE_MARK={tag}"]
    assert e["cwd"] == os.getcwd() and e["exe_from_memfd"] is False
