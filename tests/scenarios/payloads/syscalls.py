"""Single syscalls that no everyday tool makes on purpose, for the scenarios.

usage: syscalls.py ACTION [ARGS...]
  dup-socket HOST PORT FD...   connect to HOST:PORT, dup2 the socket onto each FD
  dup-file PATH FD...          open PATH, dup2 it onto each FD
  packet-socket                socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)
  finit-module PATH            finit_module() on PATH (a bogus image: the call fails)
  ptrace-attach                PTRACE_ATTACH to a sleeping child, then detach
  ptrace-traceme               PTRACE_TRACEME
  ptrace-peek                  PTRACE_PEEKDATA on an untraced child (fails: ESRCH)
  memfd-exec BINARY ARGV0...   copy BINARY into a memfd and exec it from there
  memfd-then-exec BINARY       fill a memfd with BINARY, but exec BINARY from disk
  bpf-prog-load                load a two-instruction socket filter (freed on exit)
  bpf-map-create               create a one-entry array map (freed on exit)
  login-as UID ACTION...       set the audit login uid, then exec ACTION in this process
  regain-root                  euid 0 -> 1000 (saved uid 0), then setuid(0) back
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

SYS_FINIT_MODULE, SYS_BPF = 313, 321  # x86_64
BPF_MAP_CREATE, BPF_PROG_LOAD = 0, 5
BPF_MAP_TYPE_ARRAY, BPF_PROG_TYPE_SOCKET_FILTER = 2, 1
# r0 = 0; exit
BPF_RETURN_ZERO = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
PTRACE_TRACEME, PTRACE_PEEKDATA, PTRACE_ATTACH, PTRACE_DETACH = 0, 2, 16, 17
ETH_P_ALL = 0x0003


def sleeping_child() -> int:
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    return pid


def bpf(command: int, attr: bytes) -> int:
    buffer = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    fd = libc.syscall(SYS_BPF, command, buffer, 128)
    if fd < 0:
        raise SystemExit(f"bpf({command}) failed: errno {ctypes.get_errno()}")
    return fd


def memfd_with(binary: str) -> int:
    memfd = os.memfd_create("payload", 0)
    with open(binary, "rb") as image:
        data = image.read()
    while data:
        data = data[os.write(memfd, data):]
    return memfd


def main(action: str, *args: str) -> int:
    if action == "dup-socket":
        host, port, *fds = args
        sock = socket.create_connection((host, int(port)), timeout=10)
        for fd in fds:
            os.dup2(sock.fileno(), int(fd))
    elif action == "dup-file":
        path, *fds = args
        source = os.open(path, os.O_RDONLY)
        for fd in fds:
            os.dup2(source, int(fd))
    elif action == "packet-socket":
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    elif action == "finit-module":
        fd = os.open(args[0], os.O_RDONLY)
        result = libc.syscall(SYS_FINIT_MODULE, fd, b"", 0)
        if result == 0:  # a bogus image must never load
            raise SystemExit("finit_module unexpectedly succeeded")
    elif action in ("ptrace-attach", "ptrace-peek"):
        child = sleeping_child()
        try:
            if action == "ptrace-attach":
                if libc.ptrace(PTRACE_ATTACH, child, None, None) != 0:
                    raise SystemExit(f"PTRACE_ATTACH failed: errno {ctypes.get_errno()}")
                os.waitpid(child, 0)
                libc.ptrace(PTRACE_DETACH, child, None, None)
            else:
                libc.ptrace(PTRACE_PEEKDATA, child, None, None)
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    elif action == "ptrace-traceme":
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
    elif action == "memfd-exec":
        binary, *argv = args
        os.execv(f"/proc/self/fd/{memfd_with(binary)}", argv)
    elif action == "memfd-then-exec":
        memfd_with(args[0])
        os.execv(args[0], [os.path.basename(args[0])])
    elif action == "bpf-prog-load":
        insns = ctypes.create_string_buffer(BPF_RETURN_ZERO, len(BPF_RETURN_ZERO))
        license = ctypes.create_string_buffer(b"GPL")
        attr = struct.pack("=IIQQ", BPF_PROG_TYPE_SOCKET_FILTER, len(BPF_RETURN_ZERO) // 8,
                           ctypes.addressof(insns), ctypes.addressof(license))
        os.close(bpf(BPF_PROG_LOAD, attr))
    elif action == "bpf-map-create":
        os.close(bpf(BPF_MAP_CREATE, struct.pack("=IIII", BPF_MAP_TYPE_ARRAY, 4, 4, 1)))
    elif action == "login-as":
        uid, *rest = args
        with open("/proc/self/loginuid", "w") as loginuid:
            loginuid.write(uid)
        os.execv(sys.executable, [sys.executable, "-I", __file__, *rest])
    elif action == "regain-root":
        os.setresuid(0, 1000, 0)
        os.setuid(0)
    else:
        raise SystemExit(f"unknown action {action!r}\n{__doc__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
