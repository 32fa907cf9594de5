"""`trace hunt` end to end over real recorded captures (fixtures/scenarios, recorded
with `trace record`): exit codes, Falco's text and JSON lines, the stored
alerts, selection, matching modes and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.output import falco_time

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "scenarios"
FALCO_RULES = ROOT.parent / "shared" / "falco" / "rules" / "falco_rules.yaml"
TRACE = str(Path(sys.executable).with_name("trace"))
TEXT_LINE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{9}): (Emergency|Alert|Critical|Error|Warning|Notice|Informational|Debug) (.*)$")
JSON_KEYS = ["hostname", "output", "output_fields", "priority", "rule", "source", "tags", "time"]


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, Path]:
    """Copies of the recorded scenarios: hunting writes a state cache next to a capture."""
    base = tmp_path_factory.mktemp("captures")
    return {name: Path(shutil.copytree(FIXTURES / name, base / name))
            for name in ("sensitive_read_untrusted", "sensitive_read_untrusted_neg")}


def hunt(*args: str, tz: str = "UTC", monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.setenv("TZ", tz)
        time.tzset()
    result = CliRunner().invoke(main, ["hunt", *args])
    if monkeypatch is not None:
        monkeypatch.undo()
        time.tzset()
    return result


def test_default_rules_print_falcos_text_line_and_exit_3(captures, tmp_path, monkeypatch):
    cap = captures["sensitive_read_untrusted"]
    result = hunt(str(cap), "--alerts", str(tmp_path / "a.parquet"), monkeypatch=monkeypatch)
    assert result.exit_code == 3, result.stderr
    (line,) = result.stdout.splitlines()
    match = TEXT_LINE.match(line)
    assert match and match.group(5) == "Warning"
    assert match.group(6).startswith("Sensitive file opened for reading by untrusted program (file=/etc/shadow ")
    assert " process=cat " in line and " parent=python " in line and "container_id=host" in line
    assert "1  Warning       Sensitive File Read by Untrusted Program" in result.stderr


def test_json_lines_are_falcos_json_output(captures, tmp_path, monkeypatch):
    cap = captures["sensitive_read_untrusted"]
    jsonl = tmp_path / "alerts.jsonl"
    result = hunt("--rules", str(FALCO_RULES), "--format", "json", "-o", str(jsonl), "--alerts",
                  str(tmp_path / "a.parquet"), str(cap), monkeypatch=monkeypatch)
    assert result.exit_code == 3, result.stderr
    (line,) = result.stdout.splitlines()
    alert = json.loads(line)
    assert list(alert) == JSON_KEYS  # nlohmann's sorted keys, nothing else
    assert line == json.dumps(alert, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert alert["rule"] == "Read sensitive file untrusted" and alert["priority"] == "Warning"
    assert alert["source"] == "syscall" and alert["hostname"] == "vm"
    assert alert["tags"] == sorted(alert["tags"]) and "T1555" in alert["tags"]
    fields = alert["output_fields"]
    assert fields["fd.name"] == "/etc/shadow" and fields["proc.name"] == "cat"
    assert isinstance(fields["evt.time"], int) and isinstance(fields["user.uid"], int)
    assert isinstance(fields["proc.tty"], int) and fields["proc.aname[4]"] is None
    # time: UTC RFC 3339 with ns; the text prefix: the same instant on this machine's clock (TZ=UTC here)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", alert["time"])
    assert alert["output"].startswith(falco_time(fields["evt.time"], 0) + ": Warning ")
    assert alert["time"][11:29] == falco_time(fields["evt.time"], 0)
    assert "ggparent=<NA>" in alert["output"]
    assert jsonl.read_text() == line + "\n"
    assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600


def test_text_time_follows_the_local_zone_like_libsinsp(captures, tmp_path, monkeypatch):
    cap = captures["sensitive_read_untrusted"]
    utc = hunt(str(cap), "--alerts", str(tmp_path / "a.parquet"), tz="UTC", monkeypatch=monkeypatch)
    india = hunt(str(cap), "--alerts", str(tmp_path / "b.parquet"), tz="Asia/Kolkata", monkeypatch=monkeypatch)
    h, m, s = (int(x) for x in TEXT_LINE.match(utc.stdout).groups()[:3])
    h2, m2, s2 = (int(x) for x in TEXT_LINE.match(india.stdout).groups()[:3])
    assert ((h2 * 3600 + m2 * 60 + s2) - (h * 3600 + m * 60 + s)) % 86400 == 5 * 3600 + 30 * 60
    assert utc.stdout.split(": ", 1)[1] == india.stdout.split(": ", 1)[1]


def test_alerts_are_stored_for_the_report(captures, tmp_path):
    cap = captures["sensitive_read_untrusted"]
    path = tmp_path / "store" / "alerts.parquet"
    result = hunt(str(cap), "--alerts", str(path))
    assert result.exit_code == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = pq.read_table(path)
    (row,) = table.to_pylist()
    assert row["rule"] == "Sensitive File Read by Untrusted Program" and row["pid"] > 0
    assert row["evt_num"] is not None and row["_proc_key"] is not None and row["_segment"]
    assert row["output"] == result.stdout.strip()
    meta = table.schema.metadata
    assert json.loads(meta[b"trace.alerts.captures"]) == [str(cap.resolve())]
    assert json.loads(meta[b"trace.alerts.rules"])[0].endswith("rules/trace_rules.yaml")
    assert meta[b"trace.alerts.command"].decode() == f"trace hunt --rules {ROOT / 'rules' / 'trace_rules.yaml'} --match first {cap}"


def test_default_alerts_path_is_next_to_the_capture(captures):
    cap = captures["sensitive_read_untrusted"]
    assert hunt(str(cap)).exit_code == 3
    assert (cap / "alerts.parquet").is_file()


def test_report_is_rendered_after_the_hunt(captures, tmp_path):
    report = tmp_path / "report.html"
    result = hunt(str(captures["sensitive_read_untrusted"]), "--alerts", str(tmp_path / "a.parquet"),
                  "--report", str(report))
    assert result.exit_code == 3, result.stderr
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert "Sensitive File Read by Untrusted Program" in report.read_text()


def test_clean_capture_exits_0_with_no_output(captures, tmp_path):
    # Falco's rule ignores this scenario's reads (shadow- backup, shell redirection); trace's own rules do not.
    result = hunt("--rules", str(FALCO_RULES), "--rule", "Read sensitive file untrusted",
                  str(captures["sensitive_read_untrusted_neg"]), "--alerts", str(tmp_path / "a.parquet"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert pq.read_table(tmp_path / "a.parquet").num_rows == 0


def test_first_match_fires_one_rule_per_event_and_all_fires_every_rule(captures, tmp_path):
    cap = str(captures["sensitive_read_untrusted"])
    both = ["--rules", str(FALCO_RULES), "--rules", str(ROOT / "rules" / "trace_rules.yaml"),
            "--alerts", str(tmp_path / "a.parquet"), "--format", "json", cap]
    first = [json.loads(line)["rule"] for line in hunt(*both).stdout.splitlines()]
    every = [json.loads(line)["rule"] for line in hunt("--match", "all", *both).stdout.splitlines()]
    assert first == ["Read sensitive file untrusted"]
    assert every == ["Read sensitive file untrusted", "Sensitive File Read by Untrusted Program"]


def test_rule_and_tag_selection(captures, tmp_path):
    cap = str(captures["sensitive_read_untrusted"])
    out = ["--alerts", str(tmp_path / "a.parquet")]
    assert hunt(*out, "--rule", "Write below Etc", cap).exit_code == 0
    assert hunt(*out, "--tag", "T1003.008", cap).exit_code == 3
    assert hunt(*out, "--tag", "T1543.002", cap).exit_code == 0
    unknown = hunt(*out, "--rule", "No Such Rule", cap)
    assert unknown.exit_code == 1 and "no rule named 'No Such Rule'" in unknown.stderr


def test_time_range_selects_events(captures, tmp_path):
    cap = str(captures["sensitive_read_untrusted"])
    out = ["--alerts", str(tmp_path / "a.parquet")]
    assert hunt(*out, "--since", "2100-01-01T00:00:00Z", cap).exit_code == 0
    assert hunt(*out, "--until", "2000-01-01", cap).exit_code == 0
    assert hunt(*out, "--since", "2000-01-01", "--until", "2100-01-01", cap).exit_code == 3
    assert hunt(*out, "--since", "yesterday-ish", cap).exit_code == 2


def test_unsupported_rules_are_listed_with_field_and_reason(captures, tmp_path):
    result = hunt("--rules", str(FALCO_RULES), "--alerts", str(tmp_path / "a.parquet"),
                  str(captures["sensitive_read_untrusted_neg"]))
    assert result.exit_code == 0
    assert "UNSUPPORTED:" in result.stderr
    assert "Contact K8S API Server From Container (field k8s.ns.name): needs the Kubernetes API" in result.stderr


def test_bad_inputs_get_clear_errors(tmp_path, captures):
    out = ["--alerts", str(tmp_path / "a.parquet")]
    missing = hunt(*out, str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "nope" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = hunt(*out, str(tmp_path / "empty"))
    assert empty.exit_code == 1 and "empty" in empty.stderr
    bad_rules = tmp_path / "bad.yaml"
    bad_rules.write_text("- rule: Broken\n  desc: x\n  condition: proc.name = (\n  output: x\n  priority: WARNING\n")
    broken = hunt(*out, "--rules", str(bad_rules), str(captures["sensitive_read_untrusted"]))
    assert broken.exit_code == 1 and "bad.yaml:3:" in broken.stderr


def test_corrupt_segment_is_skipped_with_a_warning(captures, tmp_path):
    cap = Path(shutil.copytree(captures["sensitive_read_untrusted"], tmp_path / "cap"))
    good = next(cap.glob("seg-*.parquet"))
    (cap / good.name.replace("-000001.", "-000002.")).write_bytes(good.read_bytes()[:5000])
    result = hunt("--alerts", str(tmp_path / "a.parquet"), str(cap))
    assert result.exit_code == 3
    assert "warning:" in result.stderr and "000002" in result.stderr


def test_default_rules_follow_the_demo_incident_kill_chain(tmp_path):
    """fixtures/demo: a web shell in a container reads /etc/shadow, downloads a payload to /tmp,
    makes it executable, runs it, gets a reverse shell and plants a cron job."""
    demo = Path(shutil.copytree(ROOT / "fixtures" / "demo", tmp_path / "demo"))
    result = hunt("--format", "json", str(demo))
    assert result.exit_code == 3, result.stderr
    fired = [json.loads(line)["rule"] for line in result.stdout.splitlines()]
    assert set(fired) >= {
        "Shell Spawned by Service Process", "Sensitive File Read by Untrusted Program",
        "Download Tool Wrote to Temporary Directory", "Executable Bit Set in Temporary Directory",
        "Executable Run from Temporary Directory", "Socket Redirected to Standard Stream",
        "Cron Job Created or Modified",
    }
    assert fired.index("Shell Spawned by Service Process") < fired.index("Cron Job Created or Modified")


def test_several_captures_hunt_together_in_time_order(captures, tmp_path):
    demo = Path(shutil.copytree(ROOT / "fixtures" / "demo", tmp_path / "demo"))
    cap = captures["sensitive_read_untrusted"]
    store = tmp_path / "a.parquet"
    result = hunt("--format", "json", "--alerts", str(store), str(demo), str(cap))
    assert result.exit_code == 3, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    times = [a["output_fields"]["evt.time"] for a in alerts]
    assert times == sorted(times)
    commands = {a["output_fields"].get("proc.cmdline") for a in alerts}
    assert "cat /etc/shadow" in commands and len(alerts) > 1
    segments = {row["_segment"] for row in pq.read_table(store).to_pylist()}
    assert len(segments) == 2  # one segment from each capture
    assert json.loads(pq.read_schema(store).metadata[b"trace.alerts.captures"]) == [str(demo.resolve()),
                                                                                     str(cap.resolve())]


def test_real_binary_exit_codes(captures, tmp_path):
    """The installed console script, not the in-process runner: 3 with alerts, 0 without, 2 on usage."""
    out = ["--alerts", str(tmp_path / "a.parquet")]
    env = {**os.environ, "TZ": "UTC"}
    found = subprocess.run([TRACE, "hunt", *out, str(captures["sensitive_read_untrusted"])], capture_output=True,
                           text=True, env=env, timeout=300)
    assert found.returncode == 3 and TEXT_LINE.match(found.stdout)
    clean = subprocess.run([TRACE, "hunt", *out, "--tag", "T1543.002", str(captures["sensitive_read_untrusted"])],
                           capture_output=True, text=True, env=env, timeout=300)
    assert clean.returncode == 0 and clean.stdout == ""
    usage = subprocess.run([TRACE, "hunt", "--match", "some", "x"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
