"""Event parameters by libsinsp name, rendered as libsinsp renders them.

libsinsp renders a parameter as a raw string plus an optional *resolved*
string (`fd=3(<f>/etc/passwd)`, `res=-2(ENOENT)`, `flags=...(O_RDONLY)`).
`evt.arg.NAME` is the resolved string when there is one, else the raw one;
`evt.args` is `name=raw(resolved)` joined by spaces. Only exit events exist
in a capture, so the parameters of the matching enter event (close's fd,
setuid's uid, ptrace's request) are appended after the exit parameters.

`evt_args_sql` builds both from one table: PARAMS maps each syscall to its
parameters, each parameter to a renderer of (raw, resolved) SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from analyzer.render import flags as f


@dataclass(frozen=True)
class ArgContext:
    """SQL expressions the view provides for one event row."""

    col: Callable[[str], str]  # raw capture column -> SQL
    fd_desc: str  # '<typechar>name' of the event's fd (or of its dirfd), NULL if unknown
    cwd: str  # the process's cwd, no trailing slash
    user_name: Callable[[str], str]  # uid expression -> user name
    group_name: Callable[[str], str]
    tuple_: str  # the socket's name (client->server)
    exe_args: str  # argv after argv[0], space separated
    errno: str  # the errno name of a negative res (computed once per row)
    resolved_path: Callable[[str], str]  # path column -> absolute path (against dirfd or cwd)


Render = Callable[[ArgContext], tuple[str, str | None]]


def _num(column: str) -> Render:
    return lambda c: (f"{c.col(column)}::VARCHAR", None)


def _res(c: ArgContext) -> tuple[str, str | None]:
    return f"{c.col('res')}::VARCHAR", c.errno


def _fd_from_res(c: ArgContext) -> tuple[str, str | None]:
    res = c.col("res")
    return f"{res}::VARCHAR", f"CASE WHEN {res} < 0 THEN {c.errno} ELSE {c.fd_desc} END"


def _fd_arg(column: str) -> Render:
    return lambda c: (f"{c.col(column)}::VARCHAR", c.fd_desc)


def _dirfd(column: str) -> Render:
    return lambda c: (f"{c.col(column)}::VARCHAR", f"CASE WHEN {c.col(column)} = -100 THEN 'AT_FDCWD' END")


def _path(column: str) -> Render:
    """A path argument: a relative one is resolved against its dirfd or the cwd."""

    def render(c: ArgContext) -> tuple[str, str | None]:
        path = c.col(column)
        return path, f"CASE WHEN NOT starts_with({path}, '/') THEN {c.resolved_path(column)} END"

    return render


def _raw_path(column: str) -> Render:
    return lambda c: (c.col(column), None)


def _open_flags(c: ArgContext) -> tuple[str, str | None]:
    return f"{c.col('flags')}::VARCHAR", f.open_flags_sql(c.col("flags"))


def _table(column: str, table: f.FlagTable | f.EnumTable) -> Render:
    return lambda c: (f"{c.col(column)}::VARCHAR", table.sql(c.col(column)))


def _mode(column: str) -> Render:
    def render(c: ArgContext) -> tuple[str, str | None]:
        mode = c.col(column)
        raw = f"CASE WHEN {mode} IS NULL THEN NULL WHEN {mode} = 0 THEN '0' ELSE '0' || trace_octal({mode}) END"
        return raw, f.FILE_MODES.sql(mode)

    return render


def _uid(column: str) -> Render:
    return lambda c: (f"{c.col(column)}::VARCHAR", c.user_name(c.col(column)))


def _gid(column: str) -> Render:
    return lambda c: (f"{c.col(column)}::VARCHAR", c.group_name(c.col(column)))


def _tuple(c: ArgContext) -> tuple[str, str | None]:
    return c.tuple_, None


def _exe(c: ArgContext) -> tuple[str, str | None]:
    return f"{c.col('argv')}[1]", None


def _args(c: ArgContext) -> tuple[str, str | None]:
    return c.exe_args, None


_RES = ("res", _res)
_FD_RES = ("fd", _fd_from_res)
_FD = ("fd", _fd_arg("fd"))
_PROC = (("exe", _exe), ("args", _args), ("tid", _num("tid")), ("pid", _num("pid")), ("ptid", _num("ppid")))

PARAMS: dict[str, tuple[tuple[str, Render], ...]] = {
    "open": (_FD_RES, ("name", _path("path")), ("flags", _open_flags), ("mode", _mode("mode"))),
    "openat": (_FD_RES, ("dirfd", _dirfd("dirfd")), ("name", _path("path")), ("flags", _open_flags), ("mode", _mode("mode"))),
    "openat2": (_FD_RES, ("dirfd", _dirfd("dirfd")), ("name", _path("path")), ("flags", _open_flags), ("mode", _mode("mode"))),
    "creat": (_FD_RES, ("name", _path("path")), ("mode", _mode("mode"))),
    "close": (_RES, _FD),
    "dup": (_RES, ("oldfd", _fd_arg("fd"))),
    "dup2": (_RES, ("oldfd", _fd_arg("fd")), ("newfd", _num("arg1"))),
    "dup3": (_RES, ("oldfd", _fd_arg("fd")), ("newfd", _num("arg1")), ("flags", _open_flags)),
    "fcntl": (_RES, _FD, ("cmd", _table("arg1", f.FCNTL_COMMANDS))),
    "socket": (_FD_RES, ("domain", _table("sock_family", f.SOCKET_FAMILIES)), ("type", _num("sock_type")), ("proto", _num("sock_proto"))),
    "socketpair": (_RES, ("fd1", _num("fd")), ("fd2", _num("fd2")), ("domain", _table("sock_family", f.SOCKET_FAMILIES)), ("type", _num("sock_type")), ("proto", _num("sock_proto"))),
    "connect": (_RES, ("tuple", _tuple), _FD),
    "bind": (_RES, ("addr", _tuple), _FD),
    "listen": (_RES, _FD, ("backlog", _num("arg1"))),
    "accept": (_FD_RES, ("tuple", _tuple)),
    "accept4": (_FD_RES, ("tuple", _tuple), ("flags", _num("flags"))),
    "sendto": (_RES, _FD, ("tuple", _tuple)),
    "sendmsg": (_RES, _FD, ("tuple", _tuple)),
    "recvfrom": (_RES, _FD, ("tuple", _tuple)),
    "recvmsg": (_RES, _FD, ("tuple", _tuple)),
    "pipe": (_RES, ("fd1", _num("fd")), ("fd2", _num("fd2"))),
    "pipe2": (_RES, ("fd1", _num("fd")), ("fd2", _num("fd2")), ("flags", _open_flags)),
    "execve": (_RES, *_PROC, ("cwd", lambda c: (c.cwd, None)), ("comm", lambda c: (c.col("comm"), None)), ("uid", _uid("uid")), ("trusted_exepath", _raw_path("exepath")), ("filename", _path("path"))),
    "execveat": (_RES, *_PROC, ("cwd", lambda c: (c.cwd, None)), ("comm", lambda c: (c.col("comm"), None)), ("uid", _uid("uid")), ("trusted_exepath", _raw_path("exepath")), ("dirfd", _dirfd("dirfd")), ("pathname", _path("path")), ("flags", _num("flags"))),
    "clone": (_RES, *_PROC, ("flags", _table("flags", f.CLONE_FLAGS)), ("uid", _uid("uid")), ("gid", _gid("gid"))),
    "clone3": (_RES, *_PROC, ("flags", _table("flags", f.CLONE_FLAGS)), ("uid", _uid("uid")), ("gid", _gid("gid"))),
    "fork": (_RES, *_PROC, ("uid", _uid("uid")), ("gid", _gid("gid"))),
    "vfork": (_RES, *_PROC, ("uid", _uid("uid")), ("gid", _gid("gid"))),
    "chdir": (_RES, ("path", _path("path"))),
    "fchdir": (_RES, _FD),
    "unlink": (_RES, ("path", _path("path"))),
    "unlinkat": (_RES, ("dirfd", _dirfd("dirfd")), ("name", _path("path")), ("flags", _table("flags", f.UNLINKAT_FLAGS))),
    "rmdir": (_RES, ("path", _path("path"))),
    "mkdir": (_RES, ("path", _path("path")), ("mode", _mode("mode"))),
    "mkdirat": (_RES, ("dirfd", _dirfd("dirfd")), ("path", _path("path")), ("mode", _mode("mode"))),
    "rename": (_RES, ("oldpath", _path("path")), ("newpath", _path("path2"))),
    "renameat": (_RES, ("olddirfd", _dirfd("dirfd")), ("oldpath", _path("path")), ("newdirfd", _dirfd("dirfd2")), ("newpath", _path("path2"))),
    "renameat2": (_RES, ("olddirfd", _dirfd("dirfd")), ("oldpath", _path("path")), ("newdirfd", _dirfd("dirfd2")), ("newpath", _path("path2")), ("flags", _num("flags"))),
    "link": (_RES, ("oldpath", _path("path")), ("newpath", _path("path2"))),
    "linkat": (_RES, ("olddir", _dirfd("dirfd")), ("oldpath", _path("path")), ("newdir", _dirfd("dirfd2")), ("newpath", _path("path2")), ("flags", _num("flags"))),
    "symlink": (_RES, ("target", _raw_path("path")), ("linkpath", _path("path2"))),
    "symlinkat": (_RES, ("target", _raw_path("path")), ("linkdirfd", _dirfd("dirfd2")), ("linkpath", _path("path2"))),
    "chmod": (_RES, ("filename", _path("path")), ("mode", _mode("mode"))),
    "fchmod": (_RES, _FD, ("mode", _mode("mode"))),
    "fchmodat": (_RES, ("dirfd", _dirfd("dirfd")), ("filename", _path("path")), ("mode", _mode("mode"))),
    "mount": (_RES, ("dev", _raw_path("path")), ("dir", _path("path2")), ("flags", _table("flags", f.MOUNT_FLAGS))),
    "memfd_create": (_FD_RES, ("name", _raw_path("path")), ("flags", _table("flags", f.MEMFD_FLAGS))),
    "ptrace": (_RES, ("request", _table("arg0", f.PTRACE_REQUESTS)), ("pid", _num("arg1"))),
    "init_module": (_RES, ("length", _num("arg1"))),
    "finit_module": (_RES, _FD, ("flags", _num("flags"))),
    "bpf": (_RES, ("cmd", _table("arg0", f.BPF_COMMANDS))),
    "setns": (_RES, _FD, ("nstype", _table("arg1", f.CLONE_FLAGS))),
    "unshare": (_RES, ("flags", _table("flags", f.CLONE_FLAGS))),
    "userfaultfd": (_RES, ("flags", _num("flags"))),
    "setuid": (_RES, ("uid", _uid("arg0"))),
    "setgid": (_RES, ("gid", _gid("arg0"))),
    "setreuid": (_RES, ("ruid", _uid("arg0")), ("euid", _uid("arg1"))),
    "setregid": (_RES, ("rgid", _gid("arg0")), ("egid", _gid("arg1"))),
    "setresuid": (_RES, ("ruid", _uid("arg0")), ("euid", _uid("arg1")), ("suid", _uid("arg2"))),
    "setresgid": (_RES, ("rgid", _gid("arg0")), ("egid", _gid("arg1")), ("sgid", _gid("arg2"))),
    "setfsuid": (_RES, ("uid", _uid("arg0"))),
    "setfsgid": (_RES, ("gid", _gid("arg0"))),
    "capset": (_RES,),
    "prctl": (_RES, ("option", _num("arg0"))),
    "exit": (("status", _num("arg0")),),
    "exit_group": (("status", _num("arg0")),),
    "procexit": (("status", _num("arg0")),),
}


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class EvtArgsSql:
    raws: str  # LIST(VARCHAR) of every slot's raw string (with `keys`: NULL where the row's syscall lacks it)
    resolveds: str  # LIST(VARCHAR) of every slot's resolved string
    evt_map: Callable[[str, str], str]  # (raws column, resolveds column) -> `_evt_args`
    evt_text: Callable[[str, str], str]  # (raws list, resolveds list) -> `evt.args`


def evt_args_sql(ctx: ArgContext, keys: Collection[str] | None = None,
                 syscalls: Collection[str] | None = None) -> EvtArgsSql:
    """The `_evt_args` MAP and the `evt.args` string.

    Every distinct renderer becomes one *slot* (a raw and a resolved string,
    rendered on the rows of the syscalls that have it); a constant map from
    syscall to its (name, slot) list picks and orders them. The SQL stays
    small whatever the number of event types, which keeps binding the
    `events` view fast.

    `keys`: only the parameters of those names (a query that looks up a few
    `_evt_args` keys binds a fraction of the renderers); `evt.args` is then
    incomplete: render it from a call without `keys`.

    `syscalls`: only the parameters of those syscalls; the rows of others get
    an empty map and `evt.args`. For a query that keeps only their rows (the
    follower's copy of a batch's candidate events): binding costs per
    renderer, and a key such as `flags` has one in many syscalls.
    """
    slots: dict[tuple[str, str], int] = {}
    users: dict[int, list[str]] = {}  # slot -> the syscalls that read it
    spec: dict[str, list[tuple[str, int]]] = {}
    for syscall, params in PARAMS.items():
        if syscalls is not None and syscall not in syscalls:
            continue
        for pname, render in params:
            if keys is not None and pname not in keys:
                continue
            raw, resolved = render(ctx)
            slot = slots.setdefault((raw, resolved or "NULL::VARCHAR"), len(slots) + 1)
            spec.setdefault(syscall, []).append((pname, slot))
            if syscall not in users.setdefault(slot, []):
                users[slot].append(syscall)

    def guarded(slot: int, expr: str) -> str:
        # A row reads only its own syscall's slots: DuckDB evaluates a CASE branch on the
        # rows that reach it, so with a few `keys` each renderer runs on the rows of the
        # syscalls that use it. With every key the test costs more than it saves (measured:
        # tests/test_state_ranges.py 44 -> 50 s with it), so the full map renders unguarded.
        if keys is None:
            return f"({expr})::VARCHAR"
        return (f"CASE WHEN {ctx.col('syscall')} IN ({', '.join(_sql_str(s) for s in users[slot])}) "
                f"THEN ({expr})::VARCHAR END")

    raws = "[" + ", ".join(guarded(i, raw) for (raw, _), i in slots.items()) + "]"
    resolveds = "[" + ", ".join(guarded(i, resolved) for (_, resolved), i in slots.items()) + "]"
    entries = ", ".join(
        f"{_sql_str(syscall)}: [" + ", ".join(f"{{'n': {_sql_str(n)}, 'i': {i}}}" for n, i in params) + "]"
        for syscall, params in spec.items()
    )
    params = f"coalesce(map_extract_value(MAP {{{entries}}}, {ctx.col('syscall')}), [])"
    indexes = f"list_transform({params}, lambda p: p.i)"
    return EvtArgsSql(
        raws,
        resolveds,
        lambda raw, res: (
            f"map_from_entries(list_transform({params}, lambda p: "
            f"{{'k': p.n, 'v': coalesce(nullif({res}[p.i], ''), {raw}[p.i])}}))"
        ),
        # the lists are picked from outside the lambda: `raw` and `res` may be the slot
        # expressions themselves, evaluated then once per row, not once per parameter
        lambda raw, res: (
            f"array_to_string(list_transform(list_zip({params}, list_select({raw}, {indexes}), "
            f"list_select({res}, {indexes})), lambda t: t[1].n || '=' || coalesce(t[2], '') "
            f"|| coalesce('(' || nullif(t[3], '') || ')', '')), ' ')"
        ),
    )
