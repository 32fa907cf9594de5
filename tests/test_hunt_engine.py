"""The single-scan engine over a real DuckDB table shaped like the events view.

The rules here are hand-written SQL predicates, so the engine is tested
apart from the compiler: first/all matching, the evt.type prefilter, missing
values, time bounds, ordering and hit counts, plus a differential property
test against a naive per-rule evaluation in Python.
"""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.errors import TraceError
from analyzer.fields.spec import FieldSpec, FieldType
from analyzer.hunt.engine import MATCH_ALL, MATCH_FIRST, HuntRule, build_scan, bind_check, run_hunt
from analyzer.output import parse_output

CATALOG = {
    "proc.name": FieldSpec("proc.name", FieldType.STRING, '"proc.name"'),
    "fd.name": FieldSpec("fd.name", FieldType.STRING, '"fd.name"'),
    "evt.type": FieldSpec("evt.type", FieldType.STRING, '"evt.type"'),
    "user.uid": FieldSpec("user.uid", FieldType.INT, '"user.uid"'),
    "k8s.pod.name": FieldSpec("k8s.pod.name", FieldType.STRING, None, unsupported="no Kubernetes API"),
}
BASE_TS = 1_700_000_000_000_000_000


def field_sql(out_field):
    return out_field.spec.sql


def make_events(rows: list[tuple[str, str | None, str | None, int | None]]) -> duckdb.DuckDBPyConnection:
    """rows: (evt.type, proc.name, fd.name, user.uid); evt_num and ts follow the row order."""
    con = duckdb.connect()
    con.execute(
        'CREATE TABLE events (evt_num BIGINT, ts BIGINT, "evt.type" VARCHAR, "proc.name" VARCHAR, '
        '"fd.name" VARCHAR, "user.uid" BIGINT, _host VARCHAR, _proc_key BIGINT, pid INTEGER, '
        "container_id VARCHAR, _segment VARCHAR)"
    )
    if not rows:
        return con
    con.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, 'host-a', ?, ?, 'host', 'seg-1.parquet')",
        [(i, BASE_TS + i, t, p, f, u, 100 + i, 1000 + i) for i, (t, p, f, u) in enumerate(rows)],
    )
    return con


def rule(name, condition_sql, evttypes=None, output="%proc.name %fd.name", priority="Warning", tags=()):
    return HuntRule(
        name=name,
        condition_sql=condition_sql,
        evttypes=frozenset(evttypes) if evttypes else None,
        priority=priority,
        output=parse_output(output, CATALOG),
        tags=tuple(tags),
    )


RULES = [
    rule("Read etc", "\"fd.name\" LIKE '/etc/%'", {"open", "openat"}),
    rule("Cat anything", "\"proc.name\" = 'cat'", {"open", "openat", "execve"}),
    rule("Root anything", '"user.uid" = 0'),
]
EVENTS = [
    ("openat", "cat", "/etc/shadow", 0),  # all three; first: Read etc
    ("execve", "cat", None, 1000),  # Cat anything
    ("read", "cat", "/etc/passwd", 1000),  # none: read is outside both type sets
    ("openat", "vim", "/home/x", 0),  # Root anything
    ("openat", None, None, None),  # none: missing values never match
]


def hunt(con, rules, **kwargs):
    run = run_hunt(con, build_scan(rules, field_sql=field_sql, **kwargs), utc_offset=0)
    return [(a.rule, a.evt_num) for a in run.alerts()], dict(run.hits)


def test_first_match_fires_only_the_first_rule_in_definition_order():
    alerts, hits = hunt(make_events(EVENTS), RULES, match=MATCH_FIRST)
    assert alerts == [("Read etc", 0), ("Cat anything", 1), ("Root anything", 3)]
    assert hits == {"Read etc": 1, "Cat anything": 1, "Root anything": 1}


def test_all_match_fires_every_matching_rule():
    alerts, hits = hunt(make_events(EVENTS), RULES, match=MATCH_ALL)
    assert alerts == [("Read etc", 0), ("Cat anything", 0), ("Root anything", 0), ("Cat anything", 1),
                      ("Root anything", 3)]
    assert hits == {"Read etc": 1, "Cat anything": 2, "Root anything": 2}


def test_definition_order_decides_first_match():
    alerts, _ = hunt(make_events(EVENTS[:1]), list(reversed(RULES)))
    assert alerts == [("Root anything", 0)]


def test_alerts_carry_ids_and_falco_output():
    run = run_hunt(make_events(EVENTS), build_scan(RULES, field_sql=field_sql), utc_offset=0)
    first = next(iter(run.alerts()))
    assert first.output == "22:13:20.000000000: Warning cat /etc/shadow"
    assert (first.hostname, first.pid, first.proc_key, first.container_id, first.segment) == (
        "host-a", 1000, "100", "host", "seg-1.parquet")


def test_unsupported_output_fields_render_not_available():
    rules = [rule("Pod", "true", output="pod=%k8s.pod.name uid=%user.uid")]
    run = run_hunt(make_events(EVENTS[:1]), build_scan(rules, field_sql=field_sql), utc_offset=0)
    (alert,) = list(run.alerts())
    assert alert.output.endswith("Warning pod=<NA> uid=0")
    assert alert.output_fields["k8s.pod.name"] is None


def test_hostile_evttypes_are_quoted_not_pasted():
    rules = [rule("Evil", "true", {"openat') OR (1=1"})]
    alerts, _ = hunt(make_events(EVENTS), rules)
    assert alerts == []


def test_bad_match_mode_and_empty_ruleset_are_errors():
    with pytest.raises(TraceError):
        build_scan(RULES, field_sql=field_sql, match="some")
    with pytest.raises(TraceError):
        build_scan([], field_sql=field_sql)


def test_rules_duckdb_cannot_bind_are_set_aside_and_the_rest_run():
    bad = rule("Type clash", "contains(\"user.uid\", 'x')", {"openat"})
    con = make_events(EVENTS)
    odd_field = rule("Odd output", '"user.uid" = 0', output="%proc.name %fd.name %user.uid")
    sqls = {"proc.name": '"proc.name"', "fd.name": "no_such_function(\"fd.name\")", "user.uid": '"user.uid"'}
    checked = bind_check(con, [RULES[0], bad, odd_field], lambda f: sqls[f.key])
    assert [r.name for r in checked.rules] == ["Read etc", "Odd output"]
    assert [(r.rule, r.field) for r in checked.rejected] == [("Type clash", None)]
    assert "DuckDB rejected the compiled SQL" in checked.rejected[0].reason and "\n" not in checked.rejected[0].reason
    assert [(g.rule, g.field) for g in checked.field_gaps] == [("Read etc", "fd.name")]
    assert checked.field_sql == {"proc.name": '"proc.name"', "fd.name": None, "user.uid": '"user.uid"'}
    run = run_hunt(con, build_scan(checked.rules, field_sql=checked.sql_for), utc_offset=0)
    outputs = [(a.rule, a.evt_num, a.output.split(": Warning ")[1]) for a in run.alerts()]
    assert outputs == [("Read etc", 0, "cat <NA>"), ("Odd output", 3, "vim <NA> 0")]
    assert "_hunt_bind_probe" not in {row[0] for row in con.execute("SHOW TABLES").fetchall()}


# --- differential property test: one scan == each rule evaluated on its own ---

_TYPES = ["openat", "execve", "connect", "read"]
_NAMES = [None, "cat", "sh", "nc"]
_PATHS = [None, "/etc/shadow", "/tmp/x", "it's"]
# (sql, python predicate over (type, name, path, uid)); None-safe like Falco's missing values.
_PREDICATES = [
    ("\"proc.name\" = 'cat'", lambda e: e[1] == "cat"),
    ("\"proc.name\" IN ('sh', 'nc')", lambda e: e[1] in ("sh", "nc")),
    ("\"fd.name\" LIKE '/etc/%'", lambda e: e[2] is not None and e[2].startswith("/etc/")),
    ("\"fd.name\" = 'it''s'", lambda e: e[2] == "it's"),
    ('"user.uid" = 0', lambda e: e[3] == 0),
    ('coalesce("user.uid" <> 0, false)', lambda e: e[3] is not None and e[3] != 0),
    ("true", lambda e: True),
]

_event = st.tuples(st.sampled_from(_TYPES), st.sampled_from(_NAMES), st.sampled_from(_PATHS),
                   st.sampled_from([None, 0, 1000]))
_rule = st.tuples(st.integers(0, len(_PREDICATES) - 1), st.one_of(st.none(), st.sets(st.sampled_from(_TYPES),
                                                                                      min_size=1)))


@settings(max_examples=80)  # each example builds a DuckDB database
@given(st.lists(_event, max_size=25), st.lists(_rule, min_size=1, max_size=6), st.sampled_from([MATCH_FIRST, MATCH_ALL]))
def test_single_scan_equals_naive_per_rule_evaluation(events, rule_specs, match):
    rules = [rule(f"r{i}", _PREDICATES[p][0], types) for i, (p, types) in enumerate(rule_specs)]
    expected = []
    for num, event in enumerate(events):
        for i, (p, types) in enumerate(rule_specs):
            if (types is None or event[0] in types) and _PREDICATES[p][1](event):
                expected.append((f"r{i}", num))
                if match == MATCH_FIRST:
                    break
    alerts, hits = hunt(make_events(events), rules, match=match)
    assert alerts == expected
    assert sum(hits.values()) == len(expected)


def test_progress_bar_draws_on_its_stream_and_clears_the_line():
    import io

    from analyzer.hunt.progress import QueryProgress, quiet_duckdb

    con = make_events(EVENTS)
    quiet_duckdb(con, track=True)
    stream = io.StringIO()
    bar = QueryProgress(con, stream, "hunting", interval=0.01)
    bar._draw(42.0)
    assert stream.getvalue() == "\rhunting [############------------------]  42.0%"
    with bar:
        hunt(con, RULES)
    assert stream.getvalue().endswith("\r")  # the bar is wiped before alerts print
    assert not bar._thread.is_alive()
    assert con.execute("SELECT current_setting('enable_progress_bar_print')").fetchall() == [(False,)]
