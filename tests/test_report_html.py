"""The HTML's structure holds whatever a capture contains (parsed with html.parser, no browser)."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.alerts import AlertsMeta, RuleMeta
from analyzer.report import build_context, render_html
from analyzer.report.alerts_input import AlertsFile, load_alerts
from analyzer.report.lineage import Image, Lineage
from analyzer.report.model import ReportContext
from analyzer.report.render import _assets
from analyzer.report.synthetic import RULE_META, World, breach
from analyzer.report.text import display
from analyzer.report.tree import build_tree


class Outline(HTMLParser):
    """Tags, attributes and script bodies of a document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def outline(html: str) -> Outline:
    parser = Outline()
    parser.feed(html)
    parser.close()
    return parser


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "h4", "dl", "dt", "dd", "code",
    "p", "strong", "ul", "ol", "li", "nav", "a", "main", "section", "span", "table", "caption", "thead", "tbody",
    "tr", "th", "td", "div", "details", "summary", "pre", "script",
}


def assert_inert(html: str) -> Outline:
    doc = outline(html)
    assert {t for t, _ in doc.tags} <= ALLOWED_TAGS
    assert [a.get("type") for t, a in doc.tags if t == "script"] == ["application/json", None]
    for tag, attrs in doc.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs and "src" not in attrs
        href = attrs.get("href")
        assert href is None or re.fullmatch(r"#i\d+(-p\d+)?", href), href
    return doc


@pytest.fixture(scope="module")
def breach_html(tmp_path_factory):
    b = breach()
    path = b.world.write_alerts(tmp_path_factory.mktemp("a") / "alerts.parquet", RULE_META)
    return render_html(build_context(b.world.database(), load_alerts(path)))


def test_csp_admits_exactly_the_inline_style_and_script_by_hash(breach_html):
    doc = assert_inert(breach_html)
    csp = next(a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    css, js = _assets()

    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == sha(js) and directives["style-src"] == sha(css)
    assert doc.scripts[1] == js
    assert "http://" not in breach_html.replace("https://attack.mitre.org/", "")
    assert breach_html.index("Content-Security-Policy") < breach_html.index("<style>")


def test_no_external_resource_is_referenced(breach_html):
    for pattern in (r"<link\b", r"\bsrc=", r"@import", r"url\(", r"@font-face", r"//fonts\."):
        assert not re.search(pattern, breach_html, flags=re.I), pattern


def _context_with(value: str) -> ReportContext:
    """A report whose every captured string is ``value``."""
    w = World(host=value)
    init = w.spawn(None, 1, value, value, [value])
    proc = w.spawn(init, 7, value, value, [value, value], user=value, container=value)
    num = w.open(proc, value)
    w.alert(num, value, "Critical", tags=(value, "T1003"), message=value, fields={value: value, "fd.name": value})
    meta = AlertsMeta(captures=(value,), rules_files=(value,), command=value,
                      rule_meta={value: RuleMeta(value, "Critical", (value,))})
    return build_context(w.database(), AlertsFile(list(w.alerts), meta), report_command=value)


PAYLOADS = [
    "<script>document.title='PWNED'</script>",
    "</script><script>window.PWNED=1</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(1)>",
    "</details></li></ul></section><b id=injected>x</b>",
    "</style><style>body{display:none}</style>",
    "{{ 7*7 }}{% raw %}",
    "a\nb\r\n\x1b[31mred\u202eexe.txt",
    "&lt;already escaped&gt; &amp; <!-- comment --> <![CDATA[x]]>",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_everywhere_renders_as_text(payload):
    html = render_html(_context_with(payload))
    doc = assert_inert(html)
    assert display(payload) in "".join(doc.text)


@settings(max_examples=25)  # each example builds a DuckDB world: ~0.35 s
@given(st.text(min_size=1, max_size=60))
def test_any_text_everywhere_keeps_the_document_shape(value):
    assert_inert(render_html(_context_with(value)))


def test_invalid_utf8_in_names_shows_as_escapes():
    raw = b"/tmp/\xff\xfe<b>".decode("utf-8", "surrogateescape")
    img = Image(key=1, pid=1, parent_key=None, start_ts=1, end_ts=None, comm=raw, exe=raw, exepath=raw,
                cmdline=raw, uid=0, user_name="root", container_id="host", host="h")
    tree = build_tree([Lineage([img]).get(1)], lambda p: [], "x-")
    node = tree.roots[0]
    assert node.name == "/tmp/\\xff\\xfe<b>" and node.cmdline.full == node.name
