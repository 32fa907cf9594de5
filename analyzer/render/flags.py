"""Value tables libsinsp renders by name: open flags, errno, clone flags, ...

Each table is declared once and turned both into a SQL expression (for the
`events` view) and a Python function (for tests and output formatting), so
the two cannot drift apart. Names and their order follow libscap's
flags_table.c; the bit values are Linux x86_64's (the capture stores raw
syscall arguments, not libscap's PPM encoding).
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass


@dataclass(frozen=True)
class FlagTable:
    """Names of bit sets, rendered `A|B|C` in table order; `zero` names the value 0."""

    entries: tuple[tuple[str, int], ...]
    zero: str | None = None

    def render(self, value: int) -> str:
        if value == 0 and self.zero is not None:
            return self.zero
        return "|".join(name for name, bits in self.entries if bits and value & bits == bits)

    def sql(self, expr: str) -> str:
        # Two constant lists and one lambda: far smaller to bind than a CASE per flag.
        names = "[" + ", ".join(f"'{name}'" for name, bits in self.entries if bits) + "]"
        values = "[" + ", ".join(f"{bits}::BIGINT" for _, bits in self.entries if bits) + "]"
        rendered = (
            f"array_to_string(list_filter({names}, lambda n, i: ({expr} & {values}[i]) = {values}[i]), '|')"
        )
        if self.zero is not None:
            rendered = f"CASE WHEN {expr} = 0 THEN '{self.zero}' ELSE {rendered} END"
        return f"CASE WHEN {expr} IS NULL THEN NULL ELSE {rendered} END"


@dataclass(frozen=True)
class EnumTable:
    """Names of single values (a request, a command)."""

    entries: tuple[tuple[str, int], ...]

    def render(self, value: int) -> str:
        return next((name for name, v in self.entries if v == value), "")

    def sql(self, expr: str) -> str:
        entries = ", ".join(f"{v}: '{name}'" for name, v in self.entries)
        return f"map_extract_value(MAP {{{entries}}}, ({expr})::BIGINT)"


# --- open(2) flags -----------------------------------------------------------
# The access mode is a 2-bit number, not bits: libsinsp prints exactly one of
# O_RDONLY, O_WRONLY, O_RDWR, at O_RDWR's place in the table.
_OPEN_BITS_BEFORE_ACCESS = (
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_DIRECT", 0o40000),
    ("O_TRUNC", 0o1000),
    ("O_SYNC", 0o4000000),
    ("O_NONBLOCK", 0o4000),
    ("O_EXCL", 0o200),
    ("O_DSYNC", 0o10000),
    ("O_APPEND", 0o2000),
    ("O_CREAT", 0o100),
)
_OPEN_BITS_AFTER_ACCESS = (
    ("O_CLOEXEC", 0o2000000),
    ("O_TMPFILE", 0o20000000),
)
_ACCESS_NAMES = ("O_RDONLY", "O_WRONLY", "O_RDWR")
OPEN_FLAG_BITS = dict(_OPEN_BITS_BEFORE_ACCESS + _OPEN_BITS_AFTER_ACCESS)


def render_open_flags(flags: int) -> str:
    names = [name for name, bits in _OPEN_BITS_BEFORE_ACCESS if flags & bits]
    if flags & 3 != 3:
        names.append(_ACCESS_NAMES[flags & 3])
    names += [name for name, bits in _OPEN_BITS_AFTER_ACCESS if flags & bits]
    return "|".join(names)


def parse_open_flags(text: str) -> int:
    """The inverse of render_open_flags for the bits it names."""
    value = 0
    for name in filter(None, text.split("|")):
        if name in _ACCESS_NAMES:
            value |= _ACCESS_NAMES.index(name)
        else:
            value |= OPEN_FLAG_BITS[name]
    return value


def open_flags_sql(expr: str) -> str:
    before = ", ".join(f"CASE WHEN ({expr} & {bits}) <> 0 THEN '{name}' END" for name, bits in _OPEN_BITS_BEFORE_ACCESS)
    after = ", ".join(f"CASE WHEN ({expr} & {bits}) <> 0 THEN '{name}' END" for name, bits in _OPEN_BITS_AFTER_ACCESS)
    access = f"CASE ({expr} & 3) WHEN 0 THEN 'O_RDONLY' WHEN 1 THEN 'O_WRONLY' WHEN 2 THEN 'O_RDWR' END"
    return f"CASE WHEN {expr} IS NULL THEN NULL ELSE concat_ws('|', {before}, {access}, {after}) END"


# --- errno -------------------------------------------------------------------
ERRNO_NAMES: dict[int, str] = dict(sorted(_errno.errorcode.items()))
# libsinsp's own names where Linux has aliases.
ERRNO_NAMES.update({11: "EAGAIN", 35: "EDEADLK", 95: "EOPNOTSUPP"})


def render_errno(res: int) -> str:
    """evt.res: SUCCESS, or the errno name of a negative return value."""
    if res >= 0:
        return "SUCCESS"
    return ERRNO_NAMES.get(-res, str(res))


def errno_sql(expr: str) -> str:
    """The errno name of a negative value (NULL when not negative or unknown)."""
    entries = ", ".join(f"{n}: '{name}'" for n, name in ERRNO_NAMES.items())
    return f"CASE WHEN {expr} < 0 THEN map_extract_value(MAP {{{entries}}}, -({expr})::INTEGER) END"


def evt_res_sql(expr: str) -> str:
    return f"CASE WHEN {expr} IS NULL THEN NULL WHEN {expr} >= 0 THEN 'SUCCESS' ELSE coalesce({errno_sql(expr)}, {expr}::VARCHAR) END"


# --- other tables ----------------------------------------------------------
CLONE_FLAGS = FlagTable(
    (
        ("CLONE_FILES", 0x400), ("CLONE_FS", 0x200), ("CLONE_IO", 0x80000000), ("CLONE_NEWIPC", 0x08000000),
        ("CLONE_NEWNET", 0x40000000), ("CLONE_NEWNS", 0x20000), ("CLONE_NEWPID", 0x20000000),
        ("CLONE_NEWUTS", 0x04000000), ("CLONE_PARENT", 0x8000), ("CLONE_PARENT_SETTID", 0x100000),
        ("CLONE_PTRACE", 0x2000), ("CLONE_SIGHAND", 0x800), ("CLONE_SYSVSEM", 0x40000),
        ("CLONE_THREAD", 0x10000), ("CLONE_UNTRACED", 0x800000), ("CLONE_VM", 0x100),
        ("CLONE_NEWUSER", 0x10000000), ("CLONE_CHILD_CLEARTID", 0x200000), ("CLONE_CHILD_SETTID", 0x1000000),
        ("CLONE_SETTLS", 0x80000), ("CLONE_VFORK", 0x4000), ("CLONE_NEWCGROUP", 0x02000000),
    )
)

PTRACE_REQUESTS = EnumTable(
    (
        ("PTRACE_TRACEME", 0), ("PTRACE_PEEKTEXT", 1), ("PTRACE_PEEKDATA", 2), ("PTRACE_PEEKUSR", 3),
        ("PTRACE_POKETEXT", 4), ("PTRACE_POKEDATA", 5), ("PTRACE_POKEUSR", 6), ("PTRACE_CONT", 7),
        ("PTRACE_KILL", 8), ("PTRACE_SINGLESTEP", 9), ("PTRACE_GETREGS", 12), ("PTRACE_SETREGS", 13),
        ("PTRACE_GETFPREGS", 14), ("PTRACE_SETFPREGS", 15), ("PTRACE_ATTACH", 16), ("PTRACE_DETACH", 17),
        ("PTRACE_GETFPXREGS", 18), ("PTRACE_SETFPXREGS", 19), ("PTRACE_SYSCALL", 24),
        ("PTRACE_SETOPTIONS", 0x4200), ("PTRACE_GETEVENTMSG", 0x4201), ("PTRACE_GETSIGINFO", 0x4202),
        ("PTRACE_SETSIGINFO", 0x4203), ("PTRACE_GETREGSET", 0x4204), ("PTRACE_SETREGSET", 0x4205),
        ("PTRACE_SEIZE", 0x4206), ("PTRACE_INTERRUPT", 0x4207), ("PTRACE_LISTEN", 0x4208),
        ("PTRACE_PEEKSIGINFO", 0x4209), ("PTRACE_GETSIGMASK", 0x420A), ("PTRACE_SETSIGMASK", 0x420B),
    )
)

# enum bpf_cmd (include/uapi/linux/bpf.h); libsinsp renders bpf's cmd by name.
BPF_COMMANDS = EnumTable(
    tuple(
        (name, value)
        for value, name in enumerate(
            (
                "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
                "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH",
                "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID",
                "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY",
                "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID", "BPF_TASK_FD_QUERY",
                "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID",
                "BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH",
                "BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE", "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID",
                "BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_LINK_DETACH",
                "BPF_PROG_BIND_MAP",
            )
        )
    )
)

SOCKET_FAMILIES = EnumTable(
    (("AF_UNSPEC", 0), ("AF_UNIX", 1), ("AF_INET", 2), ("AF_INET6", 10), ("AF_NETLINK", 16), ("AF_PACKET", 17))
)

FCNTL_COMMANDS = EnumTable(
    (
        ("F_DUPFD", 0), ("F_GETFD", 1), ("F_SETFD", 2), ("F_GETFL", 3), ("F_SETFL", 4), ("F_GETLK", 5),
        ("F_SETLK", 6), ("F_SETLKW", 7), ("F_SETOWN", 8), ("F_GETOWN", 9), ("F_SETSIG", 10),
        ("F_GETSIG", 11), ("F_SETOWN_EX", 15), ("F_GETOWN_EX", 16), ("F_OFD_GETLK", 36),
        ("F_OFD_SETLK", 37), ("F_OFD_SETLKW", 38), ("F_SETLEASE", 1024), ("F_GETLEASE", 1025),
        ("F_NOTIFY", 1026), ("F_CANCELLK", 1029), ("F_DUPFD_CLOEXEC", 1030), ("F_SETPIPE_SZ", 1031),
        ("F_GETPIPE_SZ", 1032),
    )
)

# libscap's file_mode table order.
FILE_MODES = FlagTable(
    (
        ("S_IXOTH", 0o1), ("S_IWOTH", 0o2), ("S_IROTH", 0o4), ("S_IXGRP", 0o10), ("S_IWGRP", 0o20),
        ("S_IRGRP", 0o40), ("S_IXUSR", 0o100), ("S_IWUSR", 0o200), ("S_IRUSR", 0o400),
        ("S_ISVTX", 0o1000), ("S_ISGID", 0o2000), ("S_ISUID", 0o4000),
    )
)

UNLINKAT_FLAGS = FlagTable((("AT_REMOVEDIR", 0x200),))

MOUNT_FLAGS = FlagTable(
    (
        ("RDONLY", 1), ("NOSUID", 2), ("NODEV", 4), ("NOEXEC", 8), ("SYNCHRONOUS", 16), ("REMOUNT", 32),
        ("MANDLOCK", 64), ("DIRSYNC", 128), ("NOATIME", 1024), ("NODIRATIME", 2048), ("BIND", 4096),
        ("MOVE", 8192), ("REC", 16384), ("SILENT", 32768), ("POSIXACL", 1 << 16), ("UNBINDABLE", 1 << 17),
        ("PRIVATE", 1 << 18), ("SLAVE", 1 << 19), ("SHARED", 1 << 20), ("RELATIME", 1 << 21),
        ("KERNMOUNT", 1 << 22), ("I_VERSION", 1 << 23), ("STRICTATIME", 1 << 24), ("LAZYTIME", 1 << 25),
    )
)

MEMFD_FLAGS = FlagTable((("MFD_CLOEXEC", 1), ("MFD_ALLOW_SEALING", 2), ("MFD_HUGETLB", 4)))


# --- capabilities ----------------------------------------------------------
# Bit N is CAP_NAMES[N]; libsinsp renders a mask as the names joined by spaces.
CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


def render_caps(mask: int) -> str:
    return " ".join(name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1)


def caps_sql(expr: str) -> str:
    names = "[" + ", ".join(f"'{n}'" for n in CAP_NAMES) + "]"
    return f"array_to_string(list_filter({names}, lambda n, i: (({expr} >> (i - 1)) & 1) = 1), ' ')"
