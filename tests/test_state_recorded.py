"""State resolution over a real `trace record` capture of a scripted workload.

bash changes into a fresh directory and runs `cat` on a relative path, then
python connects a TCP socket to its own listener, dup2()s it onto fd 0,
touches fd 0 and the accepted socket with fcntl, chdirs up and opens a file
relatively. Events are found by the unique directory name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from analyzer.state import open_captures
from capture.tail import TAIL_NAME, TailReader
from tests.test_record_cli import start_recorder, stop_recorder, wait_until

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="trace record needs root"),
]

PYTHON3 = shutil.which("python3", path="/usr/bin:/bin")

WORKLOAD = r"""
import fcntl, json, os, socket, sys
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
client = socket.socket(); client.connect(server.getsockname())
conn, _ = server.accept()
os.dup2(client.fileno(), 0)
fcntl.fcntl(0, fcntl.F_GETFD)
fcntl.fcntl(conn.fileno(), fcntl.F_GETFD)
os.chdir("..")
with open("secret.txt") as f:
    pass
print(json.dumps({"sport": server.getsockname()[1], "cport": client.getsockname()[1], "conn": conn.fileno()}))
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    if PYTHON3 is None:
        pytest.skip("no system python3")
    root = tmp_path_factory.mktemp("recorded")
    work = root / f"work-{uuid.uuid4().hex}"
    (work / "sub").mkdir(parents=True)
    (work / "secret.txt").write_text("s3cret\n")
    (work / "sub" / "workload.py").write_text(WORKLOAD)
    capture = root / "cap"
    recorder = start_recorder(capture, "--comm", "bash", "--comm", "cat", "--comm", "python3")
    try:
        script = f"cd {work}/sub && cat ../secret.txt > /dev/null && {PYTHON3} workload.py"
        done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=60, check=True)
        ports = json.loads(done.stdout)
        # the last workload event (python's exit) is in the tail before we stop
        with TailReader(capture / TAIL_NAME) as tail:
            workload_pids: set[int] = set()

            def python_exited() -> bool:
                for batch in tail.poll():
                    for row in batch.select(["pid", "comm", "syscall", "cwd"]).to_pylist():
                        if row["comm"] == "python3" and work.name in (row["cwd"] or ""):
                            workload_pids.add(row["pid"])  # its exec (exec events carry the cwd)
                        elif row["syscall"] == "procexit" and row["pid"] in workload_pids:
                            return True
                return False

            wait_until(python_exited, 30, "the workload events")
    finally:
        stop_recorder(recorder)
    cs = open_captures([str(capture)])
    yield cs, work, ports
    cs.close()


def one(cs, sql: str, *params) -> tuple:
    rows = cs.con.execute(sql, list(params)).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def test_relative_open_by_a_child_of_bash(recorded):
    cs, work, _ = recorded
    row = one(cs, """SELECT "proc.name", "proc.pname", "proc.cmdline", "proc.exe", "fd.name", "fd.typechar",
                            "proc.cwd", "evt.is_open_read", "user.name", "container.id", "_evt_args"['name']
                     FROM events WHERE syscall IN ('open', 'openat') AND path = '../secret.txt' AND "evt.res" = 'SUCCESS'""")
    assert row == ("cat", "bash", "cat ../secret.txt", "cat", f"{work}/secret.txt", "f", f"{work}/sub/", True,
                   "root", "host", f"{work}/secret.txt")


def test_socket_dup2_onto_stdin(recorded):
    cs, work, ports = recorded
    dup = one(cs, """SELECT "fd.type", "fd.num", "evt.rawres", "proc.name", "proc.pname"
                     FROM events WHERE syscall IN ('dup2', 'dup3') AND "proc.cmdline" LIKE '%workload.py'
                     AND res = 0""")
    # bash -c runs its last command with exec: python3's parent is this test process
    assert dup == ("ipv4", dup[1], 0, "python3", Path("/proc/self/comm").read_text().strip())
    fd0 = one(cs, """SELECT "fd.type", "fd.typechar", "fd.name", "fd.sip", "fd.sport", "fd.cip", "fd.cport",
                            "fd.l4proto", "fd.is_server", "fd.connected"
                     FROM events WHERE syscall = 'fcntl' AND fd = 0 AND "proc.cmdline" LIKE '%workload.py'
                     AND evt_num > (SELECT evt_num FROM events WHERE syscall IN ('dup2', 'dup3') AND res = 0
                                    AND "proc.cmdline" LIKE '%workload.py')""")
    sport, cport = ports["sport"], ports["cport"]
    assert fd0 == ("ipv4", "4", f"127.0.0.1:{cport}->127.0.0.1:{sport}", "127.0.0.1", sport, "127.0.0.1", cport,
                   "tcp", False, True)


def test_accepted_socket_is_the_server_side(recorded):
    cs, _, ports = recorded
    row = one(cs, """SELECT "fd.is_server", "fd.sport", "fd.cport", "fd.lport", "fd.rport", "fd.name"
                     FROM events WHERE syscall = 'fcntl' AND fd = ? AND "proc.cmdline" LIKE '%workload.py'""",
              ports["conn"])
    sport, cport = ports["sport"], ports["cport"]
    assert row == (True, sport, cport, sport, cport, f"127.0.0.1:{cport}->127.0.0.1:{sport}")


def test_open_after_chdir_in_python(recorded):
    cs, work, _ = recorded
    row = one(cs, """SELECT "fd.name", "proc.cwd", "proc.exepath" FROM events
                     WHERE syscall IN ('open', 'openat') AND path = 'secret.txt' AND res >= 0""")
    # the recorder stores the path execve() was given (the kernel's bprm filename)
    assert row == (f"{work}/secret.txt", f"{work}/", PYTHON3)
