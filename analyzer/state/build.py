"""Rebuild libsinsp's thread and fd tables for one capture, as DuckDB tables.

Set-based throughout: only the rows that change state are read (snapshot
rows, successful fork/exec/exit, chdir, the fd-table syscalls, plus each
pid's first event per segment), and every step is one SQL statement over
all of them. They are read into two working tables: ``rows``, narrow, for
every such row, and ``images``, with the process image and name columns,
for the snapshot and exec rows only. The one Python loop runs over *fork
generations*: a forked child inherits its parent's cwd and fd table at the
fork, so generation N is resolved after generation N-1 (a handful of
iterations, each set-based, each reading only its generation's lives).
The per-event pass (the key tables) runs a segment at a time against only
the state rows in force during that segment. One call builds the segments
it is given; analyzer/state/ranges.py calls it a segment range at a time,
each range starting from the state the previous one left (``Carried``).

Tables written (docs/contracts.md section 2 describes the views over them):

* ``segments``: the segment files and their order base;
* ``inc``: process incarnations (libsinsp threadinfo of a tgid, one row per
  fork/exec image), with parent, previous image, life and ancestry lists;
* ``cwd_state``: (life, ord) -> cwd after each change;
* ``fd_state``: (life, fd, ord) -> the fd's description after each change
  (op ``close`` rows end it);
* ``timeline``: per pid, the incarnation and cwd over [ord, next_ord);
* ``"evt_keys:<segment name>"``: per row of that segment, in file order, the
  ids of the ``timeline`` and ``fd_state`` rows the event sees (the events
  view stitches them to the segment by position);
* ``users``, ``groups``, ``containers``: the latest snapshot names.

``Carried`` is the hook the range builder and the follower (analyzer/follow)
use to start a build from state resolved earlier instead of from a /proc
snapshot (analyzer/state/carry.py extracts it after a build): the carried
processes are ordinary ``proc`` snapshot rows of the first segment, and the
two relations give what such rows cannot say exactly: each fd's resolved
description and each process's ancestry and start time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from analyzer.state.inputs import Capture
from analyzer.state.sql import (
    AT_FDCWD,
    CLONE_THREAD,
    EINPROGRESS,
    EXEC_SYSCALLS,
    F_DUPFD,
    F_DUPFD_CLOEXEC,
    FORK_SYSCALLS,
    O_CLOEXEC,
    O_DIRECTORY,
    OPEN_SYSCALLS,
    STATE_SYSCALLS,
    event_keys_table,
    lookup_fd_sql,
    sql_list,
)

# The capture columns the builder reads (enums as text).
_RAW_NAMES = (
    "kind", "evt_num", "ts", "pid", "tid", "ppid", "uid", "gid", "comm", "cgroup_id", "container_id", "syscall",
    "res", "arg1", "fd", "fd2", "dirfd", "path", "flags", "mode", "sock_family", "sock_type", "sock_proto",
    "addr_ip", "addr_port", "addr_path", "local_ip", "local_port", "exepath", "argv", "cwd", "env", "loginuid",
    "tty", "sid", "pgid", "vpid", "proc_start_ts", "cap_effective", "cap_permitted", "cap_inheritable",
    "exe_from_memfd", "exe_upper_layer", "user_name", "user_home", "user_shell", "group_name", "container_name",
    "container_image",
)
_ENUMS = ("kind", "container_id", "syscall")
# Only process snapshots, execs and the name snapshots carry these: they live
# in the `images` table, so the many fd rows in `rows` stay narrow.
_IMAGE_NAMES = (
    "exepath", "argv", "env", "loginuid", "tty", "sid", "pgid", "vpid", "proc_start_ts", "cap_effective",
    "cap_permitted", "cap_inheritable", "exe_from_memfd", "exe_upper_layer", "user_name", "user_home", "user_shell",
    "group_name", "container_name", "container_image",
)
_ROW_NAMES = tuple(n for n in _RAW_NAMES if n not in _IMAGE_NAMES)
# What a first sighting ('seen' row) says about its process (see _build_incarnations).
# What the snapshot of a later segment fills in (see later_snapshot_sql).
_SNAPSHOT_NAMES = (
    "pid", "tid", "ppid", "ts", "comm", "uid", "gid", "container_id", "cgroup_id", "cwd", "exepath", "argv", "env",
    "loginuid", "tty", "sid", "pgid", "vpid", "proc_start_ts", "cap_effective", "cap_permitted", "cap_inheritable",
    "exe_from_memfd", "exe_upper_layer",
)
_SEEN_NAMES = ("evt_num", "ts", "pid", "tid", "ppid", "uid", "gid", "comm", "cgroup_id", "container_id", "cwd")


def _raw_columns(names: tuple[str, ...], present: tuple[str, ...] | None = None, kind: str = "kind::VARCHAR") -> str:
    """`names` as the builder reads them (enums as text), those not `present` as NULL."""
    return ", ".join(
        f"{kind} AS kind" if n == "kind"
        else (f"{n}::VARCHAR AS {n}" if n in _ENUMS else n) if present is None or n in present
        else f"NULL AS {n}"
        for n in names
    )


_MAX_GENERATIONS = 100_000
_MAX_DIRFD_PASSES = 8
# fd_state row ids from a sequence: unique, and no single-threaded window per insert
_NEXT_ID = "nextval('fd_ids') AS id"


@dataclass(frozen=True)
class Carried:
    """State resolved before the first segment, carried in by relation name.

    ``fds``: (pid, fd, ts, type, raw, cloexec, sock_family, sock_type,
    sock_proto, lip, lport, rip, rport, is_server, name, fd_id): the open fds
    of the carried processes, taken as is at the first segment's snapshot
    (already resolved: they skip the fd resolution passes).
    ``lineage``: (pid, life_start_ts, anc_pid, anc_name, anc_exe, anc_exepath,
    anc_cmdline, anc_sid, carry_key, carry_life): per carried process, its
    ancestry lists (element 1 itself), the start of its life, and the key and
    life of the incarnation it continues (analyzer.state.carry). A carried
    process is a ``proc`` row of the first segment (seg 0) whose pid is in
    ``lineage``.
    """

    fds: str
    lineage: str
    # Set: a carried fd's row keeps the id fd_id + fd_id_shift (at most 0,
    # below the build's own ids), so that the range builder's id offset maps
    # it back to the row it continues and the row is not stored twice.
    # Unset: the rows are numbered as the build's own.
    fd_id_shift: int | None = None

    def processes(self) -> str:
        """The carried incarnations: key, life_key and their lineage row."""
        return (
            f"SELECT i.key, i.life_key, l.* FROM inc i JOIN {self.lineage} l ON l.pid = i.pid "
            "WHERE i.src = 'snap' AND i.seg = 0"
        )


def later_snapshot_sql(segment_path: str) -> str:
    """The process rows of the snapshot of the segment after the ones built
    (see `materialize`'s `later`), at the order that segment's snapshot has."""
    source = f"read_parquet('{_quote(segment_path)}')"
    return (
        f"SELECT {_raw_columns(_SNAPSHOT_NAMES)}, "
        f"(SELECT min(evt_num) FROM {source} WHERE kind = 'evt') * 4 AS ord "
        f"FROM {source} WHERE kind = 'proc' AND (tid IS NULL OR tid = pid)"
    )


def materialize(
    con: duckdb.DuckDBPyConnection,
    capture: Capture,
    warnings: list[str],
    carried: Carried | None = None,
    later: str | None = None,
) -> list[str]:
    """Build every state table of `capture` into `con`; returns the names of the segments read.

    `later`: a relation of `later_snapshot_sql` rows. A build of part of a
    capture (analyzer/state/ranges.py) passes the next segment's snapshot:
    as in a build of the whole capture, it fills what events could not tell
    about the processes still alive at the end.
    """
    loaded = _load_segments(con, capture, warnings)
    good = loaded.names
    if good:
        _order_segments(con, loaded)
        _build_incarnations(con, later, loaded.parent_forks)
        if carried is not None:
            con.execute(
                "UPDATE life_start SET life_start_ts = c.life_start_ts FROM ("
                + carried.processes()
                + ") c WHERE life_start.life_key = c.life_key AND c.life_start_ts IS NOT NULL"
            )
        _build_ancestry(con, carried)
        _build_lives(con)
        _build_own_rows(con, _present(con), carried)
        # the last reader of `rows`: it is dropped before the fd table grows
        _build_names(con)
        _resolve_generations(con)
        _build_timeline(con)
        _build_event_keys(con, capture, good)
    return good


@dataclass(frozen=True)
class _Loaded:
    """The segments read, and what the ordering steps have to do for them."""

    names: list[str]
    parent_forks: int  # parent's fork returns (without any, the fork ordering steps have nothing to do)
    eventless: int  # segments without events (their snapshot's order is known only once all are read)


def _load_segments(con: duckdb.DuckDBPyConnection, capture: Capture, warnings: list[str]) -> _Loaded:
    """Read the segments' state rows."""
    con.execute(
        "CREATE TABLE segments (seg INTEGER, name VARCHAR, path VARCHAR, size BIGINT, mtime_ns BIGINT, "
        "host VARCHAR, seq BIGINT, min_evt BIGINT, max_evt BIGINT, base BIGINT)"
    )
    good = []
    parent_fork_count = eventless = 0
    created = False
    for seg_id, seg in enumerate(capture.segments):
        source = f"read_parquet('{_quote(str(seg.path))}')"
        # Only what changes state: a failed call changes nothing (but a
        # non-blocking connect in progress does), fcntl only when it dups.
        state_filter = (
            f"kind <> 'evt' OR (syscall IN {sql_list(STATE_SYSCALLS)} "
            f"AND (res >= 0 OR syscall = 'procexit' OR (syscall = 'connect' AND res = -{EINPROGRESS})) "
            f"AND (syscall <> 'fcntl' OR arg1 IN ({F_DUPFD}, {F_DUPFD_CLOEXEC})))"
        )
        parent_forks = f"kind = 'evt' AND syscall IN {sql_list(FORK_SYSCALLS)} AND res > 0"
        stats_sql = (f"SELECT min(evt_num), max(evt_num), count(*) FILTER (WHERE {parent_forks}) "
                     f"FROM {source} WHERE kind = 'evt'")

        def state_selects(first_evt: int | None) -> tuple[str, str]:
            """The state rows and the image rows. Events at their own order; snapshot rows just before
            the segment's first event (a segment without events: its base, set in _order_segments)."""
            snapshot_ord = "NULL" if first_evt is None else str(int(first_evt) * 4)
            order = f"CASE WHEN kind = 'evt' THEN evt_num * 4 + 2 ELSE {snapshot_ord} END AS ord"
            return (
                f"SELECT {seg_id}::INTEGER AS seg, {_raw_columns(_ROW_NAMES)}, {order} FROM {source} WHERE {state_filter}",
                f"SELECT {seg_id}::INTEGER AS seg, {_raw_columns(_RAW_NAMES)}, {order} FROM {source} "
                f"WHERE kind IN ('proc', 'user', 'group', 'cgroup') "
                f"OR (kind = 'evt' AND syscall IN {sql_list(EXEC_SYSCALLS)} AND res = 0)",
            )

        # One row per pid: its first event in the segment, a process seen
        # without fork or snapshot still resolves from it.
        select_seen = (
            f"SELECT {seg_id}::INTEGER AS seg, {_raw_columns(_ROW_NAMES, _SEEN_NAMES, kind=repr('seen'))}, "
            f"evt_num * 4 + 2 FROM (SELECT {', '.join(_SEEN_NAMES)} FROM {source} "
            "WHERE kind = 'evt') QUALIFY row_number() OVER (PARTITION BY pid ORDER BY evt_num) = 1"
        )
        # The parent's side of a fork, with its thread's previous event: the
        # fork began after it (see _drop_late_fork_returns).
        select_fork_prev = (
            f"SELECT f.evt_num, p.evt_num AS prev_evt FROM (SELECT tid, evt_num FROM {source} WHERE {parent_forks}) f "
            f"ASOF LEFT JOIN (SELECT tid, evt_num FROM {source} WHERE kind = 'evt' "
            f"AND tid IN (SELECT tid FROM {source} WHERE {parent_forks})) p ON p.tid = f.tid AND f.evt_num > p.evt_num"
        )
        try:
            con.execute("BEGIN")
            stats = con.execute(stats_sql).fetchall()[0]
            select_state, select_images = state_selects(stats[0])
            if not created:
                con.execute(f"CREATE TABLE rows AS {select_state} UNION ALL {select_seen}")
                con.execute(f"CREATE TABLE images AS {select_images}")
                # filled only for segments with a parent's fork return (its ASOF join costs more than its rows)
                con.execute("CREATE TABLE fork_prev (evt_num BIGINT, prev_evt BIGINT)")
                created = True
            else:
                con.execute(f"INSERT INTO rows {select_state} UNION ALL {select_seen}")
                con.execute(f"INSERT INTO images {select_images}")
            if stats[2]:
                con.execute(f"INSERT INTO fork_prev {select_fork_prev}")
            con.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [seg_id, seg.name, str(seg.path), seg.size, seg.mtime_ns, seg.host, seg.seq, stats[0], stats[1]],
            )
            con.execute("COMMIT")
            good.append(seg.name)
            parent_fork_count += stats[2]
            eventless += stats[0] is None
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            if not created:
                # The failed CREATE rolled back with the transaction.
                pass
            warnings.append(f"skipping corrupt segment {seg.path}: {str(exc).splitlines()[0]}")
    return _Loaded(good, parent_fork_count, eventless)


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _order_segments(con: duckdb.DuckDBPyConnection, loaded: _Loaded) -> None:
    # A segment's snapshot sits just before its first event; a segment without
    # events takes the next segment's first event (or follows the last one).
    con.execute(
        """
        UPDATE segments SET base = b.base FROM (
            SELECT seg, coalesce(
                min_evt,
                min(min_evt) OVER (ORDER BY seq, name ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING),
                max(max_evt) OVER (ORDER BY seq, name ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 1,
                0) AS base
            FROM segments) b
        WHERE segments.seg = b.seg
        """
    )
    if loaded.eventless:  # the other segments' snapshot rows were ordered as they were read
        for table in ("rows", "images"):
            con.execute(f"UPDATE {table} SET ord = s.base * 4 FROM segments s WHERE {table}.ord IS NULL AND {table}.seg = s.seg")
    # A parent's fork return: the order its fork began after (its thread's
    # previous event in the segment; else, the segment's snapshot, where a
    # child that ran first and is still alive is listed). Never further back:
    # a build starting at a segment (a range, a follower's batch) sees no
    # further back, and an older start of the pid is a reuse, not the child.
    if not loaded.parent_forks:
        con.execute("CREATE TABLE fork_origin (fork_evt BIGINT, fork_from BIGINT)")
    else:
        con.execute(
            f"""
        CREATE TABLE fork_origin AS
        SELECT r.evt_num AS fork_evt, coalesce(fp.prev_evt * 4 + 2, s.base * 4) AS fork_from
        FROM (SELECT seg, evt_num FROM rows WHERE kind = 'evt' AND syscall IN {sql_list(FORK_SYSCALLS)} AND res > 0) r
        JOIN segments s USING (seg)
        LEFT JOIN fork_prev fp ON fp.evt_num = r.evt_num
        """
        )
    con.execute("DROP TABLE fork_prev")


_IMAGE = (
    "exepath, argv, env, loginuid, tty, sid, pgid, vpid, proc_start_ts, "
    "cap_effective, cap_permitted, cap_inheritable, exe_from_memfd, exe_upper_layer"
)
_NO_IMAGE = ", ".join(f"NULL AS {c}" for c in _IMAGE.split(", "))


def _build_incarnations(con: duckdb.DuckDBPyConnection, later: str | None, parent_forks: int) -> None:
    """Process incarnations from fork/exec/exit and the soft starts (snapshot, first sighting)."""
    forks, execs = sql_list(FORK_SYSCALLS), sql_list(EXEC_SYSCALLS)
    common = "ts, seg, comm, uid, gid, container_id, cgroup_id, cwd"
    con.execute(
        f"""
        CREATE TABLE bounds AS
        -- the parent's side of a fork: the child is `res`. In a container the
        -- return value is the child's pid in that namespace, so only host
        -- processes use it; the child's own side (res = 0) covers the rest.
        SELECT res::INTEGER AS pid, ord, 0 AS prio, 'fork' AS src, pid AS parent_pid, {common}, {_NO_IMAGE},
               fork_from
        FROM rows LEFT JOIN fork_origin ON fork_evt = evt_num WHERE kind = 'evt' AND syscall IN {forks} AND res > 0
          AND (coalesce(flags, 0) & {CLONE_THREAD}) = 0 AND coalesce(container_id, 'host') = 'host'
        UNION ALL
        SELECT pid, ord, 0, 'fork', ppid, {common}, {_NO_IMAGE}, NULL
        FROM rows WHERE kind = 'evt' AND syscall IN {forks} AND res = 0 AND pid = tid
        UNION ALL
        SELECT pid, ord, 1, 'exec', ppid, {common}, {_IMAGE}, NULL
        FROM images WHERE kind = 'evt' AND syscall IN {execs} AND res = 0
        UNION ALL
        SELECT pid, ord, 2, 'snap', ppid, {common}, {_IMAGE}, NULL
        FROM images WHERE kind = 'proc' AND (tid IS NULL OR tid = pid)
        UNION ALL
        SELECT pid, ord, 2, 'seen', ppid, {common}, {_NO_IMAGE}, NULL
        FROM rows WHERE kind = 'seen'
        UNION ALL
        SELECT pid, ord, 3, 'exit', NULL, {common}, {_NO_IMAGE}, NULL
        FROM rows WHERE kind = 'evt' AND syscall = 'procexit' AND pid = tid
        """
    )
    if parent_forks:
        _drop_late_fork_returns(con)
    # A fork or exec always starts an image; a snapshot row or a first
    # sighting only when no process is known to be alive with that pid (they
    # fill gaps, never duplicate); an exit ends the current one.
    con.execute(
        """
        CREATE TABLE eff AS
        SELECT * FROM (
            SELECT *, lag(src) OVER (PARTITION BY pid ORDER BY ord, prio) AS prev_src FROM bounds)
        WHERE (src = 'exec')
           OR (src = 'fork' AND (prev_src IS NULL OR prev_src IN ('exit', 'snap', 'seen')))
           OR (src IN ('snap', 'seen') AND (prev_src IS NULL OR prev_src = 'exit'))
           OR (src = 'exit' AND prev_src IS NOT NULL AND prev_src <> 'exit')
        """
    )
    con.execute(
        """
        CREATE TABLE starts AS
        SELECT row_number() OVER (ORDER BY ord, pid)::BIGINT AS key, *
        FROM (
            SELECT *, lead(ord) OVER w AS next_ord, lead(src) OVER w AS next_src, lead(ts) OVER w AS next_ts
            FROM eff WINDOW w AS (PARTITION BY pid ORDER BY ord, prio))
        WHERE src <> 'exit'
        """
    )
    # Parent: the parent pid's incarnation alive at this start. Previous image:
    # the incarnation this exec replaced. Life: the fork or soft start that
    # began this pid's run (execs keep the life, and with it cwd and fds).
    con.execute(
        """
        CREATE TABLE inc0 AS
        SELECT s.*,
               p.key AS parent_key,
               CASE WHEN s.src = 'exec' AND lag(s.next_ord) OVER w = s.ord THEN lag(s.key) OVER w END AS prev_key,
               coalesce(last_value(CASE WHEN s.src <> 'exec' THEN s.key END IGNORE NULLS) OVER
                        (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), s.key) AS life_key
        FROM starts s ASOF LEFT JOIN starts p ON p.pid = s.parent_pid AND s.ord >= p.ord
        WINDOW w AS (PARTITION BY s.pid ORDER BY s.ord, s.prio)
        """
    )
    # A forked child runs its parent's image until it execs; follow forks up
    # to the image that an exec or a snapshot described.
    con.execute(
        f"""
        CREATE TABLE image_of AS
        WITH RECURSIVE img(key, img_key, depth) AS (
            SELECT key, key, 0 FROM inc0 WHERE src <> 'fork' OR parent_key IS NULL
            UNION ALL
            SELECT c.key, img.img_key, img.depth + 1 FROM inc0 c JOIN img ON c.parent_key = img.key
            WHERE c.src = 'fork' AND img.depth < {_MAX_GENERATIONS})
        SELECT key, img_key FROM img
        """
    )
    # Snapshot rows of later segments fill what events could not tell.
    later_rows = "" if later is None else (
        f" UNION ALL BY NAME SELECT pid, ord, 2 AS prio, 'snap' AS src, ppid AS parent_pid, ts, -1 AS seg, "
        f"comm, uid, gid, container_id, cgroup_id, cwd, {_IMAGE}, NULL::BIGINT AS fork_from FROM {later}"
    )
    con.execute(
        f"""
        CREATE TABLE snapfill AS
        SELECT i.key, arg_min(b, b.ord) AS snap FROM (
            SELECT * FROM bounds WHERE src = 'snap'{later_rows}) b
        ASOF JOIN starts i ON i.pid = b.pid AND b.ord >= i.ord
        WHERE i.next_ord IS NULL OR b.ord < i.next_ord
        GROUP BY i.key
        """
    )
    # A forked child runs the image as its image incarnation is known (with
    # that one's later snapshot), else as its own later snapshot says: what a
    # build starting later gets from the carried parent.
    fill = ", ".join(
        f"coalesce(m.{c}, mf.snap.{c}, f.snap.{c}) AS {c}" for c in _IMAGE.split(", ") if c not in ("vpid", "proc_start_ts")
    )
    con.execute(
        f"""
        CREATE TABLE inc AS
        SELECT i.key, i.pid, i.src, i.ord AS start_ord, i.ts AS start_ts, i.next_ord AS end_ord,
               CASE WHEN i.next_src IS NOT NULL THEN i.next_ts END AS end_ts,
               i.next_src = 'exit' AS exited,
               i.parent_pid AS ppid, i.parent_key, i.prev_key, i.life_key, i.seg,
               coalesce(i.comm, f.snap.comm) AS comm,
               i.uid, i.gid, i.container_id, i.cgroup_id,
               {fill},
               coalesce(i.vpid, f.snap.vpid, CASE WHEN coalesce(i.container_id, 'host') = 'host' THEN i.pid END) AS vpid,
               i.proc_start_ts AS own_start_ts, f.snap.proc_start_ts AS snap_start_ts,
               coalesce(io.img_key, i.key) AS img_key
        FROM inc0 i
        LEFT JOIN image_of io ON io.key = i.key
        LEFT JOIN inc0 m ON m.key = coalesce(io.img_key, i.key)
        LEFT JOIN snapfill mf ON mf.key = coalesce(io.img_key, i.key)
        LEFT JOIN snapfill f ON f.key = i.key
        """
    )
    # exec keeps the session, process group, tty and login uid; a forked
    # child inherits them: fill what the events did not carry, to a fixpoint
    # (each round reaches one more fork/exec generation).
    carried = ("loginuid", "tty", "sid", "pgid")
    for _ in range(_MAX_GENERATIONS):
        changed = con.execute(
            "UPDATE inc SET "
            + ", ".join(f"{c} = coalesce(inc.{c}, k.{c})" for c in carried)
            + " FROM (SELECT i.key, "
            + ", ".join(
                f"coalesce(last_value(i.{c} IGNORE NULLS) OVER (PARTITION BY i.life_key ORDER BY i.start_ord "
                f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), m.{c}) AS {c}"
                for c in carried
            )
            + " FROM inc i LEFT JOIN inc m ON m.key = i.img_key AND i.src = 'fork') k "
            + "WHERE inc.key = k.key AND ("
            + " OR ".join(f"(inc.{c} IS NULL AND k.{c} IS NOT NULL)" for c in carried)
            + ")"
        ).fetchall()[0][0]
        if not changed:
            break
    # Process creation time (proc.duration counts from it): the fork, or what
    # an exec event or a snapshot says, carried across execs within a life.
    con.execute(
        """
        CREATE TABLE life_start AS
        SELECT life_key, coalesce(
                   max(CASE WHEN src = 'fork' THEN start_ts END),
                   min(own_start_ts), min(snap_start_ts)) AS life_start_ts
        FROM inc GROUP BY life_key
        """
    )
    for table in ("fork_origin", "bounds", "eff", "starts", "inc0", "image_of", "snapfill"):
        con.execute(f"DROP TABLE {table}")


def _drop_late_fork_returns(con: duckdb.DuckDBPyConnection) -> None:
    """A parent's fork return can arrive after its child ran (vfork: the
    child execs and may exit before the parent resumes): when the child pid
    was already seen starting since the fork began, the child's own rows
    describe it and the return must not start another image."""
    con.execute(
        """
        DELETE FROM bounds WHERE fork_from IS NOT NULL AND EXISTS (
            SELECT 1 FROM bounds c
            WHERE c.pid = bounds.pid AND c.fork_from IS NULL AND c.src <> 'exit'
              AND c.ord >= bounds.fork_from AND c.ord < bounds.ord)
        """
    )


# Each ancestry list and the incarnation column it lists ({t}: the table alias).
_ANCESTRY_VALUES = {
    "anc_pid": "{t}.pid", "anc_name": "{t}.comm", "anc_exe": "{t}.argv[1]", "anc_exepath": "{t}.exepath",
    "anc_cmdline": "trace_cmdline({t}.comm, {t}.argv)", "anc_sid": "{t}.sid",
}


def _build_ancestry(con: duckdb.DuckDBPyConnection, carried: Carried | None = None) -> None:
    """Lists from the process itself (element 1) up to the oldest known ancestor.

    Built top-down from the roots: a child's lists are its own values before
    its parent's, so each incarnation is one row (no per-ancestor rows to
    regroup). Incarnations whose chain loops (pid reuse racing a snapshot)
    are unreachable from a root; they walk up their chain until it repeats.
    """
    own = {name: expr.format for name, expr in _ANCESTRY_VALUES.items()}  # each over a table alias
    con.execute(
        f"""
        CREATE TABLE ancestry AS
        WITH RECURSIVE down(key, _top, {", ".join(own)}) AS (
            SELECT key, key, {", ".join(f"[{value(t='inc')}]" for value in own.values())}
            FROM inc WHERE parent_key IS NULL
            UNION ALL
            SELECT c.key, d._top, {", ".join(f"list_prepend({value(t='c')}, d.{name})" for name, value in own.items())}
            FROM down d JOIN inc c ON c.parent_key = d.key)
        SELECT * FROM down
        """
    )
    unreached = con.execute("SELECT count(*) FROM inc WHERE key NOT IN (SELECT key FROM ancestry)").fetchall()[0][0]
    if unreached:
        _walk_looping_chains(con, own)
    if carried is not None:
        # A chain that reaches a carried process goes on with its carried ancestry.
        con.execute(
            "UPDATE ancestry SET "
            + ", ".join(f"{c} = ancestry.{c} || c.{c}[2:]" for c in _ANCESTRY_VALUES)
            + f" FROM ({carried.processes()}) c WHERE ancestry._top = c.key"
        )
    con.execute("ALTER TABLE ancestry DROP COLUMN _top")
    # proc.sname: libsinsp climbs while the ancestors share the session id and
    # names the last one reached (the session leader).
    con.execute(
        """
        ALTER TABLE ancestry ADD COLUMN sname VARCHAR;
        UPDATE ancestry SET sname = CASE WHEN anc_sid[1] IS NOT NULL THEN anc_name[coalesce(
            list_position(list_transform(anc_sid, lambda s: s IS DISTINCT FROM anc_sid[1]), true) - 1,
            len(anc_name))] END;
        """
    )


def _walk_looping_chains(con: duckdb.DuckDBPyConnection, own: dict[str, Callable[..., str]]) -> None:
    """Ancestry of the incarnations no root reaches: each walks up its chain until it repeats."""
    con.execute(
        f"""
        INSERT INTO ancestry BY NAME
        WITH RECURSIVE anc(key, depth, akey, seen) AS (
            SELECT key, 1, key, [key] FROM inc WHERE key NOT IN (SELECT key FROM ancestry)
            UNION ALL
            SELECT a.key, a.depth + 1, p.parent_key, list_append(a.seen, p.parent_key)
            FROM anc a JOIN inc p ON p.key = a.akey
            WHERE p.parent_key IS NOT NULL AND NOT list_contains(a.seen, p.parent_key)
              AND a.depth < {_MAX_GENERATIONS})
        SELECT a.key, {", ".join(f"list({value(t='p')} ORDER BY a.depth) AS {name}" for name, value in own.items())},
               arg_max(a.akey, a.depth) AS _top
        FROM anc a JOIN inc p ON p.key = a.akey
        GROUP BY a.key
        """
    )


def _build_lives(con: duckdb.DuckDBPyConnection) -> None:
    """A life is one pid's run from fork (or first sighting) to exit; generation = fork depth."""
    con.execute(
        """
        CREATE TABLE lives AS
        SELECT i.key AS life, i.pid, i.start_ord, i.src,
               CASE WHEN i.src = 'fork' THEN p.life_key END AS parent_life
        FROM inc i LEFT JOIN inc p ON p.key = i.parent_key
        WHERE i.key = i.life_key
        """
    )
    con.execute(
        f"""
        CREATE TABLE life_gen AS
        WITH RECURSIVE g(life, gen) AS (
            SELECT life, 0 FROM lives WHERE parent_life IS NULL
            UNION ALL
            SELECT l.life, g.gen + 1 FROM lives l JOIN g ON l.parent_life = g.life
            WHERE g.gen < {_MAX_GENERATIONS})
        SELECT l.*, coalesce(g.gen, 0) AS gen
        FROM lives l LEFT JOIN g USING (life)
        """
    )
    con.execute("DROP TABLE lives")


def _with_life(select: str) -> str:
    """Attach the life (and incarnation) alive at each row's (pid, ord): the
    pid's latest incarnation started by then, valid until the pid's next one.
    A hash join on pid with that range: an ASOF join would sort the wide rows."""
    return (
        f"SELECT x.*, i.life_key AS life, i.key AS inc_key FROM ({select}) x "
        "JOIN (SELECT pid, key, life_key, start_ord, "
        "coalesce(lead(start_ord) OVER (PARTITION BY pid ORDER BY start_ord, key), 9223372036854775807) AS until_ord "
        "FROM inc) i ON i.pid = x.pid AND x.ord >= i.start_ord AND x.ord < i.until_ord"
    )


def _present(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """The row kinds and syscalls `rows` holds."""
    return frozenset(value for row in con.execute("SELECT DISTINCT kind, syscall FROM rows").fetchall()
                     for value in row if value is not None)


def _union(branches: list[tuple[tuple[str, ...], str]], present: frozenset[str]) -> str:
    """UNION ALL of the branches that can have rows: the first (its columns are typed as the union's)
    and those reading a syscall or row kind that `present` holds. A branch left out would select
    nothing; binding it costs a small build more than the rows it reads."""
    return "\nUNION ALL\n".join(sql for n, (reads, sql) in enumerate(branches) if n == 0 or present.intersection(reads))


def _build_own_rows(con: duckdb.DuckDBPyConnection, present: frozenset[str], carried: Carried | None = None) -> None:
    """The cwd and fd changes each life makes itself (inheritance comes later). `present`: the row
    kinds and syscalls `rows` holds."""
    cwd_changes = [
        ((), """
            SELECT pid, ord, 0 AS sub, cwd AS value, true AS absolute, NULL::INTEGER AS via_fd FROM rows
            WHERE kind = 'proc' AND cwd IS NOT NULL"""),
        (EXEC_SYSCALLS, f"""
            SELECT pid, ord, 0, cwd, true, NULL FROM rows
            WHERE kind = 'evt' AND syscall IN {sql_list(EXEC_SYSCALLS)} AND res = 0 AND cwd IS NOT NULL"""),
        (("chdir",), """
            SELECT pid, ord, 1, path, starts_with(path, '/'), NULL FROM rows
            WHERE kind = 'evt' AND syscall = 'chdir' AND res = 0 AND path IS NOT NULL"""),
        (("fchdir",), """
            -- fchdir: the directory fd's name, filled in once the fd table is known
            SELECT pid, ord, 1, NULL, true, fd FROM rows
            WHERE kind = 'evt' AND syscall = 'fchdir' AND res = 0 AND fd IS NOT NULL"""),
    ]
    con.execute("CREATE TABLE cwd_own AS " + _with_life(_union(cwd_changes, present)))
    sock_cols = "sock_family, sock_type, sock_proto"
    fd_changes = [
        (OPEN_SYSCALLS, f"""
            -- files: the name is resolved later (it needs the cwd or the dirfd)
            SELECT pid, ord, ts, res::INTEGER AS fd, 'open' AS op,
                   CASE WHEN (coalesce(flags, 0) & {O_DIRECTORY}) <> 0 THEN 'directory' ELSE 'file' END AS type,
                   path AS raw, coalesce(dirfd, {AT_FDCWD}) AS dirfd, NULL::INTEGER AS src_fd,
                   (coalesce(flags, 0) & {O_CLOEXEC}) <> 0 AS cloexec,
                   NULL::SMALLINT AS sock_family, NULL::INTEGER AS sock_type, NULL::INTEGER AS sock_proto,
                   NULL::VARCHAR AS lip, NULL::INTEGER AS lport, NULL::VARCHAR AS rip, NULL::INTEGER AS rport,
                   NULL::BOOLEAN AS is_server, NULL::VARCHAR AS name
            FROM rows WHERE kind = 'evt' AND syscall IN {sql_list(OPEN_SYSCALLS)} AND res >= 0"""),
        (("memfd_create",), """
            SELECT pid, ord, ts, res::INTEGER, 'open', 'memfd', path, NULL, NULL,
                   (coalesce(flags, 0) & 1) <> 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   'memfd:' || coalesce(path, '')
            FROM rows WHERE kind = 'evt' AND syscall = 'memfd_create' AND res >= 0"""),
        (("socket",), f"""
            SELECT pid, ord, ts, res::INTEGER, 'open', trace_sock_fdtype(sock_family), NULL, NULL, NULL,
                   (coalesce(sock_type, 0) & {O_CLOEXEC}) <> 0, {sock_cols},
                   NULL, NULL, NULL, NULL, NULL, CASE WHEN sock_family IN (2, 10) THEN NULL ELSE '' END
            FROM rows WHERE kind = 'evt' AND syscall = 'socket' AND res >= 0"""),
        (("pipe", "pipe2", "socketpair"), f"""
            SELECT pid, ord, ts, unnest([fd, fd2]), 'open', CASE syscall WHEN 'socketpair' THEN 'unix' ELSE 'pipe' END,
                   NULL, NULL, NULL, (coalesce(flags, 0) & {O_CLOEXEC}) <> 0
                       OR (coalesce(sock_type, 0) & {O_CLOEXEC}) <> 0,
                   {sock_cols}, NULL, NULL, NULL, NULL, NULL,
                   -- libsinsp names a pipe pipe:[inode]; the capture has no inode
                   CASE syscall WHEN 'socketpair' THEN '' END
            FROM rows WHERE kind = 'evt' AND syscall IN ('pipe', 'pipe2', 'socketpair') AND res = 0
                 AND fd IS NOT NULL AND fd2 IS NOT NULL"""),
        (("accept", "accept4"), f"""
            -- accept: a new fd on the server side of the connection
            SELECT pid, ord, ts, res::INTEGER, 'accept', trace_sock_fdtype(sock_family), NULL, NULL, fd,
                   (coalesce(flags, 0) & {O_CLOEXEC}) <> 0, {sock_cols},
                   local_ip, local_port, addr_ip, addr_port, true,
                   CASE WHEN sock_family = 1 THEN coalesce(addr_path, '') END
            FROM rows WHERE kind = 'evt' AND syscall IN ('accept', 'accept4') AND res >= 0"""),
        (("dup", "dup2", "dup3", "fcntl"), f"""
            -- dup*: the new fd gets a copy of the old fd's description
            SELECT pid, ord, ts, res::INTEGER, 'dup', NULL, NULL, NULL, fd,
                   (syscall = 'dup3' AND (coalesce(flags, 0) & {O_CLOEXEC}) <> 0)
                       OR (syscall = 'fcntl' AND arg1 = {F_DUPFD_CLOEXEC}),
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
            FROM rows WHERE kind = 'evt' AND res >= 0 AND fd IS NOT NULL AND res <> fd
                 AND (syscall IN ('dup', 'dup2', 'dup3') OR (syscall = 'fcntl' AND arg1 IN ({F_DUPFD}, {F_DUPFD_CLOEXEC})))"""),
        (("connect",), f"""
            -- connect: the same fd, now with its connection tuple (client side)
            SELECT pid, ord, ts, fd, 'connect', NULL, NULL, NULL, fd, NULL, sock_family, NULL, NULL,
                   local_ip, local_port, addr_ip, addr_port, false,
                   CASE WHEN sock_family = 1 THEN addr_path END
            FROM rows WHERE kind = 'evt' AND syscall = 'connect' AND (res = 0 OR res = -{EINPROGRESS}) AND fd IS NOT NULL"""),
        (("close",), """
            SELECT pid, ord + 1, ts, fd, 'close', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, NULL, NULL
            FROM rows WHERE kind = 'evt' AND syscall = 'close' AND res = 0 AND fd IS NOT NULL"""),
        (("fd",), f"""
            -- what /proc said at the segment start; the role of an established
            -- socket is not in /proc: the side with the lower port is taken as the server
            SELECT pid, ord, ts, fd, 'snap', trace_snapshot_fdtype(path, sock_family, flags), path, NULL, NULL,
                   (coalesce(flags, 0) & {O_CLOEXEC}) <> 0, {sock_cols},
                   local_ip, local_port, addr_ip, addr_port,
                   CASE WHEN sock_family IN (2, 10) THEN coalesce(addr_port, 0) = 0 OR local_port < addr_port END,
                   CASE WHEN sock_family IN (2, 10) THEN NULL ELSE path END
            FROM rows WHERE kind = 'fd' AND fd IS NOT NULL"""),
    ]
    con.execute("CREATE TABLE fd_own AS " + _with_life(_union(fd_changes, present)))
    con.execute("CREATE TABLE cwd_state (life BIGINT, ord BIGINT, cwd VARCHAR, via_fd INTEGER)")
    con.execute(
        "CREATE TABLE fd_state AS SELECT *, NULL::BIGINT AS id, NULL::BIGINT AS src_id, "
        "false AS resolved, false AS name_changed FROM fd_own LIMIT 0"
    )
    con.execute("CREATE SEQUENCE fd_ids")
    if carried is not None:
        _insert_carried_fds(con, carried)


def _insert_carried_fds(con: duckdb.DuckDBPyConnection, carried: Carried) -> None:
    """The carried fds, at the first segment's snapshot: resolved already, they go
    straight into fd_state (the generations' joins only read them)."""
    row_id = _NEXT_ID if carried.fd_id_shift is None else f"x.fd_id + {int(carried.fd_id_shift)} AS id"
    select = f"""
        SELECT c.pid, s.base * 4 AS ord, c.ts, c.fd, 'snap' AS op, c.type, c.raw, c.cloexec,
               c.sock_family, c.sock_type, c.sock_proto, c.lip, c.lport, c.rip, c.rport, c.is_server, c.name,
               c.fd_id
        FROM {carried.fds} c, (SELECT base FROM segments WHERE seg = 0) s"""
    con.execute(
        f"INSERT INTO fd_state BY NAME SELECT x.* EXCLUDE (fd_id), {row_id}, true AS resolved, "
        f"false AS name_changed FROM ({_with_life(select)}) x"
    )


@dataclass(frozen=True)
class _Work:
    """What the steps that only some captures need have to do (a step with nothing to do is skipped:
    a build of a few rows pays per statement, not per row)."""

    fchdirs: bool  # cwd changes through an fd
    dirfds: bool  # *at() opens relative to a directory fd
    execs: bool  # exec (closes the close-on-exec fds)


def _resolve_generations(con: duckdb.DuckDBPyConnection) -> None:
    max_gen, fchdirs, dirfds, execs = con.execute(
        f"""SELECT (SELECT coalesce(max(gen), 0) FROM life_gen),
                   (SELECT count(*) FROM cwd_own WHERE via_fd IS NOT NULL),
                   -- fd_state's dirfds are fd_own's, copied by inheritance
                   (SELECT count(*) FROM fd_own WHERE dirfd <> {AT_FDCWD}),
                   (SELECT count(*) FROM inc WHERE src = 'exec')"""
    ).fetchall()[0]
    work = _Work(fchdirs > 0, dirfds > 0, execs > 0)
    for gen in range(max_gen + 1):
        _resolve_cwd(con, gen)
        _resolve_fds(con, gen, work)
        if work.fchdirs:
            _resolve_fchdir(con, gen)
    # libsinsp names an IP socket client->server; a listening or unconnected
    # one by its local endpoint.
    ip_fds = "type IN ('ipv4', 'ipv6') AND op <> 'close'"
    if con.execute(f"SELECT count(*) FROM fd_state WHERE {ip_fds}").fetchall()[0][0]:
        con.execute(
            f"""
        UPDATE fd_state SET name = CASE
            WHEN rip IS NULL OR (coalesce(rport, 0) = 0 AND rip IN ('0.0.0.0', '::')) THEN trace_endpoint(lip, lport)
            WHEN is_server THEN trace_endpoint(rip, rport) || '->' || trace_endpoint(lip, lport)
            ELSE trace_endpoint(lip, lport) || '->' || trace_endpoint(rip, rport) END
        WHERE {ip_fds}
        """
        )
    con.execute("DROP TABLE cwd_own")
    con.execute("DROP TABLE fd_own")
    con.execute("DROP SEQUENCE fd_ids")


def _resolve_cwd(con: duckdb.DuckDBPyConnection, gen: int) -> None:
    inherited = f"""
        SELECT l.life, l.pid, l.start_ord AS ord, -1 AS sub, c.cwd AS value, true AS absolute, NULL AS via_fd
        FROM (SELECT * FROM life_gen WHERE gen = {gen} AND parent_life IS NOT NULL) l
        ASOF JOIN (SELECT * FROM cwd_state WHERE life IN (SELECT parent_life FROM life_gen WHERE gen = {gen})) c
            ON c.life = l.parent_life AND l.start_ord >= c.ord
        WHERE c.cwd IS NOT NULL
    """ if gen > 0 else (
        "SELECT NULL::BIGINT AS life, NULL::BIGINT AS ord, 0 AS sub, NULL::VARCHAR AS value, true AS absolute, "
        "NULL::INTEGER AS via_fd WHERE false")
    con.execute(
        f"""
        INSERT INTO cwd_state
        WITH r AS (
            SELECT life, ord, sub, value, absolute, via_fd FROM cwd_own
            WHERE life IN (SELECT life FROM life_gen WHERE gen = {gen})
            UNION ALL SELECT life, ord, sub, value, absolute, via_fd FROM ({inherited})),
        g AS (
            SELECT *, sum(absolute::INTEGER) OVER (PARTITION BY life ORDER BY ord, sub ROWS UNBOUNDED PRECEDING) AS grp
            FROM r)
        SELECT life, ord,
               -- an unknown base (fchdir, before its fd is known) leaves the cwd unknown
               CASE WHEN grp > 0 AND first_value(value) OVER (PARTITION BY life, grp ORDER BY ord, sub) IS NOT NULL
                    THEN trace_normpath(array_to_string(
                        list(value) OVER (PARTITION BY life, grp ORDER BY ord, sub ROWS UNBOUNDED PRECEDING), '/'))
               END,
               via_fd
        FROM g
        """
    )


def _resolve_fchdir(con: duckdb.DuckDBPyConnection, gen: int) -> None:
    """fchdir moves to the directory its fd names (relative chdirs after it stay unknown)."""
    con.execute(
        f"""
        UPDATE cwd_state SET cwd = r.name FROM (
            SELECT c.life, c.ord, CASE WHEN f.op <> 'close' THEN f.name END AS name
            FROM (SELECT * FROM cwd_state WHERE via_fd IS NOT NULL
                  AND life IN (SELECT life FROM life_gen WHERE gen = {gen})) c
            ASOF JOIN (SELECT * FROM fd_state WHERE life IN (SELECT life FROM life_gen WHERE gen = {gen})) f
                ON f.life = c.life AND f.fd = c.via_fd AND c.ord > f.ord) r
        WHERE cwd_state.life = r.life AND cwd_state.ord = r.ord AND cwd_state.via_fd IS NOT NULL
        """
    )


def _resolve_fds(con: duckdb.DuckDBPyConnection, gen: int, work: _Work) -> None:
    # Every join below is on the life: reading only this generation's rows
    # (and its parents') keeps each statement to what it can match.
    lives = f"(SELECT life FROM life_gen WHERE gen = {gen})"
    parents = f"(SELECT parent_life FROM life_gen WHERE gen = {gen})"
    if gen > 0:
        # A forked child starts with a copy of every fd its parent had open:
        # for each fd number the parent ever used, its state at the fork.
        con.execute(
            f"""
            INSERT INTO fd_state BY NAME
            SELECT c.pid, c.start_ord AS ord, s.ts, s.fd, 'inherit' AS op, s.type, s.raw, s.dirfd, NULL AS src_fd,
                   s.cloexec, s.sock_family, s.sock_type, s.sock_proto, s.lip, s.lport, s.rip, s.rport,
                   s.is_server, s.name, c.life, c.life AS inc_key, true AS resolved, false AS name_changed,
                   {_NEXT_ID}
            FROM (
                SELECT l.life, l.pid, l.start_ord, l.parent_life, d.fd
                FROM (SELECT * FROM life_gen WHERE gen = {gen} AND parent_life IS NOT NULL) l
                JOIN (SELECT DISTINCT life, fd FROM fd_state WHERE life IN {parents}) d ON d.life = l.parent_life) c
            ASOF JOIN (SELECT * FROM fd_state WHERE life IN {parents}) s
                ON s.life = c.parent_life AND s.fd = c.fd AND c.start_ord > s.ord
            WHERE s.op <> 'close'
            """
        )
    con.execute(
        f"""
        INSERT INTO fd_state BY NAME
        SELECT f.* REPLACE (
                   CASE WHEN f.type IN ('file', 'directory') AND (starts_with(f.raw, '/') OR f.dirfd = {AT_FDCWD})
                        THEN trace_resolve(c.cwd, f.raw)
                        ELSE f.name END AS name),
               f.op IN ('open', 'snap', 'close') AS resolved, false AS name_changed, {_NEXT_ID}
        FROM (SELECT * FROM fd_own WHERE life IN {lives}) f
        ASOF LEFT JOIN (SELECT * FROM cwd_state WHERE life IN {lives}) c ON c.life = f.life AND f.ord >= c.ord
        """
    )
    # *at() opens relative to a directory fd, itself perhaps opened that way.
    for _ in range(_MAX_DIRFD_PASSES if work.dirfds else 0):
        changed = con.execute(
            f"""
            UPDATE fd_state SET name = r.name FROM (
                SELECT f.id, trace_resolve(CASE WHEN d.op <> 'close' THEN d.name END, f.raw) AS name
                FROM (SELECT * FROM fd_state WHERE life IN {lives} AND name IS NULL AND raw IS NOT NULL
                      AND type IN ('file', 'directory') AND dirfd <> {AT_FDCWD}) f
                ASOF JOIN (SELECT * FROM fd_state WHERE life IN {lives}) d
                    ON d.life = f.life AND d.fd = f.dirfd AND f.ord > d.ord) r
            WHERE fd_state.id = r.id AND r.name IS NOT NULL
            """
        ).fetchall()[0][0]
        if not changed:
            break
    # dup and connect copy the description of the fd they act on: find it,
    # then copy along chains (connect then dup2 onto 0, 1, 2).
    if _unresolved(con):
        _copy_descriptions(con, lives)
    if work.execs:
        _close_on_exec(con, lives)


def _unresolved(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM fd_state WHERE NOT resolved").fetchall()[0][0]


def _copy_descriptions(con: duckdb.DuckDBPyConnection, lives: str) -> None:
    """dup, connect and accept rows take the description of the fd they act on, along chains."""
    con.execute(
        f"""
        UPDATE fd_state SET src_id = r.sid FROM (
            SELECT f.id, CASE WHEN s.op <> 'close' THEN s.id END AS sid
            FROM (SELECT * FROM fd_state WHERE life IN {lives} AND NOT resolved) f
            ASOF JOIN (SELECT * FROM fd_state WHERE life IN {lives}) s
                ON s.life = f.life AND s.fd = f.src_fd AND f.ord > s.ord) r
        WHERE fd_state.id = r.id
        """
    )
    while True:
        changed = con.execute(
            """
            UPDATE fd_state SET
                resolved = true,
                type = CASE WHEN fd_state.op = 'accept' THEN coalesce(fd_state.type, s.type)
                            WHEN fd_state.op = 'connect' THEN coalesce(s.type, trace_sock_fdtype(fd_state.sock_family))
                            ELSE s.type END,
                raw = s.raw,
                sock_family = coalesce(fd_state.sock_family, s.sock_family),
                sock_type = coalesce(fd_state.sock_type, s.sock_type),
                sock_proto = coalesce(fd_state.sock_proto, s.sock_proto),
                lip = CASE WHEN own THEN fd_state.lip ELSE s.lip END,
                lport = CASE WHEN own THEN fd_state.lport ELSE s.lport END,
                rip = CASE WHEN own THEN fd_state.rip ELSE s.rip END,
                rport = CASE WHEN own THEN fd_state.rport ELSE s.rport END,
                is_server = CASE WHEN own THEN fd_state.is_server ELSE s.is_server END,
                name = CASE WHEN own THEN coalesce(fd_state.name, s.name) ELSE s.name END,
                name_changed = fd_state.op = 'connect',
                cloexec = coalesce(fd_state.cloexec, s.cloexec)
            FROM (SELECT f.id, f.op IN ('connect', 'accept') AS own, src.* EXCLUDE (id)
                  FROM (SELECT id, op, src_id FROM fd_state WHERE NOT resolved) f
                  LEFT JOIN (SELECT * FROM fd_state WHERE id IN (SELECT src_id FROM fd_state WHERE NOT resolved)) src
                      ON src.id = f.src_id
                  WHERE f.src_id IS NULL OR src.resolved) s
            WHERE fd_state.id = s.id
            """
        ).fetchall()[0][0]
        if not changed or not _unresolved(con):
            break


def _close_on_exec(con: duckdb.DuckDBPyConnection, lives: str) -> None:
    """exec closes every fd marked close-on-exec."""
    execs = f"SELECT life_key FROM inc WHERE src = 'exec' AND life_key IN {lives}"
    if not con.execute(f"SELECT count(*) FROM fd_state WHERE cloexec AND life IN ({execs})").fetchall()[0][0]:
        return  # no close-on-exec fd in a life that execs
    con.execute(
        f"""
        INSERT INTO fd_state BY NAME
        SELECT c.pid, c.start_ord + 1 AS ord, c.start_ts AS ts, c.fd, 'close' AS op, c.life, c.key AS inc_key,
               true AS resolved, false AS name_changed, {_NEXT_ID}
        FROM (
            SELECT i.key, i.pid, i.start_ord, i.start_ts, i.life_key AS life, d.fd
            FROM (SELECT * FROM inc WHERE src = 'exec' AND life_key IN {lives}) i
            JOIN (SELECT DISTINCT life, fd FROM fd_state WHERE life IN {lives} AND cloexec) d ON d.life = i.life_key) c
        ASOF JOIN (SELECT * FROM fd_state WHERE life IN {lives}) s ON s.life = c.life AND s.fd = c.fd AND c.start_ord > s.ord
        WHERE s.op <> 'close' AND s.cloexec
        """
    )


def _build_timeline(con: duckdb.DuckDBPyConnection) -> None:
    """One row per change of a pid's incarnation or cwd, both carried forward,
    valid over [ord, next_ord): an event's process and cwd are one row, found
    once per event by _build_event_keys."""
    con.execute(
        """
        CREATE TABLE timeline AS
        WITH changes AS (
            SELECT pid, start_ord AS ord, 0 AS prio, key, life_key AS life, NULL::VARCHAR AS cwd FROM inc
            UNION ALL
            SELECT l.pid, c.ord, 1, NULL, c.life, c.cwd FROM cwd_state c JOIN inc l ON l.key = c.life),
        keyed AS (
            SELECT pid, ord, prio, cwd, prio = 0 AS is_start,
                   last_value(key IGNORE NULLS) OVER w AS key,
                   last_value(life IGNORE NULLS) OVER w AS life
            FROM changes WINDOW w AS (PARTITION BY pid ORDER BY ord, prio ROWS UNBOUNDED PRECEDING))
        SELECT *, coalesce(lead(ord) OVER (PARTITION BY pid ORDER BY ord), 9223372036854775807) AS next_ord,
               row_number() OVER () AS id
        FROM (
            SELECT pid, ord, key, life,
                   last_value(cwd IGNORE NULLS) OVER (PARTITION BY life ORDER BY ord, prio ROWS UNBOUNDED PRECEDING) AS cwd
            FROM keyed
            QUALIFY row_number() OVER (PARTITION BY pid, ord ORDER BY prio DESC) = 1)
        """
    )


def _build_event_keys(con: duckdb.DuckDBPyConnection, capture: Capture, good: list[str]) -> None:
    """Per segment, one row per Parquet row in file order: the timeline row
    (process, cwd) and the fd_state row (fd) the event sees. The events view
    stitches them to the rows by position and reaches the state with hash
    joins on these unique ids, instead of ASOF-joining every event on every
    scan. Built a segment at a time against only the state rows in force
    during that segment (those that start before its last event and end after
    its first): the open fds and live processes, not the whole history, so
    the pass stays linear in segments."""
    # until_ord: the next change of the same (pid, fd) at a later order; rows
    # tied on ord share it, so a segment sees all of a tie or none of it.
    con.execute(
        """
        CREATE TEMP TABLE fd_span AS
        SELECT pid, fd, ord, id,
               min(ord) OVER (PARTITION BY pid, fd ORDER BY ord RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
                   AS until_ord
        FROM fd_state
        """
    )
    # the key rows must come out in the order they are sorted into
    preserve = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")
    try:
        spans = dict(con.execute("SELECT name, [min_evt * 4 + 2, max_evt * 4 + 2] FROM segments").fetchall())
        for seg in capture.segments:
            if seg.name not in good:
                continue
            lo, hi = spans[seg.name]
            in_force = "false" if lo is None else f"ord <= {int(hi)} AND coalesce({{end}}, {int(hi) + 1}) > {int(lo)}"
            source = f"read_parquet('{_quote(str(seg.path))}', file_row_number = true)"
            con.execute(
                f"""
                CREATE TABLE {event_keys_table(seg.name)} AS
                SELECT w.id AS timeline_id, f.id AS fd_id
                FROM (SELECT file_row_number AS rn, pid, CASE WHEN kind = 'evt' THEN evt_num * 4 + 2 END AS ord,
                             CASE WHEN kind = 'evt' THEN {lookup_fd_sql("r")} END AS lookup_fd
                      FROM {source} r) e
                ASOF LEFT JOIN (SELECT pid, fd, ord, id FROM fd_span WHERE {in_force.format(end="until_ord")}) f
                    ON f.pid = e.pid AND f.fd = e.lookup_fd AND e.ord >= f.ord
                LEFT JOIN (SELECT pid, ord, next_ord, id FROM timeline WHERE {in_force.format(end="next_ord")}) w
                    ON w.pid = e.pid AND e.ord >= w.ord AND e.ord < w.next_ord
                ORDER BY e.rn
                """
            )
    finally:
        con.execute(f"SET preserve_insertion_order = {bool(preserve)}")
        con.execute("DROP TABLE IF EXISTS fd_span")


def _build_names(con: duckdb.DuckDBPyConnection) -> None:
    """Users, groups and containers as the latest snapshot names them."""
    con.execute(
        """
        CREATE TABLE users AS
        SELECT uid, arg_max(user_name, ord) AS name, arg_max(user_home, ord) AS home,
               arg_max(user_shell, ord) AS shell
        FROM images WHERE kind = 'user' AND uid IS NOT NULL GROUP BY uid
        """
    )
    con.execute(
        "CREATE TABLE groups AS SELECT gid, arg_max(group_name, ord) AS name FROM images "
        "WHERE kind = 'group' AND gid IS NOT NULL GROUP BY gid"
    )
    con.execute(
        """
        CREATE TABLE containers AS
        SELECT container_id, arg_max(container_name, ord) AS name, arg_max(container_image, ord) AS image
        FROM images WHERE kind = 'cgroup' AND container_id IS NOT NULL GROUP BY container_id
        """
    )
    con.execute("DROP TABLE images")
    con.execute("DROP TABLE rows")
