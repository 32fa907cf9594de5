"""The default ruleset (rules/): loads cleanly, is documented and tagged, and
each rule fires on its attack and stays quiet on a near miss.

The events are rows of a real DuckDB table with every column of the events
view (docs/contracts.md section 2), so the rules run through the real
loader, compiler and engine; the state builder has its own tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from analyzer.fields.catalog import AUXILIARY_COLUMNS, CATALOG
from analyzer.hunt.engine import MATCH_FIRST, build_scan, run_hunt
from analyzer.hunt.plan import default_rules_files, field_sql, plan_hunt
from analyzer.rules.loader import load_rules
from analyzer.sql.compiler import install_runtime

ROOT = Path(__file__).resolve().parents[1]
MITRE_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
ID_COLUMNS = {"evt_num": "BIGINT", "ts": "BIGINT", "pid": "INTEGER", "_proc_key": "BIGINT",
              "container_id": "VARCHAR", "_segment": "VARCHAR"}


def test_default_rules_load_without_errors_or_warnings():
    ruleset = load_rules(default_rules_files())
    assert [f.format() for f in ruleset.findings] == []
    assert len(ruleset.rules) >= 20


def test_trace_rules_check_accepts_the_default_rules():
    result = subprocess.run([str(Path(sys.executable).parent / "trace"), "rules", "check",
                             *map(str, default_rules_files())], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "0 errors, 0 warnings" in result.stdout


def test_every_default_rule_compiles_and_is_documented():
    plan = plan_hunt(default_rules_files())
    assert plan.unsupported == () and plan.output_gaps == ()
    for rule in plan.runnable:
        assert len(rule.desc) > 60, rule.name
        assert any(MITRE_TECHNIQUE.match(tag) for tag in rule.tags), rule.name
        assert any(tag.startswith("mitre_") for tag in rule.tags), rule.name
        assert rule.evttypes, f"{rule.name} must name its event types"
        assert {"proc.name", "user.name", "container.id"} <= {f.key for f in rule.output.fields}, rule.name


def test_default_rules_are_the_projects_own():
    """Rule names differ from Falco's shipped files (the rules are written here, not copied)."""
    falco_dir = ROOT.parent / "shared" / "falco" / "rules"
    falco_names = {r.name for f in sorted(falco_dir.glob("*.yaml")) for r in load_rules([f]).rules}
    ours = {r.name for r in load_rules(default_rules_files()).rules}
    assert not ours & falco_names


def _events_table(rows: list[dict[str, object]]) -> duckdb.DuckDBPyConnection:
    columns = {**ID_COLUMNS, **AUXILIARY_COLUMNS, **CATALOG.event_columns()}
    con = duckdb.connect()
    install_runtime(con)
    con.execute("CREATE TABLE events (" + ", ".join(f'"{c}" {t}' for c, t in columns.items()) + ")")
    for num, row in enumerate(rows):
        row = {"evt_num": num, "ts": 1_700_000_000_000_000_000 + num, "_host": "web-01", "container.id": "host",
               "container_id": "host", "user.name": "root", "user.uid": 0, "proc.pid": 4000 + num,
               "pid": 4000 + num, **row}
        names = ", ".join(f'"{c}"' for c in row)
        con.execute(f"INSERT INTO events ({names}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))
    return con


def _open(path: str, proc: str, write: bool, parent: str = "bash", **extra) -> dict[str, object]:
    directory, _, filename = path.rpartition("/")
    return {"evt.type": "openat", "evt.rawres": 3, "fd.num": 3, "fd.typechar": "f", "fd.type": "file",
            "fd.name": path, "fd.directory": directory or "/", "fd.filename": filename, "evt.is_open_read": not write,
            "evt.is_open_write": write, "proc.name": proc, "proc.pname": parent,
            "_evt_args": {"flags": "O_WRONLY|O_CREAT|O_TRUNC" if write else "O_RDONLY"}, **extra}


def _exec(proc: str, parent: str, args: str = "", exepath: str | None = None, **extra) -> dict[str, object]:
    return {"evt.type": "execve", "evt.rawres": 0, "proc.name": proc, "proc.pname": parent, "proc.args": args,
            "proc.cmdline": f"{proc} {args}".strip(), "proc.exepath": exepath or f"/usr/bin/{proc}", **extra}


def _call(evt_type: str, proc: str, res: int = 0, args: dict[str, str] | None = None, **extra) -> dict[str, object]:
    return {"evt.type": evt_type, "evt.rawres": res, "proc.name": proc, "proc.pname": "bash",
            "_evt_args": args or {}, **extra}


# (expected rule or None, event)
CASES = [
    ("Sensitive File Read by Untrusted Program", _open("/etc/shadow", "cat", False, parent="python3")),
    (None, _open("/etc/shadow", "sshd", False)),
    ("Sensitive File Read by Untrusted Program", _open("/home/alice/.ssh/id_ed25519", "scp", False)),
    (None, _open("/home/alice/.ssh/id_ed25519.pub", "cat", False)),
    ("Shell Spawned by Service Process", _exec("sh", "nginx", "-c id")),
    (None, _exec("sh", "bash", "-c id")),
    ("Socket Redirected to Standard Stream", _call("dup2", "bash", 0, **{"fd.type": "ipv4", "fd.rip": "10.0.0.5",
                                                                         "fd.rport": 4444})),
    (None, _call("dup2", "bash", 0, **{"fd.type": "file"})),
    (None, _call("dup2", "bash", 5, **{"fd.type": "ipv4"})),
    ("Netcat Launched with Command Execution", _exec("nc", "bash", "-lvnp 4444 -e /bin/sh")),
    (None, _exec("nc", "bash", "-zv 10.0.0.1 22")),
    ("Outbound Connection from Shell", _call("connect", "bash", 0, **{"fd.type": "ipv4"})),
    ("Outbound Connection from Shell", _call("connect", "bash", -115, **{"fd.type": "ipv6", "evt.res": "EINPROGRESS"})),
    (None, _call("connect", "curl", 0, **{"fd.type": "ipv4"})),
    ("Write below System Binary Directory", _open("/usr/bin/sshd", "cp", True)),
    (None, _open("/usr/bin/sshd", "dpkg", True)),
    ("Write below System Binary Directory", _call("renameat2", "mv", 0, {"newpath": "/usr/local/bin/ls"})),
    ("Cron Job Created or Modified", _open("/etc/cron.d/updater", "tee", True)),
    ("Cron Job Created or Modified", _open("/var/spool/cron/crontabs/root", "crontab", True)),
    ("Systemd Unit or Init Script Written", _open("/etc/systemd/system/updater.service", "tee", True)),
    ("Systemd Unit or Init Script Written", _open("/home/bob/.config/systemd/user/x.service", "sh", True)),
    ("Shell Startup File Modified", _open("/root/.bashrc", "sh", True)),
    ("Shell Startup File Modified", _open("/etc/ld.so.preload", "echo", True)),
    ("SSH Authorized Keys Modified", _open("/root/.ssh/authorized_keys", "sh", True)),
    ("Write below Etc", _open("/etc/hosts", "python3", True)),
    (None, _open("/etc/resolv.conf", "python3", True)),
    (None, _open("/etc/hosts", "python3", False)),
    ("Setuid to Root by Non-Root Login", _call("setuid", "exploit", 0, **{"user.loginuid": 1000})),
    (None, _call("setuid", "sudo", 0, **{"user.loginuid": 1000})),
    (None, _call("setuid", "exploit", 0, **{"user.loginuid": 4294967295})),
    ("Ptrace Attach to Process", _call("ptrace", "injector", 0, {"request": "PTRACE_ATTACH", "pid": "812"})),
    (None, _call("ptrace", "injector", 0, {"request": "PTRACE_TRACEME"})),
    ("Kernel Module Loaded", _call("finit_module", "insmod")),
    (None, _call("finit_module", "insmod", -1)),
    ("BPF Program Loaded", _call("bpf", "implant", 7, {"cmd": "BPF_PROG_LOAD"})),
    (None, _call("bpf", "bpftool", 7, {"cmd": "BPF_PROG_LOAD"})),
    (None, _call("bpf", "implant", 0, {"cmd": "BPF_MAP_LOOKUP_ELEM"})),
    ("Executable Run from Temporary Directory", _exec("x", "bash", exepath="/dev/shm/x")),
    ("Fileless Execution from Memory File", _exec("3", "python3", exepath="/memfd:payload (deleted)",
                                                  **{"proc.is_exe_from_memfd": True})),
    ("Download Tool Wrote to Temporary Directory", _open("/tmp/payload", "curl", True)),
    (None, _open("/tmp/payload", "curl", False)),
    ("Executable Bit Set in Temporary Directory", _call("fchmodat", "chmod", 0, {
        "filename": "/tmp/payload", "mode": "S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR"})),
    (None, _call("fchmodat", "chmod", 0, {"filename": "/tmp/notes", "mode": "S_IRUSR|S_IWUSR"})),
    ("Log File Deleted or Truncated", _call("unlinkat", "rm", 0, {"name": "/var/log/auth.log"})),
    ("Log File Deleted or Truncated", _open("/var/log/wtmp", "sh", True)),
    (None, _call("unlinkat", "logrotate", 0, {"name": "/var/log/auth.log.4.gz"})),
    ("Shell History Tampered", _call("unlink", "rm", 0, {"path": "/root/.bash_history"})),
    ("Shell History Tampered", _call("symlinkat", "ln", 0, {"target": "/dev/null",
                                                             "linkpath": "/home/bob/.bash_history"})),
]


def test_each_rule_fires_on_its_attack_and_not_on_its_near_miss():
    plan = plan_hunt(default_rules_files())
    con = _events_table([event for _, event in CASES])
    run = run_hunt(con, build_scan(plan.runnable, match=MATCH_FIRST, field_sql=field_sql), utc_offset=0)
    fired = {alert.evt_num: alert.rule for alert in run.alerts()}
    assert {num: fired.get(num) for num in range(len(CASES))} == {num: rule for num, (rule, _) in enumerate(CASES)}
    assert set(run.hits) == {rule.name for rule in plan.runnable}, "every default rule is exercised"


@pytest.mark.parametrize("tag", ["T1070.002", "mitre_persistence"])
def test_tag_selection(tag):
    plan = plan_hunt(default_rules_files(), tags=[tag])
    assert plan.runnable and all(tag in rule.tags for rule in plan.runnable)


def test_selecting_a_disabled_rule_says_so(tmp_path):
    from analyzer.errors import TraceError

    rules = tmp_path / "off.yaml"
    rules.write_text("- rule: Quiet\n  desc: d\n  condition: evt.type = open\n  output: o\n  priority: INFO\n"
                     "  enabled: false\n")
    with pytest.raises(TraceError, match="'Quiet' is disabled"):
        plan_hunt([rules], names=["Quiet"])
    with pytest.raises(TraceError, match="no rule named 'Loud'"):
        plan_hunt([rules], names=["Loud"])
