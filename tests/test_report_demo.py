"""The report of the recorded demo incident (fixtures/demo), hunted with the default rules, in chromium."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.report.alerts_input import load_alerts

sys.path.insert(0, str(Path(__file__).resolve().parent / "scenarios"))

from harness import REPO, TRACE, private_copy  # noqa: E402
from test_report_browser import Page, browser_context, playwright  # noqa: E402,F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    capture = private_copy(REPO / "fixtures" / "demo", base)
    alerts, report = base / "alerts.parquet", base / "report.html"
    hunt = subprocess.run([str(TRACE), "hunt", str(capture), "--alerts", str(alerts), "--report", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert hunt.returncode == 3, hunt.stderr
    return load_alerts(alerts), report


def test_demo_report_reads_like_the_incident(demo, browser_context, tmp_path):
    alerts_file, report = demo
    p = Page(browser_context)
    pg = p.open(report)
    assert p.errors == [] and [m for m in p.console if m.startswith(("error", "warning"))] == []
    assert p.requests == [report.resolve().as_uri()]
    assert pg.locator("section.incident").count() == 1  # one service, one attack: one incident
    incident = pg.locator("#i1")
    names = incident.locator("li.node .pname").all_inner_texts()
    for step in ("httpd", "sh", "cat", "curl", "chmod", "shred"):
        assert step in names, step
    badges = set(incident.locator("li.node.alerting > details > summary .badge").all_inner_texts())
    badges = {b.split(" ×")[0] for b in badges}
    assert badges == {a.rule for a in alerts_file.alerts}
    narrative = incident.locator(".narrative").inner_text()
    assert "spawned sh" in narrative and "read /etc/shadow" in narrative
    containers = incident.locator("dl.facts dd").nth(1).inner_text()
    assert containers and containers != "host"  # the service ran in a (simulated) container
    connects = incident.locator("table.timeline tr[data-cat=connect]").all_inner_texts()
    assert any("127.0.0.1:" in row for row in connects)
    assert incident.locator("table.timeline tr.alert-row").count() == len(alerts_file.alerts)
    shot = tmp_path / "demo.png"
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 100_000
    p.page.close()
