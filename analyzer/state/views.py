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

from dataclasses import dataclass
from pathlib import Path

from analyzer.render import flags as rf
from analyzer.render.params import ArgContext, EvtArgsSql, evt_args_sql
from analyzer.state.sql import AT_FDCWD, OPEN_SYSCALLS, event_keys_table, fd_num_sql, sql_list
from capture.schema import COLUMN_NAMES
_O_CREAT = 0o100
_CREAT_FLAGS = 0o1 | 0o100 | 0o1000  # creat() is open(O_WRONLY|O_CREAT|O_TRUNC)
_UINT32_MAX = 4294967295


@dataclass(frozen=True)
class CaptureSource:
    alias: str  # the attached state database
    paths: tuple[Path, ...]  # readable segments
    hosts: tuple[str, ...]  # the host of each segment
    key_prefix: int


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key(prefix: int, expr: str) -> str:
    return f"CASE WHEN {expr} IS NOT NULL THEN ({prefix}::BIGINT << 40) | {expr} END"


def events_sql(src: CaptureSource, since: int | None, until: int | None) -> str:
    """The events of one capture with their state: an inner query does the
    joins and computes what several fields share (path resolution, errno, fd
    description) once per row; the outer one names the fields."""
    a = src.alias
    time_filter = ""
    if since is not None:
        time_filter += f" AND r.ts >= {int(since)}"
    if until is not None:
        time_filter += f" AND r.ts < {int(until)}"
    # Each segment's rows are stitched by position to the ids of the timeline
    # and fd_state rows they see (precomputed by the build).
    segments = " UNION ALL ".join(
        f"SELECT * FROM read_parquet({_q(str(p))}, filename = true) POSITIONAL JOIN {a}.{event_keys_table(p.name)}"
        for p in src.paths
    )
    # The fd (or dirfd) is open in this process: the latest change of (pid, fd)
    # is not a close and belongs to the event's life (not to an earlier
    # process that had the same pid).
    fd_live = "(f.op IS NOT NULL AND f.op <> 'close' AND f.life = w.life)"
    # the host of each segment (a capture directory usually has one)
    host_of = {str(p): host for p, host in zip(src.paths, src.hosts)}
    if len(set(host_of.values())) == 1:
        hosts = _q(next(iter(host_of.values())))
    else:
        hosts = "map_extract_value(MAP {" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in host_of.items()) + "}, r.filename)"
    dir_base = f"CASE WHEN coalesce(e.dirfd, {AT_FDCWD}) = {AT_FDCWD} THEN w.cwd WHEN {fd_live} THEN f.name END"
    path2_base = f"CASE WHEN coalesce(e.dirfd2, {AT_FDCWD}) = {AT_FDCWD} THEN w.cwd END"
    inner = f"""
  SELECT e.*, {rf.errno_sql("e.res")} AS _errno,
         p.key AS _p_key, p.life_key AS _p_life, p.argv AS _p_argv, p.exepath AS _p_exepath, p.vpid AS _p_vpid,
         p.sid AS _p_sid, p.pgid AS _p_pgid, p.tty AS _p_tty, p.loginuid AS _p_loginuid, p.env AS _p_env,
         p.cap_effective AS _p_cap_effective, p.cap_permitted AS _p_cap_permitted,
         p.cap_inheritable AS _p_cap_inheritable, p.exe_upper_layer AS _p_upper, p.exe_from_memfd AS _p_memfd,
         {fd_live} AS _f_live, f.type AS _f_type, f.name AS _f_name, f.raw AS _f_raw,
         f.sock_family AS _f_family, f.sock_proto AS _f_proto, f.sock_type AS _f_stype,
         f.lip AS _f_lip, f.lport AS _f_lport, f.rip AS _f_rip, f.rport AS _f_rport,
         f.is_server AS _f_is_server, f.name_changed AND f.ord = e._ord AS _f_name_changed,
         CASE WHEN {fd_live} AND f.type IS NOT NULL THEN '<' || trace_typechar(f.type) || '>' || coalesce(f.name, '') END AS _f_desc,
         w.cwd AS _cwd,
         CASE WHEN e.syscall IN {sql_list(OPEN_SYSCALLS)} AND e.res >= 0 AND {fd_live} THEN f.name
              ELSE trace_resolve({dir_base}, e.path) END AS _path_abs,
         trace_resolve({path2_base}, e.path2) AS _path2_abs,
         a.anc_pid AS _a_pid, a.anc_name AS _a_name, a.anc_exe AS _a_exe, a.anc_exepath AS _a_exepath,
         a.anc_cmdline AS _a_cmdline, a.sname AS _a_sname,
         ls.life_start_ts AS _life_start_ts, u.name AS _u_name, u.home AS _u_home, u.shell AS _u_shell,
         lu.name AS _lu_name, ct.name AS _ct_name, ct.image AS _ct_image,
         names.users AS _users, names.groups AS _groups
  FROM (
    SELECT r.* EXCLUDE (filename), {_ord()} AS _ord, {hosts} AS _host,
           parse_filename(r.filename) AS _segment, {fd_num_sql("r")} AS _fd_num
    FROM ({segments}) r
    WHERE r.kind = 'evt'{time_filter}
  ) e
  LEFT JOIN {a}.fd_state f ON f.id = e.fd_id
  LEFT JOIN {a}.timeline w ON w.id = e.timeline_id
  LEFT JOIN {a}.inc p ON p.key = w.key
  LEFT JOIN {a}.ancestry a ON a.key = p.key
  LEFT JOIN {a}.life_start ls ON ls.life_key = p.life_key
  LEFT JOIN {a}.users u ON u.uid = e.uid
  LEFT JOIN {a}.users lu ON lu.uid = p.loginuid
  LEFT JOIN {a}.containers ct ON ct.container_id = e.container_id
  CROSS JOIN (SELECT (SELECT map_from_entries(list({{'k': uid, 'v': name}})) FROM {a}.users) AS users,
                     (SELECT map_from_entries(list({{'k': gid, 'v': name}})) FROM {a}.groups) AS groups) names"""
    fields, args = _select_fields(src.key_prefix)
    # The middle query renders every parameter slot once; DuckDB drops it
    # unless `_evt_args` or `evt.args` is selected.
    return (
        f"SELECT {fields}\nFROM (SELECT x.*, {args.raws} AS _arg_raw, {args.resolveds} AS _arg_res\n"
        f"FROM ({inner}\n) x) x"
    )


def _select_fields(key_prefix: int) -> tuple[str, EvtArgsSql]:
    raw = ", ".join(f"x.{c}" for c in COLUMN_NAMES)
    fd_ok = "(x._fd_num >= 0 AND x._f_live)"
    is_ip = "x._f_type IN ('ipv4', 'ipv6')"
    opens = sql_list(OPEN_SYSCALLS)
    is_open = f"x.syscall IN {opens}"

    def ip(col: str) -> str:
        return f"CASE WHEN {fd_ok} AND {is_ip} THEN {col} END"

    ctx = ArgContext(
        col=lambda c: "coalesce(x.argv, x._p_argv)" if c == "argv" else f"x.{c}",
        fd_desc="x._f_desc",
        cwd="x._cwd",
        user_name=lambda e: f"map_extract_value(x._users, {e})",
        group_name=lambda e: f"map_extract_value(x._groups, {e})",
        tuple_="CASE WHEN x._f_live THEN x._f_name END",
        exe_args="array_to_string(coalesce(x.argv, x._p_argv)[2:], ' ')",
        errno="x._errno",
        resolved_path=lambda column: "x._path2_abs" if column == "path2" else "x._path_abs",
    )
    args = evt_args_sql(ctx)
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
        "evt.args": args.evt_text("x._arg_raw", "x._arg_res"),
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
    return ",\n  ".join([raw] + [f'{expr} AS "{name}"' for name, expr in {**fields, **lists}.items()]), args


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
