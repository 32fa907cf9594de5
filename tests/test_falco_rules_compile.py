"""Every rule in Falco's shipped rules files loads and compiles to SQL that
runs on a real DuckDB events table, except rules naming fields whose data
cannot exist in a host syscall capture; those are listed with their reason
(run with -s to see the report) and must be named in docs/fields.md.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from analyzer.fields.catalog import AUXILIARY_COLUMNS, CATALOG
from analyzer.rules.loader import load_rules
from analyzer.sql.compiler import compile_ruleset, install_runtime

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / ".." / "shared" / "falco" / "rules"

# file -> (rules, compiled). Every rule that does not compile names a field
# from docs/fields.md's "cannot exist" table (DNS names, Kubernetes metadata,
# the container runtime's privileged flag and mounts, I/O buffers).
EXPECTED = {
    "falco_rules.yaml": (25, 23),
    "falco-incubating_rules.yaml": (31, 27),
    "falco-sandbox_rules.yaml": (37, 31),
    "falco-deprecated_rules.yaml": (4, 2),
    "falco_rules_2021-03_with_exceptions.yaml": (65, 53),
}


@pytest.fixture(scope="module")
def events_con():
    con = duckdb.connect()
    install_runtime(con)
    columns = {**CATALOG.event_columns(), **AUXILIARY_COLUMNS}
    con.execute("CREATE TABLE events (" + ", ".join(f'"{n}" {t}' for n, t in columns.items()) + ")")
    con.execute("INSERT INTO events DEFAULT VALUES")  # one all-NULL event: every check is false
    yield con
    con.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_falco_rules_file_compiles(name, events_con):
    ruleset = load_rules([RULES / name])
    assert not ruleset.errors, [f.format() for f in ruleset.errors]
    compiled = compile_ruleset(ruleset)
    supported = [c for c in compiled if c.supported]
    print(f"\n{name}: {len(supported)}/{len(compiled)} rules compile")
    fields_doc = (ROOT / "docs" / "fields.md").read_text()
    cannot_exist = fields_doc.split("## Unsupported: the data cannot exist", 1)[1].split("\n## ", 1)[0]
    for rule in compiled:
        if rule.supported:
            continue
        assert rule.error is None, str(rule.error)
        for item in rule.unsupported:
            print(f"  unsupported: {item}")
            spec = CATALOG.lookup(item.field.split("[", 1)[0])
            assert spec is not None and not spec.derivable, f"{rule.name}: {item} (the analyzer should derive it)"
            assert f"| `{spec.name}` |" in cannot_exist, f"{spec.name} is not named in docs/fields.md"
            assert item.location is not None and item.location.line > 0
    for rule in supported:
        assert rule.unsupported == [] and rule.error is None
        hits = events_con.execute(f"SELECT count(*) FROM events WHERE {rule.sql}").fetchall()[0][0]
        assert hits in (0, 1), rule.name
    assert (len(compiled), len(supported)) == EXPECTED[name]


def test_one_scan_of_every_stable_rule_binds(events_con):
    """The hunt runs all rules side by side in one SELECT; it must bind."""
    compiled = [c for c in compile_ruleset(load_rules([RULES / "falco_rules.yaml"])) if c.supported]
    select = ", ".join(f"({c.sql}) AS r{i}" for i, c in enumerate(compiled))
    assert len(events_con.execute(f"SELECT {select} FROM events").fetchall()) == 1


def test_rules_check_prints_sql_unsupported_fields_and_compile_errors(tmp_path):
    from click.testing import CliRunner

    from analyzer.cli import main

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: shell\n  desc: d\n  condition: evt.type = execve and proc.name = \"it's\"\n  output: o\n  priority: INFO\n"
        "- rule: k8s\n  desc: d\n  condition: evt.type = open and k8s.ns.name = x\n  output: o\n  priority: INFO\n"
        "- rule: bad\n  desc: d\n  condition: evt.type = open and proc.pid contains 1\n  output: o\n  priority: INFO\n"
    )
    result = CliRunner().invoke(main, ["rules", "check", "--sql", str(rules)])
    assert result.exit_code == 1  # libsinsp rejects `proc.pid contains`
    assert "sql: coalesce(((\"evt.type\" = 'execve') AND (\"proc.name\" = 'it''s')), false)" in result.output
    assert f"{rules}:8:34: rule 'k8s': field k8s.ns.name: needs the Kubernetes API server" in result.output
    assert f"{rules}:13:34: error: operator 'contains' is not supported for int fields [rule 'bad']" in result.output
    assert "1/3 rules compile to SQL (1 unsupported, 1 invalid)" in result.output
