"""SQL vocabulary shared by the state builder and the views: macros, constants.

Every macro is created TEMP on each connection (``install_macros``), so the
materialized cache holds plain tables and any connection can read it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import duckdb

# Event order. Events get evt_num*4+2; a segment's snapshot rows sit at
# first_evt_num*4 (just before its first event); what an event undoes
# (close, close-on-exec) lands at evt_num*4+3, after the event itself, so an
# event still sees the fd it closes.
ORD_EVENT = "(evt_num * 4 + 2)"

AT_FDCWD = -100
O_DIRECTORY = 0o200000
O_CLOEXEC = 0o2000000  # == SOCK_CLOEXEC
CLONE_THREAD = 0x10000
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030
EINPROGRESS = 115

FORK_SYSCALLS = ("clone", "clone3", "fork", "vfork")
EXEC_SYSCALLS = ("execve", "execveat")
OPEN_SYSCALLS = ("open", "openat", "openat2", "creat")
# Syscalls whose return value is a new fd.
FD_RETURNING = OPEN_SYSCALLS + ("socket", "accept", "accept4", "dup", "dup2", "dup3", "memfd_create")
# Syscalls that change the process or fd table: the state builder reads only these.
STATE_SYSCALLS = FORK_SYSCALLS + EXEC_SYSCALLS + OPEN_SYSCALLS + (
    "procexit", "chdir", "fchdir", "socket", "socketpair", "connect", "accept", "accept4",
    "pipe", "pipe2", "dup", "dup2", "dup3", "fcntl", "close", "memfd_create",
)


# Syscalls whose return value is the fd that fd.* describes.
RES_FD_SYSCALLS = OPEN_SYSCALLS + ("socket", "accept", "accept4", "memfd_create")


def fd_num_sql(r: str) -> str:
    """An event's fd.num: the returned fd of an fd-creating call, else its fd argument."""
    return f"CASE WHEN {r}.syscall IN {sql_list(RES_FD_SYSCALLS)} THEN {r}.res WHEN {r}.fd IS NOT NULL THEN {r}.fd END"


def lookup_fd_sql(r: str) -> str:
    """The fd table entry an event looks at: its fd, else its directory fd."""
    return (f"(CASE WHEN {fd_num_sql(r)} >= 0 THEN {fd_num_sql(r)} "
            f"WHEN {r}.dirfd IS NOT NULL AND {r}.dirfd <> {AT_FDCWD} THEN {r}.dirfd END)::INTEGER")


def event_keys_table(segment_name: str) -> str:
    """The quoted name of a segment's per-row key table (see build._build_event_keys)."""
    return '"evt_keys:' + segment_name.replace('"', '""') + '"'


def sql_text(value: str) -> str:
    """`value` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(sql_text(v) for v in values) + ")"


def sql_path_list(paths: Iterable[Path]) -> str:
    """`paths` as a SQL list literal (what read_parquet takes for several files)."""
    return "[" + ", ".join(sql_text(str(p)) for p in paths) + "]"


# A string literal in SQL this project generates: blanked out before its text is searched for names.
SQL_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


_MACROS = (
    # Lexical normalization, as libsinsp's concatenate_paths: drops '.', '' and
    # resolves '..' without touching the filesystem.
    """CREATE OR REPLACE TEMP MACRO trace_normpath(p) AS
       CASE WHEN p IS NULL THEN NULL
            -- the common case, already normal, skips the list work
            WHEN starts_with(p, '/') AND NOT contains(p, '//') AND NOT contains(p, '/.')
                 AND (p = '/' OR NOT ends_with(p, '/')) THEN p
       ELSE
       '/' || array_to_string(list_reduce(string_split(p, '/'),
            lambda acc, x: CASE WHEN x = '' OR x = '.' THEN acc
                                WHEN x = '..' THEN acc[:-2]
                                ELSE list_append(acc, x) END,
            []::VARCHAR[]), '/') END""",
    # A path argument resolved like libsinsp: absolute as is (normalized),
    # relative against `base` (the cwd or the dirfd's directory).
    """CREATE OR REPLACE TEMP MACRO trace_resolve(base, p) AS
       CASE WHEN p IS NULL THEN NULL
            WHEN starts_with(p, '/') THEN trace_normpath(p)
            WHEN base IS NULL THEN NULL
            ELSE trace_normpath(base || '/' || p) END""",
    # libsinsp's proc.cmdline: the comm, then the arguments after argv[0].
    """CREATE OR REPLACE TEMP MACRO trace_cmdline(comm, argv) AS
       CASE WHEN argv IS NULL THEN NULL
            WHEN len(argv) <= 1 THEN comm
            ELSE comm || ' ' || array_to_string(argv[2:], ' ') END""",
    """CREATE OR REPLACE TEMP MACRO trace_dirname(p) AS
       CASE WHEN p IS NULL THEN NULL
            WHEN p = '/' THEN '/'
            WHEN strpos(p, '/') = 0 THEN NULL
            ELSE coalesce(nullif(regexp_extract(p, '^(.*)/[^/]*$', 1), ''), '/') END""",
    """CREATE OR REPLACE TEMP MACRO trace_basename(p) AS
       CASE WHEN p IS NULL THEN NULL ELSE regexp_extract(p, '[^/]*$') END""",
    # fd type (libsinsp's fd.type) of a socket family.
    """CREATE OR REPLACE TEMP MACRO trace_sock_fdtype(family) AS
       CASE family WHEN 2 THEN 'ipv4' WHEN 10 THEN 'ipv6' WHEN 1 THEN 'unix'
                   WHEN 16 THEN 'netlink' ELSE 'unknown' END""",
    # fd type of a snapshot row, from its /proc/PID/fd link target.
    """CREATE OR REPLACE TEMP MACRO trace_snapshot_fdtype(name, family, flags) AS
       CASE WHEN family IS NOT NULL THEN trace_sock_fdtype(family)
            WHEN starts_with(name, 'socket:[') THEN 'unknown'
            WHEN starts_with(name, 'pipe:[') THEN 'pipe'
            WHEN starts_with(name, '/memfd:') THEN 'memfd'
            WHEN name = 'anon_inode:[eventfd]' THEN 'event'
            WHEN name = 'anon_inode:[signalfd]' THEN 'signalfd'
            WHEN name = 'anon_inode:[eventpoll]' THEN 'eventpoll'
            WHEN name = 'anon_inode:inotify' THEN 'inotify'
            WHEN name = 'anon_inode:[timerfd]' THEN 'timerfd'
            WHEN name = 'anon_inode:[userfaultfd]' THEN 'userfaultfd'
            WHEN name = 'anon_inode:[io_uring]' THEN 'io_uring'
            WHEN name = 'anon_inode:[pidfd]' THEN 'pidfd'
            WHEN starts_with(name, 'anon_inode:bpf') THEN 'bpf'
            WHEN starts_with(name, '/') AND (flags & 65536) <> 0 THEN 'directory'
            WHEN starts_with(name, '/') THEN 'file'
            ELSE 'unknown' END""",
    # libsinsp's fd.typechar letters (CHAR_FD_* in fdinfo.h).
    """CREATE OR REPLACE TEMP MACRO trace_typechar(t) AS
       CASE t WHEN 'file' THEN 'f' WHEN 'directory' THEN 'd' WHEN 'ipv4' THEN '4'
              WHEN 'ipv6' THEN '6' WHEN 'unix' THEN 'u' WHEN 'pipe' THEN 'p'
              WHEN 'event' THEN 'e' WHEN 'signalfd' THEN 's' WHEN 'eventpoll' THEN 'l'
              WHEN 'inotify' THEN 'i' WHEN 'timerfd' THEN 't' WHEN 'netlink' THEN 'n'
              WHEN 'bpf' THEN 'b' WHEN 'userfaultfd' THEN 'u' WHEN 'io_uring' THEN 'r'
              WHEN 'memfd' THEN 'm' WHEN 'pidfd' THEN 'P' WHEN 'unknown' THEN 'o' END""",
    # fd.l4proto from the protocol number, or the socket type when it is 0.
    """CREATE OR REPLACE TEMP MACRO trace_l4proto(family, proto, stype) AS
       CASE WHEN family NOT IN (2, 10) THEN NULL
            WHEN proto = 6 THEN 'tcp' WHEN proto = 17 THEN 'udp'
            WHEN proto IN (1, 58) THEN 'icmp'
            WHEN (stype & 15) = 1 THEN 'tcp' WHEN (stype & 15) = 2 THEN 'udp'
            WHEN (stype & 15) = 3 THEN 'raw' END""",
    # libsinsp renders an IPv4/IPv6 endpoint as ip:port, the pair client->server.
    """CREATE OR REPLACE TEMP MACRO trace_endpoint(ip, port) AS
       CASE WHEN ip IS NULL THEN '' ELSE ip || ':' || coalesce(port::VARCHAR, '0') END""",
)


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    for statement in _MACROS:
        con.execute(statement)
