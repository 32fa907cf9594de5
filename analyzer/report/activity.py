"""What the involved processes did, read from the `events` and `fds` views.

The timeline keeps the events a responder looks at first: execs, file
writes, reads of sensitive paths, connections, privilege changes, module and
BPF loads, and every event a rule matched. Per-process detail aggregates
files and peers. All filtering and aggregation runs in DuckDB; Python only
formats rows. Values go in as bound parameters, never into SQL text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

TIMELINE_LIMIT = 20_000
FILES_PER_PROCESS = 200
PEERS_PER_PROCESS = 100

# Falco's sensitive_file_names and sensitive_directory_names, plus the
# credential stores its other rules watch.
SENSITIVE_PREFIXES = (
    "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/pam.conf", "/etc/pam.d/",
    "/etc/security/pwquality.conf", "/etc/ssh/ssh_host_", "/root/.ssh/", "/root/.aws/",
    "/root/.kube/", "/root/.docker/config.json", "/var/run/secrets/", "/run/secrets/",
    "/proc/kcore", "/dev/mem",
)
SENSITIVE_INFIXES = ("/.ssh/id_", "/.ssh/authorized_keys", "/.aws/credentials", "/.kube/config")

_OPEN = "('open','openat','openat2','creat')"
_WRITE_FLAGS = "(syscall = 'creat' or (flags & 3) <> 0 or (flags & 64) <> 0 or (flags & 512) <> 0)"
_MODIFY = ("('rename','renameat','renameat2','unlink','unlinkat','rmdir','chmod','fchmod','fchmodat',"
           "'link','linkat','symlink','symlinkat','truncate','ftruncate')")
_PRIVILEGE = ("('setuid','setgid','setreuid','setregid','setresuid','setresgid','setfsuid','setfsgid',"
              "'capset','ptrace','setns','unshare','mount','umount2','pivot_root','chroot')")
_MODULE = "('init_module','finit_module','delete_module')"
BPF_PROG_LOAD = 5


def _sensitive_sql(expr: str) -> str:
    prefixes = " or ".join(f"starts_with({expr}, '{p}')" for p in SENSITIVE_PREFIXES)
    infixes = " or ".join(f"contains({expr}, '{p}')" for p in SENSITIVE_INFIXES)
    return f"({prefixes} or {infixes})"


# Written by every shell redirect; not a file write worth a timeline row.
NOISE_WRITE_PREFIXES = ("/dev/null", "/dev/tty", "/dev/pts/", "/dev/stdout", "/dev/stderr", "/proc/self/fd/")


def _category_sql(name: str) -> str:
    noise = " or ".join(f"starts_with({name}, '{p}')" for p in NOISE_WRITE_PREFIXES)
    return f"""case
      when syscall in ('execve','execveat') and res = 0 then 'exec'
      when syscall in {_OPEN} and res >= 0 and {_WRITE_FLAGS} and not coalesce({noise}, false) then 'write'
      when syscall in {_OPEN} and res >= 0 and {_sensitive_sql(name)} then 'read'
      when syscall in {_MODIFY} and res >= 0 then 'write'
      when syscall = 'connect' and (res = 0 or res = -115) then 'connect'
      when syscall in ('accept','accept4') and res >= 0 then 'accept'
      when syscall = 'listen' and res = 0 then 'listen'
      when syscall in {_PRIVILEGE} then 'privilege'
      when syscall in {_MODULE} then 'module'
      when syscall = 'bpf' and arg0 = {BPF_PROG_LOAD} then 'module'
    end"""


@dataclass(frozen=True)
class EventRow:
    evt_num: int | None
    ts: int
    proc_key: Any
    category: str  # a timeline category, or "alert" for a matched event of no category
    syscall: str
    res: int | None
    name: str | None  # fd.name when the view resolves it, else the path argument
    path2: str | None
    addr_ip: str | None
    addr_port: int | None
    addr_path: str | None
    exepath: str | None
    argv: list[str] | None
    args: tuple[int | None, ...]


@dataclass(frozen=True)
class FileRow:
    path: str
    read: bool
    write: bool
    exec: bool
    count: int
    first_ts: int


@dataclass(frozen=True)
class PeerRow:
    typechar: str
    l4proto: str | None
    lip: str | None
    lport: int | None
    rip: str | None
    rport: int | None
    name: str | None
    is_server: bool | None
    first_ts: int | None


class Activity:
    """What a set of processes did, from one capture set's views.

    ``Activity(con, proc_keys, pids)`` reads the processes' events from the
    `events` view once, into a temporary table the other queries share: the
    view resolves state per row and is the expensive part. ``pids`` is a
    redundant filter on a raw column, there so the scan can skip row groups.
    Call ``close()`` to drop the table.
    """

    TABLE = "_report_activity"

    def __init__(self, con: duckdb.DuckDBPyConnection, proc_keys: Sequence[Any], pids: Sequence[int],
                 alert_evt_nums: Sequence[int]):
        self.con = con
        self.keys = list(proc_keys)
        self.alert_evt_nums = list(alert_evt_nums)
        columns = {r[0] for r in con.execute("select column_name from (describe events)").fetchall()}
        name = 'coalesce("fd.name", path)' if "fd.name" in columns else "path"
        # Rendered parameters only for the matched events: rendering is per row and costs.
        args = "case when is_alert then _evt_args end" if "_evt_args" in columns else "null::MAP(VARCHAR, VARCHAR)"
        con.execute(
            f"""
            create or replace temp table {self.TABLE} as
            with picked as (
              select *, evt_num in (select unnest($nums)) as is_alert from events
              where pid in (select unnest($pids)) and _proc_key in (select unnest($keys))
            )
            select evt_num, ts, pid, _proc_key, syscall::VARCHAR as syscall, res, flags, {name} as name, path2,
                   addr_ip, addr_port, addr_path, exepath, argv, arg0, arg1, arg2, is_alert, {args} as args
            from picked
            """,
            {"pids": sorted(set(pids)), "keys": self.keys, "nums": self.alert_evt_nums},
        )

    def close(self) -> None:
        self.con.execute(f"drop table if exists {self.TABLE}")

    def timeline(self) -> tuple[list[EventRow], int]:
        """Key events in time order, and how many were left out."""
        rows = self.con.execute(
            f"""
            with keyed as (
              select evt_num, ts, _proc_key, syscall, res, name, path2,
                     addr_ip, addr_port, addr_path, exepath, argv, arg0, arg1, arg2,
                     coalesce({_category_sql("name")}, case when is_alert then 'alert' end) as category
              from {self.TABLE}
            )
            select *, count(*) over () as total from keyed
            where category is not null
            order by ts, evt_num
            limit $limit
            """,
            {"limit": TIMELINE_LIMIT},
        ).fetchall()
        total = rows[0][-1] if rows else 0
        events = [
            EventRow(
                evt_num=r[0], ts=r[1], proc_key=r[2], syscall=r[3], res=r[4], name=r[5], path2=r[6],
                addr_ip=r[7], addr_port=r[8], addr_path=r[9], exepath=r[10], argv=r[11],
                args=(r[12], r[13], r[14]), category=r[15],
            )
            for r in rows
        ]
        return events, total - len(events)

    def files(self) -> dict[Any, tuple[list[FileRow], int]]:
        """Per process key: the files it opened or executed, first use first."""
        rows = self.con.execute(
            f"""
            with opens as (
              select _proc_key, name,
                     bool_or(syscall in {_OPEN} and not {_WRITE_FLAGS}) as rd,
                     bool_or(syscall in {_OPEN} and {_WRITE_FLAGS}) as wr,
                     bool_or(syscall in ('execve','execveat')) as ex,
                     count(*) as n, min(ts) as first_ts
              from {self.TABLE}
              where res >= 0 and name is not null
                and (syscall in {_OPEN} or (syscall in ('execve','execveat') and res = 0))
              group by all
            )
            select *, row_number() over (partition by _proc_key order by first_ts, name) as rank,
                   count(*) over (partition by _proc_key) as total
            from opens qualify rank <= $limit
            order by _proc_key, first_ts, name
            """,
            {"limit": FILES_PER_PROCESS},
        ).fetchall()
        out: dict[Any, tuple[list[FileRow], int]] = {}
        for key, name, rd, wr, ex, n, first_ts, _rank, total in rows:
            files, _ = out.get(key, ([], 0))
            files.append(FileRow(name, bool(rd), bool(wr), bool(ex), n, first_ts))
            out[key] = (files, total - len(files))
        return out

    def peers(self) -> dict[Any, list[PeerRow]]:
        """Per process key: network and unix-socket peers from the fd table."""
        rows = self.con.execute(
            """
            with peers as (
              select _proc_key, typechar, l4proto, lip, lport, rip, rport, name, is_server, min(open_ts) as first_ts
              from fds
              where _proc_key in (select unnest($keys)) and typechar in ('4', '6', 'u')
                and (rip is not null or lport is not null or (typechar = 'u' and coalesce(name, '') <> ''))
              group by all
            )
            select * from peers
            qualify row_number() over (partition by _proc_key order by first_ts) <= $limit
            order by _proc_key, first_ts
            """,
            {"keys": self.keys, "limit": PEERS_PER_PROCESS},
        ).fetchall()
        out: dict[Any, list[PeerRow]] = defaultdict(list)
        for key, *rest in rows:
            out[key].append(PeerRow(*rest))
        return out

    def event_args(self) -> dict[tuple[str, int], list[tuple[str, str]]]:
        """The rendered parameters (``_evt_args``) of the matched events, by (str(_proc_key), evt_num)."""
        rows = self.con.execute(
            f"select _proc_key, evt_num, map_keys(args), map_values(args) from {self.TABLE} where is_alert"
        ).fetchall()
        return {(str(key), num): list(zip(ks or [], vs or [])) for key, num, ks, vs in rows}
