"""The field catalog: every Falco field the rules may name, mapped onto the
analyzer's `events` view (docs/contracts.md section 2).

One table, ``CATALOG``. A supported field carries the SQL that reads it; an
unsupported one carries the reason. Reasons say why the data cannot exist in
a host syscall capture (``derivable=False``), or that the capture holds it
but the analyzer does not derive it yet (``derivable=True``). docs/fields.md
is generated from this table (`python -m analyzer.fields.catalog`) and
tests/test_sql_golden.py fails when the two disagree.

Column-backed fields read the view's column named exactly like the field
(``"proc.name"``); ``event_columns()`` lists them with their DuckDB types,
which is the column contract the state builder fulfils.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from analyzer.errors import TraceError
from analyzer.fields.spec import ArgKind, FieldSpec, FieldType

T = FieldType

# ----------------------------------------------------------------- reasons
# Why the data cannot exist in a host syscall capture.
NO_K8S = "needs the Kubernetes API server: a host syscall capture holds no pod, namespace or workload metadata"
NO_RUNTIME = (
    "needs the container runtime API (docker/containerd/CRI inspect): the capture holds only the "
    "cgroup-derived container id and the name/image the runtime's state on disk gives"
)
NO_DNS = "needs name resolution done at capture time: the capture holds addresses, never the names a resolver returned then"
NO_BUFFERS = "I/O buffers are not captured: the recorder records syscall arguments and results, not the data read or written"
NO_ENTER = "only exit events are recorded, so enter-to-exit latencies and waits do not exist"
NOT_SAMPLED = "per-process resource usage (memory, CPU, page faults, fd limits) is not sampled by the recorder"
NO_INODE = "the recorder does not capture device, inode or overlayfs-layer information for file descriptors or executables"
NO_PLUGIN = "plugin and async (non-syscall) events do not exist in a syscall capture"
NO_POLL = "poll/select fd sets are not captured"
NO_SCHED = "scheduler switch events are not captured, so per-thread CPU time does not exist"
NO_TTY_FDS = "the standard-stream fd table of a process is not snapshotted at each event"
REMOVED = "removed from libsinsp; no current Falco version provides it"
TABLE_ONLY = "a libsinsp table/chisel aggregate (EPF_TABLE_ONLY), not valid in rule conditions or outputs"
# The capture holds the data; the analyzer does not derive it yet.
TODO = "not derived by the analyzer yet (the capture holds the inputs)"

_ANCESTOR_DOC = (
    "without index: any ancestor from the parent up matches; [N]: the Nth ancestor (0 = the process itself)"
)


def _q(column: str) -> str:
    """A quoted DuckDB identifier for a column named like the field."""
    return '"' + column.replace('"', '""') + '"'


def col(name: str, type: FieldType, doc: str, **kw) -> FieldSpec:
    """A field read from the events view's column of the same name."""
    return FieldSpec(name, type, _q(name), doc=doc, **kw)


def expr(name: str, type: FieldType, sql: str, doc: str, **kw) -> FieldSpec:
    """A field computed from other columns of the events view."""
    return FieldSpec(name, type, sql, doc=doc, **kw)


def gone(name: str, type: FieldType, reason: str, arg: ArgKind = ArgKind.NONE) -> FieldSpec:
    """A field whose data cannot exist in a host syscall capture."""
    return FieldSpec(name, type, None, arg=arg, unsupported=reason)


def todo(name: str, type: FieldType, detail: str, arg: ArgKind = ArgKind.NONE) -> FieldSpec:
    """A field the capture could supply but the analyzer does not derive."""
    return FieldSpec(name, type, None, arg=arg, unsupported=f"{TODO}: {detail}", derivable=True)


def ancestor(name: str, type: FieldType, list_column: str, doc: str) -> FieldSpec:
    return FieldSpec(
        name, type, f'{_q(list_column)}[2:]', arg=ArgKind.OPTIONAL, any_element=True,
        arg_sql=f'{_q(list_column)}[{{index}} + 1]', arg_is_index=True, doc=f"{doc}; {_ANCESTOR_DOC}",
    )


# libsinsp's thread.cap_* and the rendering of times are done by the state
# builder; the compiler only needs to know the column.
_TIME_OF_DAY = "strftime(make_timestamp(\"evt.rawtime\" // 1000), '%H:%M:%S') || '.' || lpad((\"evt.rawtime\" % 1000000000)::VARCHAR, 9, '0')"
_DATE_TIME = "strftime(make_timestamp(\"evt.rawtime\" // 1000), '%Y-%m-%d %H:%M:%S') || '.' || lpad((\"evt.rawtime\" % 1000000000)::VARCHAR, 9, '0')"
# Docker image reference grammar: [registry/]repository[:tag][@digest]; a
# ':' belongs to a tag only after the last '/'.
_IMAGE_NO_DIGEST = "split_part(\"container.image\", '@', 1)"
_IMAGE_REPOSITORY = f"regexp_replace({_IMAGE_NO_DIGEST}, ':[^:/]*$', '')"
_IMAGE_TAG = f"nullif(regexp_extract({_IMAGE_NO_DIGEST}, ':([^:/]*)$', 1), '')"
_ENV_VALUE = (
    "list_extract(list_transform(list_filter(\"_env\", lambda _v: starts_with(_v, {arg} || '=')), "
    "lambda _v: substr(_v, strlen({arg}) + 2)), 1)"
)
_IO_READ_SYSCALLS = "('read', 'readv', 'pread64', 'preadv', 'preadv2', 'recvfrom', 'recvmsg', 'recvmmsg')"
_IO_WRITE_SYSCALLS = "('write', 'writev', 'pwrite64', 'pwritev', 'pwritev2', 'sendto', 'sendmsg', 'sendmmsg', 'sendfile')"

_FIELDS: tuple[FieldSpec, ...] = (
    # ------------------------------------------------------------ evt.*
    col("evt.num", T.INT, "event number, increasing across segments"),
    expr("evt.time", T.STRING, _TIME_OF_DAY, "event time of day, UTC, HH:MM:SS.nnnnnnnnn"),
    expr("evt.time.s", T.STRING, "strftime(make_timestamp(\"evt.rawtime\" // 1000), '%H:%M:%S')", "event time of day, UTC, seconds"),
    expr("evt.time.iso8601", T.STRING, "strftime(make_timestamp(\"evt.rawtime\" // 1000), '%Y-%m-%dT%H:%M:%S') || '.' || lpad((\"evt.rawtime\" % 1000000000)::VARCHAR, 9, '0') || 'Z'", "event time, ISO 8601, UTC"),
    expr("evt.datetime", T.STRING, _DATE_TIME, "event date and time, UTC"),
    expr("evt.datetime.s", T.STRING, "strftime(make_timestamp(\"evt.rawtime\" // 1000), '%Y-%m-%d %H:%M:%S')", "event date and time, UTC, seconds"),
    col("evt.rawtime", T.ABSTIME, "event time, ns since the epoch"),
    expr("evt.rawtime.s", T.ABSTIME, "\"evt.rawtime\" // 1000000000", "event time, whole seconds since the epoch"),
    expr("evt.rawtime.ns", T.ABSTIME, "\"evt.rawtime\" % 1000000000", "fractional part of the event time, ns"),
    todo("evt.reltime", T.RELTIME, "time since the capture started"),
    todo("evt.reltime.s", T.RELTIME, "time since the capture started"),
    todo("evt.reltime.ns", T.RELTIME, "time since the capture started"),
    todo("evt.deltatime", T.RELTIME, "time since the previous event"),
    todo("evt.deltatime.s", T.RELTIME, "time since the previous event"),
    todo("evt.deltatime.ns", T.RELTIME, "time since the previous event"),
    todo("evt.outputtime", T.STRING, "print-only time in the output's configured format"),
    gone("evt.latency", T.RELTIME, NO_ENTER),
    gone("evt.latency.s", T.RELTIME, NO_ENTER),
    gone("evt.latency.ns", T.RELTIME, NO_ENTER),
    gone("evt.latency.quantized", T.INT, NO_ENTER),
    gone("evt.latency.human", T.STRING, NO_ENTER),
    gone("evt.wait_latency", T.RELTIME, NO_ENTER),
    expr("evt.dir", T.STRING, "'<'", "always '<': only exit events are recorded"),
    col("evt.type", T.STRING, "syscall name (openat, execve, ...) or procexit"),
    expr("evt.type.is", T.INT, "NULL", "1 if evt.type equals the argument, else 0", arg=ArgKind.REQUIRED,
         arg_sql="(\"evt.type\" = {arg})::BIGINT"),
    expr("syscall.type", T.STRING, "CASE WHEN \"evt.type\" = 'procexit' THEN NULL ELSE \"evt.type\" END", "syscall name; missing for non-syscall events"),
    todo("evt.category", T.STRING, "libsinsp's per-event category table"),
    col("evt.cpu", T.INT, "CPU the event was recorded on"),
    col("evt.args", T.STRING, "all parameters as name=value, rendered like libsinsp"),
    expr("evt.arg", T.STRING, "NULL", "one parameter as libsinsp renders it: evt.arg.NAME, evt.arg[NAME] or evt.arg[N] (0-based position)",
         arg=ArgKind.REQUIRED, arg_sql="\"_evt_args\"[{arg}]"),
    todo("evt.rawarg", T.STRING, "raw (unrendered) parameter values by name", ArgKind.REQUIRED),
    expr("evt.info", T.STRING, "\"evt.args\"", "for syscall events, the same as evt.args"),
    gone("evt.buffer", T.BUFFER, NO_BUFFERS),
    gone("evt.buflen", T.INT, NO_BUFFERS),
    col("evt.res", T.STRING, "result: SUCCESS or the errno name (ENOENT, ...)"),
    col("evt.rawres", T.INT, "raw result, negative errno on failure"),
    expr("evt.failed", T.BOOL, "\"evt.rawres\" < 0", "true if the call returned an error"),
    expr("evt.is_io", T.BOOL, f"\"evt.type\" IN {_IO_READ_SYSCALLS[:-1]}, {_IO_WRITE_SYSCALLS[1:]}", "the syscall reads or writes an fd"),
    expr("evt.is_io_read", T.BOOL, f"\"evt.type\" IN {_IO_READ_SYSCALLS}", "the syscall reads from an fd"),
    expr("evt.is_io_write", T.BOOL, f"\"evt.type\" IN {_IO_WRITE_SYSCALLS}", "the syscall writes to an fd"),
    expr("evt.io_dir", T.STRING, f"CASE WHEN \"evt.type\" IN {_IO_READ_SYSCALLS} THEN 'r' WHEN \"evt.type\" IN {_IO_WRITE_SYSCALLS} THEN 'w' END", "r or w for I/O syscalls"),
    todo("evt.is_wait", T.BOOL, "libsinsp's EF_WAITS event flag table"),
    todo("evt.is_syslog", T.BOOL, "writes to /dev/log"),
    gone("evt.count", T.INT, TABLE_ONLY),
    gone("evt.count.error", T.INT, TABLE_ONLY),
    gone("evt.count.error.file", T.INT, TABLE_ONLY),
    gone("evt.count.error.net", T.INT, TABLE_ONLY),
    gone("evt.count.error.memory", T.INT, TABLE_ONLY),
    gone("evt.count.error.other", T.INT, TABLE_ONLY),
    gone("evt.count.exit", T.INT, TABLE_ONLY),
    gone("evt.count.procinfo", T.INT, TABLE_ONLY),
    gone("evt.count.threadinfo", T.INT, TABLE_ONLY),
    gone("evt.around", T.INT, "needs a live trace file to look around in (filter-only sysdig feature)", ArgKind.REQUIRED),
    todo("evt.abspath", T.STRING, "absolute path from a dirfd/path argument pair", ArgKind.REQUIRED),
    gone("evt.buflen.in", T.INT, TABLE_ONLY),
    gone("evt.buflen.out", T.INT, TABLE_ONLY),
    gone("evt.buflen.file", T.INT, TABLE_ONLY),
    gone("evt.buflen.file.in", T.INT, TABLE_ONLY),
    gone("evt.buflen.file.out", T.INT, TABLE_ONLY),
    gone("evt.buflen.net", T.INT, TABLE_ONLY),
    gone("evt.buflen.net.in", T.INT, TABLE_ONLY),
    gone("evt.buflen.net.out", T.INT, TABLE_ONLY),
    col("evt.is_open_read", T.BOOL, "open* with read access"),
    col("evt.is_open_write", T.BOOL, "open* with write access"),
    col("evt.is_open_exec", T.BOOL, "open* creating an executable file"),
    todo("evt.is_open_create", T.BOOL, "whether an open actually created the file"),
    gone("evt.infra.docker.name", T.STRING, TABLE_ONLY),
    gone("evt.infra.docker.container.id", T.STRING, TABLE_ONLY),
    gone("evt.infra.docker.container.name", T.STRING, TABLE_ONLY),
    gone("evt.infra.docker.container.image", T.STRING, TABLE_ONLY),
    gone("evt.pluginname", T.STRING, NO_PLUGIN),
    gone("evt.plugininfo", T.STRING, NO_PLUGIN),
    expr("evt.source", T.STRING, "'syscall'", "always syscall"),
    expr("evt.is_async", T.BOOL, "false", "always false: only syscall events are recorded"),
    gone("evt.asynctype", T.STRING, NO_PLUGIN),
    expr("evt.hostname", T.STRING, "\"_host\"", "host the capture came from"),
    # ------------------------------------------------------------- fd.*
    col("fd.num", T.INT, "fd number the event acts on"),
    col("fd.type", T.STRING, "file, directory, ipv4, ipv6, unix, pipe, event, signalfd, eventpoll, inotify, timerfd, netlink, memfd, ..."),
    col("fd.typechar", T.STRING, "one-letter fd type (f, 4, 6, u, p, ...)"),
    col("fd.name", T.STRING, "full path, or the connection tuple for sockets"),
    col("fd.directory", T.STRING, "directory part of fd.name for files"),
    col("fd.filename", T.STRING, "file name part of fd.name for files"),
    expr("fd.ip", T.IPADDR, "list_value(\"fd.cip\", \"fd.sip\")", "either end's IP (filter only)",
         sides=('"fd.cip"', '"fd.sip"')),
    col("fd.cip", T.IPADDR, "client IP"),
    col("fd.sip", T.IPADDR, "server IP"),
    col("fd.lip", T.IPADDR, "local IP"),
    col("fd.rip", T.IPADDR, "remote IP"),
    expr("fd.port", T.PORT, "list_value(\"fd.cport\", \"fd.sport\")", "either end's port (filter only)",
         sides=('"fd.cport"', '"fd.sport"')),
    col("fd.cport", T.PORT, "client port"),
    col("fd.sport", T.PORT, "server port"),
    col("fd.lport", T.PORT, "local port"),
    col("fd.rport", T.PORT, "remote port"),
    col("fd.l4proto", T.STRING, "tcp, udp, icmp or raw"),
    col("fd.sockfamily", T.STRING, "ip or unix"),
    col("fd.is_server", T.BOOL, "the process is the server end"),
    todo("fd.uid", T.STRING, "unique fd id (tid and fd number concatenated)"),
    expr("fd.containername", T.STRING, "\"container.id\" || ':' || \"fd.name\"", "container id and fd name"),
    todo("fd.containerdirectory", T.STRING, "container id and fd directory"),
    todo("fd.proto", T.PORT, "protocol name of either end's port (/etc/services)"),
    todo("fd.cproto", T.STRING, "protocol name of the client port (/etc/services)"),
    todo("fd.sproto", T.STRING, "protocol name of the server port (/etc/services)"),
    todo("fd.lproto", T.STRING, "protocol name of the local port (/etc/services)"),
    todo("fd.rproto", T.STRING, "protocol name of the remote port (/etc/services)"),
    expr("fd.net", T.IPNET, "list_value(\"fd.cip\", \"fd.sip\")", "either end's IP, compared to a CIDR network (filter only)",
         sides=('"fd.cip"', '"fd.sip"')),
    expr("fd.cnet", T.IPNET, "\"fd.cip\"", "client IP compared to a CIDR network (filter only)"),
    expr("fd.snet", T.IPNET, "\"fd.sip\"", "server IP compared to a CIDR network (filter only)"),
    expr("fd.lnet", T.IPNET, "\"fd.lip\"", "local IP compared to a CIDR network (filter only)"),
    expr("fd.rnet", T.IPNET, "\"fd.rip\"", "remote IP compared to a CIDR network (filter only)"),
    col("fd.connected", T.BOOL, "the socket is connected"),
    col("fd.name_changed", T.BOOL, "the event changed the fd's name (connect, bind, ...)"),
    gone("fd.cip.name", T.STRING, NO_DNS),
    gone("fd.sip.name", T.STRING, NO_DNS),
    gone("fd.lip.name", T.STRING, NO_DNS),
    gone("fd.rip.name", T.STRING, NO_DNS),
    gone("fd.dev", T.INT, NO_INODE),
    gone("fd.dev.major", T.INT, NO_INODE),
    gone("fd.dev.minor", T.INT, NO_INODE),
    gone("fd.ino", T.INT, NO_INODE),
    col("fd.nameraw", T.STRING, "fd name as passed by the process (not resolved against the cwd)"),
    todo("fd.types", T.STRING, "list of the distinct types of the process's open fds at the event", ArgKind.OPTIONAL),
    gone("fd.is_upper_layer", T.BOOL, NO_INODE),
    gone("fd.is_lower_layer", T.BOOL, NO_INODE),
    gone("fdlist.nums", T.STRING, NO_POLL),
    gone("fdlist.names", T.STRING, NO_POLL),
    gone("fdlist.cips", T.STRING, NO_POLL),
    gone("fdlist.sips", T.STRING, NO_POLL),
    gone("fdlist.cports", T.STRING, NO_POLL),
    gone("fdlist.sports", T.STRING, NO_POLL),
    todo("fs.path.name", T.STRING, "resolved path argument of path syscalls"),
    todo("fs.path.nameraw", T.STRING, "path argument of path syscalls"),
    todo("fs.path.source", T.STRING, "resolved source path of rename/link"),
    todo("fs.path.sourceraw", T.STRING, "source path of rename/link"),
    todo("fs.path.target", T.STRING, "resolved target path of rename/link"),
    todo("fs.path.targetraw", T.STRING, "target path of rename/link"),
    # ------------------------------------------------------- group/user
    col("group.gid", T.INT, "effective gid"),
    col("group.name", T.STRING, "group name from the capture's groups snapshot"),
    col("user.uid", T.INT, "effective uid"),
    col("user.name", T.STRING, "user name from the capture's users snapshot"),
    col("user.homedir", T.STRING, "home directory from the users snapshot"),
    col("user.shell", T.STRING, "login shell from the users snapshot"),
    col("user.loginuid", T.INT, "audit login uid (-1 when unset)"),
    col("user.loginname", T.STRING, "user name of user.loginuid"),
    # ----------------------------------------------------------- proc.*
    col("proc.exe", T.STRING, "argv[0]"),
    col("proc.pexe", T.STRING, "parent's argv[0]"),
    ancestor("proc.aexe", T.STRING, "_anc_exe", "ancestors' argv[0]"),
    col("proc.exepath", T.STRING, "full executable path"),
    col("proc.pexepath", T.STRING, "parent's full executable path"),
    ancestor("proc.aexepath", T.STRING, "_anc_exepath", "ancestors' executable paths"),
    col("proc.name", T.STRING, "process name (comm, at most 15 bytes)"),
    col("proc.pname", T.STRING, "parent's name"),
    ancestor("proc.aname", T.STRING, "_anc_name", "ancestors' names"),
    col("proc.args", T.STRING, "arguments after argv[0], space-separated"),
    todo("proc.aargs", T.STRING, "ancestors' arguments", ArgKind.OPTIONAL),
    col("proc.cmdline", T.STRING, "name and arguments"),
    col("proc.pcmdline", T.STRING, "parent's name and arguments"),
    ancestor("proc.acmdline", T.STRING, "_anc_cmdline", "ancestors' command lines"),
    todo("proc.cmdnargs", T.INT, "number of arguments"),
    todo("proc.cmdlenargs", T.INT, "total length of the arguments"),
    expr("proc.exeline", T.STRING, "concat_ws(' ', \"proc.exe\", nullif(\"proc.args\", ''))", "argv[0] and arguments"),
    expr("proc.env", T.STRING, "array_to_string(\"_env\", ' ')",
         "environment (only when recorded with --env); proc.env[NAME] is one variable's value",
         arg=ArgKind.OPTIONAL, arg_sql=_ENV_VALUE),
    todo("proc.aenv", T.STRING, "ancestors' environment", ArgKind.OPTIONAL),
    col("proc.cwd", T.STRING, "current working directory"),
    todo("proc.loginshellid", T.INT, "pid of the oldest shell ancestor"),
    col("proc.tty", T.INT, "controlling terminal number, 0 when none"),
    col("proc.pid", T.INT, "process id"),
    col("proc.ppid", T.INT, "parent process id"),
    ancestor("proc.apid", T.INT, "_anc_pid", "ancestors' pids"),
    col("proc.vpid", T.INT, "pid in the process's own pid namespace"),
    todo("proc.pvpid", T.INT, "parent's pid in its pid namespace"),
    col("proc.sid", T.INT, "session id"),
    col("proc.sname", T.STRING, "name of the session leader"),
    todo("proc.sid.exe", T.STRING, "session leader's argv[0]"),
    todo("proc.sid.exepath", T.STRING, "session leader's executable path"),
    col("proc.vpgid", T.INT, "process group id"),
    todo("proc.vpgid.name", T.STRING, "process group leader's name"),
    todo("proc.vpgid.exe", T.STRING, "process group leader's argv[0]"),
    todo("proc.vpgid.exepath", T.STRING, "process group leader's executable path"),
    expr("proc.pgid", T.INT, "\"proc.vpgid\"", "process group id (the capture records it in the root pid namespace)"),
    todo("proc.pgid.name", T.STRING, "process group leader's name"),
    todo("proc.pgid.exe", T.STRING, "process group leader's argv[0]"),
    todo("proc.pgid.exepath", T.STRING, "process group leader's executable path"),
    col("proc.duration", T.RELTIME, "ns since the process started"),
    todo("proc.ppid.duration", T.RELTIME, "ns since the parent started"),
    col("proc.pid.ts", T.RELTIME, "process start time, ns since the epoch"),
    todo("proc.ppid.ts", T.RELTIME, "parent's start time"),
    gone("proc.is_exe_writable", T.BOOL, NO_INODE),
    col("proc.is_exe_upper_layer", T.BOOL, "the executable lives in an overlayfs upper layer"),
    gone("proc.is_exe_lower_layer", T.BOOL, NO_INODE),
    col("proc.is_exe_from_memfd", T.BOOL, "the executable is a memfd"),
    expr("proc.is_sid_leader", T.BOOL, "\"proc.pid\" = \"proc.sid\"", "the process leads its session"),
    expr("proc.is_vpgid_leader", T.BOOL, "\"proc.pid\" = \"proc.vpgid\"", "the process leads its process group"),
    expr("proc.is_pgid_leader", T.BOOL, "\"proc.pid\" = \"proc.vpgid\"", "the process leads its process group"),
    gone("proc.exe_ino", T.INT, NO_INODE),
    gone("proc.exe_ino.ctime", T.ABSTIME, NO_INODE),
    gone("proc.exe_ino.mtime", T.ABSTIME, NO_INODE),
    gone("proc.exe_ino.ctime_duration_proc_start", T.ABSTIME, NO_INODE),
    gone("proc.exe_ino.ctime_duration_pidns_start", T.ABSTIME, NO_INODE),
    gone("proc.pidns_init_start_ts", T.INT, "the pid namespace's init start time is not captured"),
    col("thread.cap_permitted", T.STRING, "permitted capabilities, space-separated CAP_* names"),
    col("thread.cap_inheritable", T.STRING, "inheritable capabilities, space-separated CAP_* names"),
    col("thread.cap_effective", T.STRING, "effective capabilities, space-separated CAP_* names"),
    gone("proc.fdopencount", T.INT, NOT_SAMPLED),
    gone("proc.fdlimit", T.INT, NOT_SAMPLED),
    gone("proc.fdusage", T.DOUBLE, NOT_SAMPLED),
    gone("proc.vmsize", T.INT, NOT_SAMPLED),
    gone("proc.vmrss", T.INT, NOT_SAMPLED),
    gone("proc.vmswap", T.INT, NOT_SAMPLED),
    gone("thread.pfmajor", T.INT, NOT_SAMPLED),
    gone("thread.pfminor", T.INT, NOT_SAMPLED),
    col("thread.tid", T.INT, "thread id"),
    expr("thread.ismain", T.BOOL, "\"thread.tid\" = \"proc.pid\"", "the thread is the main thread"),
    gone("thread.vtid", T.INT, "thread ids inside the pid namespace are not captured (only the main thread's vpid)"),
    gone("thread.nametid", T.STRING, TABLE_ONLY),
    gone("thread.exectime", T.RELTIME, NO_SCHED),
    gone("thread.totexectime", T.RELTIME, NO_SCHED),
    todo("thread.cgroups", T.STRING, "cgroup paths of the thread"),
    todo("thread.cgroup", T.STRING, "cgroup path for one subsystem", ArgKind.REQUIRED),
    todo("proc.nthreads", T.INT, "number of live threads"),
    todo("proc.nchilds", T.INT, "number of live children"),
    gone("thread.cpu", T.DOUBLE, NOT_SAMPLED),
    gone("thread.cpu.user", T.DOUBLE, NOT_SAMPLED),
    gone("thread.cpu.system", T.DOUBLE, NOT_SAMPLED),
    gone("thread.vmsize", T.INT, NOT_SAMPLED),
    gone("thread.vmrss", T.INT, NOT_SAMPLED),
    gone("thread.vmsize.b", T.INT, NOT_SAMPLED),
    gone("thread.vmrss.b", T.INT, NOT_SAMPLED),
    gone("proc.stdin.type", T.STRING, NO_TTY_FDS),
    gone("proc.stdout.type", T.STRING, NO_TTY_FDS),
    gone("proc.stderr.type", T.STRING, NO_TTY_FDS),
    gone("proc.stdin.name", T.STRING, NO_TTY_FDS),
    gone("proc.stdout.name", T.STRING, NO_TTY_FDS),
    gone("proc.stderr.name", T.STRING, NO_TTY_FDS),
    gone("util.cnt", T.INT, TABLE_ONLY),
    # ------------------------------------------- container plugin fields
    col("container.id", T.STRING, "container id (12 hex chars) from the cgroup path, or host"),
    todo("container.full_id", T.STRING, "full 64-char container id from the cgroup path"),
    col("container.name", T.STRING, "container name where the runtime's state on disk names it, host for the host"),
    col("container.image", T.STRING, "container image where the runtime's state on disk names it"),
    gone("container.image.id", T.STRING, NO_RUNTIME),
    todo("container.type", T.STRING, "runtime type from the cgroup path (docker, containerd, cri-o, podman)"),
    gone("container.privileged", T.BOOL, NO_RUNTIME),
    gone("container.mounts", T.STRING, NO_RUNTIME),
    gone("container.mount", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    gone("container.mount.source", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    gone("container.mount.dest", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    gone("container.mount.mode", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    gone("container.mount.rdwr", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    gone("container.mount.propagation", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    expr("container.image.repository", T.STRING, _IMAGE_REPOSITORY, "container.image without tag and digest"),
    expr("container.image.tag", T.STRING, _IMAGE_TAG, "tag part of container.image"),
    gone("container.image.digest", T.STRING, NO_RUNTIME),
    gone("container.healthcheck", T.STRING, NO_RUNTIME),
    gone("container.liveness_probe", T.STRING, NO_RUNTIME),
    gone("container.readiness_probe", T.STRING, NO_RUNTIME),
    todo("container.start_ts", T.ABSTIME, "first sighting of the container's cgroup"),
    todo("container.duration", T.RELTIME, "time since container.start_ts"),
    gone("container.ip", T.STRING, NO_RUNTIME),
    gone("container.cni.json", T.STRING, NO_RUNTIME),
    gone("container.host_pid", T.BOOL, NO_RUNTIME),
    gone("container.host_network", T.BOOL, NO_RUNTIME),
    gone("container.host_ipc", T.BOOL, NO_RUNTIME),
    gone("container.label", T.STRING, NO_RUNTIME, ArgKind.REQUIRED),
    gone("container.labels", T.STRING, NO_RUNTIME),
    gone("container.info", T.STRING, REMOVED),
    gone("proc.is_container_healthcheck", T.BOOL, NO_RUNTIME),
    gone("proc.is_container_liveness_probe", T.BOOL, NO_RUNTIME),
    gone("proc.is_container_readiness_probe", T.BOOL, NO_RUNTIME),
    *(
        gone(name, T.STRING, NO_K8S, ArgKind.REQUIRED if name.endswith(".label") else ArgKind.NONE)
        for name in (
            "k8s.pod.name", "k8s.ns.name", "k8s.pod.id", "k8s.pod.uid", "k8s.pod.sandbox_id",
            "k8s.pod.full_sandbox_id", "k8s.pod.label", "k8s.pod.labels", "k8s.pod.ip", "k8s.pod.cni.json",
            "k8s.rc.name", "k8s.rc.id", "k8s.rc.label", "k8s.rc.labels", "k8s.svc.name", "k8s.svc.id",
            "k8s.svc.label", "k8s.svc.labels", "k8s.ns.id", "k8s.ns.label", "k8s.ns.labels", "k8s.rs.name",
            "k8s.rs.id", "k8s.rs.label", "k8s.rs.labels", "k8s.deployment.name", "k8s.deployment.id",
            "k8s.deployment.label", "k8s.deployment.labels",
        )
    ),
)


class FieldError(TraceError, ValueError):
    """A field reference the catalog cannot resolve (unknown name or bad
    argument), or a value SQL cannot carry."""


@dataclass(frozen=True)
class ResolvedField:
    """A field reference resolved for one use: what the generator compiles."""

    spec: FieldSpec
    sql: str | None  # None when unsupported
    arg: str | None = None

    @property
    def type(self) -> FieldType:
        return self.spec.type

    @property
    def is_list(self) -> bool:
        return self.spec.is_list

    @property
    def any_element(self) -> bool:
        return self.spec.any_element and self.arg is None

    @property
    def sides(self) -> tuple[str, ...]:
        return self.spec.sides

    @property
    def display(self) -> str:
        return self.spec.name if self.arg is None else f"{self.spec.name}[{self.arg}]"


def sql_string(value: str) -> str:
    """A SQL string literal: the only way any user text reaches SQL."""
    if "\x00" in value:
        raise FieldError("a NUL character cannot appear in a value")
    return "'" + value.replace("'", "''") + "'"


_EVT_ARG_INDEX = re.compile(r"[0-9]+")


class Catalog(Mapping[str, FieldSpec]):
    """Field name -> FieldSpec; `resolve` handles arguments (proc.aname[2],
    evt.arg.flags, evt.arg[0], proc.env[HOME])."""

    def __init__(self, specs: tuple[FieldSpec, ...]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        if len(self.specs) != len(specs):
            raise ValueError("duplicate field in the catalog")

    def __getitem__(self, name: str) -> FieldSpec:
        return self.specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def lookup(self, name: str) -> FieldSpec | None:
        """The spec for a field name as written, ``evt.arg.flags`` included."""
        spec = self.specs.get(name)
        if spec is None and name.startswith("evt.arg."):
            spec = self.specs["evt.arg"]
        return spec

    def resolve(self, name: str, arg: str | None = None) -> ResolvedField:
        spec = self.specs.get(name)
        if spec is None and name.startswith("evt.arg.") and arg is None:
            spec, arg = self.specs["evt.arg"], name[len("evt.arg."):]
        if spec is None:
            raise FieldError(f"unknown field '{name}'")
        if arg is None and spec.arg is ArgKind.REQUIRED:
            raise FieldError(f"field '{name}' requires an argument")
        if arg is not None and spec.arg is ArgKind.NONE:
            raise FieldError(f"field '{name}' does not take an argument")
        if not spec.supported:
            return ResolvedField(spec, None, arg)
        if arg is None:
            return ResolvedField(spec, spec.sql, None)
        if spec.arg_sql is None:
            return ResolvedField(replace(spec, sql=None, unsupported=f"{TODO}: the [argument] form"), None, arg)
        if spec.arg_is_index:
            if not _EVT_ARG_INDEX.fullmatch(arg):
                raise FieldError(f"field '{name}' takes a number as argument, not '{arg}'")
            return ResolvedField(spec, spec.arg_sql.format(index=int(arg)), arg)
        if spec.name == "evt.arg" and _EVT_ARG_INDEX.fullmatch(arg):
            return ResolvedField(spec, f"map_values(\"_evt_args\")[{int(arg)} + 1]", arg)
        return ResolvedField(spec, spec.arg_sql.format(arg=sql_string(arg)), arg)

    def event_columns(self) -> dict[str, str]:
        """Columns the events view must provide: field-named columns of the
        column-backed fields, with their DuckDB types."""
        columns = {}
        for spec in self.specs.values():
            if spec.sql == _q(spec.name):
                base = _DUCKDB_TYPES[spec.type]
                columns[spec.name] = f"{base}[]" if spec.is_list else base
        return columns


_DUCKDB_TYPES = {
    T.STRING: "VARCHAR", T.INT: "BIGINT", T.DOUBLE: "DOUBLE", T.BOOL: "BOOLEAN", T.IPADDR: "VARCHAR",
    T.IPNET: "VARCHAR", T.PORT: "BIGINT", T.ABSTIME: "BIGINT", T.RELTIME: "BIGINT", T.BUFFER: "BLOB",
}
# List and map columns the catalog reads besides the field-named ones.
AUXILIARY_COLUMNS = {
    "_anc_pid": "BIGINT[]", "_anc_name": "VARCHAR[]", "_anc_exe": "VARCHAR[]", "_anc_exepath": "VARCHAR[]",
    "_anc_cmdline": "VARCHAR[]", "_evt_args": "MAP(VARCHAR, VARCHAR)", "_env": "VARCHAR[]", "_host": "VARCHAR",
}

CATALOG = Catalog(_FIELDS)


def render_markdown(catalog: Catalog = CATALOG) -> str:
    """docs/fields.md, generated from the catalog."""
    supported = [s for s in catalog.values() if s.supported]
    gone_ = [s for s in catalog.values() if not s.supported and not s.derivable]
    later = [s for s in catalog.values() if not s.supported and s.derivable]

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def arg_note(spec: FieldSpec) -> str:
        if spec.arg is ArgKind.NONE:
            return ""
        return "[N]" if spec.arg_is_index else ("[arg]" if spec.arg is ArgKind.OPTIONAL else "[arg] required")

    lines = [
        "# Falco fields",
        "",
        "Generated from `analyzer/fields/catalog.py` by `python -m analyzer.fields.catalog`;",
        "`tests/test_sql_golden.py` fails when this page and the catalog disagree.",
        "",
        "Every field is read from the `events` view (docs/contracts.md section 2). A value the",
        "capture does not have is NULL, and a check on a NULL value is false for every operator",
        "(`!=` included), exactly like libsinsp; `not` then makes it true.",
        "",
        f"{len(supported)} fields are supported, {len(gone_)} cannot be supported because a host",
        f"syscall capture cannot hold their data, and {len(later)} are not derived yet.",
        "",
        "## How checks compile (analyzer/sql)",
        "",
        "* Values are parsed for the field's type when the rule compiles: numbers (decimal or",
        "  `0x` hex), `true`/`false`, IP addresses, CIDR networks; a value libsinsp would",
        "  reject, or an operator the type does not take, is a located error.",
        "* `proc.aname`, `aexe`, `aexepath`, `acmdline`, `apid` without index: the check holds if",
        "  it holds for any ancestor from the parent up (for every operator, `!=` included);",
        "  `[N]` is the Nth ancestor, 0 the process itself. `=`/`in` compile to",
        "  `list_has_any`, the other operators to a `list_filter` over the ancestors.",
        "* `fd.ip`, `fd.port`, `fd.net`: `=`/`in` hold if either end matches, `!=` if both",
        "  differ; other operators are errors (libsinsp's compare_ip/port/net).",
        "* `fd.net`/`cnet`/`snet`/`lnet`/`rnet` take CIDR networks (a bare address is its own",
        "  /32 or /128), IPv4 and IPv6; an address of the other family is outside the network.",
        "  IPv4 matches the canonical dotted quad (text prefix and one octet range),",
        "  IPv6 compares numbers (`_ip6_num` from `install_runtime`).",
        "* `in` is exact membership; on list-valued fields `in` means every element is in",
        "  the set and `intersects` that some element is (an empty list is missing).",
        "* `glob`/`iglob` are glibc `fnmatch` without `FNM_PATHNAME` (`*` crosses `/`,",
        "  backslash escapes), translated to SQL `LIKE` (no brackets, no literal `%`/`_`)",
        "  or else to RE2; `iglob`, `icontains`, `tolower` and",
        "  `toupper` fold ASCII only. Deviation: on non-ASCII text `?` and brackets match one",
        "  character, where libsinsp in the C locale matches one byte.",
        "* `regex` must match the whole string (RE2, `regexp_full_match`).",
        "* `pmatch` matches whole path components: `/a/b` matches `/a/b` and `/a/b/c`,",
        "  not `/a/bc`; empty components are ignored.",
        "* `evt.arg.NAME`, `evt.arg[NAME]`, `evt.arg[N]` compare the value as libsinsp",
        "  renders it (the `_evt_args` map built by analyzer/state).",
        "* Transformers: `tolower`, `toupper`, `b64` (decode; undecodable is missing),",
        "  `basename`, `len` (bytes, or list length), `concat` (missing if any part is),",
        "  `join` (skips missing parts), and `val(field)` on the right. `getopt` is not implemented:",
        "  a rule using it is reported unsupported.",
        "* For a hunt, each condition also compiles to a filter form (NULL stands for false, so",
        "  `not` is pushed down to the checks and DuckDB short-circuits every AND/OR) and an",
        "  event-level prefilter: the checks on `evt.*`/`fd.*` the condition implies, without",
        "  process state or regular expressions, which DuckDB runs before joining the process",
        "  state (analyzer/sql/prefilter.py).",
        "",
        "## Supported",
        "",
        "| field | type | arg | SQL over `events` | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in supported:
        sql = spec.sql if spec.arg is not ArgKind.REQUIRED else spec.arg_sql
        lines.append(
            f"| `{spec.name}` | {spec.type.value}{' list' if spec.is_list else ''} | {arg_note(spec)} "
            f"| `{esc(sql or '')}` | {esc(spec.doc)} |"
        )
    lines += [
        "",
        "## Unsupported: the data cannot exist in a host capture",
        "",
        "A rule naming one of these fields in its condition is reported unsupported with the",
        "rule, the field and this reason; it is never approximated.",
        "",
        "| field | type | why |",
        "|---|---|---|",
    ]
    lines += [f"| `{s.name}` | {s.type.value} | {esc(s.unsupported or '')} |" for s in gone_]
    lines += [
        "",
        "## Unsupported: not derived yet",
        "",
        "The capture holds the inputs; the analyzer does not compute these yet.",
        "",
        "| field | type | what is missing |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{s.name}` | {s.type.value} | {esc((s.unsupported or '').removeprefix(TODO + ': '))} |" for s in later
    ]
    lines += [
        "",
        "## Columns the events view provides for the catalog",
        "",
        "| column | DuckDB type |",
        "|---|---|",
    ]
    columns = {**catalog.event_columns(), **AUXILIARY_COLUMNS}
    lines += [f"| `{name}` | {sql_type} |" for name, sql_type in columns.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_markdown())
