"""The docs must match the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_ci_runs_the_readme_test_command():
    setup_and_demo, setup_and_test = _readme_commands()[:2]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == setup_and_test
    assert "pytest" in setup_and_test and "trace hunt" in setup_and_demo


def test_schema_doc_lists_every_column():
    from capture.schema import COLUMN_NAMES

    doc = (ROOT / "docs" / "schema.md").read_text()
    doc = doc.split("## Columns", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", doc, flags=re.M))
    assert documented == set(COLUMN_NAMES)
