"""Record scenarios with `trace record`, hunt them with `trace hunt`.

Shared by scripts/record_fixtures (re-records fixtures/) and
tests/test_scenarios.py (checks fixtures against manifest.yaml, and records a
few scenarios live). Each scenario runs in its own cgroup v2 directory and the
recorder is started with --cgroup for it and for every cgroup below it (the
simulated containers), so a capture holds the scenario and nothing else that
runs on the machine, while the segment snapshot still holds the whole host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from capture.tail import TAIL_NAME, TailReader  # noqa: E402
from sandbox import cgroup2_root, remove_cgroup  # noqa: E402

SCENARIO_DIR = Path(__file__).resolve().parent
MANIFEST = SCENARIO_DIR / "manifest.yaml"
RUNNER = SCENARIO_DIR / "runner.py"
TRACE = REPO / ".venv" / "bin" / "trace"
PYTHON = REPO / ".venv" / "bin" / "python"
FALCO_RULES = (REPO / ".." / "shared" / "falco" / "rules").resolve()

STEP_TIMEOUT_S = 120


class HarnessError(RuntimeError):
    pass


# --- the manifest -------------------------------------------------------------

@dataclass
class Expectation:
    """What one capture must produce under each ruleset: rule name -> alert count."""

    name: str
    fixture: Path
    alerts: dict[str, dict[str, int]]
    positive: dict[str, list[str]] = field(default_factory=dict)
    negative: dict[str, list[str]] = field(default_factory=dict)
    live: bool = False
    known_gaps: dict[str, str] = field(default_factory=dict)  # ruleset -> why it cannot pass yet


@dataclass
class Manifest:
    rulesets: dict[str, list[Path]]
    scenarios: dict[str, Expectation]
    untriggerable: dict[str, dict[str, str]]


def load_manifest(path: Path = MANIFEST) -> Manifest:
    raw = yaml.safe_load(path.read_text())
    rulesets = {name: [resolve_rules_path(p) for p in paths] for name, paths in raw["rulesets"].items()}
    scenarios = {}
    for name, entry in raw["scenarios"].items():
        scenarios[name] = Expectation(
            name=name,
            fixture=REPO / entry.get("fixture", f"fixtures/scenarios/{name}"),
            alerts={ruleset: dict(entry.get("alerts", {}).get(ruleset) or {}) for ruleset in rulesets},
            positive=entry.get("positive", {}),
            negative=entry.get("negative", {}),
            live=bool(entry.get("live", False)),
            known_gaps=dict(entry.get("known_gaps", {})),
        )
    return Manifest(rulesets, scenarios, raw.get("untriggerable", {}))


def resolve_rules_path(spelled: str) -> Path:
    """Manifest paths are relative to the repository; ../shared is read in place."""
    return (REPO / spelled).resolve()


# --- recording ------------------------------------------------------------------

def record_scenario(name: str, capture: Path | None, *, extra_args: tuple[str, ...] = ()) -> dict:
    """Run scenario `name` under `trace record -o capture`; return the runner's status.

    With capture None the scenario runs unrecorded (to check that it works).
    """
    if capture is not None and capture.exists():
        raise HarnessError(f"{capture} exists: remove it first")
    cgroup = cgroup2_root() / f"trace-scenario-{name}-{os.getpid()}"
    cgroup.mkdir()
    control = Path(tempfile.mkdtemp(prefix="trace-scn-ctl-"))
    recorder = None
    try:
        for fifo in ("go", "stop"):
            os.mkfifo(control / fifo, 0o600)
        launch = subprocess.run([str(PYTHON), "-I", str(RUNNER), name, str(control), str(cgroup)],
                                timeout=STEP_TIMEOUT_S)
        if launch.returncode != 0:
            raise HarnessError(f"runner for {name} exited {launch.returncode}")
        ready = wait_for_json(control, "ready")
        if not ready["ok"]:
            raise HarnessError(f"scenario {name} failed to prepare:\n{ready['error']}")
        stderr = ""
        if capture is not None:
            recorder = start_recorder(capture, [cgroup, *sorted(cgroup.rglob("*.scope"))], extra_args)
        signal_fifo(control, "go")
        status = wait_for_json(control, "done")
        if recorder is not None:
            # the runner's write of `done` is its last recorded act: once the
            # recorder wrote it out, the whole behaviour is in the capture
            wait_for_marker(capture, str(control / ".done.tmp"))
            recorder.send_signal(signal.SIGINT)
            _, stderr = recorder.communicate(timeout=STEP_TIMEOUT_S)
            if recorder.returncode != 0:
                raise HarnessError(f"trace record exited {recorder.returncode}: {stderr}")
            recorder = None
        signal_fifo(control, "stop")
        failures = wait_for_json(control, "cleaned")
        if failures:
            raise HarnessError(f"scenario {name} could not undo everything: {failures}")
        if not status["ok"]:
            raise HarnessError(f"scenario {name} failed:\n{status['error']}")
        status["stderr"] = stderr
        return status
    finally:
        if recorder is not None:
            recorder.kill()
            recorder.wait()
        crash = control / "crash"
        crashed = crash.read_text() if crash.exists() else None
        if not (control / "cleaned").exists():
            for fifo in ("go", "stop"):  # unblock a runner still waiting, so it cleans up
                signal_fifo(control, fifo, timeout_s=2, required=False)
            wait_for(lambda: (control / "cleaned").exists() or (control / "crash").exists(),
                     "the runner to clean up", timeout_s=30, required=False)
        remove_cgroup(cgroup)
        shutil.rmtree(control, ignore_errors=True)
        if crashed:
            raise HarnessError(f"runner for {name} crashed:\n{crashed}")


def start_recorder(capture: Path, cgroups: list[Path], extra_args: tuple[str, ...]) -> subprocess.Popen:
    """`trace record` on exactly these cgroups, once its probe is attached."""
    command = [str(TRACE), "record", "-o", str(capture), "--no-status", *extra_args]
    for cgroup in cgroups:
        command += ["--cgroup", str(cgroup.relative_to(cgroup2_root()))]
    recorder = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # current.arrows is published with the first segment, after the probe is attached
    wait_for(lambda: (capture / TAIL_NAME).exists() or recorder.poll() is not None,
             f"trace record to start in {capture}")
    if recorder.poll() is not None:
        raise HarnessError(f"trace record exited {recorder.returncode}: {recorder.stderr.read()}")
    return recorder


def wait_for_marker(capture: Path, marker_path: str) -> None:
    """Poll the recorder's tail until an event on `marker_path` shows up in it."""
    tail = capture / TAIL_NAME
    reader = TailReader(tail)
    seen = False

    def marker_written() -> bool:
        nonlocal reader, seen
        for batch in reader.poll():
            paths = batch.column("path").to_pylist()
            seen = seen or marker_path in paths
        if not seen and reader.finished and tail.exists():  # rotated: follow the new tail
            reader.close()
            reader = TailReader(tail)
        return seen

    try:
        wait_for(marker_written, f"the recorder to write the event on {marker_path}")
    finally:
        reader.close()


def wait_for(predicate, what: str, timeout_s: float = STEP_TIMEOUT_S, required: bool = True) -> bool:
    deadline = threading.Event()
    waited = 0.0
    while not predicate():
        if waited >= timeout_s:
            if required:
                raise HarnessError(f"timed out waiting for {what}")
            return False
        deadline.wait(0.02)
        waited += 0.02
    return True


def wait_for_json(control: Path, name: str):
    wait_for(lambda: (control / name).exists() or (control / "crash").exists(), f"runner step '{name}'")
    if not (control / name).exists():
        raise HarnessError(f"runner crashed before '{name}':\n{(control / 'crash').read_text()}")
    return json.loads((control / name).read_text())


def signal_fifo(control: Path, name: str, timeout_s: float = STEP_TIMEOUT_S, required: bool = True) -> None:
    """Open the FIFO for writing without blocking forever when nobody reads it."""
    def opened() -> bool:
        try:
            fd = os.open(control / name, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            return False
        os.close(fd)
        return True

    wait_for(opened, f"the runner to wait on '{name}'", timeout_s=timeout_s, required=required)


def private_copy(fixture: Path, into: Path) -> Path:
    """A copy of a fixture, so hunting never writes caches into the repository."""
    target = into / fixture.name
    shutil.copytree(fixture, target)
    return target


# --- hunting --------------------------------------------------------------------

def hunt(capture: Path, rules: list[Path] | None) -> list[dict]:
    """`trace hunt --format json` on capture: the alerts as Falco json_output dicts."""
    command = [str(TRACE), "hunt", "--format", "json"]
    for path in rules or ():
        command += ["--rules", str(path)]
    result = subprocess.run([*command, str(capture)], capture_output=True, text=True, timeout=600)
    alerts = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            alerts.append(json.loads(line))
    if result.returncode not in (0, 3):  # 0: no alert, 3: alerts (trace hunt --help)
        raise HarnessError(f"{' '.join(command)} {capture} exited {result.returncode}:\n{result.stderr}")
    return alerts


def alert_counts(alerts: list[dict]) -> dict[str, int]:
    return dict(Counter(alert["rule"] for alert in alerts))


def main(argv: list[str]) -> int:
    """python harness.py SCENARIO [CAPTURE_DIR]: record one scenario, or just run it."""
    status = record_scenario(argv[1], Path(argv[2]) if len(argv) > 2 else None)
    print(json.dumps(status, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
