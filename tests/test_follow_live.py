"""`trace hunt --follow` against the real recorder: live alerts, the same answers as
an offline hunt, kill -9 and restart, retention under the follower, the webhook.

The recorder is filtered in the kernel to a cgroup made for the test, so it
sees only the test's workload. Alerts are found by unique markers (a program
name, a shell's $0); every wait is bounded polling, nothing is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from capture.containers import cgroup2_mount
from capture.manifest import Manifest
from tests.test_record_cli import TRACE, start_recorder, stop_recorder, wait_until

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="trace record needs root"),
]

REPO = Path(__file__).resolve().parents[1]
ALERT_TIMEOUT_S = 300  # a loaded 2-core CI box resolves a batch in seconds
STOP_TIMEOUT_S = 120

# Rules whose output names the event, so alerts compare as (rule, evt_num).
TEST_RULES = """
- rule: Follow Test Shadow Read
  desc: a read of /etc/shadow
  condition: trace_open_read and fd.name = /etc/shadow
  output: >
    evt.num=%evt.num process=%proc.name parent=%proc.pname gparent=%proc.aname[2] file=%fd.name
    user=%user.name cwd=%proc.cwd exe=%proc.exepath pid_ts=%proc.pid.ts
  priority: WARNING
- rule: Follow Test Spawn by Service
  desc: anything a process named nginx starts
  condition: trace_spawned_process and proc.pname = nginx
  output: >
    evt.num=%evt.num process=%proc.name command=%proc.cmdline parent=%proc.pname
    parent_command=%proc.pcmdline gparent=%proc.aname[2] cwd=%proc.cwd sid=%proc.sid
  priority: WARNING
"""


@pytest.fixture
def workload_cgroup():
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy")
    path = mount / f"trace-follow-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    yield path
    wait_until(lambda: not (path / "cgroup.procs").read_text().strip(), 30, "the workload to exit")
    path.rmdir()


class Workload:
    """Programs run inside the test's cgroup, each leaving a unique marker."""

    def __init__(self, cgroup: Path, bindir: Path):
        self.cgroup = cgroup
        self.bindir = bindir
        bindir.mkdir(exist_ok=True)

    def run(self, *argv: str) -> None:
        enter = f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"'
        done = subprocess.run(["sh", "-c", enter, "sh", *argv], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    def read_shadow(self) -> str:
        """An untrusted program (a copy of cat with a unique name) reads /etc/shadow."""
        name = "peek" + uuid.uuid4().hex[:10]
        program = self.bindir / name
        shutil.copy("/bin/cat", program)
        self.run(str(program), "/etc/shadow")
        return name

    def shell_from_service(self) -> str:
        """A program named nginx (a copy of sh) spawns a shell whose $0 is the marker."""
        marker = "m" + uuid.uuid4().hex[:12]
        nginx = self.bindir / "nginx"
        if not nginx.exists():
            shutil.copy("/bin/sh", nginx)
        self.run(str(nginx), "-c", f"sh -c : {marker}; true")
        return marker

    def churn(self, rounds: int) -> None:
        self.run("sh", "-c", f"i=0; while [ $i -lt {rounds} ]; do cat /etc/hostname >/dev/null; i=$((i+1)); done")


def rules_args(tmp_path: Path) -> list[str]:
    test_rules = tmp_path / "follow_test_rules.yaml"
    test_rules.write_text(TEST_RULES)
    return ["--rules", str(REPO / "rules" / "trace_rules.yaml"), "--rules", str(test_rules), "--match", "all"]


def start_follower(capture: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "ab") as err:
        return subprocess.Popen(
            [TRACE, "hunt", "--follow", str(capture), "--format", "json", "-o", str(out), *extra],
            stdout=subprocess.DEVNULL, stderr=err,
        )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def has_alert(out: Path, marker: str) -> bool:
    return any(marker in line for line in lines(out))


def checkpoint_evt(path: Path) -> int:
    try:
        return json.loads(path.read_text())["last_evt_num"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def drain_and_stop(follower: subprocess.Popen, capture: Path, checkpoint: Path) -> None:
    """Wait until the follower has handled every event the (stopped) recorder wrote, then SIGINT it."""
    last = Manifest.load(capture).last_evt_num
    wait_until(lambda: checkpoint_evt(checkpoint) >= last or follower.poll() is not None, ALERT_TIMEOUT_S,
               "the follower to reach the end of the capture")
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=STOP_TIMEOUT_S) == 0


def offline_lines(capture: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "offline.jsonl"
    done = subprocess.run(
        [TRACE, "hunt", str(capture), "--format", "json", "-o", str(out), "--alerts", str(tmp_path / "offline.parquet"),
         *rules_args(tmp_path)],
        capture_output=True, text=True, timeout=STOP_TIMEOUT_S,
    )
    assert done.returncode in (0, 3), done.stderr
    return lines(out)


def rule_events(alert_lines: list[str]) -> set[tuple[str, int]]:
    found = set()
    for line in alert_lines:
        alert = json.loads(line)
        if "evt.num" in alert["output_fields"]:
            found.add((alert["rule"], alert["output_fields"]["evt.num"]))
    return found


class Collector(BaseHTTPRequestHandler):
    """A falcosidekick stand-in: the first POST of each alert fails with 503, the retry is kept."""

    bodies: list[bytes]
    seen: set[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        first_try = body not in self.seen
        self.seen.add(body)
        if first_try:
            self.send_response(503)
        else:
            self.bodies.append(body)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def collector():
    handler = type("Handler", (Collector,), {"bodies": [], "seen": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler.bodies
    server.shutdown()
    server.server_close()


def test_live_alerts_match_an_offline_hunt_and_reach_the_webhook(tmp_path, workload_cgroup, collector):
    url, posted = collector
    capture, out, log = tmp_path / "cap", tmp_path / "alerts.jsonl", tmp_path / "follow.log"
    checkpoint = tmp_path / "follow.ckpt"
    work = Workload(workload_cgroup, tmp_path / "bin")
    recorder = start_recorder(capture, "--cgroup", workload_cgroup.name, stderr=subprocess.DEVNULL)
    follower = start_follower(capture, out, log, "--checkpoint", str(checkpoint), "--webhook", url, *rules_args(tmp_path))
    try:
        reader = work.read_shadow()
        wait_until(lambda: has_alert(out, reader), ALERT_TIMEOUT_S, f"the alert for {reader}")
        shell = work.shell_from_service()  # after the first alert: state carried over from earlier batches
        second_reader = work.read_shadow()
        wait_until(lambda: has_alert(out, shell) and has_alert(out, second_reader), ALERT_TIMEOUT_S, "the later alerts")
    finally:
        code, err = stop_recorder(recorder)
    assert code == 0, err
    drain_and_stop(follower, capture, checkpoint)

    followed = lines(out)
    rules_fired = {json.loads(line)["rule"] for line in followed}
    assert {"Sensitive File Read by Untrusted Program", "Shell Spawned by Service Process"} <= rules_fired
    spawn = [json.loads(line) for line in followed if shell in line and json.loads(line)["rule"] == "Shell Spawned by Service Process"]
    assert spawn and spawn[0]["output_fields"]["proc.pname"] == "nginx"
    assert checkpoint.stat().st_mode & 0o777 == 0o600

    offline = offline_lines(capture, tmp_path)
    assert rule_events(followed) == rule_events(offline) and rule_events(offline)
    assert Counter(followed) == Counter(offline)  # every field too, and each alert once

    wait_until(lambda: len(posted) >= len(followed), 60, "the webhook deliveries")
    assert Counter(body.decode() for body in posted) == Counter(followed)
    assert "0 dropped (queue full), 0 failed" in log.read_text()


def test_kill_9_and_restart_gives_every_alert_exactly_once(tmp_path, workload_cgroup):
    capture, out, log = tmp_path / "cap", tmp_path / "alerts.jsonl", tmp_path / "follow.log"
    checkpoint = tmp_path / "follow.ckpt"
    args = ("--checkpoint", str(checkpoint), *rules_args(tmp_path))
    work = Workload(workload_cgroup, tmp_path / "bin")
    recorder = start_recorder(capture, "--cgroup", workload_cgroup.name, "--rotate-events", "200", stderr=subprocess.DEVNULL)
    try:
        follower = start_follower(capture, out, log, *args)
        first = [work.read_shadow() for _ in range(2)]
        wait_until(lambda: all(has_alert(out, m) for m in first), ALERT_TIMEOUT_S, "the first alerts")
        during = [work.read_shadow() for _ in range(3)]
        wait_until(lambda: checkpoint_evt(checkpoint) > 0, ALERT_TIMEOUT_S, "a checkpoint")
        follower.send_signal(signal.SIGKILL)  # wherever it is: mid-batch, mid-write or idle
        follower.wait(timeout=STOP_TIMEOUT_S)
        after = [work.read_shadow() for _ in range(2)]
        follower = start_follower(capture, out, log, *args)
        wait_until(lambda: all(has_alert(out, m) for m in first + during + after), ALERT_TIMEOUT_S, "every alert")
    finally:
        code, err = stop_recorder(recorder)
    assert code == 0, err
    drain_and_stop(follower, capture, checkpoint)

    followed = lines(out)
    for marker in first + during + after:
        shadow_alerts = [line for line in followed if marker in line and "Follow Test Shadow Read" in line]
        assert len(shadow_alerts) == 1, (marker, shadow_alerts)
    assert Counter(followed) == Counter(offline_lines(capture, tmp_path))


def test_segments_deleted_by_retention_before_they_are_read_are_skipped_with_a_warning(tmp_path, workload_cgroup):
    capture, out, log = tmp_path / "cap", tmp_path / "alerts.jsonl", tmp_path / "follow.log"
    checkpoint = tmp_path / "follow.ckpt"
    work = Workload(workload_cgroup, tmp_path / "bin")
    recorder = start_recorder(capture, "--cgroup", workload_cgroup.name, "--rotate-events", "100", "--keep-segments", "1",
                              stderr=subprocess.DEVNULL)
    follower = start_follower(capture, out, log, "--checkpoint", str(checkpoint), *rules_args(tmp_path))
    try:
        before = work.read_shadow()
        wait_until(lambda: has_alert(out, before), ALERT_TIMEOUT_S, "the first alert")
        follower.send_signal(signal.SIGSTOP)
        deleted_at_stop = Manifest.load(capture).deleted_segments
        work.churn(100)
        wait_until(lambda: Manifest.load(capture).deleted_segments >= deleted_at_stop + 3, 60, "retention to delete segments")
        after = work.read_shadow()
        follower.send_signal(signal.SIGCONT)
        wait_until(lambda: has_alert(out, after), ALERT_TIMEOUT_S, "the alert after the deleted segments")
    finally:
        follower.send_signal(signal.SIGCONT)
        code, err = stop_recorder(recorder)
    assert code == 0, err
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=STOP_TIMEOUT_S) == 0
    assert "retention" in log.read_text()
