"""The event-level prefilter (analyzer.sql.prefilter): what it keeps of a
condition, and that on Falco's own rules it never reads process state.
That it never drops an event the condition selects is the differential
test's job (tests/test_sql_differential.py)."""

from __future__ import annotations

import re
from pathlib import Path

from analyzer.condition.parser import parse
from analyzer.hunt.plan import plan_hunt
from analyzer.sql.compiler import compile_condition

FALCO_RULES = Path(__file__).resolve().parents[1] / ".." / "shared" / "falco" / "rules"
_PROCESS_COLUMN = re.compile(r'"(proc|user|group|thread|container)\.[a-z_.]+"|"_anc_|"_env"')


def _prefilter(condition: str) -> str | None:
    return compile_condition(parse(condition)).prefilter_sql


def test_process_checks_are_left_out_of_an_and():
    assert _prefilter("evt.type = execve and proc.name = bash and not fd.name startswith /tmp") == (
        "((\"evt.type\" = 'execve') AND (NOT coalesce(starts_with(\"fd.name\", '/tmp'), false)))")


def test_an_or_with_a_process_only_branch_has_no_prefilter():
    assert _prefilter("fd.name = /etc/shadow or proc.name = bash") is None
    assert _prefilter("proc.name = bash") is None


def test_a_not_over_process_state_is_left_out_whole():
    assert _prefilter("evt.type = open and not (fd.name = /a and proc.name = b)") == "(\"evt.type\" = 'open')"


def test_regular_expressions_stay_out_of_the_prefilter():
    """DuckDB keeps a filter holding a regex above the joins it should skip."""
    assert _prefilter("evt.type = open and fd.name regex '/a.*' and fd.name glob '/[ab]*'") == "(\"evt.type\" = 'open')"
    assert "LIKE '/etc/%'" in _prefilter("evt.type = open and fd.name glob '/etc/*'")


def test_falco_rules_prefilters_read_event_fields_only():
    for name in ("falco_rules.yaml", "falco-sandbox_rules.yaml", "falco-incubating_rules.yaml"):
        plan = plan_hunt([FALCO_RULES / name])
        with_prefilter = [rule for rule in plan.runnable if rule.prefilter_sql]
        assert len(with_prefilter) > len(plan.runnable) // 2, name
        for rule in with_prefilter:
            assert not _PROCESS_COLUMN.search(rule.prefilter_sql), (rule.name, rule.prefilter_sql)
