"""Record attack scenarios live with `trace record` (real eBPF), then hunt them
with trace's default rules and with Falco's stable rules read in place.

The scenarios come from tests/scenarios (each runs in its own cgroup, which
the recorder is restricted to); this file checks what `trace hunt` makes of
them: which rules fire, and that every line is Falco's format.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.output import falco_time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scenarios"))

from harness import record_scenario  # noqa: E402

FALCO_RULES = ROOT.parent / "shared" / "falco" / "rules" / "falco_rules.yaml"
TEXT_LINE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{9}: (Critical|Error|Warning|Notice|Informational) \S.*$")

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="trace record needs root"),
]

SCENARIOS = ("sensitive_read_untrusted", "stdio_to_socket_in_container", "memfd_exec")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("recorded")
    captures = {}
    for name in SCENARIOS:
        record_scenario(name, base / name)
        captures[name] = base / name
    return captures


def hunt_json(capture: Path, tmp_path: Path, *rules: Path) -> tuple[int, list[dict], str]:
    args = ["hunt", "--format", "json", "--alerts", str(tmp_path / f"{capture.name}.parquet")]
    for path in rules:
        args += ["--rules", str(path)]
    result = CliRunner().invoke(main, [*args, str(capture)])
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _check_falco_format(alerts: list[dict]) -> None:
    for alert in alerts:
        assert list(alert) == ["hostname", "output", "output_fields", "priority", "rule", "source", "tags", "time"]
        assert TEXT_LINE.match(alert["output"]), alert["output"]
        assert alert["output"].split(": ", 1)[1].startswith(alert["priority"] + " ")
        assert alert["output_fields"]["evt.time"] % 1_000_000_000 == int(alert["time"][20:29])
        assert alert["source"] == "syscall" and alert["tags"] == sorted(alert["tags"])


@pytest.mark.parametrize(
    ("scenario", "ours", "falcos"),
    [
        ("sensitive_read_untrusted", "Sensitive File Read by Untrusted Program", "Read sensitive file untrusted"),
        ("stdio_to_socket_in_container", "Socket Redirected to Standard Stream",
         "Redirect STDOUT/STDIN to Network Connection in Container"),
        ("memfd_exec", "Fileless Execution from Memory File", "Fileless execution via memfd_create"),
    ],
)
def test_recorded_attack_fires_ours_and_falcos_rule(recorded, tmp_path, scenario, ours, falcos):
    capture = recorded[scenario]
    code, alerts, stderr = hunt_json(capture, tmp_path)
    assert code == 3, stderr
    assert ours in {a["rule"] for a in alerts}
    _check_falco_format(alerts)
    code, falco_alerts, stderr = hunt_json(capture, tmp_path, FALCO_RULES)
    assert code == 3, stderr
    assert falcos in {a["rule"] for a in falco_alerts}
    _check_falco_format(falco_alerts)


def _text(value: object) -> str:
    if value is None:
        return "<NA>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_text_line_is_the_falco_output_rendered_from_its_json_fields(recorded, tmp_path, monkeypatch):
    """Re-render Falco's own output template from the alert's output_fields: it must give the text line."""
    from analyzer.rules.loader import load_rules

    monkeypatch.setenv("TZ", "UTC")
    capture = recorded["sensitive_read_untrusted"]
    _, alerts, _ = hunt_json(capture, tmp_path, FALCO_RULES)
    (alert,) = [a for a in alerts if a["rule"] == "Read sensitive file untrusted"]
    fields = alert["output_fields"]
    template = load_rules([FALCO_RULES]).rule("Read sensitive file untrusted").output
    message = re.sub(r"%([a-z0-9_.]+(?:\[[^\]]*\])?)", lambda m: _text(fields[m.group(1)]), template)
    assert alert["output"] == f"{falco_time(fields['evt.time'], 0)}: Warning {message}"
    assert fields["fd.name"] == "/etc/shadow" and fields["proc.name"] == "cat" and fields["evt.type"] == "openat"
    assert isinstance(fields["user.uid"], int) and isinstance(fields["proc.tty"], int)
    assert alert["hostname"] == os.uname().nodename
