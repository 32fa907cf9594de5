"""libsinsp state carried from batch to batch, built with analyzer/state's builder.

Each batch is resolved by the offline builder (analyzer.state.build) over two
inputs: the batch's rows, and a *carry* holding the state at the end of the
previous batch. The carry is small and bounded by what is alive, never by how
long the capture has run:

* the live processes as ``proc`` snapshot rows (image, cwd, ids, names), with
  no parent link: their ancestry comes resolved in ``lineage``;
* their open fds, already resolved (``fds``), so a pipe, a memfd or an
  accepted socket keeps exactly the description it had;
* the users, groups and container names as snapshot rows.

The carry is written as the batch's own snapshot rows, which the builder
orders at the batch's first event, where a segment's snapshot sits offline
(so a vfork child seen in the previous batch is known when its parent's late
fork return arrives in this one). When the batch starts a new segment with a
/proc snapshot of its own, the carry goes into a segment of its own instead,
whose one synthetic event row sits just before the batch's first event: the
carry precedes the batch and the new snapshot fills only what it lacks, as
offline. The events query reads the batch file only (snapshot rows are not
events).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.sql.compiler import install_runtime
from analyzer.state.build import Carried, materialize
from analyzer.state.cache import configure
from analyzer.state.inputs import Capture, Segment
from analyzer.state.views import CaptureSource, events_sql
from capture import schema

_FDS_VIEW = "_carried_fds"
_LINEAGE_VIEW = "_carried_lineage"
CARRY_NAME = "carry.parquet"
_BATCH_SCHEMA = "follow_batch"


@dataclass(frozen=True)
class StateCarry:
    """The state at the end of a batch (Arrow tables, independent of any connection)."""

    snapshot: pa.Table  # capture-schema rows: proc (live processes), user, group, cgroup
    fds: pa.Table
    lineage: pa.Table

    @property
    def processes(self) -> int:
        return self.lineage.num_rows


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    seq: int
    host: str


def conform(table: pa.Table) -> pa.Table:
    """`table`'s columns in the capture schema, missing ones as nulls."""
    columns = []
    for field in schema.SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.SCHEMA)


def _write_private(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pq.write_table(table, str(path), compression="lz4")
    os.chmod(path, 0o600)


def open_connection(workdir: Path) -> duckdb.DuckDBPyConnection:
    """The follower's one connection: macros installed once, each batch in a schema of its own."""
    con = duckdb.connect()
    spill = workdir / "spill"
    spill.mkdir(mode=0o700, exist_ok=True)
    configure(con, spill)
    con.execute("SET threads = 1")  # batches are small: a second thread costs more than it brings
    install_runtime(con)  # the compiled rules' macros, in main: batch schemas come and go
    return con


class BatchState:
    """One batch resolved into its own schema of `con`; `events_sql` is the `events` view's query over it."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        workdir: Path,
        capture_dir: Path,
        segment: SegmentInfo,
        rows: pa.Table,
        first_evt_num: int,
        carry: StateCarry | None,
        warnings: list[str],
    ):
        batch_path = workdir / "batch" / segment.name
        segments = []
        if carry is not None and events_only(rows):
            # The carried state becomes the batch's own snapshot, ordered where a
            # segment's snapshot is (at its first event) as offline at a segment's
            # start: a vfork child that ran in the previous batch is then known
            # when its parent's late fork return comes in this one.
            rows = pa.concat_tables([carry.snapshot, conform(rows)])
        elif carry is not None:
            # A new segment's own /proc snapshot comes after the carry and
            # fills only what the carry does not know, as offline.
            carry_path = workdir / "carry" / CARRY_NAME
            _write_private(_carry_rows(carry, first_evt_num), carry_path)
            segments.append(_segment(carry_path, segment))
        _write_private(rows, batch_path)
        segments.append(_segment(batch_path, segment))
        capture = Capture(capture_dir, tuple(segments))
        self.con = con
        self.rows = rows.num_rows
        self._schema = _BATCH_SCHEMA
        con.execute(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE")
        con.execute(f"CREATE SCHEMA {self._schema}")
        con.execute(f"USE {self._schema}")
        try:
            carried = None
            if carry is not None:
                con.register(_FDS_VIEW, carry.fds)
                con.register(_LINEAGE_VIEW, carry.lineage)
                carried = Carried(_FDS_VIEW, _LINEAGE_VIEW)
            materialize(con, capture, warnings, carried)
            source = CaptureSource(self._schema, (batch_path,), (segment.host,), capture.id_prefix)
            # Not a view: creating one binds the whole wide query (~0.1 s), and
            # the scan binds it again anyway (analyzer.follow.scan).
            self.events_sql = events_sql(source, None, None)
        except BaseException:
            self.close()
            raise

    def carry(self) -> StateCarry:
        """The state at the end of this batch, for the next one."""
        con = self.con
        con.execute(_LIVE_SQL)
        procs = con.sql(_LIVE_PROC_ROWS_SQL).to_arrow_table()
        names = con.sql(_NAME_ROWS_SQL).to_arrow_table()
        fds = con.sql(_LIVE_FDS_SQL).to_arrow_table()
        lineage = con.sql(_LINEAGE_SQL).to_arrow_table()
        snapshot = pa.concat_tables([conform(procs), conform(names)])
        return StateCarry(snapshot, fds, lineage)

    def close(self) -> None:
        """Drop the batch's tables; the connection stays for the next batch."""
        con = self.con
        con.execute("USE main")
        for view in (_FDS_VIEW, _LINEAGE_VIEW):
            con.unregister(view)
        con.execute(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE")


def events_only(rows: pa.Table) -> bool:
    return bool(pc.all(pc.equal(rows["kind"].cast(pa.string()), schema.KIND_EVENT)).as_py())


def _segment(path: Path, segment: SegmentInfo) -> Segment:
    stat = os.stat(path)
    return Segment(path, stat.st_size, stat.st_mtime_ns, segment.host, segment.seq)


def _carry_rows(carry: StateCarry, first_evt_num: int) -> pa.Table:
    """The carry's snapshot rows plus the event row that orders them before the batch."""
    pids = carry.lineage["pid"]
    marker = {
        "kind": [schema.KIND_EVENT],
        "evt_num": [first_evt_num - 1],
        "pid": [pids[0].as_py() if len(pids) else None],
    }
    return pa.concat_tables([carry.snapshot, conform(pa.table(marker))])


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
       f.lip, f.lport, f.rip, f.rport, f.is_server, f.name
FROM fd_state f JOIN _live l ON l.life_key = f.life
QUALIFY row_number() OVER (PARTITION BY f.life, f.fd ORDER BY f.ord DESC, f.id DESC) = 1 AND f.op <> 'close'
"""

_LINEAGE_SQL = """
SELECT pid, life_start_ts, anc_pid, anc_name, anc_exe, anc_exepath, anc_cmdline, anc_sid FROM _live ORDER BY pid
"""
