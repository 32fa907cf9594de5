"""libsinsp state carried from batch to batch, built with analyzer/state's builder.

Each batch is resolved by the offline builder (analyzer.state.build) over two
inputs: the batch's rows, and a *carry* holding the state at the end of the
previous batch (analyzer.state.carry describes it; the offline builder
carries it from segment range to segment range the same way).

The carry is written as the batch's own snapshot rows, which the builder
orders at the batch's first event, where a segment's snapshot sits offline
(so a vfork child seen in the previous batch is known when its parent's late
fork return arrives in this one). When the batch starts a new segment with a
/proc snapshot of its own, the carry goes into a segment of its own instead,
whose one synthetic event row sits just before the batch's first event: the
carry precedes the batch and the new snapshot fills only what it lacks, as
offline. The events query reads the batch file only (snapshot rows are not
events).

A build costs per statement far more than per row, and DuckDB's windows cost
per partition (per pid): a batch of events is built with only the carried
processes it can read or change (`split_carry`); the others, idle, pass to
the next carry as they were (`merge_carry`). Building a process does not
change what it carries, so this is the state a build with every carried
process gives (tests/test_follow_units.py compares the two).

A small batch is built (and its carry read) with DuckDB's optimizer off:
optimizing costs each of the builder's ~70 statements a few ms whatever its
size, ~15 % of a probe batch's build, and over a few hundred rows any plan
runs fast. The optimizer changes how a statement runs, not its answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.sql.compiler import install_runtime
from analyzer.state.build import materialize
from analyzer.state.cache import configure
from analyzer.state.carry import (
    CARRY_NAME,
    StateCarry,
    conform,
    extract_carry,
    register_carried,
    unregister_carried,
    write_carry_segment,
    write_private,
)
from analyzer.state.inputs import Capture, Segment
from analyzer.state.sql import FORK_SYSCALLS
from analyzer.state.views import CaptureSource, events_sql
from capture import schema

_CARRIED = "_carried"  # prefix of the carry's views (analyzer.state.carry.register_carried)
_BATCH_SCHEMA = "follow_batch"
# Batches of fewer rows are built unoptimized. Bounded because a plan as written can be
# quadratic (no join reordering or filter pushdown): a backlog's big batches keep the optimizer.
UNOPTIMIZED_MAX_ROWS = 1_000


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    seq: int
    host: str


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
    """One batch resolved into its own schema of `con`; `events_sql()` is the `events` view's query over it."""

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
            segments.append(write_carry_segment(carry, first_evt_num, workdir / "carry" / CARRY_NAME, segment.host,
                                                segment.seq))
        write_private(rows, batch_path)
        segments.append(Segment.of_file(batch_path, segment.host, segment.seq))
        capture = Capture(capture_dir, tuple(segments))
        self.con = con
        self.rows = rows.num_rows
        self._schema = _BATCH_SCHEMA
        con.execute(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE")
        con.execute(f"CREATE SCHEMA {self._schema}")
        con.execute(f"USE {self._schema}")
        self.small = rows.num_rows < UNOPTIMIZED_MAX_ROWS
        try:
            with optimizer_off(con, self.small):
                materialize(con, capture, warnings, register_carried(con, carry, _CARRIED))
            self._source = CaptureSource(self._schema, (batch_path,), (segment.host,), capture.id_prefix)
        except BaseException:
            self.close()
            raise

    def events_sql(self, columns: Collection[str] | None = None, arg_keys: Collection[str] | None = None,
                   arg_syscalls: Collection[str] | None = None) -> str:
        """The `events` view's query over this batch, narrowed to `columns` and `_evt_args` to `arg_keys`
        of `arg_syscalls` (analyzer.state.views.events_sql). Not a view: creating one binds the whole
        wide query (~0.1 s), and the scan binds it again anyway."""
        def frozen(names: Collection[str] | None) -> frozenset[str] | None:
            return None if names is None else frozenset(names)

        return _events_sql(self._source, None if columns is None else tuple(columns), frozen(arg_keys),
                           frozen(arg_syscalls))

    def carry(self) -> StateCarry:
        """The state at the end of this batch, for the next one."""
        with optimizer_off(self.con, self.small):
            return extract_carry(self.con)

    def close(self) -> None:
        """Drop the batch's tables; the connection stays for the next batch."""
        con = self.con
        con.execute("USE main")
        unregister_carried(con, _CARRIED)
        con.execute(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE")


@contextmanager
def optimizer_off(con: duckdb.DuckDBPyConnection, off: bool = True) -> Iterator[None]:
    """The statements of the block planned without DuckDB's optimizer when `off`."""
    if not off:
        yield
        return
    con.execute("PRAGMA disable_optimizer")
    try:
        yield
    finally:
        con.execute("PRAGMA enable_optimizer")


@lru_cache(maxsize=64)
def _events_sql(source: CaptureSource, columns: tuple[str, ...] | None, arg_keys: frozenset[str] | None,
                arg_syscalls: frozenset[str] | None) -> str:
    """analyzer.state.views.events_sql, remembered: every batch of a segment has the same source,
    and generating the query (its parameter renderers) costs ~7 ms."""
    return events_sql(source, None, None, columns, arg_keys=arg_keys, arg_syscalls=arg_syscalls)


def events_only(rows: pa.Table) -> bool:
    return bool(pc.all(pc.equal(rows["kind"].cast(pa.string()), schema.KIND_EVENT)).as_py())


def touched_pids(rows: pa.Table) -> pa.Array:
    """The carried processes a batch of events can read or change: each event's process and its
    parent (a fork's child side, an exec or a first sighting links to the parent's incarnation and
    inherits its fds and cwd), and the child named by a parent's fork return (a vfork child that ran
    in an earlier batch)."""
    pid_type = rows.schema.field("pid").type
    forks = rows.filter(pc.and_(pc.is_in(rows["syscall"].cast(pa.string()), pa.array(FORK_SYSCALLS)),
                                pc.greater(rows["res"], 0)))
    pids = [rows["pid"], rows["ppid"].cast(pid_type), forks["res"].cast(pid_type)]
    return pc.unique(pa.chunked_array([chunk for column in pids for chunk in column.chunks], pid_type)).drop_null()


def split_carry(carry: StateCarry, pids: pa.Array) -> tuple[StateCarry, StateCarry]:
    """`carry` as (the processes in `pids`, with every user, group and container name; the other
    processes). A process is carried as its `proc` snapshot row, its fds and its lineage row."""
    def built_rows(table: pa.Table) -> pa.ChunkedArray:
        member = pc.is_in(table["pid"], pids.cast(table.schema.field("pid").type))  # false for a null pid
        if "kind" in table.column_names:  # the snapshot: the names go with the processes built
            return pc.or_(pc.not_equal(table["kind"].cast(pa.string()), schema.KIND_PROC), member)
        return member

    tables = (carry.snapshot, carry.fds, carry.lineage)
    masks = [built_rows(table) for table in tables]
    built = StateCarry(*(table.filter(mask) for table, mask in zip(tables, masks)))
    idle = StateCarry(*(table.filter(pc.invert(mask)) for table, mask in zip(tables, masks)))
    return built, idle


def merge_carry(built: StateCarry, idle: StateCarry) -> StateCarry:
    """The carry of a build of `split_carry`'s first part, with the idle processes put back."""
    is_proc = pc.equal(built.snapshot["kind"].cast(pa.string()), schema.KIND_PROC)
    procs = pa.concat_tables([built.snapshot.filter(is_proc), idle.snapshot.cast(built.snapshot.schema)]).sort_by("pid")
    snapshot = pa.concat_tables([procs, built.snapshot.filter(pc.invert(is_proc))])
    fds = pa.concat_tables([built.fds, idle.fds.cast(built.fds.schema)])
    lineage = pa.concat_tables([built.lineage, idle.lineage.cast(built.lineage.schema)]).sort_by("pid")
    return StateCarry(snapshot, fds, lineage)
