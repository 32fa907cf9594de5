"""End to end as root: `trace record` a hostile workload, `trace hunt` it, `trace report` it, open it in chromium.

The workload runs in its own cgroup (the recorder watches only that cgroup)
and names its files and arguments with HTML and script payloads; the real
recorder, state views, hunt engine and default rules produce the alerts and
the real report code renders them. Nothing here is synthetic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from analyzer.report.alerts_input import load_alerts

sys.path.insert(0, str(Path(__file__).resolve().parent / "scenarios"))

from harness import TRACE, start_recorder, wait_for_marker  # noqa: E402
from sandbox import cgroup2_root, remove_cgroup  # noqa: E402
from test_report_browser import Page, browser_context, playwright  # noqa: E402,F401 (fixtures)

pytestmark = [pytest.mark.bpf, pytest.mark.browser, pytest.mark.slow]

SCRIPT_ARG = "</script><script>window.PWNED=1;document.title='PWNED'</script>"
IMG_NAME = "<img src=x onerror=\"window.PWNED=1\">"  # a file name: no slash
MARKUP_NAME = "\"><b id=injected>PWNED<"


def _in_cgroup(cgroup: Path):
    def join() -> None:
        (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")
    return join


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the end-to-end report test records with eBPF: run as root")
    base = tmp_path_factory.mktemp("e2e")
    work = base / f"work-{uuid.uuid4().hex}"
    work.mkdir(mode=0o700)
    capture = base / "capture"
    marker = work / "done"
    cgroup = cgroup2_root() / f"trace-report-e2e-{os.getpid()}"
    cgroup.mkdir()
    recorder = None
    try:
        recorder = start_recorder(capture, [cgroup], ())
        # A shell reads /etc/shadow, then runs a binary dropped in /tmp under a
        # hostile name with hostile arguments, and touches files named like markup.
        script = (
            'cat /etc/shadow > /dev/null\n'
            'cp /bin/true "$W/$IMG"\n'
            '"$W/$IMG" "$SCRIPT_ARG" "$(printf "line1\\nline2\\033[31m")"\n'
            'touch "$W/$MARKUP" "$W/$(printf "bad\\377byte")"\n'
            'echo done > "$W/done"\n'
        )
        env = {"PATH": "/usr/bin:/bin", "W": str(work), "IMG": IMG_NAME, "MARKUP": MARKUP_NAME,
               "SCRIPT_ARG": SCRIPT_ARG}
        shell = subprocess.run(["/bin/sh", "-c", script], env=env, preexec_fn=_in_cgroup(cgroup), timeout=60)
        assert shell.returncode == 0
        wait_for_marker(capture, str(marker))
        recorder.send_signal(signal.SIGINT)
        _, stderr = recorder.communicate(timeout=120)
        assert recorder.returncode == 0, stderr
        recorder = None
    finally:
        if recorder is not None:
            recorder.kill()
            recorder.wait()
        remove_cgroup(cgroup)
    alerts = base / "alerts.parquet"
    hunt = subprocess.run([str(TRACE), "hunt", str(capture), "--alerts", str(alerts)],
                          capture_output=True, text=True, timeout=300)
    assert hunt.returncode == 3, hunt.stderr  # 3: alerts found
    report = base / "report.html"
    run = subprocess.run([str(TRACE), "report", str(alerts), "-o", str(report)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return capture, alerts, report, base


def test_report_of_a_recorded_hostile_workload(recorded, browser_context):
    capture, alerts, report, _ = recorded
    assert report.stat().st_mode & 0o777 == 0o600
    rules = {a.rule for a in load_alerts(alerts).alerts}
    assert rules, "the default rules found nothing"
    p = Page(browser_context)
    pg = p.open(report)
    assert p.errors == [] and [m for m in p.console if m.startswith(("error", "warning"))] == []
    assert pg.title().startswith("Incident report: ")
    assert pg.evaluate("() => window.PWNED") is None
    assert pg.locator("#injected, img, svg, iframe").count() == 0
    assert pg.locator("script").count() == 2
    alerting = pg.locator("li.node.alerting")
    assert alerting.count() >= 1
    badges = set(pg.locator("li.node.alerting > details > summary .badge").all_inner_texts())
    assert badges <= rules and badges
    text = pg.locator("body").inner_text()
    assert "/etc/shadow" in text
    assert IMG_NAME in text  # the dropped binary, by its hostile name, as text
    assert SCRIPT_ARG in text
    assert "line1\\nline2\\x1b[31m" in text  # control characters shown, not obeyed
    assert p.requests == [report.resolve().as_uri()]
    p.page.close()


def test_investigation_report_for_a_pid_without_alerts(recorded, browser_context):
    capture, alerts, _, base = recorded
    from analyzer.state import open_captures

    with open_captures([str(capture)]) as cs:
        # touch ran with no rule firing on it
        (pid,) = cs.con.execute(
            "select distinct pid from processes where comm = 'touch'").fetchall()[0]
    out = base / "touch.html"
    run = subprocess.run([str(TRACE), "report", "--capture", str(capture), "--pid", str(pid), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    p = Page(browser_context)
    pg = p.open(out)
    assert pg.title() == f"Investigation of pid {pid}"
    # One node for touch, fork and exec merged. (The state may add a phantom
    # image of the pid from the parent's late vfork return; that one is not
    # named touch.)
    names = pg.locator(f"li.node[data-pid='{pid}'] > details > summary .pname").all_inner_texts()
    assert names.count("touch") == 1
    assert MARKUP_NAME in pg.locator("body").inner_text()  # touch's argument, as text
    assert pg.locator("#injected").count() == 0
    assert p.errors == []
    p.page.close()


def test_report_cli_errors(tmp_path):
    missing = subprocess.run([str(TRACE), "report", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "r.html")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "not a readable alerts file" in missing.stderr
    usage = subprocess.run([str(TRACE), "report", "-o", str(tmp_path / "r.html")],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "give ALERTS" in usage.stderr
    assert not (tmp_path / "r.html").exists()
