"""The syscall table: x86_64 numbers, the default set, and how to decode each.

One `Syscall` per traced call says where each decoded column comes from:
an argument index, the return value, or a small user struct the BPF program
copies at exit (`aux`: pipe's int[2], openat2's open_how, clone3's
clone_args). capture/probe.py writes this plan into the BPF program's
`plans` map and the program fills the columns in each record, so each
syscall is described once and user space only copies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from capture.errors import RecorderError

# Column sources (the BPF program's SRC_*: bpf/trace.bpf.c decodes the columns).
NONE = -1
RES = 6  # the return value
AUX_LO = 7  # low s32 of the copied user struct (pipe fds[0])
AUX_HI = 8  # high s32 of the first u64 (pipe fds[1])
AUX0 = 9  # first u64 of the copied user struct (open_how.flags, clone_args.flags)
AUX1 = 10  # second u64 (open_how.mode)

# How the socket address argument is passed (mirrored in bpf/trace_event.h).
ADDR_NONE, ADDR_IN, ADDR_OUT, ADDR_MSG = 0, 1, 2, 3

# Pseudo syscall number for procexit events (sched_process_exit).
NR_PROCEXIT = 1023
PROCEXIT = "procexit"


@dataclass(frozen=True)
class Syscall:
    name: str
    nr: int
    nargs: int
    path: int = NONE  # arg holding the first user path
    path2: int = NONE
    dirfd: int = NONE
    dirfd2: int = NONE
    fd: int = NONE
    fd2: int = NONE
    flags: int = NONE
    mode: int = NONE
    sock_family: int = NONE  # socket()/socketpair() domain
    sock_type: int = NONE
    sock_proto: int = NONE
    addr_mode: int = ADDR_NONE
    addr_arg: int = NONE  # sockaddr * (or msghdr * for ADDR_MSG)
    addrlen_arg: int = NONE  # socklen_t by value (IN) or socklen_t * (OUT)
    sock_fd: int = NONE  # where the socket's fd is, to read its endpoints
    aux_arg: int = NONE  # user struct copied at exit
    aux_len: int = 0
    at_enter: bool = False  # never returns (exit, exit_group): recorded at entry, res null
    exec: bool = False


def _s(name: str, nr: int, nargs: int, **kw: object) -> Syscall:
    return Syscall(name, nr, nargs, **kw)  # type: ignore[arg-type]


_SOCK_IN = dict(addr_mode=ADDR_IN, addr_arg=1, addrlen_arg=2, fd=0, sock_fd=0)

SYSCALLS: tuple[Syscall, ...] = (
    # network (Falco rules' evt.type set)
    _s("socket", 41, 3, sock_family=0, sock_type=1, sock_proto=2),
    _s("socketpair", 53, 4, sock_family=0, sock_type=1, sock_proto=2, aux_arg=3, aux_len=8, fd=AUX_LO, fd2=AUX_HI),
    _s("connect", 42, 3, **_SOCK_IN),
    _s("bind", 49, 3, **_SOCK_IN),
    _s("listen", 50, 2, fd=0, sock_fd=0),
    _s("accept", 43, 3, fd=0, addr_mode=ADDR_OUT, addr_arg=1, addrlen_arg=2, sock_fd=RES),
    _s("accept4", 288, 4, fd=0, flags=3, addr_mode=ADDR_OUT, addr_arg=1, addrlen_arg=2, sock_fd=RES),
    _s("sendto", 44, 6, fd=0, addr_mode=ADDR_IN, addr_arg=4, addrlen_arg=5, sock_fd=0),
    _s("sendmsg", 46, 3, fd=0, addr_mode=ADDR_MSG, addr_arg=1, sock_fd=0),
    _s("recvfrom", 45, 6, fd=0, addr_mode=ADDR_OUT, addr_arg=4, addrlen_arg=5, sock_fd=0),
    _s("recvmsg", 47, 3, fd=0, addr_mode=ADDR_MSG, addr_arg=1, sock_fd=0),
    # fds
    _s("dup", 32, 1, fd=0),
    _s("dup2", 33, 2, fd=0),
    _s("dup3", 292, 3, fd=0, flags=2),
    _s("fcntl", 72, 3, fd=0),
    _s("close", 3, 1, fd=0),
    _s("pipe", 22, 1, aux_arg=0, aux_len=8, fd=AUX_LO, fd2=AUX_HI),
    _s("pipe2", 293, 2, aux_arg=0, aux_len=8, fd=AUX_LO, fd2=AUX_HI, flags=1),
    # exec
    _s("execve", 59, 3, path=0, exec=True),
    _s("execveat", 322, 5, dirfd=0, path=1, flags=4, exec=True),
    # files
    _s("open", 2, 3, path=0, flags=1, mode=2),
    _s("openat", 257, 4, dirfd=0, path=1, flags=2, mode=3),
    _s("openat2", 437, 4, dirfd=0, path=1, aux_arg=2, aux_len=16, flags=AUX0, mode=AUX1),
    _s("creat", 85, 2, path=0, mode=1),
    _s("link", 86, 2, path=0, path2=1),
    _s("linkat", 265, 5, dirfd=0, path=1, dirfd2=2, path2=3, flags=4),
    _s("symlink", 88, 2, path=0, path2=1),
    _s("symlinkat", 266, 3, path=0, dirfd2=1, path2=2),
    _s("unlink", 87, 1, path=0),
    _s("unlinkat", 263, 3, dirfd=0, path=1, flags=2),
    _s("rename", 82, 2, path=0, path2=1),
    _s("renameat", 264, 4, dirfd=0, path=1, dirfd2=2, path2=3),
    _s("renameat2", 316, 5, dirfd=0, path=1, dirfd2=2, path2=3, flags=4),
    _s("mkdir", 83, 2, path=0, mode=1),
    _s("mkdirat", 258, 3, dirfd=0, path=1, mode=2),
    _s("rmdir", 84, 1, path=0),
    _s("chmod", 90, 2, path=0, mode=1),
    _s("fchmod", 91, 2, fd=0, mode=1),
    _s("fchmodat", 268, 3, dirfd=0, path=1, mode=2),
    _s("chdir", 80, 1, path=0),
    _s("fchdir", 81, 1, fd=0),
    _s("mount", 165, 5, path=0, path2=1, flags=3),
    _s("memfd_create", 319, 2, path=0, flags=1),
    # privileges, namespaces, kernel
    _s("ptrace", 101, 4),
    _s("init_module", 175, 3),
    _s("finit_module", 313, 3, fd=0, flags=2),
    _s("bpf", 321, 3),
    _s("setns", 308, 2, fd=0),
    _s("unshare", 272, 1, flags=0),
    _s("userfaultfd", 323, 1, flags=0),
    _s("setuid", 105, 1),
    _s("setgid", 106, 1),
    _s("setreuid", 113, 2),
    _s("setregid", 114, 2),
    _s("setresuid", 117, 3),
    _s("setresgid", 119, 3),
    _s("setfsuid", 122, 1),
    _s("setfsgid", 123, 1),
    _s("capset", 126, 2),
    _s("prctl", 157, 5),
    # processes
    _s("clone", 56, 5, flags=0),
    _s("clone3", 435, 2, aux_arg=0, aux_len=8, flags=AUX0),
    _s("fork", 57, 0),
    _s("vfork", 58, 0),
    _s("exit", 60, 1, at_enter=True),
    _s("exit_group", 231, 1, at_enter=True),
)

BY_NAME: dict[str, Syscall] = {s.name: s for s in SYSCALLS}
BY_NR: dict[int, Syscall] = {s.nr: s for s in SYSCALLS}
DEFAULT_SYSCALLS: frozenset[str] = frozenset(BY_NAME)
MAX_NR = 1024  # size of the kernel plan map and the decode lookup tables

# Columns decoded in the kernel from a source (arg index / RES / AUX*); also sock_family.
DECODED_COLUMNS = ("fd", "fd2", "dirfd", "dirfd2", "flags", "mode", "sock_type", "sock_proto")


def check_names(names: frozenset[str]) -> None:
    unknown = sorted(names - BY_NAME.keys())
    if unknown:
        raise RecorderError(f"unknown syscall(s): {', '.join(unknown)}; known: {', '.join(sorted(BY_NAME))}")


def names_by_nr() -> dict[int, str]:
    return {**{s.nr: s.name for s in SYSCALLS}, NR_PROCEXIT: PROCEXIT}
