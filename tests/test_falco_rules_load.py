"""Falco's own rules files load unchanged, and the 2021 file's exceptions
expand exactly as Falco's rule compiler expands them.

The files are read in place from ../shared/falco/rules (never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.condition import ast
from analyzer.rules.loader import load_rules

RULES_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "falco" / "rules"
ALL_FILES = sorted(RULES_DIR.glob("*.yaml"))
EXCEPTIONS_FILE = RULES_DIR / "falco_rules_2021-03_with_exceptions.yaml"
MAINTAINED = ["falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"]


@pytest.fixture(scope="module")
def exceptions_ruleset():
    return load_rules([EXCEPTIONS_FILE])


def test_the_rules_files_are_there():
    assert len(ALL_FILES) >= 5, RULES_DIR


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_falco_rules_file_loads_without_errors(path):
    ruleset = load_rules([path])
    assert [f.format() for f in ruleset.errors] == []
    with_conditions = [item for item in path.read_text().splitlines() if item.startswith("- rule:")]
    # every rule item is a definition in these files (none toggles or appends)
    assert len(ruleset.rules) == len({line.split(":", 1)[1].strip() for line in with_conditions})
    for rule in ruleset.rules:
        assert not list(rule.expr.find_all(ast.MacroRef)), rule.name
        assert not list(rule.expr.find_all(ast.ListName)), rule.name


def test_maintained_files_load_together_in_falco_order():
    """Stable, then incubating, then sandbox, as a Falco deployment loads them:
    later files see the earlier files' lists and macros."""
    ruleset = load_rules([RULES_DIR / name for name in MAINTAINED])
    assert [f.format() for f in ruleset.errors] == []
    assert len(ruleset.rules) == sum(len(load_rules([RULES_DIR / n]).rules) for n in MAINTAINED)


def test_stable_rule_evttypes_match_falco():
    ruleset = load_rules([RULES_DIR / "falco_rules.yaml"])
    shell = ruleset.rule("Terminal shell in container")
    assert shell.evttypes.names == {"execve", "execveat"} and not shell.evttypes.complement
    assert all(not r.evttypes.is_all for r in ruleset.rules), [r.name for r in ruleset.rules if r.evttypes.is_all]


def _wrapped(rule_condition_start: str, condition: str) -> None:
    assert condition.startswith("(" + rule_condition_start), condition[:80]


def test_single_and_multi_field_exceptions_expand_like_falco(exceptions_ruleset):
    rule = exceptions_ruleset.rule("Write below monitored dir")
    _wrapped("evt.dir = < and open_write and monitored_dir", rule.condition)
    expected_tail = (
        ") and not (proc.name in (package_mgmt_binaries))"
        " and not (( proc.name = update-ssh-keys and  fd.name startswith /home/core/.ssh))"
        " and not (( proc.name = google_accounts and  fd.name startswith /home and  fd.name contains .ssh)"
        " or ( proc.name = cloud-init and  fd.name startswith /home and  fd.name contains .ssh))"
    )
    assert rule.condition.endswith(expected_tail)
    assert rule.exception_fields == {"proc.name", "fd.name"}


def test_list_valued_exception_entries_and_quoting(exceptions_ruleset):
    rule = exceptions_ruleset.rule("DB program spawned process")
    assert rule.condition.endswith(
        ') and not (( proc.pname in (postgres) and '
        ' proc.cmdline startswith "sh -c envdir /etc/wal-e.d/env /usr/local/bin/wal-e"))'
    )


def test_single_field_comps_default_in_and_pmatch(exceptions_ruleset):
    condition = exceptions_ruleset.rule("Write below root").condition
    assert ") and not (fd.name in (known_root_files)) and not (fd.directory pmatch (known_root_directories))" in condition
    assert "and not (( fd.name startswith /root/orcexec.) or ( fd.name startswith /root/.m2) or" in condition


def test_exception_without_values_adds_nothing(exceptions_ruleset):
    rule = exceptions_ruleset.rule("Modify Shell Configuration File")
    assert rule.condition.startswith("(open_write and")
    assert rule.condition.rstrip().endswith("and not exe_running_docker_save\n)")
    assert "known_shell_conf_writers" not in rule.condition


def test_misspelled_comps_key_is_ignored_like_falco_with_a_warning(exceptions_ruleset):
    rule = exceptions_ruleset.rule("Read sensitive file untrusted")
    assert ' and not (( proc.cmdline = "perl /usr/bin/updmap") or ( proc.cmdline = "perl /opt/VRTSsfmh/bin/mh_driver.pl")' in rule.condition
    warnings = [w for w in exceptions_ruleset.warnings if "ops" in w.message]
    assert len(warnings) == 1 and warnings[0].location.line == 1350


def _lists_in(expr: ast.Node) -> list[ast.Comparison]:
    return [c for c in expr.find_all(ast.Comparison) if isinstance(c.right, ast.ListLiteral)]


def test_exception_values_naming_lists_are_substituted(exceptions_ruleset):
    rule = exceptions_ruleset.rule("Unexpected outbound connection destination")
    by_field = {c.left.name: c.right for c in _lists_in(rule.expr) if isinstance(c.left, ast.FieldRef)}
    sip = by_field["fd.sip"]
    assert [(i.value, i.quoted) for i in sip.items] == [("127.0.0.1", True), ("8.8.8.8", True)]
    assert [i.value for i in by_field["fd.sip.name"].items] == ["google.com", "www.yahoo.com"]


def test_lists_naming_earlier_lists_expand_one_level_like_falco(exceptions_ruleset):
    items = exceptions_ruleset.lists["package_mgmt_binaries"]
    assert items[:5] == ("dnf", "rpm", "rpmkey", "yum", '"75-system-updat"')
    assert "dpkg" in items and "rpm_binaries" not in items and "deb_binaries" not in items
    rule = exceptions_ruleset.rule("Write below monitored dir")
    names = [c for c in _lists_in(rule.expr) if c.left == ast.FieldRef("proc.name", None, c.left.span)]
    values = {i.value for c in names for i in c.right.items}
    assert {"75-system-updat", "dpkg", "snapd"} <= values


def test_macros_expand_into_rules(exceptions_ruleset):
    rule = exceptions_ruleset.rule("Write below monitored dir")
    fields = {f.name for f in rule.expr.find_all(ast.FieldRef)}
    assert {"evt.is_open_write", "fd.typechar", "fd.directory"} <= fields
    assert rule.evttypes.names == {"open", "openat"}


def test_nodes_from_macros_are_located_in_the_macro(exceptions_ruleset):
    rule = exceptions_ruleset.rule("Write below monitored dir")
    node = next(f for f in rule.expr.find_all(ast.FieldRef) if f.name == "evt.is_open_write")
    location = exceptions_ruleset.locate(node)
    assert location.line == 30  # `- macro: open_write` body
    line = EXCEPTIONS_FILE.read_text().splitlines()[29]
    assert line[location.col - 1:].startswith("evt.is_open_write")


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_expanded_rule_round_trips_through_canonical_text(path):
    from analyzer.condition.parser import parse

    for rule in load_rules([path]).rules:
        assert parse(rule.expr.text()).shape() == rule.expr.shape(), rule.name
