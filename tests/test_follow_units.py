"""The follower without a live probe: real recorded captures, the real store, real HTTP.

* following a capture in chunks of any size gives exactly the offline hunt's alerts;
* a follower that died after writing alerts but before its checkpoint resumes
  without writing any alert twice (and cuts a torn last line);
* switching from the tail to the segment recovered after a recorder crash
  hands on every row once; retention under the follower warns and goes on;
* the webhook retries, gives up on refusals, and counts what its bounded queue drops.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.follow.candidates import EXACT_FIELDS, CandidateTest, exact_fields_sql, open_arg_names
from analyzer.follow.checkpoint import Checkpoint
from analyzer.follow.compact import droppable_pairs
from analyzer.follow.scan import BatchScan, candidate_types, literal_arg_keys
from analyzer.follow.follower import Follower
from analyzer.follow.sinks import JsonlSink, StdoutSink, WebhookSink
from analyzer.follow.state import BatchState, events_only, merge_carry, open_connection, split_carry, touched_pids
from analyzer.follow.source import CaptureSource
from analyzer.hunt.engine import MATCH_ALL, bind_check, build_scan, run_hunt
from analyzer.hunt.plan import field_sql, plan_hunt
from analyzer.fields.catalog import sql_string
from analyzer.output import Alert, utc_offset_now
from analyzer.render.params import PARAMS
from analyzer.sql.compiler import install_runtime
from analyzer.state import open_captures, views
from capture import schema
from capture.segments import CaptureIdentity, RetentionPolicy, RotationPolicy, SegmentWriter
from tests.synthetic import event_batch, proc_snapshot

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"  # a recorded attack: web server -> shell -> reverse shell, cron persistence
EVERY_EXEC_RULES = """
- rule: Follow Unit Every Open Or Exec
  desc: every successful open or exec, so chunks cut through many alerts
  condition: evt.type in (openat, execve) and evt.rawres >= 0
  output: >
    evt.num=%evt.num process=%proc.name parent=%proc.pname gparent=%proc.aname[2] fd=%fd.name
    cwd=%proc.cwd user=%user.name start=%proc.pid.ts
  priority: NOTICE
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> list[str]:
    extra = tmp_path_factory.mktemp("rules") / "every.yaml"
    extra.write_text(EVERY_EXEC_RULES)
    return [str(REPO / "rules" / "trace_rules.yaml"), str(extra)]


def hunt_offline(capture: Path, rules: list[str]) -> list[str]:
    plan = plan_hunt(rules)
    with open_captures([str(capture)]) as cs:
        install_runtime(cs.con)
        checked = bind_check(cs.con, plan.runnable, field_sql)
        scan = build_scan(checked.rules, match=MATCH_ALL, field_sql=checked.sql_for)
        return [a.to_json() for a in run_hunt(cs.con, scan, utc_offset=utc_offset_now()).alerts()]


@pytest.fixture(scope="module")
def offline(rules, tmp_path_factory) -> list[str]:
    capture = tmp_path_factory.mktemp("offline") / "demo"
    shutil.copytree(DEMO, capture)
    return hunt_offline(capture, rules)


def follow_once(capture: Path, rules: list[str], chunk_rows: int | None, jsonl: JsonlSink | None = None,
                checkpoint: Checkpoint | None = None) -> tuple[list[str], Follower]:
    stdout = io.StringIO()
    checkpoint = checkpoint or Checkpoint(capture / "ckpt.json", str(capture.resolve()))
    sinks = [StdoutSink("json", stdout)] + ([jsonl] if jsonl else [])
    warnings: list[str] = []
    follower = Follower(capture, plan_hunt(rules).runnable, match=MATCH_ALL, checkpoint=checkpoint, sinks=sinks,
                        jsonl=jsonl, warn=warnings.append)
    source = CaptureSource(capture, warnings.append, chunk_rows=chunk_rows)
    work = capture / "work"
    work.mkdir(exist_ok=True)
    while follower.step(source, work):
        pass
    assert warnings == []
    return stdout.getvalue().splitlines(), follower


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(chunk_rows=st.integers(min_value=150, max_value=1600))
def test_property_following_in_chunks_of_any_size_gives_the_offline_alerts(tmp_path_factory, rules, offline, chunk_rows):
    capture = tmp_path_factory.mktemp("follow") / "demo"
    shutil.copytree(DEMO, capture)
    followed, follower = follow_once(capture, rules, chunk_rows)
    assert follower.result.chunks >= 1 and len(offline) > 20
    assert Counter(followed) == Counter(offline)  # every alert, every field, once


def test_big_batches_copy_only_what_passes_the_prefilters_and_give_the_offline_alerts(tmp_path, rules, offline, monkeypatch):
    monkeypatch.setattr("analyzer.follow.scan.PREFILTER_MIN_ROWS", 0)  # every batch counts as big
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    followed, _ = follow_once(capture, rules, 400)
    assert Counter(followed) == Counter(offline)


@pytest.mark.parametrize("chunk_rows", [150, 700, None])
def test_neutral_open_close_pairs_left_out_of_builds_give_the_offline_alerts(tmp_path, chunk_rows):
    default_rules = [str(REPO / "rules" / "trace_rules.yaml")]  # opens of most files fire nothing: pairs drop
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    expected = hunt_offline(capture, default_rules)
    followed, follower = follow_once(capture, default_rules, chunk_rows)
    assert follower.result.dropped > 100 and len(expected) > 5
    assert Counter(followed) == Counter(expected)


def _built(con, work: Path, capture: Path, batch, first: int, carry):
    """The events (fields, without the build-local process key) and the next carry of one batch."""
    state = BatchState(con, work, capture, batch.segment, batch.rows, first, carry, [])
    try:
        events = con.execute(f"SELECT * EXCLUDE (_proc_key) FROM ({state.events_sql()}) ORDER BY evt_num").fetchall()
        return events, state.carry()
    finally:
        state.close()


def _batches(capture: Path, chunk_rows: int):
    """(chunk, its first evt_num) as the follower builds them: a snapshot with the events after it."""
    waiting = None
    for chunk in CaptureSource(capture, print, chunk_rows=chunk_rows).poll():
        if waiting is not None:
            chunk = type(chunk)(chunk.segment, pa.concat_tables([waiting.rows, chunk.rows]))
            waiting = None
        if not len(chunk.event_nums):
            waiting = chunk
            continue
        yield chunk, pc.min(chunk.event_nums).as_py()


def _carried(carry) -> tuple[list, list, list]:
    """A carry's rows in a fixed order; fds and lineage without the build-local ids and keys."""
    snapshot = carry.snapshot.to_pylist()
    return (sorted(snapshot, key=lambda row: tuple(str(row[c]) for c in ("kind", "pid", "uid", "gid", "container_id"))),
            carry.fds.drop_columns(["fd_id"]).sort_by([("pid", "ascending"), ("fd", "ascending")]).to_pylist(),
            carry.lineage.drop_columns(["carry_key", "carry_life"]).sort_by("pid").to_pylist())


@pytest.mark.parametrize("chunk_rows", [150, 250])
def test_batches_built_with_only_the_processes_they_touch_resolve_and_carry_as_with_every_process(
        tmp_path, chunk_rows, monkeypatch):
    """The follower builds a batch of events with only the carried processes it touches, the idle ones
    passing through (analyzer.follow.state.split_carry), and a small batch with DuckDB's optimizer off:
    every event's fields and the next carry must be those of an optimized build with every carried process."""
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    work = tmp_path / "work"
    work.mkdir()
    con = open_connection(work)
    carry, split = None, 0
    for chunk, first in _batches(capture, chunk_rows):
        monkeypatch.setattr("analyzer.follow.state.UNOPTIMIZED_MAX_ROWS", 0)
        events, full = _built(con, work, capture, chunk, first, carry)
        monkeypatch.setattr("analyzer.follow.state.UNOPTIMIZED_MAX_ROWS", 10**9)
        if carry is not None and events_only(chunk.rows):
            touched, idle = split_carry(carry, touched_pids(chunk.rows))
            split_events, built = _built(con, work, capture, chunk, first, touched)
            assert split_events == events
            assert _carried(merge_carry(built, idle)) == _carried(full)
            split += idle.lineage.num_rows > 0
        carry = full
    con.close()
    assert split >= 3  # batches that left processes out


def test_fields_of_exact_raw_rows_equal_the_events_view(tmp_path):
    """The candidate test reads event fields off raw opens of absolute paths (successful or failed): they
    must be exactly what the state-resolved events view says."""
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    segment = next(capture.glob("seg-*.parquet"))
    with open_captures([str(capture)]) as cs:
        install_runtime(cs.con)
        raw = f"(SELECT * FROM read_parquet('{segment}'))"
        keys = open_arg_names()
        differ = " OR ".join(
            [f'r."{name}" IS DISTINCT FROM e."{name}"' for name in sorted(EXACT_FIELDS - {"_evt_args"})]
            + [f"""r."_evt_args"['{key}'] IS DISTINCT FROM e."_evt_args"['{key}']""" for key in keys]
        )
        exact, failed, wrong = cs.con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE r.res < 0), count(*) FILTER (WHERE {differ}) "
            f"FROM ({exact_fields_sql(raw, keys)}) r "
            "JOIN events e USING (evt_num) WHERE r._exact"
        ).fetchall()[0]
        total_opens = cs.con.execute(
            "SELECT count(*) FROM events WHERE \"evt.type\" IN ('open', 'openat', 'openat2', 'creat') AND res >= 0"
        ).fetchall()[0][0]
    assert exact > 100 and exact >= total_opens // 2 and failed > 5
    assert wrong == 0


@pytest.fixture(scope="module")
def demo_events(tmp_path_factory):
    """The demo capture opened offline, its full `events` query materialized (keyed by segment and evt.num)."""
    capture = tmp_path_factory.mktemp("narrow") / "demo"
    shutil.copytree(DEMO, capture)
    with open_captures([str(capture)]) as cs:
        install_runtime(cs.con)
        (only,) = cs.captures
        source = views.CaptureSource("cap0", tuple(s.path for s in only.segments), tuple(s.host for s in only.segments),
                                     only.id_prefix)
        full = views.events_sql(source, None, None)
        cs.con.execute(f"CREATE TEMP TABLE full_events AS {full}")
        columns = [row[0] for row in cs.con.execute("DESCRIBE full_events").fetchall()]
        yield cs.con, source, columns


def _differences(con, narrow: str, differ: list[str], full: str = "full_events") -> int:
    """Rows where `narrow` (an events query) disagrees with `full` (full_events' rows) by any of `differ`
    (or lacks a row)."""
    return con.execute(
        f"SELECT count(*) FROM {full} f FULL JOIN ({narrow}) n USING (_segment, evt_num) "
        "WHERE " + " OR ".join(["f.ts IS NULL", "n._segment IS NULL", *differ])
    ).fetchall()[0][0]


def narrowed_differences(con, source, columns) -> int:
    """Rows where the query narrowed to `columns` disagrees with the full one on any of them (or lacks a row)."""
    keys = {"_segment", "evt_num"}
    selected = sorted(set(columns) | keys)
    return _differences(con, views.events_sql(source, None, None, selected),
                        [f'f."{c}" IS DISTINCT FROM n."{c}"' for c in selected if c not in keys])


def test_events_query_narrowed_to_the_followers_columns_gives_the_full_querys_values(demo_events, rules):
    con, source, columns = demo_events
    full = views.events_sql(source, None, None)
    assert views.events_sql(source, None, None, columns) == full  # every column asked for: the offline query
    scan = BatchScan(con, plan_hunt(rules).runnable, match=MATCH_ALL, events_sql=full)
    narrow = views.events_sql(source, None, None, scan.columns)
    assert 20 < len(scan.columns) < len(columns) // 2 and len(narrow) < len(full)
    assert con.execute("SELECT count(*) FROM full_events").fetchall()[0][0] > 500
    assert narrowed_differences(con, source, scan.columns) == 0
    # what nothing asks for is not joined
    assert "ancestry" not in views.events_sql(source, None, None, ["proc.name", "fd.name"])
    with pytest.raises(ValueError, match="proc.nope"):
        views.events_sql(source, None, None, ["proc.nope"])


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_property_events_query_narrowed_to_any_columns_gives_the_full_querys_values(demo_events, data):
    con, source, columns = demo_events
    chosen = data.draw(st.sets(st.sampled_from(columns), min_size=1, max_size=10))
    assert narrowed_differences(con, source, chosen) == 0


def narrowed_arg_differences(con, source, keys, syscalls=None) -> int:
    """Rows where `_evt_args` narrowed to `keys` (of `syscalls`: on their rows) disagrees with the full map
    on a lookup of any of them, or `evt.args` beside it (rendered apart, in full) with the full query's."""
    narrow = views.events_sql(source, None, None, ["_segment", "evt_num", "evt.type", "_evt_args", "evt.args"],
                              arg_keys=keys, arg_syscalls=syscalls)
    full = "full_events"
    if syscalls is not None:
        kept = ' WHERE "evt.type" IN (' + ", ".join(sql_string(t) for t in sorted(syscalls)) + ")"
        narrow, full = f"SELECT * FROM ({narrow}){kept}", f"(SELECT * FROM full_events{kept})"
    return _differences(con, narrow,
                        ['f."evt.args" IS DISTINCT FROM n."evt.args"']
                        + [f"f._evt_args[{sql_string(k)}] IS DISTINCT FROM n._evt_args[{sql_string(k)}]" for k in keys],
                        full)


def test_evt_args_narrowed_to_the_keys_the_rules_read_gives_the_full_maps_values(demo_events, rules):
    con, source, _ = demo_events
    scan = BatchScan(con, plan_hunt(rules).runnable, match=MATCH_ALL, events_sql=views.events_sql(source, None, None))
    assert scan.arg_keys is not None and {"name", "flags"} <= scan.arg_keys
    assert narrowed_arg_differences(con, source, scan.arg_keys) == 0
    # and to the syscalls of the rules' types, on the rows the copy keeps
    syscalls = candidate_types(scan.checked.rules)
    assert syscalls is not None and "openat" in syscalls
    assert narrowed_arg_differences(con, source, scan.arg_keys, syscalls) == 0
    # the map read otherwise than by a literal key: the whole map
    assert literal_arg_keys('"_evt_args"[\'name\'] = \'x\' AND "_evt_args"[\'fd\'] IS NULL') == {"name", "fd"}
    assert literal_arg_keys('map_values("_evt_args")[2] = \'x\' OR "_evt_args"[\'name\'] = \'y\'') is None


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_property_evt_args_narrowed_to_any_keys_gives_the_full_maps_values(demo_events, data):
    con, source, _ = demo_events
    names = sorted({name for params in PARAMS.values() for name, _ in params})
    keys = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=6))
    present = sorted(row[0] for row in con.execute('SELECT DISTINCT "evt.type" FROM full_events').fetchall())
    syscalls = data.draw(st.none() | st.sets(st.sampled_from(present), min_size=1, max_size=4))
    assert narrowed_arg_differences(con, source, keys, syscalls) == 0


def test_rules_a_chunk_may_fire_hold_every_rule_it_fires_offline_and_no_more_than_its_types_allow(tmp_path, rules):
    """The follower scans a batch with only the rules its candidates may fire: every alert of an offline
    hunt must come from one of them; exact opens leave out the rules whose prefilter they fail."""
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    runnable = plan_hunt(rules).runnable
    position = {rule.name: index for index, rule in enumerate(runnable)}
    with open_captures([str(capture)]) as cs:
        install_runtime(cs.con)
        checked = bind_check(cs.con, runnable, field_sql)
        scan = build_scan(checked.rules, match=MATCH_ALL, field_sql=checked.sql_for)
        fired_offline = [(a.evt_num, a.rule) for a in run_hunt(cs.con, scan, utc_offset=utc_offset_now()).alerts()]
    test = CandidateTest(runnable)
    table = pq.read_table(next(capture.glob("seg-*.parquet")))
    con = open_connection(tmp_path)
    narrower = 0
    for start in range(0, table.num_rows, 150):
        chunk = table.slice(start, 150)
        found = test.test(con, chunk)
        nums = set(pc.filter(chunk["evt_num"], pc.equal(chunk["kind"].cast(pa.string()), "evt")).to_pylist())
        for evt_num, rule in fired_offline:
            if evt_num in nums:
                assert position[rule] in found.rules, (evt_num, rule)
        events = pc.equal(chunk["kind"].cast(pa.string()), "evt")
        types = set(pc.unique(pc.filter(chunk["syscall"].cast(pa.string()), events)).to_pylist())
        by_type = {i for i, rule in enumerate(runnable) if not rule.evttypes or rule.evttypes & types}
        assert found.rules <= by_type
        narrower += found.rules < by_type
    con.close()
    assert fired_offline and narrower > 0


def test_only_neutral_open_close_pairs_are_droppable():
    spec = [  # (pid, tid, syscall, res, fd, candidate)
        (10, 10, "openat", 3, None, False),  # the process's first event: it starts the process
        (10, 10, "close", 0, 3, False),
        (10, 10, "openat", 3, None, False),  # a neutral pair
        (10, 10, "close", 0, 3, False),
        (11, 11, "getpid", 0, None, False),
        (11, 11, "openat", 4, None, False),
        (99, 99, "execve", 0, None, False),  # an exec in between: a fork could have copied fd 4
        (11, 11, "close", 0, 4, False),
        (12, 12, "getpid", 0, None, False),
        (12, 12, "openat", 5, None, False),
        (12, 12, "close", 0, 5, False),
        (12, 12, "clone", 77, None, False),  # the fork is ordered after its thread's previous event
        (13, 13, "getpid", 0, None, False),
        (13, 13, "openat", 6, None, False),
        (13, 14, "close", 0, 6, False),  # another thread
        (14, 14, "getpid", 0, None, False),
        (14, 14, "openat", 7, None, False),
        (14, 14, "close", 0, 8, False),  # another fd
        (15, 15, "getpid", 0, None, False),
        (15, 15, "openat", 9, None, True),  # a rule may fire on it
        (15, 15, "close", 0, 9, False),
        (16, 16, "getpid", 0, None, False),
        (16, 16, "openat", 3, None, False),
        (16, 16, "close", -9, 3, False),  # failed close
        (17, 17, "getpid", 0, None, False),
        (17, 17, "openat", 3, None, False),  # the thread's last events: a fork may come next
        (17, 17, "close", 0, 3, False),
        (10, 10, "getpid", 0, None, False),  # pid 10's pair is not its thread's last events
    ]
    rows = pa.Table.from_pylist(
        [{"kind": schema.KIND_EVENT, "evt_num": n + 1, "ts": n, "pid": pid, "tid": tid, "syscall": syscall,
          "res": res, "fd": fd, "path": "/etc/hostname"} for n, (pid, tid, syscall, res, fd, _) in enumerate(spec)],
        schema=schema.SCHEMA,
    )
    candidate = pa.array([c for *_, c in spec])
    final = droppable_pairs(rows, candidate, more_may_follow=False)
    assert list(np.flatnonzero(final)) == [2, 3, 25, 26]
    assert list(np.flatnonzero(droppable_pairs(rows, candidate, more_may_follow=True))) == [2, 3]


RARE_SYSCALL_RULES = """
- rule: Follow Unit File Moved Or Removed
  desc: rare syscalls, so most chunks hold no event a rule can fire on
  condition: evt.type in (fchmodat, unlink, rename, renameat2)
  output: >
    evt.num=%evt.num process=%proc.name parent=%proc.pname cwd=%proc.cwd start=%proc.pid.ts
    user=%user.name args=%evt.args
  priority: NOTICE
"""


def test_chunks_no_rule_can_fire_on_wait_for_the_next_scan_and_give_the_offline_alerts(tmp_path):
    rules_file = tmp_path / "rare.yaml"
    rules_file.write_text(RARE_SYSCALL_RULES)
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    expected = hunt_offline(capture, [str(rules_file)])
    with_events = [c for c in CaptureSource(capture, print, chunk_rows=150).poll() if len(c.event_nums)]
    followed, follower = follow_once(capture, [str(rules_file)], 150)
    assert len(expected) > 5 and Counter(followed) == Counter(expected)
    assert follower.result.chunks < len(with_events)  # deferred chunks were resolved together


def test_restart_after_dying_between_alerts_and_checkpoint_writes_nothing_twice(tmp_path, rules, offline):
    capture = tmp_path / "demo"
    shutil.copytree(DEMO, capture)
    evt_of = [json.loads(line)["output_fields"].get("evt.num") for line in offline]
    numbered = [i for i, n in enumerate(evt_of) if n is not None]
    cut = numbered[len(numbered) // 3]
    # What a follower killed mid-stream leaves: a checkpoint at some event,
    # then lines it wrote after it, the last one torn.
    out = tmp_path / "alerts.jsonl"
    before = "".join(line + "\n" for line in offline[:cut])
    after = "".join(line + "\n" for line in offline[cut : cut + 5])
    out.write_text(before + after + offline[cut + 5][:17])
    checkpoint = Checkpoint(tmp_path / "ckpt.json", str(capture.resolve()), evt_of[cut] - 1, {str(out.resolve()): len(before.encode())})
    checkpoint.save()
    jsonl = JsonlSink(out)
    followed, _ = follow_once(capture, rules, 400, jsonl=jsonl, checkpoint=Checkpoint.load(checkpoint.path, capture))
    jsonl.close()
    assert out.read_text().splitlines() == offline
    assert followed == offline[cut + 5 :]  # what was written before the crash is not sent again
    assert Checkpoint.load(checkpoint.path, capture).outputs[str(out.resolve())] == out.stat().st_size


IDENTITY = CaptureIdentity("testhost", "6.18-test", 0)


def _handed_on(chunks) -> tuple[list[int], int]:
    nums, snapshot_rows = [], 0
    for chunk in chunks:
        is_event = pc.equal(chunk.rows["kind"].cast(pa.string()), schema.KIND_EVENT)
        nums += chunk.rows.filter(is_event)["evt_num"].to_pylist()
        snapshot_rows += chunk.rows.num_rows - (pc.sum(is_event).as_py() or 0)
    return nums, snapshot_rows


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from capture.segments import CaptureIdentity, SegmentWriter
from tests.synthetic import event_batch, proc_snapshot
writer = SegmentWriter(Path(sys.argv[1]), CaptureIdentity("testhost", "6.18-test", 0), snapshot=proc_snapshot)
writer.write(event_batch(1, 5))
print("written", flush=True)
sys.stdin.readline()
writer.write(event_batch(6, 4))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_tail_then_the_segment_recovered_after_a_recorder_crash_hands_on_each_row_once(tmp_path):
    capture = tmp_path / "cap"
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(capture)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdout.readline() == "written\n"
    warnings: list[str] = []
    source = CaptureSource(capture, warnings.append)
    nums, snaps = _handed_on(source.poll())
    writer.communicate("go\n", timeout=60)  # writes events 6..9 to the tail, then is killed
    restarted = SegmentWriter(capture, IDENTITY, snapshot=proc_snapshot)  # recovers the tail into its segment
    restarted.write(event_batch(10, 3))
    more_nums, more_snaps = _handed_on(_poll_until_idle(source))
    restarted.close()
    last_nums, last_snaps = _handed_on(_poll_until_idle(source))
    source.close()
    assert nums + more_nums + last_nums == list(range(1, 13))
    assert snaps + more_snaps + last_snaps == 4  # two snapshot rows per segment, each once
    assert warnings == []


def _poll_until_idle(source: CaptureSource) -> list:
    chunks, more = [], source.poll()
    while more:
        chunks += more
        more = source.poll()
    return chunks


def test_segments_deleted_by_retention_before_they_are_read_warn_and_the_follower_goes_on(tmp_path):
    capture = tmp_path / "cap"
    writer = SegmentWriter(capture, IDENTITY, rotation=RotationPolicy(max_events=5),
                           retention=RetentionPolicy(keep_segments=1), snapshot=proc_snapshot)
    writer.write(event_batch(1, 3))
    warnings: list[str] = []
    source = CaptureSource(capture, warnings.append)
    first, _ = _handed_on(source.poll())
    for start in range(4, 40, 4):
        writer.write(event_batch(start, 4))  # rotates every 5 events, keeps one segment
    later, _ = _handed_on(_poll_until_idle(source))
    writer.close()
    source.close()
    assert first == [1, 2, 3]
    assert later == sorted(later) and later[-1] == 39 and len(set(later)) == len(later)
    assert any("deleted by retention" in w for w in warnings), warnings


def _alert(n: int) -> Alert:
    return Alert(time_ns=n, rule="R", priority="Warning", source="syscall", hostname="h", output=f"alert {n}",
                 tags=(), output_fields={"evt.num": n}, evt_num=n)


class _Endpoint(BaseHTTPRequestHandler):
    statuses: list[int]  # answers to give, in order; then 200
    received: list[bytes]
    release: threading.Event

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(body)
        self.release.wait(30)
        self.send_response(self.statuses.pop(0) if self.statuses else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint():
    handler = type("Handler", (_Endpoint,), {"statuses": [], "received": [], "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    handler.release.set()
    server.shutdown()
    server.server_close()


def test_webhook_retries_server_errors_and_gives_up_on_refusals(endpoint):
    url, handler = endpoint
    handler.release.set()
    handler.statuses += [500, 503, 200, 400]
    sink = WebhookSink(url, backoff_s=0.01)
    sink.emit(_alert(1))  # 500, 503, then delivered
    sink.emit(_alert(2))  # 400: refused, not retried
    sink.close()
    assert (sink.stats.delivered, sink.stats.failed, sink.stats.dropped) == (1, 1, 0)
    assert [json.loads(b)["output_fields"]["evt.num"] for b in handler.received] == [1, 1, 1, 2]
    assert json.loads(handler.received[0]) == json.loads(_alert(1).to_json())


def test_webhook_queue_is_bounded_and_drops_are_counted(endpoint):
    url, handler = endpoint
    sink = WebhookSink(url, queue_size=2, drain_s=30)
    sink.emit(_alert(1))
    deadline = threading.Event()
    for _ in range(3000):  # bounded wait for the first request to be in flight
        if handler.received:
            break
        deadline.wait(0.01)
    assert handler.received
    for n in range(2, 7):
        sink.emit(_alert(n))  # 2 and 3 queue up, 4, 5 and 6 are dropped
    handler.release.set()
    sink.close()
    assert (sink.stats.delivered, sink.stats.dropped, sink.stats.failed) == (3, 3, 0)
    assert "3 delivered, 3 dropped (queue full)" in sink.summary()


def test_follow_usage_errors_exit_2_and_a_foreign_checkpoint_is_refused(tmp_path):
    from click.testing import CliRunner

    from analyzer.errors import TraceError
    from analyzer.hunt_cli import hunt

    runner = CliRunner()
    two = runner.invoke(hunt, ["--follow", str(DEMO), str(DEMO)])
    assert two.exit_code == 2 and "exactly one capture directory" in two.output
    no_follow = runner.invoke(hunt, ["--webhook", "http://127.0.0.1:9/", str(DEMO)])
    assert no_follow.exit_code == 2 and "need --follow" in no_follow.output
    since = runner.invoke(hunt, ["--follow", "--since", "0", str(DEMO)])
    assert since.exit_code == 2 and "does not take --since" in since.output
    bad_url = runner.invoke(hunt, ["--follow", "--webhook", "ftp://x/", str(tmp_path)])
    assert isinstance(bad_url.exception, TraceError) and "http:// or https://" in str(bad_url.exception)

    ckpt = Checkpoint(tmp_path / "ckpt.json", str((tmp_path / "other").resolve()), 7)
    ckpt.save()
    assert (tmp_path / "ckpt.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(TraceError, match="belongs to capture"):
        Checkpoint.load(tmp_path / "ckpt.json", DEMO)
    (tmp_path / "torn.json").write_text('{"last_evt')
    with pytest.raises(TraceError, match="unreadable checkpoint"):
        Checkpoint.load(tmp_path / "torn.json", DEMO)
