"""Build a capture's state a segment range at a time, into one database.

The capture's segments are cut into ranges of about `range_events` rows (a
segment is never split: one huge segment is one range). Each range is built
by analyzer.state.build in a schema of its own, starting from the open state
the previous range left (analyzer.state.carry: the follower's mechanism,
with the carry as a segment of its own just before the range), then
appended to the output database and dropped. Working memory therefore
depends on the range size and on what is alive, not on the capture's length.

Appending keeps the tables one capture-wide state: every range's ids are
offset past the previous ranges' (process keys, fd_state and timeline ids,
segment numbers), and a carried incarnation is not a new process: its rows
are mapped back to the key and life it continues (``carry_key`` and
``carry_life``), whose end (exit or exec in this range) is filled in; a
carried fd continues its ``fd_state`` row (``Carried.fd_id_shift``), so the
open fds are stored once, not again at every range.
Users, groups and containers are the last range's: it holds the latest
names, carried from every range before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.state.build import Carried, later_snapshot_sql, materialize
from analyzer.state.carry import (
    CARRY_NAME,
    StateCarry,
    extract_carry,
    register_carried,
    unregister_carried,
    write_carry_segment,
)
from analyzer.state.inputs import Capture, Segment
from analyzer.state.sql import event_keys_table, sql_path_list

RANGE_EVENTS = 2_000_000
_RANGE_SCHEMA = "state_range"
_CARRIED = "_range_carried"  # prefix of the carry's views (analyzer.state.carry.register_carried)
_LATER_VIEW = "_range_later_snapshot"
# The tables of the state database besides the per-segment key tables.
_NAME_TABLES = ("users", "groups", "containers")


def split_ranges(segments: tuple[Segment, ...], range_events: int) -> list[tuple[Segment, ...]]:
    """Consecutive segments, cut once a range holds `range_events` rows."""
    ranges: list[tuple[Segment, ...]] = []
    current: list[Segment] = []
    rows = 0
    for seg in segments:
        current.append(seg)
        rows += _row_count(seg.path)
        if rows >= range_events:
            ranges.append(tuple(current))
            current, rows = [], 0
    if current:
        ranges.append(tuple(current))
    return ranges


def _row_count(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return 0  # unreadable: the build skips it with a warning


@dataclass
class _Offsets:
    """What the ranges appended so far used: the next range's ids start past them."""

    key: int = 0
    fd_id: int = 0
    timeline_id: int = 0
    seg: int = 0
    last_evt: int | None = None


def materialize_by_ranges(
    con: duckdb.DuckDBPyConnection,
    capture: Capture,
    out: str,
    workdir: Path,
    warnings: list[str],
    range_events: int = RANGE_EVENTS,
) -> None:
    """Build every state table of `capture` into the attached database `out`, range by range."""
    offsets = _Offsets()
    carry: StateCarry | None = None
    created = False
    carry_path = workdir / CARRY_NAME
    try:
        ranges = split_ranges(capture.segments, range_events)
        for index, segments in enumerate(ranges):
            inputs = list(segments)
            if carry is not None:
                first = _first_event(con, segments, offsets.last_evt)
                inputs.insert(0, write_carry_segment(carry, first, carry_path, segments[0].host, -1))
            con.execute(f"CREATE SCHEMA {_RANGE_SCHEMA}")
            con.execute(f"USE {_RANGE_SCHEMA}")
            try:
                carried = register_carried(con, carry, _CARRIED, -offsets.fd_id)
                later = _later_snapshot(con, ranges[index + 1][0]) if index + 1 < len(ranges) else None
                built = materialize(con, Capture(capture.directory, tuple(inputs)), warnings, carried, later)
                good = [name for name in built if name != CARRY_NAME or carry is None]
                if good:
                    last = index + 1 == len(ranges)
                    local_carry = None if last else extract_carry(con)
                    key_offset, fd_offset = offsets.key, offsets.fd_id
                    _append(con, out, offsets, carried, good, created)
                    created = True
                    if local_carry is not None:
                        carry = _global_carry(con, local_carry, key_offset, fd_offset)
                offsets.seg += len(segments)
            finally:
                con.execute("USE memory.main")
                unregister_carried(con, _CARRIED)
                con.unregister(_LATER_VIEW)
                con.execute(f"DROP SCHEMA IF EXISTS {_RANGE_SCHEMA} CASCADE")
    finally:
        carry_path.unlink(missing_ok=True)
    if not created:
        con.execute(
            f"CREATE TABLE {out}.segments (seg INTEGER, name VARCHAR, path VARCHAR, size BIGINT, mtime_ns BIGINT, "
            "host VARCHAR, seq BIGINT, min_evt BIGINT, max_evt BIGINT, base BIGINT)"
        )


def _later_snapshot(con: duckdb.DuckDBPyConnection, segment: Segment) -> str | None:
    """The next range's first snapshot, registered for the build of this range
    (it fills what events could not tell, as in one build of the capture)."""
    try:
        rows = con.sql(later_snapshot_sql(str(segment.path))).to_arrow_table()
    except duckdb.Error:
        return None  # a corrupt segment: the next range skips it with a warning
    con.register(_LATER_VIEW, rows)
    return _LATER_VIEW


def _first_event(con: duckdb.DuckDBPyConnection, segments: tuple[Segment, ...], last_evt: int | None) -> int:
    """The event number the range starts at: the carry sits just before it."""
    if last_evt is not None:
        return last_evt + 1
    files = sql_path_list(s.path for s in segments)
    try:
        first = con.execute(f"SELECT min(evt_num) FROM read_parquet({files})").fetchall()[0][0]
    except duckdb.Error:
        first = None
    return 0 if first is None else int(first)


def _append(
    con: duckdb.DuckDBPyConnection, out: str, off: _Offsets, carried: Carried | None, good: list[str], created: bool
) -> None:
    """Append this range's tables (current schema) to `out`, ids offset and carried incarnations mapped back."""
    # cmap: the carried incarnations (local key) and the key and life they continue
    carried_sql = (
        f"SELECT key AS local, carry_key, carry_life FROM ({carried.processes()})" if carried is not None
        else "SELECT NULL::BIGINT AS local, NULL::BIGINT AS carry_key, NULL::BIGINT AS carry_life WHERE false"
    )
    con.execute(f"CREATE TABLE cmap AS {carried_sql}")
    shift = 1 if carried is not None else 0  # the carry is segment 0
    # The carry's rows sit at its segment's order, which is the previous
    # range's last event's order less 2: in the output they go just after it.
    ord_ = "t.ord"
    if carried is not None:
        carry_ord = con.execute("SELECT base * 4 FROM segments WHERE seg = 0").fetchall()[0][0]
        ord_ = f"CASE WHEN t.ord = {carry_ord} THEN {carry_ord + 3} ELSE t.ord END"
    seg = f"t.seg - {shift} + {off.seg}"
    not_carried = "NOT IN (SELECT local FROM cmap)"

    def mapped(table: str, keys: tuple[str, ...], lives: tuple[str, ...], replace: str = "", where: str = "") -> str:
        """`table` with its process keys and lives renumbered (a hash join per column on the few carried)."""
        joins, cols = [], []
        for n, (col, target) in enumerate([(c, "carry_key") for c in keys] + [(c, "carry_life") for c in lives]):
            joins.append(f"LEFT JOIN cmap m{n} ON m{n}.local = t.{col}")
            cols.append(f"coalesce(m{n}.{target}, t.{col} + {off.key}) AS {col}")
        return (f"SELECT t.* REPLACE ({', '.join(cols + ([replace] if replace else []))}) FROM {table} t "
                + " ".join(joins) + (f" WHERE {where}" if where else ""))

    selects = {
        "segments": f"SELECT t.* REPLACE ({seg} AS seg) FROM segments t WHERE t.seg >= {shift}",
        "inc": mapped("inc", ("key", "parent_key", "prev_key", "img_key"), ("life_key",), f"{seg} AS seg",
                      f"t.key {not_carried}"),
        "ancestry": mapped("ancestry", ("key",), (), where=f"t.key {not_carried}"),
        "life_start": mapped("life_start", (), ("life_key",), where=f"t.life_key {not_carried}"),
        "cwd_state": mapped("cwd_state", (), ("life",), f"{ord_} AS ord"),
        # the carried fds' rows (ids <= 0, Carried.fd_id_shift) are the rows they continue, stored already
        "fd_state": mapped("fd_state", ("inc_key",), ("life",),
                           f"t.id + {off.fd_id} AS id, t.src_id + {off.fd_id} AS src_id", "t.id > 0"),
        "timeline": mapped("timeline", ("key",), ("life",), f"t.id + {off.timeline_id} AS id, {ord_} AS ord"),
    }
    for table, select in selects.items():
        verb = f"INSERT INTO {out}.{table} " if created else f"CREATE TABLE {out}.{table} AS "
        con.execute(verb + select)
    if carried is not None:
        # a carried incarnation goes on where it left off: its end is in this range
        con.execute(
            f"""
            UPDATE {out}.inc SET end_ord = i.end_ord, end_ts = i.end_ts, exited = i.exited
            FROM inc i JOIN cmap m ON m.local = i.key
            WHERE {out}.inc.key = m.carry_key
            """
        )
    for table in _NAME_TABLES:
        con.execute(f"CREATE OR REPLACE TABLE {out}.{table} AS SELECT * FROM {table}")
    # the key rows must stay in file order: the events view matches them by position
    preserve = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")
    try:
        for name in good:
            table = event_keys_table(name)
            con.execute(
                f"CREATE TABLE {out}.{table} AS SELECT timeline_id + {off.timeline_id} AS timeline_id, "
                f"fd_id + {off.fd_id} AS fd_id FROM {table}"
            )
    finally:
        con.execute(f"SET preserve_insertion_order = {bool(preserve)}")
    used = con.execute(
        "SELECT (SELECT coalesce(max(key), 0) FROM inc), (SELECT coalesce(max(id), 0) FROM fd_state WHERE id > 0), "
        f"(SELECT coalesce(max(id), 0) FROM timeline), (SELECT max(max_evt) FROM segments WHERE seg >= {shift})"
    ).fetchall()[0]
    off.key += used[0]
    off.fd_id += used[1]
    off.timeline_id += used[2]
    if used[3] is not None:
        off.last_evt = max(used[3], off.last_evt or used[3])


def _global_carry(con: duckdb.DuckDBPyConnection, carry: StateCarry, key_offset: int, fd_offset: int) -> StateCarry:
    """`carry` with its incarnation keys, lives and fd row ids as the output numbers them
    (`key_offset`, `fd_offset`: the offsets this range's keys and fd ids got; cmap: the carried
    incarnations; a carried fd row's id is already shifted so that the offset maps it back)."""
    con.register("_local_lineage", carry.lineage)
    try:
        lineage = con.sql(
            f"SELECT l.* REPLACE (coalesce(k.carry_key, l.carry_key + {key_offset}) AS carry_key, "
            f"coalesce(f.carry_life, l.carry_life + {key_offset}) AS carry_life) FROM _local_lineage l "
            "LEFT JOIN cmap k ON k.local = l.carry_key LEFT JOIN cmap f ON f.local = l.carry_life ORDER BY l.pid"
        ).to_arrow_table()
    finally:
        con.unregister("_local_lineage")
    fd_ids = pc.add(carry.fds["fd_id"], pa.scalar(fd_offset, carry.fds.schema.field("fd_id").type))
    fds = carry.fds.set_column(carry.fds.schema.get_field_index("fd_id"), "fd_id", fd_ids)
    return StateCarry(carry.snapshot, fds, lineage)
