"""The capture schema: the one contract between the recorder and the analyzer.

A segment is a single zstd Parquet file holding one table. Syscall events
(``kind='evt'``) share it with synthetic snapshot rows, the way scap files
carry procinfo records next to events: the process table (``proc``), open
file descriptors (``fd``), users (``user``), groups (``group``) and cgroups
(``cgroup``) as they were when the segment was opened. Snapshot rows are
written first, so they sit in the first row groups and every segment can be
read on its own. docs/schema.md documents every column and its Falco field.

Bump SCHEMA_VERSION on any change a reader must know about; readers refuse a
major version they do not understand.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.0"

# Row kinds. Events first in importance, snapshot kinds after.
KIND_EVENT = "evt"
KIND_PROC = "proc"
KIND_FD = "fd"
KIND_USER = "user"
KIND_GROUP = "group"
KIND_CGROUP = "cgroup"
KINDS = (KIND_EVENT, KIND_PROC, KIND_FD, KIND_USER, KIND_GROUP, KIND_CGROUP)

# Pseudo-syscall names for events that come from sched tracepoints rather
# than a syscall exit. Falco calls the exit event `procexit`.
EVT_PROCEXIT = "procexit"

# Parquet key-value metadata keys written on every segment.
META_SCHEMA_VERSION = b"trace.schema_version"
META_HOST = b"trace.host"
META_KERNEL = b"trace.kernel"
META_BOOT_NS = b"trace.boot_ns"  # wall-clock ns at boot: ts = ktime_get_ns() + boot_ns
META_SEGMENT_SEQ = b"trace.segment_seq"
META_DROPS = b"trace.drops"  # JSON: {"kernel": {cpu: n}, "user": n}
META_FIRST_EVT_NUM = b"trace.first_evt_num"

_i16, _i32, _i64 = pa.int16(), pa.int32(), pa.int64()
_str = pa.string()
_dict = pa.dictionary(pa.int32(), pa.string())

# (name, type, doc). Order is the on-disk column order.
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    # --- every row -------------------------------------------------------
    ("kind", _dict, "row kind: evt, proc, fd, user, group, cgroup"),
    ("evt_num", _i64, "capture-wide event number, increasing across segments and restarts; null on snapshot rows"),
    ("ts", _i64, "wall-clock ns since the Unix epoch (event time, or snapshot time)"),
    # --- thread context (evt rows; proc rows for the process itself) -------
    ("cpu", _i16, "CPU the event was recorded on"),
    ("pid", _i32, "process id (tgid) in the root pid namespace"),
    ("tid", _i32, "thread id in the root pid namespace"),
    ("ppid", _i32, "parent's tgid (task->real_parent->tgid)"),
    ("uid", _i64, "effective uid"),
    ("gid", _i64, "effective gid"),
    ("comm", _str, "task comm (<= 15 bytes), Falco's proc.name"),
    ("cgroup_id", _i64, "cgroup v2 id (the cgroup directory's inode number)"),
    ("container_id", _dict, "container id (12 hex chars) derived from the cgroup path, or 'host'"),
    # --- the syscall --------------------------------------------------------
    ("syscall", _dict, "syscall name as Falco's evt.type (openat, execve, ...) or 'procexit'"),
    ("res", _i64, "return value; negative errno on failure"),
    ("arg0", _i64, "raw syscall argument 0 (pointers included, as integers)"),
    ("arg1", _i64, "raw syscall argument 1"),
    ("arg2", _i64, "raw syscall argument 2"),
    ("arg3", _i64, "raw syscall argument 3"),
    ("arg4", _i64, "raw syscall argument 4"),
    ("arg5", _i64, "raw syscall argument 5"),
    # --- decoded arguments (null where the syscall has no such argument) ---
    ("fd", _i32, "fd the call acts on: close/dup/fchmod/fchdir/fcntl/connect/bind/listen/accept/send*/recv*; pipe's read end; proc snapshot: unused; fd rows: the fd"),
    ("fd2", _i32, "second fd: pipe/pipe2 write end, socketpair's second fd"),
    ("dirfd", _i32, "dirfd of a relative *at call (AT_FDCWD = -100)"),
    ("path", _str, "first path argument as passed (may be relative): open/exec filename, unlink/mkdir/chdir/chmod path, rename/link oldpath, symlink target, mount source; fd rows: the fd's name"),
    ("dirfd2", _i32, "second dirfd: renameat*/linkat newdirfd"),
    ("path2", _str, "second path: rename/link newpath, symlink linkpath, mount target"),
    ("flags", _i64, "open/openat/openat2 flags, dup3/pipe2/accept4/unshare/clone/clone3/renameat2/linkat/unlinkat/fchmodat/memfd_create flags; fd rows: fdinfo flags"),
    ("mode", _i32, "mode: open*/creat/mkdir*/chmod*"),
    ("sock_family", _i16, "address family of the socket address argument or socket() domain (AF_INET=2, AF_INET6=10, AF_UNIX=1)"),
    ("sock_type", _i32, "socket() type"),
    ("sock_proto", _i32, "socket() protocol, or the L4 protocol of an fd row (6 tcp, 17 udp)"),
    ("addr_ip", _str, "IP of the address argument: connect/sendto/sendmsg destination, bind address, accept/recvfrom peer; fd rows: remote IP"),
    ("addr_port", _i32, "port of the address argument (host byte order); fd rows: remote port"),
    ("addr_path", _str, "unix socket path of the address argument; fd rows: unix path"),
    ("local_ip", _str, "local IP of the socket, when the recorder could read it; fd rows: local IP"),
    ("local_port", _i32, "local port of the socket; fd rows: local port"),
    # --- process image (execve/execveat exit with res=0, and proc rows) ----
    ("exepath", _str, "full path of the executable (the kernel's bprm filename / /proc/PID/exe)"),
    ("argv", pa.list_(_str), "argv including argv[0] (Falco's proc.exe is argv[0], proc.args the rest)"),
    ("argv_truncated", pa.bool_(), "argv was cut at the recorder's bound"),
    ("cwd", _str, "current working directory"),
    ("env", pa.list_(_str), "environment (only with `trace record --env`; holds secrets)"),
    ("loginuid", _i64, "audit login uid (-1 / 4294967295 when unset)"),
    ("tty", _i32, "controlling terminal number (0 when none), Falco's proc.tty"),
    ("sid", _i32, "session id"),
    ("pgid", _i32, "process group id"),
    ("vpid", _i32, "pid inside the process's own pid namespace"),
    ("proc_start_ts", _i64, "process start, wall-clock ns"),
    ("cap_effective", _i64, "effective capability mask"),
    ("cap_permitted", _i64, "permitted capability mask"),
    ("cap_inheritable", _i64, "inheritable capability mask"),
    ("exe_from_memfd", pa.bool_(), "the executable is a memfd (Falco's proc.is_exe_from_memfd)"),
    ("exe_upper_layer", pa.bool_(), "the executable lives in an overlayfs upper layer"),
    # --- users, groups, cgroups (snapshot rows) ----------------------------
    ("user_name", _str, "user rows: login name for `uid`"),
    ("user_home", _str, "user rows: home directory"),
    ("user_shell", _str, "user rows: login shell"),
    ("group_name", _str, "group rows: name for `gid`"),
    ("cgroup_path", _str, "cgroup rows: path under the cgroup2 mount, for cgroup_id"),
    ("container_name", _str, "cgroup rows: container name where the runtime's state on disk names it"),
    ("container_image", _str, "cgroup rows: container image where the runtime's state on disk names it"),
)

SCHEMA = pa.schema([pa.field(name, typ) for name, typ, _ in COLUMNS])
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)


def schema_with_metadata(metadata: dict[bytes, bytes]) -> pa.Schema:
    """The segment schema carrying one segment's key-value metadata."""
    return SCHEMA.with_metadata({META_SCHEMA_VERSION: SCHEMA_VERSION.encode(), **metadata})


def schema_major(version: str) -> int:
    return int(version.split(".", 1)[0])
