"""The `events`, `processes` and `fds` views over materialized captures.

Events stay in their Parquet segments and are read lazily. The build stored,
per segment row in file order, the ids of the timeline row (process
incarnation and cwd alive at the event's (pid, order)) and of the fd table
entry of its fd; each segment is stitched to them by position, and the state
is reached with hash joins on unique ids (no per-scan ASOF join).
Columns are plain expressions, so DuckDB computes only those a query uses
(`_evt_args` and `evt.args` are big CASEs, never evaluated unless asked for).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from analyzer.render import flags as rf
from analyzer.render.params import ArgContext, EvtArgsSql, evt_args_sql
from analyzer.state.sql import (
    AT_FDCWD,
    OPEN_SYSCALLS,
    SQL_STRING_LITERAL,
    event_keys_table,
    fd_num_sql,
    sql_list,
    sql_text,
)
from capture.schema import COLUMN_NAMES

_O_CREAT = 0o100
_CREAT_FLAGS = 0o1 | 0o100 | 0o1000  # creat() is open(O_WRONLY|O_CREAT|O_TRUNC)
_UINT32_MAX = 4294967295
_RAW_COLUMNS = frozenset(COLUMN_NAMES)


@dataclass(frozen=True)
class CaptureSource:
    alias: str  # the attached state database
    paths: tuple[Path, ...]  # readable segments
    hosts: tuple[str, ...]  # the host of each segment
    key_prefix: int


def _key(prefix: int, expr: str) -> str:
    return f"CASE WHEN {expr} IS NOT NULL THEN ({prefix}::BIGINT << 40) | {expr} END"


def events_sql(
    src: CaptureSource,
    since: int | None,
    until: int | None,
    columns: Collection[str] | None = None,
    arg_keys: Collection[str] | None = None,
    rows: str | None = None,
    arg_syscalls: Collection[str] | None = None,
    scoped: bool = False,
) -> str:
    """The events of one capture with their state: an inner query does the
    joins and computes what several fields share (path resolution, errno, fd
    description) once per row; the outer one names the fields.

    `columns` narrows the query to those output columns and to the joins and
    shared values they need (binding the whole ~140-column query costs a
    small follower batch more than running it); None gives every column.
    `arg_keys`: `_evt_args` holds only the parameters of those names (rules
    look up a few; rendering every parameter of every row that reaches the
    rules' filters was ~40 % of a hunt's scan); `evt.args` is then rendered
    apart, in full, only on the rows it is computed for (an alert's).
    `arg_syscalls`: parameters rendered for the rows of those syscalls only
    (analyzer.render.params.evt_args_sql), for a query that keeps no other row.
    `rows`: a relation of raw rows already keyed (capture columns, `filename`,
    `timeline_id`, `fd_id`: analyzer.state.candidates) to resolve instead of
    every segment row stitched to the build's key tables.
    `scoped`: the joins read only the state rows that the key rows of `src`'s
    segments reach (the scan of a segment range: CaptureSet.event_ranges),
    not the whole capture's tables, whose hash joins outgrow memory on a long capture."""
    a = src.alias
    time_filter = ""
    if since is not None:
        time_filter += f" AND r.ts >= {int(since)}"
    if until is not None:
        time_filter += f" AND r.ts < {int(until)}"
    # Each segment's rows are stitched by position to the ids of the timeline
    # and fd_state rows they see (precomputed by the build).
    segments = rows or " UNION ALL ".join(
        f"SELECT * FROM read_parquet({sql_text(str(p))}, filename = true) POSITIONAL JOIN {a}.{event_keys_table(p.name)}"
        for p in src.paths
    )
    # the host of each segment (a capture directory usually has one)
    host_of = {str(p): host for p, host in zip(src.paths, src.hosts)}
    if len(set(host_of.values())) == 1:
        hosts = sql_text(next(iter(host_of.values())))
    else:
        hosts = "map_extract_value(MAP {" + ", ".join(f"{sql_text(k)}: {sql_text(v)}" for k, v in host_of.items()) + "}, r.filename)"
    fields, args = _select_fields(src.key_prefix, arg_keys, arg_syscalls)
    if columns is not None:
        unknown = set(columns) - fields.keys()
        if unknown:
            raise ValueError(f"not columns of the events query: {sorted(unknown)}")
        fields = {name: expr for name, expr in fields.items() if name in columns}
    outer = ",\n  ".join(expr if name in _RAW_COLUMNS else f'{expr} AS "{name}"' for name, expr in fields.items())
    with_args = "_evt_args" in fields or ("evt.args" in fields and arg_keys is None)
    keys = None
    if scoped:  # the key rows of these segments: the state rows they reach are the range's
        keys = " UNION ALL ".join(f"SELECT timeline_id, fd_id FROM {a}.{event_keys_table(p.name)}" for p in src.paths)
    shared, joins = _shared_columns(), _joins(a, _state_tables(a, keys))
    if columns is not None:
        used = _x_columns(" ".join(fields.values()) + (f" {args.raws} {args.resolveds}" if with_args else ""))
        shared = {name: expr for name, expr in shared.items() if name in used}
        needed = _aliases(" ".join(shared.values()), joins)
        for alias in reversed(list(joins)):  # a join's prerequisites come before it
            if alias in needed:
                needed |= joins[alias][1]
        joins = {alias: join for alias, join in joins.items() if alias in needed}
    shared_select = "".join(f", {expr} AS {name}" for name, expr in shared.items())
    join_clauses = "".join(f"\n  {clause}" for clause, _ in joins.values())
    inner = f"""
  SELECT e.*{shared_select}
  FROM (
    SELECT r.* EXCLUDE (filename), {_ord()} AS _ord, {hosts} AS _host,
           parse_filename(r.filename) AS _segment, {fd_num_sql("r")} AS _fd_num
    FROM ({segments}) r
    WHERE r.kind = 'evt'{time_filter}
  ) e{join_clauses}"""
    if not with_args and columns is not None:
        return f"SELECT {outer}\nFROM ({inner}\n) x"
    # The middle query renders every parameter slot once; DuckDB drops it
    # unless `_evt_args` or `evt.args` is selected.
    return (
        f"SELECT {outer}\nFROM (SELECT x.*, {args.raws} AS _arg_raw, {args.resolveds} AS _arg_res\n"
        f"FROM ({inner}\n) x) x"
    )


# The fd (or dirfd) is open in this process: the latest change of (pid, fd)
# is not a close and belongs to the event's life (not to an earlier process
# that had the same pid).
_FD_LIVE = "(f.op IS NOT NULL AND f.op <> 'close' AND f.life = w.life)"


def _shared_columns() -> dict[str, str]:
    """The inner query's state columns, each computed once per row for the fields that read it."""
    dir_base = f"CASE WHEN coalesce(e.dirfd, {AT_FDCWD}) = {AT_FDCWD} THEN w.cwd WHEN {_FD_LIVE} THEN f.name END"
    path2_base = f"CASE WHEN coalesce(e.dirfd2, {AT_FDCWD}) = {AT_FDCWD} THEN w.cwd END"
    return {
        "_errno": rf.errno_sql("e.res"),
        "_p_key": "p.key", "_p_argv": "p.argv", "_p_exepath": "p.exepath",
        "_p_vpid": "p.vpid", "_p_sid": "p.sid", "_p_pgid": "p.pgid", "_p_tty": "p.tty",
        "_p_loginuid": "p.loginuid", "_p_env": "p.env", "_p_cap_effective": "p.cap_effective",
        "_p_cap_permitted": "p.cap_permitted", "_p_cap_inheritable": "p.cap_inheritable",
        "_p_upper": "p.exe_upper_layer", "_p_memfd": "p.exe_from_memfd",
        "_f_live": _FD_LIVE, "_f_type": "f.type", "_f_name": "f.name", "_f_raw": "f.raw",
        "_f_family": "f.sock_family", "_f_proto": "f.sock_proto", "_f_stype": "f.sock_type",
        "_f_lip": "f.lip", "_f_lport": "f.lport", "_f_rip": "f.rip", "_f_rport": "f.rport",
        "_f_is_server": "f.is_server", "_f_name_changed": "f.name_changed AND f.ord = e._ord",
        "_cwd": "w.cwd",
        "_path_abs": f"CASE WHEN e.syscall IN {sql_list(OPEN_SYSCALLS)} AND e.res >= 0 AND {_FD_LIVE} THEN f.name "
        f"ELSE trace_resolve({dir_base}, e.path) END",
        "_path2_abs": f"trace_resolve({path2_base}, e.path2)",
        "_a_pid": "a.anc_pid", "_a_name": "a.anc_name", "_a_exe": "a.anc_exe", "_a_exepath": "a.anc_exepath",
        "_a_cmdline": "a.anc_cmdline", "_a_sname": "a.sname",
        "_life_start_ts": "ls.life_start_ts", "_u_name": "u.name", "_u_home": "u.home", "_u_shell": "u.shell",
        "_lu_name": "lu.name", "_ct_name": "ct.name", "_ct_image": "ct.image",
        "_users": "names.users", "_groups": "names.groups",
    }


def _state_tables(a: str, keys: str | None) -> dict[str, str]:
    """The state tables the joins read on ids: whole (`keys` None), or only the rows that `keys`
    (timeline_id, fd_id rows) reach, which changes no joined row. For a segment range those are
    its own rows and the earlier ones it carries, so its hash joins grow with the range, not
    with the capture (fd_state is 55 M rows at 100 M events); the semi-joins still probe the
    whole tables, but hold only the range's ids."""
    tables = {table: f"{a}.{table}" for table in ("fd_state", "timeline", "inc", "ancestry", "life_start")}
    if keys is None:
        return tables
    inc_keys = f"SELECT key FROM {a}.timeline WHERE id IN (SELECT timeline_id FROM ({keys}))"
    return {
        "fd_state": f"(SELECT * FROM {a}.fd_state WHERE id IN (SELECT fd_id FROM ({keys})))",
        "timeline": f"(SELECT * FROM {a}.timeline WHERE id IN (SELECT timeline_id FROM ({keys})))",
        "inc": f"(SELECT * FROM {a}.inc WHERE key IN ({inc_keys}))",
        "ancestry": f"(SELECT * FROM {a}.ancestry WHERE key IN ({inc_keys}))",
        "life_start": f"(SELECT * FROM {a}.life_start WHERE life_key IN "
                      f"(SELECT life_key FROM {a}.inc WHERE key IN ({inc_keys})))",
    }


def _joins(a: str, tables: dict[str, str]) -> dict[str, tuple[str, frozenset[str]]]:
    """Alias -> (join clause, the aliases it joins on), in join order; every join is on a unique key,
    so leaving one out changes no row. `tables`: what each state table is read from (_state_tables)."""
    return {
        "f": (f"LEFT JOIN {tables['fd_state']} f ON f.id = e.fd_id", frozenset()),
        "w": (f"LEFT JOIN {tables['timeline']} w ON w.id = e.timeline_id", frozenset()),
        "p": (f"LEFT JOIN {tables['inc']} p ON p.key = w.key", frozenset({"w"})),
        "a": (f"LEFT JOIN {tables['ancestry']} a ON a.key = p.key", frozenset({"p"})),
        "ls": (f"LEFT JOIN {tables['life_start']} ls ON ls.life_key = p.life_key", frozenset({"p"})),
        "u": (f"LEFT JOIN {a}.users u ON u.uid = e.uid", frozenset()),
        "lu": (f"LEFT JOIN {a}.users lu ON lu.uid = p.loginuid", frozenset({"p"})),
        "ct": (f"LEFT JOIN {a}.containers ct ON ct.container_id = e.container_id", frozenset()),
        "names": (f"CROSS JOIN (SELECT (SELECT map_from_entries(list({{'k': uid, 'v': name}})) FROM {a}.users) AS users,\n"
                  f"                     (SELECT map_from_entries(list({{'k': gid, 'v': name}})) FROM {a}.groups) AS groups) names",
                  frozenset()),
    }


_QUALIFIED = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")


def _x_columns(sql: str) -> set[str]:
    """The inner query's columns that `sql` (outer expressions over alias x) reads."""
    return {column for alias, column in _QUALIFIED.findall(SQL_STRING_LITERAL.sub("", sql)) if alias == "x"}


def _aliases(sql: str, joins: dict[str, tuple[str, frozenset[str]]]) -> set[str]:
    """The joined tables that `sql` (inner expressions) reads."""
    return {alias for alias, _ in _QUALIFIED.findall(SQL_STRING_LITERAL.sub("", sql)) if alias in joins}


def _select_fields(key_prefix: int, arg_keys: Collection[str] | None = None,
                   arg_syscalls: Collection[str] | None = None) -> tuple[dict[str, str], EvtArgsSql]:
    """Every output column's expression over the inner query (alias x), in output order."""
    fd_ok = "(x._fd_num >= 0 AND x._f_live)"
    is_ip = "x._f_type IN ('ipv4', 'ipv6')"
    opens = sql_list(OPEN_SYSCALLS)
    is_open = f"x.syscall IN {opens}"

    def ip(col: str) -> str:
        return f"CASE WHEN {fd_ok} AND {is_ip} THEN {col} END"

    ctx = ArgContext(
        col=lambda c: "coalesce(x.argv, x._p_argv)" if c == "argv" else f"x.{c}",
        # over the shared columns, so that only the rows rendering it pay for the string
        fd_desc="CASE WHEN x._f_live AND x._f_type IS NOT NULL THEN '<' || trace_typechar(x._f_type) || '>' "
        "|| coalesce(x._f_name, '') END",
        cwd="x._cwd",
        user_name=lambda e: f"map_extract_value(x._users, {e})",
        group_name=lambda e: f"map_extract_value(x._groups, {e})",
        tuple_="CASE WHEN x._f_live THEN x._f_name END",
        exe_args="array_to_string(coalesce(x.argv, x._p_argv)[2:], ' ')",
        errno="x._errno",
        resolved_path=lambda column: "x._path2_abs" if column == "path2" else "x._path_abs",
    )
    args = evt_args_sql(ctx, arg_keys, arg_syscalls)
    # With only some keys in `_evt_args`, `evt.args` renders every parameter itself, inline:
    # no shared projection computes them for every row.
    every = args if arg_keys is None else evt_args_sql(ctx, syscalls=arg_syscalls)
    text_lists = ("x._arg_raw", "x._arg_res") if arg_keys is None else (every.raws, every.resolveds)
    eff_flags = f"CASE WHEN x.syscall = 'creat' THEN {_CREAT_FLAGS} ELSE x.flags END"
    fields = {
        # process
        "proc.pid": "x.pid::BIGINT",
        "proc.ppid": "x.ppid::BIGINT",
        "proc.vpid": "x._p_vpid::BIGINT",
        "proc.pid.ts": "x._life_start_ts",
        "thread.tid": "x.tid::BIGINT",
        "proc.name": "x.comm",
        "proc.exe": "x._p_argv[1]",
        "proc.exepath": "x._p_exepath",
        "proc.args": "array_to_string(x._p_argv[2:], ' ')",
        "proc.cmdline": "trace_cmdline(x.comm, x._p_argv)",
        "proc.pname": "x._a_name[2]",
        "proc.pcmdline": "x._a_cmdline[2]",
        "proc.pexe": "x._a_exe[2]",
        "proc.pexepath": "x._a_exepath[2]",
        "proc.sid": "x._p_sid::BIGINT",
        "proc.sname": "x._a_sname",
        "proc.vpgid": "x._p_pgid::BIGINT",
        "proc.tty": "x._p_tty::BIGINT",
        # libsinsp keeps the cwd with a trailing slash
        "proc.cwd": "CASE WHEN x._cwd IS NULL THEN NULL WHEN ends_with(x._cwd, '/') THEN x._cwd ELSE x._cwd || '/' END",
        "proc.duration": "x.ts - x._life_start_ts",
        "proc.is_exe_upper_layer": "x._p_upper",
        "proc.is_exe_from_memfd": "x._p_memfd",
        "thread.cap_effective": rf.caps_sql("x._p_cap_effective"),
        "thread.cap_permitted": rf.caps_sql("x._p_cap_permitted"),
        "thread.cap_inheritable": rf.caps_sql("x._p_cap_inheritable"),
        # users
        "user.uid": "x.uid",
        "user.name": "x._u_name",
        "user.homedir": "x._u_home",
        "user.shell": "x._u_shell",
        "user.loginuid": f"CASE WHEN x._p_loginuid = {_UINT32_MAX} THEN -1 ELSE x._p_loginuid END",
        "user.loginname": "x._lu_name",
        "group.gid": "x.gid::BIGINT",
        "group.name": "map_extract_value(x._groups, x.gid)",
        # fd
        "fd.num": "x._fd_num::BIGINT",
        "fd.type": f"CASE WHEN {fd_ok} THEN x._f_type END",
        "fd.typechar": f"CASE WHEN {fd_ok} THEN trace_typechar(x._f_type) END",
        "fd.name": f"CASE WHEN {fd_ok} THEN x._f_name WHEN {is_open} AND x.res < 0 THEN x._path_abs END",
        "fd.nameraw": f"CASE WHEN {fd_ok} AND x._f_type IN ('file', 'directory') THEN x._f_raw WHEN {is_open} AND x.res < 0 THEN x.path END",
        "fd.directory": f"CASE WHEN {fd_ok} AND x._f_type = 'file' THEN trace_dirname(x._f_name) "
        f"WHEN {fd_ok} AND x._f_type = 'directory' THEN x._f_name END",
        "fd.filename": f"CASE WHEN {fd_ok} AND x._f_type = 'file' THEN trace_basename(x._f_name) END",
        "fd.l4proto": f"CASE WHEN {fd_ok} THEN trace_l4proto(x._f_family, x._f_proto, x._f_stype) END",
        "fd.sockfamily": f"CASE WHEN {fd_ok} AND {is_ip} THEN 'ip' WHEN {fd_ok} AND x._f_type = 'unix' THEN 'unix' END",
        "fd.lip": ip("x._f_lip"),
        "fd.rip": ip("x._f_rip"),
        "fd.lport": ip("x._f_lport::BIGINT"),
        "fd.rport": ip("x._f_rport::BIGINT"),
        "fd.sip": ip("CASE WHEN x._f_is_server THEN x._f_lip ELSE x._f_rip END"),
        "fd.cip": ip("CASE WHEN x._f_is_server THEN x._f_rip ELSE x._f_lip END"),
        "fd.sport": ip("(CASE WHEN x._f_is_server THEN x._f_lport ELSE x._f_rport END)::BIGINT"),
        "fd.cport": ip("(CASE WHEN x._f_is_server THEN x._f_rport ELSE x._f_lport END)::BIGINT"),
        "fd.is_server": ip("x._f_is_server"),
        "fd.connected": f"CASE WHEN {fd_ok} AND {is_ip} THEN coalesce(x._f_rport, 0) > 0 "
        f"WHEN {fd_ok} AND x._f_type = 'unix' THEN x._f_is_server IS NOT NULL END",
        "fd.name_changed": f"coalesce({fd_ok} AND x._f_name_changed, false)",
        # event
        "evt.num": "x.evt_num",
        "evt.time": "x.ts",
        "evt.rawtime": "x.ts",
        "evt.type": "x.syscall",
        "evt.dir": "'<'",
        "evt.cpu": "x.cpu::BIGINT",
        "evt.res": "CASE WHEN x.res >= 0 THEN 'SUCCESS' ELSE coalesce(x._errno, x.res::VARCHAR) END",
        "evt.rawres": "x.res",
        "evt.is_open_read": f"coalesce({is_open} AND ({eff_flags} & 3) IN (0, 2), false)",
        "evt.is_open_write": f"coalesce({is_open} AND ({eff_flags} & 3) IN (1, 2), false)",
        "evt.is_open_exec": f"coalesce({is_open} AND ({eff_flags} & {_O_CREAT}) <> 0 AND (x.mode & 73) <> 0, false)",
        "evt.args": every.evt_text(*text_lists),
        # container
        "container.id": "x.container_id",
        "container.name": "CASE WHEN x.container_id = 'host' THEN 'host' ELSE x._ct_name END",
        "container.image": "CASE WHEN x.container_id = 'host' THEN NULL ELSE x._ct_image END",
    }
    lists = {
        "_anc_pid": "x._a_pid",
        "_anc_name": "x._a_name",
        "_anc_exe": "x._a_exe",
        "_anc_exepath": "x._a_exepath",
        "_anc_cmdline": "x._a_cmdline",
        "_evt_args": args.evt_map("x._arg_raw", "x._arg_res"),
        "_env": "x._p_env",
        "_proc_key": _key(key_prefix, "x._p_key"),
        "_host": "x._host",
        "_segment": "x._segment",
    }
    return {**{c: f"x.{c}" for c in COLUMN_NAMES}, **fields, **lists}, args


def _ord() -> str:
    return "r.evt_num * 4 + 2"


def processes_sql(src: CaptureSource) -> str:
    a, k = src.alias, src.key_prefix
    return f"""
SELECT {_key(k, 'p.key')} AS _proc_key, p.pid, p.ppid, {_key(k, 'p.parent_key')} AS _parent_key,
       {_key(k, 'p.prev_key')} AS _prev_key, p.start_ts, p.end_ts, p.exited, p.src AS origin,
       p.comm, p.argv[1] AS exe, p.exepath, p.argv[2:] AS args, trace_cmdline(p.comm, p.argv) AS cmdline,
       w.cwd, p.uid, u.name AS user_name, CASE WHEN p.loginuid = {_UINT32_MAX} THEN -1 ELSE p.loginuid END AS loginuid,
       p.tty, p.sid, p.pgid, p.vpid, p.container_id, ls.life_start_ts AS proc_start_ts,
       a.anc_pid AS _anc_pid, a.anc_name AS _anc_name, s.host AS _host
FROM {a}.inc p
ASOF LEFT JOIN {a}.cwd_state w ON w.life = p.life_key AND p.start_ord >= w.ord
LEFT JOIN {a}.ancestry a ON a.key = p.key
LEFT JOIN {a}.life_start ls ON ls.life_key = p.life_key
LEFT JOIN {a}.users u ON u.uid = p.uid
LEFT JOIN {a}.segments s ON s.seg = p.seg
"""


def fds_sql(src: CaptureSource) -> str:
    a, k = src.alias, src.key_prefix
    return f"""
WITH r AS (
    SELECT *, CASE WHEN op = 'close' THEN 0
                   WHEN op IN ('open', 'dup', 'inherit') THEN 1
                   WHEN lag(op) OVER w IS NULL OR lag(op) OVER w = 'close' THEN 1 ELSE 0 END AS is_start
    FROM {a}.fd_state WINDOW w AS (PARTITION BY life, fd ORDER BY ord)),
g AS (
    SELECT *, sum(is_start) OVER (PARTITION BY life, fd ORDER BY ord ROWS UNBOUNDED PRECEDING) AS grp FROM r),
lt AS (
    SELECT life, fd, grp, min(pid) AS pid,
           min(ts) FILTER (WHERE op <> 'close') AS open_ts,
           min(ts) FILTER (WHERE op = 'close') AS close_ts,
           arg_min(inc_key, ord) AS inc_key,
           arg_max({{'type': type, 'name': name, 'family': sock_family, 'proto': sock_proto, 'stype': sock_type,
                     'lip': lip, 'lport': lport, 'rip': rip, 'rport': rport, 'is_server': is_server}}, ord)
               FILTER (WHERE op <> 'close') AS d
    FROM g WHERE grp > 0 GROUP BY life, fd, grp)
SELECT {_key(k, 'lt.inc_key')} AS _proc_key, lt.pid, lt.fd, lt.open_ts,
       coalesce(lt.close_ts, lead(lt.open_ts) OVER (PARTITION BY lt.life, lt.fd ORDER BY lt.grp)) AS close_ts,
       lt.d.type AS type, trace_typechar(lt.d.type) AS typechar, lt.d.name AS name,
       trace_l4proto(lt.d.family, lt.d.proto, lt.d.stype) AS l4proto,
       CASE WHEN lt.d.type IN ('ipv4', 'ipv6') THEN 'ip' WHEN lt.d.type = 'unix' THEN 'unix' END AS sockfamily,
       lt.d.lip AS lip, lt.d.lport::BIGINT AS lport, lt.d.rip AS rip, lt.d.rport::BIGINT AS rport,
       lt.d.is_server AS is_server, s.host AS _host
FROM lt LEFT JOIN {a}.inc p ON p.key = lt.inc_key LEFT JOIN {a}.segments s ON s.seg = p.seg
WHERE lt.open_ts IS NOT NULL
"""
