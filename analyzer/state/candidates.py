"""The state of chosen events only: the hunt's path through the state layer.

A hunt can fire only on the few events whose evt.type some rule lists and
that pass the rules' event-level prefilters. When the raw rows already rule
out most of them (a busy host's opens of ordinary absolute paths), the hunt
picks its candidates from the raw rows first (a plain Parquet scan), keys
only those against the cached state, and scans them through the same
`events` query (analyzer.state.views.events_sql with `rows`) over copies of
only the state rows they reach. The keys are the ones the build's key pass gives
(build._build_event_keys): the latest `fd_state` row of the event's (pid,
fd) at or before its order, and the `timeline` row of its pid in force at
its order. Both joins are driven by the candidates: only the fd and
timeline rows of the candidates' pids and fds are read.
tests/test_state_candidates.py checks every field against `events`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace

import duckdb

from analyzer.state.sql import ORD_EVENT, lookup_fd_sql, sql_path_list
from analyzer.state.views import CaptureSource, events_sql

# A relation of raw rows (capture columns and `filename`) -> the candidate rows among them, same columns.
CandidateSelect = Callable[[str], str]


def candidate_keys_table(index: int) -> str:
    return f"_candidate_keys_{index}"


def _schema(index: int) -> str:
    return f"_candidate_state_{index}"


# The state tables the events query joins on ids: only the rows the candidates reach are copied.
_SUBSET_TABLES = ("fd_state", "timeline", "inc", "ancestry", "life_start")
_NAME_TABLES = ("users", "groups", "containers")


def _raw_events(src: CaptureSource, since: int | None, until: int | None) -> str:
    where = "kind = 'evt'"
    if since is not None:
        where += f" AND ts >= {int(since)}"
    if until is not None:
        where += f" AND ts < {int(until)}"
    return f"SELECT * FROM read_parquet({sql_path_list(src.paths)}, filename = true) WHERE {where}"


def count_raw(con: duckdb.DuckDBPyConnection, src: CaptureSource, since: int | None, until: int | None,
              select: CandidateSelect) -> int:
    return con.execute(f"SELECT count(*) FROM ({select(_raw_events(src, since, until))})").fetchall()[0][0]


def candidate_events_sql(con: duckdb.DuckDBPyConnection, src: CaptureSource, index: int,
                         since: int | None, until: int | None, columns: Collection[str] | None = None,
                         arg_keys: Collection[str] | None = None) -> str:
    """The `events` query over the candidates of capture `index`: its segments' rows joined by
    `evt_num` (unique in a capture) to the candidates' keys, and the state reached in a schema
    holding only the candidates' rows of it; tables created empty here (rules bind against the
    query before `fill_candidates` keys anything). The rows are read lazily, so a scan reads
    only the columns it uses, and its hash joins are as small as the candidates."""
    keys, schema = candidate_keys_table(index), _schema(index)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {keys} (evt_num BIGINT, timeline_id BIGINT, fd_id BIGINT)")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in _SUBSET_TABLES:
        con.execute(f"CREATE OR REPLACE TABLE {schema}.{table} AS SELECT * FROM {src.alias}.{table} LIMIT 0")
    for table in _NAME_TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {schema}.{table} AS SELECT * FROM {src.alias}.{table}")
    rows = (f"SELECT r.*, k.timeline_id, k.fd_id FROM ({_raw_events(src, since, until)}) r "
            f"JOIN {keys} k ON k.evt_num = r.evt_num")
    return events_sql(replace(src, alias=schema), since, until, columns, arg_keys, rows=rows)


def key_events(con: duckdb.DuckDBPyConnection, state: str, events: str, keys: str) -> None:
    """Insert into `keys` (evt_num, timeline_id, fd_id) the keys of the rows of `events` (raw
    event rows) against the state tables of schema `state`: the latest fd_state row of the
    event's (pid, fd) at or before its order, the timeline row of its pid in force then.
    The joins sort what they carry, so they get narrow rows, and only the fd and timeline
    rows of the events' pids and fds."""
    picked = "_key_events_picked"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {picked} AS SELECT evt_num, pid, {ORD_EVENT} AS _o, "
                f"{lookup_fd_sql('c')} AS _lookup_fd FROM ({events}) c")
    try:
        con.execute(
            f"""
            INSERT INTO {keys}
            SELECT c.evt_num, CASE WHEN c._o < w.next_ord THEN w.id END, f.id
            FROM {picked} c
            ASOF LEFT JOIN (SELECT s.pid, s.fd, s.ord, s.id FROM {state}.fd_state s
                            SEMI JOIN (SELECT DISTINCT pid, _lookup_fd FROM {picked}) k
                                ON k.pid = s.pid AND k._lookup_fd = s.fd) f
                ON f.pid = c.pid AND f.fd = c._lookup_fd AND c._o >= f.ord
            ASOF LEFT JOIN (SELECT t.pid, t.ord, t.next_ord, t.id FROM {state}.timeline t
                            SEMI JOIN (SELECT DISTINCT pid FROM {picked}) k ON k.pid = t.pid) w
                ON w.pid = c.pid AND c._o >= w.ord
            """
        )
    finally:
        con.execute(f"DROP TABLE IF EXISTS {picked}")


def fill_candidates(con: duckdb.DuckDBPyConnection, src: CaptureSource, index: int,
                    since: int | None, until: int | None, select: CandidateSelect | None) -> int:
    """Key the candidate events of capture `index` (all events when `select` is None) and copy
    the state rows they reach; returns how many there are."""
    a, keys, schema = src.alias, candidate_keys_table(index), _schema(index)
    raw = _raw_events(src, since, until)
    key_events(con, a, raw if select is None else select(raw), keys)
    copies = {
        "fd_state": f"SELECT * FROM {a}.fd_state SEMI JOIN (SELECT DISTINCT fd_id FROM {keys}) k ON k.fd_id = id",
        "timeline": f"SELECT * FROM {a}.timeline SEMI JOIN (SELECT DISTINCT timeline_id FROM {keys}) k "
                    "ON k.timeline_id = id",
        "inc": f"SELECT * FROM {a}.inc SEMI JOIN (SELECT DISTINCT key FROM {schema}.timeline) t ON t.key = inc.key",
        "ancestry": f"SELECT * FROM {a}.ancestry SEMI JOIN {schema}.inc i ON i.key = ancestry.key",
        "life_start": f"SELECT * FROM {a}.life_start SEMI JOIN (SELECT DISTINCT life_key FROM {schema}.inc) i "
                      "ON i.life_key = life_start.life_key",
    }
    for table, select_rows in copies.items():
        con.execute(f"INSERT INTO {schema}.{table} {select_rows}")
    return con.execute(f"SELECT count(*) FROM {keys}").fetchall()[0][0]
