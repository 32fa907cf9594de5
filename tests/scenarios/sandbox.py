"""What a scenario needs to act like an attacker, and to undo it afterwards.

Scenarios run as root on the test machine, so everything here is built to be
undone: files live in one private dir under /opt (or are registered for removal),
simulated containers are a cgroup v2 directory named the way docker names
its scopes plus fresh namespaces (no runtime, no image), and the only network
is loopback or an address on a dummy interface inside a private network
namespace. Process names are chosen the way Falco's event-generator chooses
them: by copying a real binary under the name a rule's lists expect, so the
kernel's comm (Falco's proc.name) is that name.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

PAYLOADS = Path(__file__).resolve().parent / "payloads"
WORK_ROOT = "/opt"
PYTHON = sys.executable
COMMAND_TIMEOUT_S = 30
# Every scenario process gets this environment. /usr/bin comes first so a
# command is found at the first execve: a failed execve along PATH is an
# event too (with the caller's proc.name), and would only add noise.
ENVIRONMENT = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin", "HOME": "/root", "LANG": "C", "SHELL": "/bin/sh"}


class ScenarioError(RuntimeError):
    """A scenario could not perform its behaviour (the capture would be wrong)."""


def cgroup2_root() -> Path:
    """The cgroup v2 mount point: /sys/fs/cgroup, or .../unified on hybrid hosts."""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    raise ScenarioError("no cgroup2 mount: containers cannot be simulated")


def own_cgroup() -> Path:
    """This process's cgroup v2 directory."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return cgroup2_root() / line[3:].lstrip("/")
    raise ScenarioError("this process has no cgroup v2 membership")


def join_cgroup(cgroup: Path, pid: int = 0) -> None:
    (cgroup / "cgroup.procs").write_text(f"{pid or os.getpid()}\n")


def remove_cgroup(cgroup: Path) -> None:
    """Kill what is left in `cgroup` and its children, then remove them."""
    if not cgroup.is_dir():
        return
    for child in sorted((p for p in cgroup.iterdir() if p.is_dir()), reverse=True):
        remove_cgroup(child)
    kill_file = cgroup / "cgroup.kill"
    for _ in range(200):  # dying tasks keep the cgroup busy for a moment
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        if pids and kill_file.exists():
            kill_file.write_text("1\n")
        for pid in pids if not kill_file.exists() else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not pids:
            try:
                cgroup.rmdir()
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
        threading.Event().wait(0.05)
    raise ScenarioError(f"cannot remove {cgroup}: processes left in it")


def container_id_for(name: str) -> str:
    """A stable 64-hex container id per scenario, like docker's."""
    return hashlib.sha256(f"trace-scenario:{name}".encode()).hexdigest()


@dataclass
class Container:
    """A simulated docker container: a `docker-<id>.scope` cgroup and namespaces.

    Processes start through a copy of `unshare` named `runc`, which creates
    the namespaces, forks, and execs the entrypoint, so the entrypoint's
    parent is named like the runtime (Falco's container_entrypoint macro).
    The network namespace is shared with the host unless asked for, so
    loopback listeners on the host stay reachable (docker's --network host).
    """

    sandbox: Sandbox
    id: str
    cgroup: Path
    runtime: Path

    def spawn(self, argv: Sequence[str], *, tty: bool = False, cwd: str | None = None,
              stdin=subprocess.DEVNULL) -> subprocess.Popen:
        command = [str(self.runtime), "--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--", *argv]
        terminal = os.openpty() if tty else None
        cgroup = self.cgroup

        def enter() -> None:
            join_cgroup(cgroup)
            if terminal is not None:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        if terminal is not None:
            master, slave = terminal
            stdin = stdout = stderr = slave
        else:
            stdout = stderr = subprocess.DEVNULL
        process = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd,
                                   start_new_session=True, preexec_fn=enter)
        if terminal is not None:
            os.close(terminal[1])
            self.sandbox.on_cleanup(lambda: os.close(terminal[0]))
        return process

    def run(self, argv: Sequence[str], *, tty: bool = False, check: bool = True) -> int:
        process = self.spawn(argv, tty=tty)
        code = process.wait(timeout=COMMAND_TIMEOUT_S)
        if check and code != 0:
            raise ScenarioError(f"container command {list(argv)} exited {code}")
        return code


@dataclass
class Sandbox:
    """One scenario's private workspace; `cleanup()` undoes everything."""

    name: str
    workdir: Path = field(init=False)
    _undo: list[Callable[[], None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # under /opt, like installed software: not a temporary directory, so
        # running the named copies is not itself "execution from /tmp"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"trace-scn-{self.name}-", dir=WORK_ROOT))
        self.on_cleanup(lambda: shutil.rmtree(self.workdir, ignore_errors=True))

    # --- undo ---------------------------------------------------------------
    def on_cleanup(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def cleanup(self) -> list[str]:
        """Run every undo action, newest first; return the ones that failed."""
        failures = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep undoing the rest
                failures.append(f"{undo!r}: {exc}")
        return failures

    def remove_later(self, path: Path) -> Path:
        """Register a file created outside the workdir (under /etc, /dev/shm...)."""
        self.on_cleanup(lambda: path.unlink(missing_ok=True))
        return path

    # --- files and binaries -------------------------------------------------
    def path(self, *parts: str) -> Path:
        target = self.workdir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write(self, relative: str, text: str, mode: int = 0o600) -> Path:
        target = self.path(relative)
        target.write_text(text)
        target.chmod(mode)
        return target

    def named_copy(self, source: str, name: str) -> Path:
        """A copy of binary `source` called `name`: the process will be `name`."""
        target = self.path("bin", name)
        if not target.exists():
            shutil.copy2(source, target)
        return target


    # --- processes ----------------------------------------------------------
    def run(self, argv: Sequence[str], *, check: bool = True, cwd: Path | str | None = None,
            stdin=subprocess.DEVNULL) -> int:
        """Run argv directly (no shell in between), parent = the scenario process."""
        result = subprocess.run(list(map(str, argv)), stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=cwd,
                                timeout=COMMAND_TIMEOUT_S)
        if check and result.returncode != 0:
            raise ScenarioError(f"{list(argv)} exited {result.returncode}")
        return result.returncode

    def payload(self, name: str) -> list[str]:
        """argv running one of tests/scenarios/payloads/*.py with this Python."""
        return [PYTHON, "-I", str(PAYLOADS / name)]

    # --- containers -----------------------------------------------------------
    def container(self) -> Container:
        """A container cgroup nested in the scenario's cgroup (docker's systemd naming)."""
        container_id = container_id_for(self.name)
        cgroup = own_cgroup() / f"docker-{container_id}.scope"
        cgroup.mkdir(exist_ok=True)
        self.on_cleanup(lambda: remove_cgroup(cgroup))
        return Container(self, container_id, cgroup, self.named_copy("/usr/bin/unshare", "runc"))

    # --- network --------------------------------------------------------------
    def tcp_listener(self, host: str = "127.0.0.1", *, reply: bytes = b"") -> tuple[str, int]:
        """A loopback listener that accepts connections, sends `reply`, and closes them."""
        server = socket.create_server((host, 0))
        self.on_cleanup(server.close)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    if reply:
                        conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return server.getsockname()[:2]

    def http_server(self, directory: Path) -> int:
        """python's http.server over `directory` on 127.0.0.1, in a thread."""

        class QuietHandler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.on_cleanup(server.server_close)
        self.on_cleanup(server.shutdown)
        return server.server_address[1]
