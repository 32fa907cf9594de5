"""Per-rule end-to-end tests: real captures of attack scenarios, hunted with `trace hunt`.

* every fixture in tests/scenarios/manifest.yaml yields exactly its expected
  alerts (rule -> count) under the default rules and under Falco's stable file;
* a few scenarios are recorded live (root, eBPF) and hunted, so the recorder
  and the analyzer are proven together on every run;
* the demo incident is caught by both rulesets with the right ancestry;
* the manifest is consistent with the scenario catalog and the rules files,
  and docs/rules-coverage.md is what the manifest says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "scenarios"))

from catalog import SCENARIOS  # noqa: E402
from rules_coverage import COVERAGE_DOC, render_coverage, rule_names  # noqa: E402
from harness import (  # noqa: E402
    REPO,
    HarnessError,
    TRACE,
    alert_counts,
    hunt,
    load_manifest,
    private_copy,
    record_scenario,
)

MANIFEST = load_manifest()
FIXTURE_MAX_BYTES = 2 << 20
CASES = [(name, ruleset) for name in MANIFEST.scenarios for ruleset in MANIFEST.rulesets]


def case_param(name: str, ruleset: str):
    """A known gap is a strict expected failure: once fixed, the XPASS fails the run."""
    gap = MANIFEST.scenarios[name].known_gaps.get(ruleset)
    marks = [pytest.mark.xfail(strict=True, reason=" ".join(gap.split()))] if gap else []
    return pytest.param(name, ruleset, marks=marks, id=f"{name}-{ruleset}")


@pytest.fixture(scope="module")
def fixture_counts(tmp_path_factory) -> dict[tuple[str, str], dict[str, int] | HarnessError]:
    """Alert counts of every fixture under every ruleset, two fixtures at a time (2 cores).

    Each fixture is hunted on a private copy (a hunt writes its state cache
    next to the capture), by every ruleset in turn, so the later hunts reuse
    the state the first one built.
    """
    copies = tmp_path_factory.mktemp("fixtures")

    def hunt_fixture(name: str) -> dict[str, dict[str, int] | HarnessError]:
        capture = private_copy(MANIFEST.scenarios[name].fixture, copies / name)
        counts = {}
        for ruleset, rules in MANIFEST.rulesets.items():
            try:
                counts[ruleset] = alert_counts(hunt(capture, rules))
            except HarnessError as exc:  # reported by that case's test alone
                counts[ruleset] = exc
        return counts

    with ThreadPoolExecutor(max_workers=2) as pool:
        per_fixture = dict(zip(MANIFEST.scenarios, pool.map(hunt_fixture, MANIFEST.scenarios)))
    return {(name, ruleset): fired for name, counts in per_fixture.items() for ruleset, fired in counts.items()}


@pytest.fixture(scope="module")
def demo_alerts(tmp_path_factory) -> dict[str, list[dict]]:
    """The demo hunted alone with each ruleset: the full Falco JSON alerts."""
    demo = private_copy(MANIFEST.scenarios["demo"].fixture, tmp_path_factory.mktemp("demo"))
    return {ruleset: hunt(demo, rules) for ruleset, rules in MANIFEST.rulesets.items()}


# the first case also pays for hunting every fixture (fixture_counts): 146 hunts
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("name", "ruleset"), [case_param(n, r) for n, r in CASES])
def test_fixture_fires_exactly_its_manifest_alerts(fixture_counts, name, ruleset):
    expected = MANIFEST.scenarios[name].alerts[ruleset]
    fired = fixture_counts[name, ruleset]
    if isinstance(fired, HarnessError):
        raise fired
    assert fired == expected


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="trace record needs root")
LIVE = [name for name, entry in MANIFEST.scenarios.items() if entry.live]


@needs_root
@pytest.mark.parametrize("name", LIVE)
def test_live_scenario_recorded_then_hunted(tmp_path, name):
    capture = tmp_path / name
    record_scenario(name, capture)
    for ruleset, rules in MANIFEST.rulesets.items():
        assert alert_counts(hunt(capture, rules)) == MANIFEST.scenarios[name].alerts[ruleset], ruleset


# --- the demo ---------------------------------------------------------------------

DEMO = MANIFEST.scenarios["demo"]


def test_demo_caught_by_both_rulesets(demo_alerts):
    """Hunted alone, the demo yields the same alerts as in the joint hunt: the manifest's."""
    for ruleset, alerts in demo_alerts.items():
        fired = alert_counts(alerts)
        assert fired == DEMO.alerts[ruleset], ruleset
        assert len(fired) >= 5, fired


def test_demo_alerts_carry_the_attack_ancestry(demo_alerts):
    """cat /etc/shadow ran in the injected shell, below the service, below runc."""
    [shadow_read] = [a for a in demo_alerts["stable"] if a["rule"] == "Read sensitive file untrusted"]
    fields = shadow_read["output_fields"]
    assert fields["proc.name"] == "cat"
    assert fields["fd.name"] == "/etc/shadow"
    assert fields["proc.pname"] == "sh"
    assert fields["proc.aname[2]"] == "httpd"
    assert fields["proc.aname[3]"] == "runc"
    [shell] = [a for a in demo_alerts["stable"] if a["rule"] == "Run shell untrusted"]
    assert shell["output_fields"]["proc.pname"] == "httpd"
    assert "getent hosts 127.0.0.1;" in shell["output_fields"]["proc.cmdline"]
    redirects = [a for a in demo_alerts["stable"]
                 if a["rule"] == "Redirect STDOUT/STDIN to Network Connection in Container"]
    assert {a["output_fields"]["fd.type"] for a in redirects} == {"ipv4"}
    assert {a["output_fields"]["proc.aname[2]"] for a in redirects} == {"httpd"}


def test_readme_demo_command_writes_a_report(tmp_path):
    """The README's first command, on a private copy of the demo."""
    demo = private_copy(DEMO.fixture, tmp_path)
    report = tmp_path / "report.html"
    result = subprocess.run([str(TRACE), "hunt", str(demo), "--report", str(report)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # 3: the hunt ran and alerts fired
    assert report.stat().st_size > 0
    assert str(report) in result.stdout + result.stderr


# --- consistency --------------------------------------------------------------------

def test_every_scenario_has_a_fixture_and_a_manifest_entry():
    assert set(SCENARIOS) == set(MANIFEST.scenarios)
    for name, entry in MANIFEST.scenarios.items():
        segments = list(entry.fixture.glob("seg-*.parquet"))
        assert segments, f"{name}: no capture in {entry.fixture} (run scripts/record_fixtures {name})"
        size = sum(p.stat().st_size for p in entry.fixture.iterdir())
        assert size < FIXTURE_MAX_BYTES, f"{name}: fixture is {size} bytes"


def test_manifest_names_only_rules_that_exist():
    for ruleset, rules in MANIFEST.rulesets.items():
        known = set(rule_names(rules))
        for name, entry in MANIFEST.scenarios.items():
            named = set(entry.alerts[ruleset]) | set(entry.positive.get(ruleset, ())) | set(entry.negative.get(ruleset, ()))
            assert named <= known, f"{name}: unknown {ruleset} rules {named - known}"
        assert set(MANIFEST.untriggerable.get(ruleset, {})) <= known


def test_positives_fire_and_negatives_do_not():
    for name, entry in MANIFEST.scenarios.items():
        for ruleset in MANIFEST.rulesets:
            fired = entry.alerts[ruleset]
            for rule in entry.positive.get(ruleset, ()):
                assert fired.get(rule, 0) > 0, f"{name}: positive for {rule!r} expects no alert"
            for rule in entry.negative.get(ruleset, ()):
                assert rule not in fired, f"{name}: negative for {rule!r} expects it to fire"


def test_every_rule_is_covered_or_explained():
    for ruleset, rules in MANIFEST.rulesets.items():
        explained = set(MANIFEST.untriggerable.get(ruleset, {}))
        positives = {r for e in MANIFEST.scenarios.values() for r in e.positive.get(ruleset, ())}
        negatives = {r for e in MANIFEST.scenarios.values() for r in e.negative.get(ruleset, ())}
        missing = [r for r in rule_names(rules) if r not in explained and not (r in positives and r in negatives)]
        assert not missing, f"{ruleset}: rules without a positive and a negative scenario: {missing}"


def test_rules_coverage_doc_is_current():
    assert COVERAGE_DOC.read_text() == render_coverage(MANIFEST), (
        f"{COVERAGE_DOC.relative_to(REPO)} is stale: python tests/scenarios/rules_coverage.py > {COVERAGE_DOC.relative_to(REPO)}"
    )
