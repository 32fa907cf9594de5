"""Run one scenario as the process that `trace record` watches.

usage: runner.py SCENARIO CONTROL_DIR CGROUP_DIR

The runner detaches (its parent exits, so init adopts it and the capture's
ancestry does not depend on who launched it), joins CGROUP_DIR, prepares the
scenario and then talks to the harness through files in CONTROL_DIR:

  ready  written when prepared          go     FIFO: the recorder is running
  done   JSON status after the behaviour   stop   FIFO: the recorder stopped
  cleaned  JSON list of undo failures, after cleanup

A runner whose harness vanished gives up after MAX_LIFETIME_S.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog import SCENARIOS  # noqa: E402
from sandbox import ENVIRONMENT, Sandbox, join_cgroup  # noqa: E402

MAX_LIFETIME_S = 300


def publish(control: Path, name: str, payload: object) -> None:
    partial = control / f".{name}.tmp"
    partial.write_text(json.dumps(payload))
    partial.rename(control / name)


def wait_fifo(control: Path, name: str) -> None:
    with open(control / name) as fifo:
        fifo.read()


def run(name: str, control: Path, cgroup: Path) -> None:
    join_cgroup(cgroup)
    sandbox = Sandbox(name)
    behaviour = SCENARIOS[name](sandbox)
    status: dict = {"ok": True}
    try:
        try:
            next(behaviour)
        except Exception:
            publish(control, "ready", {"ok": False, "error": traceback.format_exc()})
            return
        publish(control, "ready", {"ok": True, "workdir": str(sandbox.workdir)})
        wait_fifo(control, "go")
        try:
            next(behaviour)
        except StopIteration:
            pass
        except Exception:
            status = {"ok": False, "error": traceback.format_exc()}
        else:
            status = {"ok": False, "error": "a scenario must yield exactly once"}
        publish(control, "done", status)
        wait_fifo(control, "stop")
    finally:
        behaviour.close()
        publish(control, "cleaned", sandbox.cleanup())


def main(argv: list[str]) -> int:
    name, control, cgroup = argv[1], Path(argv[2]), Path(argv[3])
    if name not in SCENARIOS:
        print(f"unknown scenario {name!r}", file=sys.stderr)
        return 2
    if os.fork():
        return 0
    os.setsid()
    os.environ.clear()
    os.environ.update(ENVIRONMENT)
    signal.alarm(MAX_LIFETIME_S)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        run(name, control, cgroup)
    except BaseException:
        (control / "crash").write_text(traceback.format_exc())
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
