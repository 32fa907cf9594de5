"""ReportContext -> one self-contained HTML file.

Jinja2 renders `reports/report.html.j2` with autoescape always on. The CSS
and JS in `reports/` are inlined, and the Content-Security-Policy admits
exactly those two blocks by their sha256 hashes and nothing else: no
network, no other script, no style attribute, no form, no base URL. Data for
the script goes in a `<script type="application/json">` block whose `<`,
`>` and `&` are JSON escapes, so no captured string can close the block.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from analyzer.report.model import ProcessNode, ReportContext
from capture.resources import data_dir

TEMPLATES = data_dir("reports")
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class TreeStep:
    kind: str  # "open" | "close"
    node: ProcessNode


def walk_tree(roots: list[ProcessNode]) -> Iterator[TreeStep]:
    """Open/close steps in document order, so the template renders a deep tree with a flat loop."""
    stack: list[tuple[ProcessNode, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        node, closing = stack.pop()
        if closing:
            yield TreeStep("close", node)
            continue
        yield TreeStep("open", node)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))


def script_json(data: object) -> Markup:
    """JSON that is inert inside <script type="application/json">."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


@lru_cache(maxsize=1)
def _assets() -> tuple[str, str]:
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    # They are inlined verbatim: they must not be able to end their own element.
    if "</style" in css.lower() or "</script" in js.lower():
        raise ValueError("reports/report.css or report.js closes its own element")
    return css, js


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["walk_tree"] = walk_tree
    return env


def content_security_policy(css: str, js: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src '{_sha256(js)}'; "
        f"style-src '{_sha256(css)}'; "
        "base-uri 'none'; form-action 'none'"
    )


def _script_data(ctx: ReportContext) -> dict:
    incidents = []
    for incident in ctx.incidents:
        nodes = [
            {"id": step.node.node_id, "pid": step.node.pid, "name": step.node.name, "cmdline": step.node.cmdline.head}
            for step in walk_tree(incident.roots)
            if step.kind == "open"
        ]
        incidents.append({"id": incident.incident_id, "nodes": nodes})
    return {"incidents": incidents}


def render_html(ctx: ReportContext) -> str:
    css, js = _assets()
    return _environment().get_template(TEMPLATE).render(
        ctx=ctx,
        css=Markup(css),
        js=Markup(js),
        csp=content_security_policy(css, js),
        data_json=script_json(_script_data(ctx)),
    )


def write_private(path: Path, text: str) -> None:
    """Write atomically, 0600: a report quotes command lines and file names, which can hold secrets."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
