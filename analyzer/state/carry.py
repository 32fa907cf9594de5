"""The open state at the end of one build, carried into the next build.

Both the follower (batch after batch) and the offline builder (segment range
after segment range, analyzer/state/ranges.py) build a piece of a capture
at a time and start each piece from the state the previous one left. The
carry is small and bounded by what is alive, never by how long the capture
has run:

* the live processes as ``proc`` snapshot rows (image, cwd, ids, names), with
  no parent link: their ancestry comes resolved in ``lineage``, with the
  key and life of the incarnation they continue (``carry_key``,
  ``carry_life``: the offline builder maps the next piece's carried
  incarnations back to them);
* their open fds, already resolved (``fds``), so a pipe, a memfd or an
  accepted socket keeps exactly the description it had, with the id of the
  ``fd_state`` row it was last (the offline builder keeps it: see Carried);
* the users, groups and container names as snapshot rows.

``Carried`` (analyzer.state.build) turns these relations into the next
build's starting state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.state.build import Carried
from analyzer.state.inputs import Segment
from capture import schema

# The carry written as a segment of its own (see carry_rows).
CARRY_NAME = "carry.parquet"


@dataclass(frozen=True)
class StateCarry:
    """The state at the end of a build (Arrow tables, independent of any connection)."""

    snapshot: pa.Table  # capture-schema rows: proc (live processes), user, group, cgroup
    fds: pa.Table
    lineage: pa.Table

    @property
    def processes(self) -> int:
        return self.lineage.num_rows


def conform(table: pa.Table) -> pa.Table:
    """`table`'s columns in the capture schema, missing ones as nulls."""
    columns = []
    for field in schema.SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.SCHEMA)


def write_private(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pq.write_table(table, str(path), compression="lz4")
    os.chmod(path, 0o600)


def extract_carry(con: duckdb.DuckDBPyConnection) -> StateCarry:
    """The state at the end of the build in `con`'s current schema."""
    con.execute(_LIVE_SQL)
    try:
        procs = con.sql(_LIVE_PROC_ROWS_SQL).to_arrow_table()
        names = con.sql(_NAME_ROWS_SQL).to_arrow_table()
        fds = con.sql(_LIVE_FDS_SQL).to_arrow_table()
        lineage = con.sql(_LINEAGE_SQL).to_arrow_table()
    finally:
        con.execute("DROP TABLE IF EXISTS _live")
    snapshot = pa.concat_tables([conform(procs), conform(names)])
    return StateCarry(snapshot, fds, lineage)


def carry_rows(carry: StateCarry, first_evt_num: int) -> pa.Table:
    """The carry as a segment of its own: its snapshot rows plus the one event
    row that orders them just before `first_evt_num` (a piece that starts a
    segment with a /proc snapshot of its own: the carry precedes it, and that
    snapshot fills only what the carry does not know, as offline)."""
    pids = carry.lineage["pid"]
    marker = {
        "kind": [schema.KIND_EVENT],
        "evt_num": [first_evt_num - 1],
        "pid": [pids[0].as_py() if len(pids) else None],
    }
    return pa.concat_tables([carry.snapshot, conform(pa.table(marker))])


def write_carry_segment(carry: StateCarry, first_evt_num: int, path: Path, host: str, seq: int) -> Segment:
    """`carry_rows` written privately to `path`, as a segment of the next build."""
    write_private(carry_rows(carry, first_evt_num), path)
    return Segment.of_file(path, host, seq)


def register_carried(
    con: duckdb.DuckDBPyConnection, carry: StateCarry | None, prefix: str, fd_id_shift: int | None = None
) -> Carried | None:
    """The carry's relations as views `<prefix>_fds` and `<prefix>_lineage` of `con`, for the next build
    (`fd_id_shift`: see Carried)."""
    if carry is None:
        return None
    carried = Carried(f"{prefix}_fds", f"{prefix}_lineage", fd_id_shift)
    con.register(carried.fds, carry.fds)
    con.register(carried.lineage, carry.lineage)
    return carried


def unregister_carried(con: duckdb.DuckDBPyConnection, prefix: str) -> None:
    """Drop what `register_carried` registered under `prefix` (nothing if it registered nothing)."""
    for name in (f"{prefix}_fds", f"{prefix}_lineage"):
        con.unregister(name)


# The current incarnation of every pid that has not exited.
_LIVE_SQL = """
CREATE OR REPLACE TEMP TABLE _live AS
SELECT i.*, ls.life_start_ts, a.anc_pid, a.anc_name, a.anc_exe, a.anc_exepath, a.anc_cmdline, a.anc_sid,
       w.cwd AS cur_cwd
FROM inc i
LEFT JOIN ancestry a ON a.key = i.key
LEFT JOIN life_start ls ON ls.life_key = i.life_key
LEFT JOIN (SELECT life, cwd FROM cwd_state
           QUALIFY row_number() OVER (PARTITION BY life ORDER BY ord DESC) = 1) w ON w.life = i.life_key
WHERE i.end_ord IS NULL AND i.pid IS NOT NULL
"""

_LIVE_PROC_ROWS_SQL = """
SELECT 'proc' AS kind, start_ts AS ts, pid, pid AS tid, NULL::INTEGER AS ppid, uid, gid, comm, cgroup_id,
       container_id, exepath, argv, cur_cwd AS cwd, env, loginuid, tty, sid, pgid, vpid,
       life_start_ts AS proc_start_ts, cap_effective, cap_permitted, cap_inheritable, exe_from_memfd, exe_upper_layer
FROM _live ORDER BY pid
"""

_NAME_ROWS_SQL = """
SELECT 'user' AS kind, uid, NULL::BIGINT AS gid, name AS user_name, home AS user_home, shell AS user_shell,
       NULL AS group_name, NULL AS container_id, NULL AS container_name, NULL AS container_image FROM users
UNION ALL
SELECT 'group', NULL, gid, NULL, NULL, NULL, name, NULL, NULL, NULL FROM groups
UNION ALL
SELECT 'cgroup', NULL, NULL, NULL, NULL, NULL, NULL, container_id, name, image FROM containers
"""

_LIVE_FDS_SQL = """
SELECT l.pid, f.fd, f.ts, f.type, f.raw, f.cloexec, f.sock_family, f.sock_type, f.sock_proto,
       f.lip, f.lport, f.rip, f.rport, f.is_server, f.name, f.id AS fd_id
FROM fd_state f JOIN _live l ON l.life_key = f.life
QUALIFY row_number() OVER (PARTITION BY f.life, f.fd ORDER BY f.ord DESC, f.id DESC) = 1 AND f.op <> 'close'
"""

_LINEAGE_SQL = """
SELECT pid, life_start_ts, anc_pid, anc_name, anc_exe, anc_exepath, anc_cmdline, anc_sid,
       key AS carry_key, life_key AS carry_life
FROM _live ORDER BY pid
"""
