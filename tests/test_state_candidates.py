"""The hunt's candidate path resolves exactly what the `events` view does.

`CaptureSet.fill_candidates` keys only the events a hunt picks (joins driven
by the candidates against the cached `timeline` and `fd_state`): every
column of every picked event must equal what one build of the whole capture
gives, keying every row itself (the builder's key pass), whatever subset is
picked and however the cache was built (one range, or one range per
segment), as the full `events` view's must. And a hunt with
Falco's stable rules through the candidate path fires the same alerts, with
the same output lines, as the same scan over the whole `events` view
(and so do trace's default rules).
"""

from __future__ import annotations

import importlib.machinery
import shutil
import types
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings

from analyzer.hunt.candidates import candidate_select, hunt_source, scan_reads
from analyzer.hunt.engine import MATCH_ALL, MATCH_FIRST, bind_check, build_scan, run_hunt
from analyzer.hunt.plan import default_rules_files, field_sql, plan_hunt
from analyzer.sql.compiler import install_runtime
from analyzer.state import open_captures
from analyzer.state.build import materialize
from analyzer.state.cache import CACHE_DIR_NAME, configure, ensure_state
from analyzer.state.candidates import CandidateSelect
from analyzer.state.inputs import resolve_captures
from analyzer.state.views import CaptureSource, events_sql
from tests.test_state_ranges import _Workload, workload_capture, workloads
from tests.test_state_resolution import World

REPO = Path(__file__).resolve().parents[1]
FALCO_RULES = REPO.parent / "shared" / "falco" / "rules" / "falco_rules.yaml"
# every event, and two sparse subsets (the joins then see only some pids and fds)
PICKS = {
    "all": None,
    "every third": lambda raw: f"SELECT * FROM ({raw}) WHERE evt_num % 3 = 0",
    "fd calls": lambda raw: f"SELECT * FROM ({raw}) WHERE fd IS NOT NULL OR syscall IN ('openat', 'dup2', 'connect')",
}


def _build(directory: Path, range_events: int) -> None:
    shutil.rmtree(directory / CACHE_DIR_NAME, ignore_errors=True)
    ensure_state(resolve_captures([str(directory)], [])[0], range_events=range_events)


def _reference(directory: Path, tmp: Path, pick: CandidateSelect | None) -> tuple[list[str], list[tuple]]:
    """The picked events of one build of the whole capture that keys every row itself (the
    builder's own key pass, as the follower builds its batches), through the `events` query."""
    capture = resolve_captures([str(directory)], [])[0]
    con = duckdb.connect()
    try:
        configure(con, tmp)
        good = set(materialize(con, capture, []))
        segments = [s for s in capture.segments if s.name in good]
        src = CaptureSource("main", tuple(s.path for s in segments), tuple(s.host for s in segments),
                            capture.id_prefix)
        events = events_sql(src, None, None)
        cursor = con.execute(f"SELECT * FROM ({events if pick is None else pick(events)}) ORDER BY evt_num")
        return [d[0] for d in cursor.description], cursor.fetchall()
    finally:
        con.close()


def _assert_candidates_resolve_like_events(directory: Path) -> None:
    tmp = directory.parent / "spill"
    tmp.mkdir(exist_ok=True)
    references = {name: _reference(directory, tmp, pick) for name, pick in PICKS.items()}
    for range_events in (10**9, 1):
        _build(directory, range_events)
        for pick_name, pick in PICKS.items():
            with open_captures([str(directory)]) as cs:
                view = cs.candidate_view("hunt_events")
                picked = cs.fill_candidates(pick)
                cursor = cs.con.execute(f"SELECT * FROM {view} ORDER BY evt_num")
                names = [d[0] for d in cursor.description]
                got = cursor.fetchall()
            want_names, want = references[pick_name]
            assert names == want_names
            assert picked == len(got) == len(want), (range_events, pick_name)
            # a range build numbers process incarnations its own way (tests/test_state_ranges.py)
            compared = [n for n in names if range_events == 10**9 or n != "_proc_key"]
            for row, expected in zip(got, want):
                diff = {n: (a, b) for n, a, b in zip(names, row, expected) if n in compared and a != b}
                if diff:
                    raise AssertionError(f"ranges of {range_events}, {pick_name}: event {row[names.index('evt_num')]}: "
                                         f"(candidates, one build) {diff}")
    # and the full `events` view of the range build
    with open_captures([str(directory)]) as cs:
        names, want = references["all"]
        cursor = cs.con.execute("SELECT * FROM events ORDER BY evt_num")
        assert [d[0] for d in cursor.description] == names
        got = cursor.fetchall()
    assert len(got) == len(want)
    for row, expected in zip(got, want):
        diff = {n: (a, b) for n, a, b in zip(names, row, expected) if n != "_proc_key" and a != b}
        assert not diff, f"events view, event {row[names.index('evt_num')]}: (view, one build) {diff}"


def _alerts(directory: Path, rules: list[str], source: str, match: str) -> list[tuple[str, int, str]]:
    """The alerts of a scan of `source`, in the order the hunt gives them: the whole `events`
    view, or as `trace hunt` reads it, narrowed to the columns and `_evt_args` keys the scan
    reads, over every event in one range ("narrowed") or a segment at a time ("ranges"), or
    over the candidates resolved alone ("candidates")."""
    plan = plan_hunt(rules)
    with open_captures([str(directory)]) as cs:
        con = cs.con
        install_runtime(con)
        checked = bind_check(con, plan.runnable, field_sql)
        relation, parts = "events", []
        if source != "events":
            columns, keys = scan_reads(cs, checked.rules, checked.sql_for)
            relation = "hunt_events"
            if source == "candidates":
                cs.candidate_view(relation, columns, keys)
            else:
                parts = cs.event_ranges(columns, keys, range_events=1 if source == "ranges" else 10**9)
                assert len(parts) == (len(cs.sources[0].paths) if source == "ranges" else 1)
        scan = build_scan(checked.rules, match=match, field_sql=checked.sql_for, relation=relation)
        if source == "candidates":
            cs.fill_candidates(candidate_select(checked.rules))
        return [(a.rule, a.evt_num, a.output) for a in run_hunt(con, scan, utc_offset=0, parts=parts).alerts()]


def _assert_same_alerts(directory: Path) -> int:
    _build(directory, 10**9)
    total = 0
    for rules in ([str(FALCO_RULES)], [str(p) for p in default_rules_files()]):
        for match in (MATCH_FIRST, MATCH_ALL):
            whole = _alerts(directory, rules, "events", match)
            assert _alerts(directory, rules, "narrowed", match) == whole
            assert _alerts(directory, rules, "candidates", match) == whole
            total += len(whole)
    return total


def test_a_hunt_a_segment_range_at_a_time_fires_as_one_scan_of_one_build(tmp_path):
    # the incident capture built and scanned one segment per range (every boundary a carry),
    # each range joined to the state rows its events reach, against one build scanned whole:
    # the same alerts in the same order, and every column of every event the same
    # (--match first picks a rule per event, as --match all does: ranges of events change neither)
    directory = World(tmp_path / "cap").b.directory
    rules = [str(p) for p in default_rules_files()]  # Falco's stable rules do not fire on it
    _build(directory, 10**9)
    whole = _alerts(directory, rules, "events", MATCH_FIRST)
    assert len(whole) > 1
    _build(directory, 1)
    assert _alerts(directory, rules, "ranges", MATCH_FIRST) == whole
    with open_captures([str(directory)]) as cs:
        want = cs.con.execute("SELECT * FROM events ORDER BY evt_num").fetchall()
        parts = " UNION ALL ".join(f"({part})" for part in cs.event_ranges(None, None, range_events=1))
        assert cs.con.execute(f"SELECT * FROM ({parts}) ORDER BY evt_num").fetchall() == want


def _bench_capture(directory: Path, monkeypatch) -> Path:
    # bench/state_bench's busy host: processes in trees, forks that exit,
    # execs, fd-heavy calls, rotated segments with their snapshots
    loader = importlib.machinery.SourceFileLoader("state_bench", str(REPO / "bench" / "state_bench"))
    bench = types.ModuleType(loader.name)
    bench.__file__ = loader.path
    loader.exec_module(bench)
    monkeypatch.setattr(bench, "SEGMENT_EVENTS", 1500)
    bench.generate(directory, 7500)
    return directory


def test_the_incident_capture_resolves_the_same_through_candidates(tmp_path):
    world = World(tmp_path / "cap")
    _assert_candidates_resolve_like_events(world.b.directory)


def test_falco_rules_fire_the_same_through_candidates_on_the_incident_capture(tmp_path):
    world = World(tmp_path / "cap")
    assert _assert_same_alerts(world.b.directory) > 0


@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(workloads)
def test_property_any_workload_resolves_the_same_through_candidates(tmp_path_factory, actions):
    with workload_capture(tmp_path_factory, actions) as directory:
        _assert_candidates_resolve_like_events(directory)


@pytest.mark.slow
def test_the_benchmark_capture_resolves_and_fires_the_same_through_candidates(tmp_path, monkeypatch):
    directory = _bench_capture(tmp_path / "cap", monkeypatch)
    _assert_candidates_resolve_like_events(directory)
    assert _assert_same_alerts(directory) > 0


def test_the_hunt_resolves_candidates_alone_only_when_the_raw_rows_rule_out_most(tmp_path, monkeypatch):
    rule = [r for r in plan_hunt([str(FALCO_RULES)]).runnable if r.name == "Read sensitive file untrusted"]
    relative = _bench_capture(tmp_path / "bench", monkeypatch)  # its opens are relative: they need the cwd
    work = _Workload(tmp_path / "absolute")
    for n in range(1, 160, 4):  # opens of /etc/passwd (read only, n % 5 != 0 aside): no rule wants them
        work.act("open", n)
        work.act("close", n)
    work.b.finish_segment()
    absolute = work.b.directory
    for directory, resolved_alone in ((relative, False), (absolute, True)):
        _build(directory, 10**9)
        with open_captures([str(directory)]) as cs:
            install_runtime(cs.con)
            source = hunt_source(cs, rule, field_sql)
            assert source.typed > 0
            assert source.alone == resolved_alone, (directory, source)
            if resolved_alone:
                assert source.candidates <= source.typed / 3
                assert cs.con.execute("SELECT count(*) FROM hunt_events").fetchall()[0][0] == source.candidates
