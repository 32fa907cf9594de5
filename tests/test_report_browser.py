"""The report in a real browser: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.report import render_report
from analyzer.report.synthetic import RULE_META, World, breach

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
PWNED = "PWNED"
PAYLOADS = {
    "title": "<script>document.title='PWNED'</script>",
    "break_out": "</script><script>window.PWNED=1;document.title='PWNED'</script>",
    "attribute": "\"><img src=x onerror=\"window.PWNED=1;document.title='PWNED'\">",
    "svg": "'><svg onload=\"document.title='PWNED'\"></svg>",
    "markup": "</details></li></ul></section><b id=injected>PWNED</b>",
    "style": "</style><style>body{display:none}</style>",
    "newline": "line1\nline2\r\n\u202eexe.txt",
}


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch(playwright, profile: Path, **options):
    """Chromium with a fresh profile directory."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1300, "height": 900}, **options,
    )


@pytest.fixture(scope="module")
def browser_context(playwright, tmp_path_factory):
    context = launch(playwright, tmp_path_factory.mktemp("chromium-profile"))
    yield context
    context.close()


class Page:
    """A page that records console messages, errors and every request."""

    def __init__(self, context):
        self.page = context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, path: Path):
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        return self.page


@pytest.fixture
def page(browser_context):
    p = Page(browser_context)
    yield p
    p.page.close()


@pytest.fixture(scope="module")
def breach_report(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("breach")
    b = breach()
    alerts = b.world.write_alerts(d / "alerts.parquet", RULE_META, command="trace hunt --rules rules/ capture/")
    out = d / "report.html"
    render_report(alerts, b.world.database(), out, report_command="trace report alerts.parquet -o report.html")
    return out


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """Every attacker-controlled string of a capture holds a payload."""
    d = tmp_path_factory.mktemp("hostile")
    w = World(host=PAYLOADS["attribute"])
    init = w.spawn(None, 1, "systemd", "/sbin/init", ["init"])
    web = w.spawn(init, 80, PAYLOADS["title"], "/srv/" + PAYLOADS["svg"], [PAYLOADS["break_out"], PAYLOADS["markup"]],
                  user=PAYLOADS["attribute"], container=PAYLOADS["svg"])
    child = w.spawn(web, 81, PAYLOADS["markup"], "/tmp/" + PAYLOADS["style"], ["x", "A" * 100_000, PAYLOADS["newline"]])
    for name, payload in PAYLOADS.items():
        num = w.open(child, f"/tmp/{name}/{payload}", flags=0o1101)
        w.alert(num, f"rule {payload}", "Critical", tags=(payload, "T1003"), message=payload,
                fields={"fd.name": payload, "proc.cmdline": "A" * 100_000, payload: payload})
    w.connect(child, "10.0.0.9", 4444)
    from analyzer.alerts import RuleMeta

    meta = {f"rule {p}": RuleMeta(p, "Critical", (p,)) for p in PAYLOADS.values()}
    alerts = w.write_alerts(d / "alerts.parquet", meta, rules_files=(PAYLOADS["break_out"],),
                            command=PAYLOADS["title"])
    out = d / "hostile.html"
    render_report(alerts, w.database(), out, report_command=PAYLOADS["markup"])
    return out


def _no_errors(p: Page) -> None:
    assert p.errors == []
    assert [m for m in p.console if m.startswith(("error", "warning"))] == []


def test_report_loads_clean_and_holds_the_tree_and_badges(page, breach_report, tmp_path):
    pg = page.open(breach_report)
    _no_errors(page)
    assert pg.title() == "Incident report: 2 incidents, 4 alerts"
    first = pg.locator("#i1")
    pids = first.locator("li.node").evaluate_all("els => els.map(e => Number(e.dataset.pid))")
    assert pids == [1, 800, 812, 900, 901, 902]
    alerting = first.locator("li.node.alerting").evaluate_all("els => els.map(e => Number(e.dataset.pid))")
    assert alerting == [900, 901, 902]
    badges = first.locator("li.node.alerting > details > summary .badge").all_inner_texts()
    assert badges == ["Run shell untrusted", "Read sensitive file untrusted", "Outbound connection to C2"]
    assert first.locator("li.folded summary").all_inner_texts() == ["+3 more", "+31 more"]
    assert first.locator("tr.alert-row").count() == 3
    assert "spawned sh (pid 900)" in first.locator(".narrative").inner_text()
    # The hash-admitted stylesheet applied: badges are coloured, not default black on white.
    assert first.locator(".badge.level-critical").first.evaluate("e => getComputedStyle(e).backgroundColor") \
        == "rgb(179, 20, 29)"
    shot = tmp_path / "report.png"
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000


def test_script_enhancements_work(page, breach_report):
    pg = page.open(breach_report)
    tree = pg.locator("#i1 ul.tree")
    toolbar = pg.locator("#i1 .tree-section .toolbar")
    toolbar.get_by_role("button", name="Collapse all").click()
    assert not pg.locator("#i1-p4 > details > summary").is_visible()  # sh, under collapsed parents
    toolbar.get_by_role("button", name="Focus only").click()
    assert pg.locator("#i1-p6 > details > summary").is_visible()  # nc
    toolbar.locator("input[type=search]").fill("4444")
    assert tree.locator("li.match").evaluate_all("els => els.map(e => Number(e.dataset.pid))") == [900, 902]
    filters = pg.locator("#i1 .timeline-section .toolbar")
    filters.get_by_label("exec").uncheck()
    assert pg.locator("#i1 table.timeline tbody tr:visible").count() == 3
    _no_errors(page)


def test_hostile_capture_runs_no_script(page, hostile_report):
    pg = page.open(hostile_report)
    _no_errors(page)
    assert pg.title() == "Incident report: 1 incident, 7 alerts"
    assert pg.evaluate("() => window.PWNED") is None
    assert pg.evaluate("() => document.getElementById('injected')") is None
    assert pg.locator("img, svg, b#injected, link, iframe, object, embed").count() == 0
    assert pg.locator("script").count() == 2
    assert pg.locator("body").is_visible()
    text = pg.locator("body").inner_text()
    for payload in ("<script>document.title='PWNED'</script>", "</details></li></ul></section><b id=injected>PWNED</b>",
                    "line1\\nline2\\r\\n\\u202eexe.txt"):
        assert payload in text
    # The 100 KB argument is cut inline, and whole behind its disclosure.
    clip = pg.locator("#i1-p3 .meta details.clip").first
    assert "+99" in clip.locator(".cut").inner_text()
    clip.locator("summary").click()
    assert "A" * 100_000 in clip.locator(".full").inner_text()
    # Hostile names go through the JSON block and back out as text: search still finds them.
    pg.locator("#i1 .tree-section input[type=search]").fill("<b id=injected>")
    matched = pg.locator("#i1 li.match").evaluate_all("els => els.map(e => Number(e.dataset.pid))")
    assert matched == [80, 81]  # in the cmdline of one, the name of the other
    assert pg.title() == "Incident report: 1 incident, 7 alerts"


def test_report_opens_from_file_with_the_network_disabled(browser_context, hostile_report, breach_report):
    allowed = {breach_report.resolve().as_uri(), hostile_report.resolve().as_uri()}
    blocked: list[str] = []

    def block(route):  # the report file itself loads; anything else is recorded and refused
        if route.request.url in allowed:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    browser_context.set_offline(True)
    browser_context.route("**/*", block)
    try:
        for report in (breach_report, hostile_report):
            p = Page(browser_context)
            pg = p.open(report)
            assert pg.locator("li.node").count() > 0
            _no_errors(p)
            assert p.requests == [report.resolve().as_uri()]
            p.page.close()
    finally:
        browser_context.unroute("**/*", block)
        browser_context.set_offline(False)
    assert blocked == []


def test_core_content_reads_without_javascript(playwright, breach_report, tmp_path):
    context = launch(playwright, tmp_path / "profile", java_script_enabled=False)
    try:
        pg = context.new_page()
        pg.goto(breach_report.resolve().as_uri())
        assert pg.locator(".toolbar").count() == 0  # the script did not run
        assert pg.locator("#i1-p6 > details > summary").is_visible()  # nc, deep in the tree
        assert pg.locator("#i1 table.timeline tbody tr:visible").count() == 6
        detail = pg.locator("#i1 details.details-section")
        detail.locator("> summary").click()  # details/summary collapse with no script
        assert detail.locator("details.proc-detail").first.is_visible()
        pg.emulate_media(media="print")
        # Printing shows collapsed sections' content: the CSS alone opens them.
        assert pg.locator("#i1 details.evidence table.fields").first.is_visible()
        pdf = pg.pdf()
        assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    finally:
        context.close()
