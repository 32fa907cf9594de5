"""`trace record` and `trace info` end to end: the real CLI, the real eBPF probe, real segments.

Each test finds its own events by a unique marker (a uuid in a path, a comm,
a cgroup) and waits by bounded polling; nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import mounted_tmpfs

from capture.containers import cgroup2_mount
from capture.segments import META_RECOVERED, list_segment_files, parse_segment_name
from capture.tail import TAIL_NAME, TailReader

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="trace record needs root"),
]

TRACE = str(Path(sys.executable).with_name("trace"))
START_TIMEOUT_S = 120  # compiling the BPF program
STOP_TIMEOUT_S = 60


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_recorder(directory: Path, *args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Run `trace record` and return once its probe is attached (the first segment's tail exists)."""
    proc = subprocess.Popen([TRACE, "record", "-o", str(directory), *args], stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        wait_until(lambda: (directory / TAIL_NAME).exists() or proc.poll() is not None, START_TIMEOUT_S, "the recorder to start")
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise AssertionError(f"trace record exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
    return proc


def stop_recorder(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    return proc.returncode, err


def record_counted(directory: Path, *args: str) -> tuple[int, str]:
    """Run `trace record --count N ...` to its end, making the events ourselves.

    A quiet host may not issue N recorded syscalls on its own, so this
    process opens and closes a file until the recorder has counted enough.
    """
    proc = start_recorder(directory, *args)
    deadline = time.monotonic() + START_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        for _ in range(50):
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        time.sleep(0.01)
    _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    return proc.returncode, err


def events(directory: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in list_segment_files(directory)]
    table = pa.concat_tables(tables)
    return table.filter(pc.equal(table["kind"].cast(pa.string()), "evt"))


def rows_where(table: pa.Table, **where) -> list[dict]:
    mask = None
    for column, value in where.items():
        values = table[column]
        if pa.types.is_dictionary(values.type):
            values = values.cast(pa.string())
        cond = pc.equal(values, value)
        mask = cond if mask is None else pc.and_(mask, cond)
    return table.filter(mask).to_pylist()


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=START_TIMEOUT_S + STOP_TIMEOUT_S, **kw)


def test_record_until_sigint_then_info(tmp_path):
    capture = tmp_path / "cap"
    marker = tmp_path / f"marker-{uuid.uuid4().hex}"
    marker.write_text("x")
    recorder = start_recorder(capture, "--rotate-events", "100000")
    for _ in range(23):
        with open(marker):
            pass
    code, err = stop_recorder(recorder)
    assert code == 0, err
    assert "recorded" in err and "drops: 0" in err

    assert stat.S_IMODE(os.stat(capture).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in capture.iterdir()} == {0o600}
    assert not (capture / TAIL_NAME).exists()
    table = events(capture)
    opens = rows_where(table, path=str(marker), syscall="openat")
    assert len(opens) == 23
    assert {(r["pid"], r["container_id"], r["comm"]) for r in opens} == {(os.getpid(), "host", Path(sys.executable).name[:15])}
    nums = table["evt_num"].to_pylist()
    assert nums == list(range(1, len(nums) + 1))
    first = pq.read_table(list_segment_files(capture)[0])
    assert rows_where(first, kind="proc", pid=os.getpid())[0]["argv"] == Path("/proc/self/cmdline").read_text().split("\0")[:-1]

    info = run(TRACE, "info", str(capture))
    assert info.returncode == 0, info.stderr
    assert list_segment_files(capture)[0].name in info.stdout
    assert "openat" in info.stdout and "drops       0" in info.stdout
    summary = json.loads(run(TRACE, "info", "--json", str(capture)).stdout)
    assert summary["events"] == len(nums) and summary["events_by_syscall"]["openat"] >= 23
    assert summary["processes"] >= 2 and summary["last_evt_num"] == len(nums)


def test_restart_in_the_same_directory_continues_numbering(tmp_path):
    capture = tmp_path / "cap"
    assert record_counted(capture, "--count", "50")[0] == 0
    status = tmp_path / "stderr"
    with open(status, "w") as err_file:
        recorder = start_recorder(capture, "--status", stderr=err_file)
        line = re.compile(r"\r\x1b\[K\d+ events  [\d,]+/s  drops 0  segment seg-\d{8}T\d{6}-000002\.parquet")
        wait_until(lambda: line.search(status.read_bytes().decode()), 60, "the status line")  # read_text would turn \r into \n
        code, _ = stop_recorder(recorder, signal.SIGTERM)
    assert code == 0, status.read_text()
    files = list_segment_files(capture)
    assert [parse_segment_name(p.name) for p in files] == [1, 2]
    nums = events(capture)["evt_num"].to_pylist()
    assert nums[:50] == list(range(1, 51)) and nums == list(range(1, len(nums) + 1))


def test_count_rotation_retention_and_info_on_a_damaged_capture(tmp_path):
    capture = tmp_path / "cap"
    code, err = record_counted(capture, "--count", "1000", "--rotate-events", "150", "--keep-segments", "3", "--syscalls", "openat,close")
    assert code == 0, err
    files = list_segment_files(capture)
    assert [parse_segment_name(p.name) for p in files] == [5, 6, 7]  # 150 * 6 + 100
    table = events(capture)
    assert table["evt_num"].to_pylist() == list(range(601, 1001))
    assert set(table["syscall"].cast(pa.string()).to_pylist()) <= {"openat", "close", "procexit"}  # exits: always, for state
    manifest = json.loads((capture / "manifest.json").read_text())
    assert [s["name"] for s in manifest["segments"]] == [p.name for p in files]
    assert manifest["deleted_segments"] == 4 and manifest["last_evt_num"] == 1000

    files[1].write_bytes(files[1].read_bytes()[:-100])  # a damaged segment: skipped, with a warning
    info = run(TRACE, "info", "--json", str(capture))
    assert info.returncode == 0
    assert f"skipping corrupt segment {files[1].name}" in info.stderr
    summary = json.loads(info.stdout)
    assert summary["events"] == 250 and summary["skipped"][0]["name"] == files[1].name
    assert summary["deleted_segments"] == 4


def test_comm_and_syscall_filters(tmp_path):
    capture = tmp_path / "cap"
    comm = "trc" + uuid.uuid4().hex[:8]
    program = tmp_path / comm
    shutil.copy("/bin/cat", program)
    recorder = start_recorder(capture, "--comm", comm, "--syscalls", "openat,execve", "--env")
    for _ in range(3):
        run(str(program), "/etc/hostname", env={"TRACE_MARKER": comm})
    code, err = stop_recorder(recorder)
    assert code == 0, err
    table = events(capture)
    assert set(table["comm"].to_pylist()) == {comm}
    assert set(table["syscall"].cast(pa.string()).to_pylist()) == {"openat", "execve", "procexit"}
    assert len(rows_where(table, path="/etc/hostname")) == 3
    execs = rows_where(table, syscall="execve")
    assert len(execs) == 3 and all(f"TRACE_MARKER={comm}" in r["env"] for r in execs)


@pytest.fixture
def container_cgroup():
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    path = mount / f"docker-{cid}.scope"
    path.mkdir()
    try:
        yield cid, path
    finally:
        path.rmdir()


def test_container_filter_and_container_ids(tmp_path, container_cgroup):
    cid, cgroup = container_cgroup
    capture = tmp_path / "cap"
    marker = tmp_path / uuid.uuid4().hex
    marker.write_text("x")
    recorder = start_recorder(capture, "--container", cid[:12])
    with open(marker):  # outside the container: not recorded
        pass
    inside = run("sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec cat {marker}')
    assert inside.returncode == 0, inside.stderr
    code, err = stop_recorder(recorder)
    assert code == 0, err
    table = events(capture)
    assert set(table["container_id"].cast(pa.string()).to_pylist()) == {cid[:12]}
    assert set(table["cgroup_id"].to_pylist()) == {os.stat(cgroup).st_ino}
    assert len(rows_where(table, path=str(marker), syscall="openat")) == 1


def _recorded(capture: Path) -> tuple[list[dict], list[dict]]:
    """Events in the finalized segments, and in the tail of the open one."""
    finalized = events(capture).select(["pid", "syscall"]).to_pylist() if list_segment_files(capture) else []
    tail = []
    if (capture / TAIL_NAME).exists():
        with TailReader(capture / TAIL_NAME) as reader:
            batches = reader.poll()
            if not reader.finished:
                tail = [r for b in batches for r in b.select(["kind", "pid", "syscall"]).to_pylist() if r["kind"] == "evt"]
    return finalized, tail


def test_sigkill_leaves_every_finalized_segment_readable_and_restart_recovers(tmp_path):
    capture = tmp_path / "cap"
    comm = "trc" + uuid.uuid4().hex[:8]
    program = tmp_path / comm
    shutil.copy("/bin/cat", program)
    recorder = start_recorder(capture, "--rotate-events", "40", "--comm", comm)
    try:
        # Only our program is recorded: once its exit is on disk the capture is still, so the
        # kill lands at a known point: >= 2 finalized segments and events in the open one.
        while True:
            child = subprocess.Popen([str(program), "/etc/hostname"], stdout=subprocess.DEVNULL)
            child.wait()
            pid = child.pid
            done = lambda: any(r["pid"] == pid and r["syscall"] == "procexit" for part in _recorded(capture) for r in part)  # noqa: E731
            wait_until(done, 60, "the program's exit to be recorded")
            finalized, tail = _recorded(capture)
            if len(list_segment_files(capture)) >= 2 and tail:
                break
    finally:
        recorder.kill()
        recorder.communicate(timeout=STOP_TIMEOUT_S)
    files = list_segment_files(capture)
    assert len(files) >= 2
    for path in files:
        table = pq.read_table(path)
        assert table.num_rows > 0
    killed_nums = events(capture)["evt_num"].to_pylist()
    assert killed_nums == list(range(1, len(killed_nums) + 1))

    code, err = record_counted(capture, "--count", "10")
    assert code == 0, err
    assert not [p for p in capture.iterdir() if p.name.endswith(".tmp")]
    restarted = list_segment_files(capture)
    recovered = [p for p in restarted if META_RECOVERED in (pq.read_metadata(p).metadata or {})]
    assert recovered and "recovered" in err
    nums = events(capture)["evt_num"].to_pylist()
    assert nums == list(range(1, len(killed_nums) + len(tail) + 10 + 1))  # nothing lost, nothing renumbered
    info = run(TRACE, "info", str(capture))
    assert info.returncode == 0 and f"{recovered[0].name}  " in info.stdout
    assert "drops unknown (recovered after a crash)" in info.stdout


def test_not_root_is_one_clear_line(tmp_path):
    tmp_path.chmod(0o777)
    result = run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", TRACE, "record", "-o", str(tmp_path / "cap"), "--count", "1")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "root" in result.stderr, result.stderr


def test_unwritable_directory_is_one_clear_line(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run(TRACE, "record", "-o", str(tmp_path / "file" / "cap"), "--count", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: cannot use capture directory {tmp_path}/file/cap: Not a directory"]


def test_unknown_syscall_is_one_clear_line(tmp_path):
    result = run(TRACE, "record", "-o", str(tmp_path / "cap"), "--syscalls", "openat,frobnicate")
    assert result.returncode == 1 and "frobnicate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def small_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "2m") as mountpoint:
        yield mountpoint


def test_full_disk_stops_cleanly(small_tmpfs, tmp_path):
    capture = small_tmpfs / "cap"
    # Opens of random (incompressible) missing paths fill the small filesystem quickly.
    workload = subprocess.Popen(
        [sys.executable, "-c", "import os\nwhile True:\n    try: open('/nonexistent/' + os.urandom(64).hex())\n    except OSError: pass"]
    )
    try:
        result = run(TRACE, "record", "-o", str(capture), "--rotate-events", "2000", "--syscalls", "openat")
    finally:
        workload.kill()
        workload.wait()
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"Error: disk full in {capture}: recording stopped;"), result.stderr
    files = list_segment_files(capture)
    assert files
    for path in files:
        pq.read_table(path)
    manifest = json.loads((capture / "manifest.json").read_text())
    assert [s["name"] for s in manifest["segments"]] == [p.name for p in files]
    nums = events(capture)["evt_num"].to_pylist()
    assert nums == list(range(1, len(nums) + 1))


def test_drops_are_counted_warned_and_stored(tmp_path):
    capture = tmp_path / "cap"
    recorder = start_recorder(capture, "--ring-size", "1M", "--syscalls", "openat")
    try:
        recorder.send_signal(signal.SIGSTOP)  # the reader stalls: the 1 MiB ring must overflow
        flood = run(sys.executable, "-c", "import os\nfor _ in range(200_000):\n    try: open('/nonexistent/x')\n    except OSError: pass")
        assert flood.returncode == 0
    finally:
        recorder.send_signal(signal.SIGCONT)
    code, err = stop_recorder(recorder)
    assert code == 0, err
    assert "trace: warning:" in err and "events dropped (kernel ring:" in err
    segment_drops = [json.loads(pq.read_metadata(p).metadata[b"trace.drops"]) for p in list_segment_files(capture)]
    kernel_total = sum(n for d in segment_drops for n in d["kernel"].values())
    assert kernel_total > 0
    manifest = json.loads((capture / "manifest.json").read_text())
    assert sum(n for s in manifest["segments"] for n in s["drops"]["kernel"].values()) == kernel_total
    info = json.loads(run(TRACE, "info", "--json", str(capture)).stdout)
    assert sum(info["drops"]["kernel"].values()) == kernel_total
    assert f"drops: {kernel_total}" in err.splitlines()[-1]
