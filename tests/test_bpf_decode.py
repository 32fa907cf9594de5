"""The recorder's tables and decoder, checked against the running kernel and by properties.

No BPF program is loaded here: the BTF parser is compared with bpftool, the
syscall table with the kernel's own tracepoint formats and uapi header, and
the decoder with records built the way bpf/trace.bpf.c lays them out (the
kernel's own decoding of argument columns is checked against the plan on
real captures in test_bpf_capture.py).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture import syscalls as sc
from capture.btf import OFFSETS, VMLINUX_BTF, Btf
from capture.decode import (
    EXEC_INFO, RECORD_DTYPE, TF_ADDR, TF_ADDR_UNIX, TF_ARGV_TRUNC, TF_NO_RES, TF_PATH, TF_SOCK, TF_ENV_TRUNC,
    TI_ARGV, TI_CWD_PART, TI_ENV, TI_EXEC_INFO, TI_EXEPATH, TI_PATH, TI_PATH2, VALID_BITS, Decoder, _comm_strings,
    _slot_strings, _text, parse_bulky,
)
from capture.errors import RecorderError
from capture.schema import COLUMN_NAMES, SCHEMA

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
TRACEFS = Path("/sys/kernel/tracing/events/syscalls")
BOOT = 1_700_000_000_000_000_000


# --- BTF -------------------------------------------------------------------

@pytest.mark.skipif(not VMLINUX_BTF.exists() or not shutil.which("bpftool"), reason="needs kernel BTF and bpftool")
def test_btf_offsets_agree_with_bpftool():
    wanted = {struct_name for _, struct_name, member in OFFSETS}
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(VMLINUX_BTF), "format", "raw"],
                          check=True, capture_output=True, text=True).stdout
    members: dict[tuple[str, str], int] = {}
    current = None
    for line in dump.splitlines():
        head = re.match(r"\[\d+\] (STRUCT|UNION) '([^']*)'", line)
        if head:
            current = head.group(2) if head.group(2) in wanted else None
            continue
        if current and line.startswith("\t"):
            m = re.match(r"\t'([^']+)' type_id=\d+ bits_offset=(\d+)", line)
            if m:
                members.setdefault((current, m.group(1)), int(m.group(2)) // 8)
        elif not line.startswith("\t"):
            current = None
    btf = Btf(VMLINUX_BTF.read_bytes())
    checked = 0
    for _, struct_name, member in OFFSETS:
        if "." not in member and (struct_name, member) in members:  # direct (not nested) members
            assert btf.offset(struct_name, member) == members[(struct_name, member)], (struct_name, member)
            checked += 1
    assert checked >= 25


def test_btf_rejects_garbage():
    with pytest.raises(RecorderError, match="BTF"):
        Btf(b"\0" * 64)


@pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="needs kernel BTF")
def test_btf_flattens_anonymous_members_and_reports_missing_ones():
    btf = Btf(VMLINUX_BTF.read_bytes())
    # skc_daddr lives in an anonymous union/struct inside sock_common
    assert btf.offset("sock_common", "skc_rcv_saddr") == btf.offset("sock_common", "skc_daddr") + 4
    assert btf.offset("dentry", "d_name.name") == btf.offset("dentry", "d_name") + btf.offset("qstr", "name")
    with pytest.raises(RecorderError, match="no member"):
        btf.offset("task_struct", "no_such_member")


# --- syscall table ---------------------------------------------------------

@pytest.mark.skipif(not UNISTD.exists(), reason="needs linux-libc-dev's unistd_64.h")
def test_syscall_numbers_match_the_x86_64_abi():
    numbers = dict(re.findall(r"#define __NR_(\w+) (\d+)", UNISTD.read_text()))
    for s in sc.SYSCALLS:
        assert int(numbers[s.name]) == s.nr, s.name


@pytest.mark.skipif(not TRACEFS.is_dir(), reason="needs tracefs")
def test_decode_plan_matches_the_kernels_tracepoint_formats():
    """Argument count, and that path arguments are char pointers, per the kernel's own description."""
    for s in sc.SYSCALLS:
        fmt = TRACEFS / f"sys_enter_{s.name}" / "format"
        if not fmt.exists():
            continue
        fields = re.findall(r"field:([^;]+?)\s*(\w+);\s*offset:(\d+)", fmt.read_text())
        args = [(typ, name) for typ, name, off in fields if int(off) >= 16]
        assert len(args) == s.nargs, s.name
        for index in (s.path, s.path2):
            if index != sc.NONE:
                assert "char *" in args[index][0], (s.name, args[index])
        for index in (s.dirfd, s.dirfd2):
            if index != sc.NONE:
                assert "fd" in args[index][1], (s.name, args[index])


def test_default_set_covers_the_issue():
    falco = """connect accept accept4 bind listen socket sendto sendmsg recvfrom recvmsg dup dup2 dup3
        execve execveat open openat openat2 creat link linkat symlink symlinkat unlink unlinkat rename
        renameat renameat2 mkdir mkdirat rmdir chmod fchmod fchmodat ptrace init_module finit_module bpf
        setns unshare setuid userfaultfd clone clone3 fork vfork exit close fcntl pipe pipe2 chdir fchdir
        setgid setreuid setregid setresuid setresgid setfsuid setfsgid capset prctl mount memfd_create"""
    assert set(falco.split()) <= sc.DEFAULT_SYSCALLS
    with pytest.raises(RecorderError, match="unknown syscall"):
        sc.check_names(frozenset({"openat", "no_such_call"}))


# --- decoder ---------------------------------------------------------------

def valid(*columns: str) -> int:
    """trace_event.valid with these columns marked as holding a value (arg0..arg5 or VALID_BITS names)."""
    return sum(1 << (int(c[3:]) if c.startswith("arg") else VALID_BITS[c]) for c in columns)


ARGS4 = ("arg0", "arg1", "arg2", "arg3")


def fixed_records(rows: list[dict]) -> np.ndarray:
    out = np.zeros(len(rows), RECORD_DTYPE)
    out["rb_len"] = RECORD_DTYPE.itemsize - 8
    for i, row in enumerate(rows):
        hdr = out[i]["hdr"]
        for key, value in row.items():
            if key == "path":
                raw = value.encode() if isinstance(value, str) else value
                out[i]["path"][: len(raw)] = np.frombuffer(raw, np.uint8)
                out[i]["path"][len(raw):] = 0x41  # stale bytes past the string must not leak
                out[i]["path"][len(raw):16] = 0  # ... but the kernel zeroes the string view's inline bytes
                hdr["path_len"] = len(raw)
            elif key in ("comm", "addr", "sk_laddr", "sk_raddr"):
                raw = value.encode() if isinstance(value, str) else value
                hdr[key][: len(raw)] = np.frombuffer(raw, np.uint8)
            else:
                hdr[key] = value
    return out


def decode(rows: list[dict], bulky: list[bytes] = ()) -> list[dict]:
    batch = Decoder(boot_ns=BOOT, argv_max=4).decode(fixed_records(rows), list(bulky))
    assert batch.schema == SCHEMA and tuple(batch.schema.names) == COLUMN_NAMES
    return batch.to_pylist()


def test_openat_decodes_dirfd_path_flags_mode():
    args = [(-100) & (2**64 - 1), 0x7FFD0000, 0o100 | 0o2, 0o640, 0, 0]
    [row] = decode([dict(ts=5, nr=257, res=3, args=args, flags=TF_PATH, path="rel/x", pid=10, tid=11,
                         ppid=1, uid=1000, gid=1000, comm="cat", cgroup_id=77, cpu=1,
                         dirfd=-100, flags_arg=0o102, mode=0o640,
                         valid=valid(*ARGS4, "res", "dirfd", "flags", "mode", "path"))])
    assert row["kind"] == "evt" and row["syscall"] == "openat" and row["ts"] == BOOT + 5
    assert (row["pid"], row["tid"], row["ppid"], row["uid"], row["gid"], row["comm"]) == (10, 11, 1, 1000, 1000, "cat")
    assert (row["dirfd"], row["path"], row["flags"], row["mode"], row["res"]) == (-100, "rel/x", 0o102, 0o640, 3)
    assert row["arg0"] == -100 and row["arg3"] == 0o640 and row["arg4"] is None  # openat has 4 args
    assert row["fd"] is None and row["evt_num"] is None and row["container_id"] is None and row["cgroup_id"] == 77


def test_columns_without_a_value_are_null_and_exit_has_no_result():
    pipe, exit_group = sc.BY_NAME["pipe2"].nr, sc.BY_NAME["exit_group"].nr
    rows = decode([
        dict(ts=1, nr=pipe, res=0, args=[0x1000, 0o2000000, 0, 0, 0, 0], fd=6, fd2=7, flags_arg=0o2000000,
             valid=valid("arg0", "arg1", "res", "fd", "fd2", "flags")),
        dict(ts=2, nr=pipe, res=-24, args=[0x1000, 0, 0, 0, 0, 0], fd=99, valid=valid("arg0", "arg1", "res")),
        dict(ts=3, nr=exit_group, res=0, args=[3, 0, 0, 0, 0, 0], flags=TF_NO_RES, valid=valid("arg0")),
    ])
    assert (rows[0]["fd"], rows[0]["fd2"], rows[0]["flags"]) == (6, 7, 0o2000000)
    assert rows[1]["fd"] is None and rows[1]["res"] == -24
    assert rows[2]["res"] is None and rows[2]["arg0"] == 3 and rows[2]["syscall"] == "exit_group"


def test_connect_and_accept_addresses():
    connect, accept = sc.BY_NAME["connect"].nr, sc.BY_NAME["accept4"].nr
    v6 = bytes(15) + b"\1"
    rows = decode([
        dict(ts=1, nr=connect, res=0, args=[4, 0, 16, 0, 0, 0], flags=TF_ADDR | TF_SOCK, addr_family=2,
             addr_port=8080, addr=bytes([10, 0, 0, 1]), sk_family=2, sk_lport=50000,
             sk_laddr=bytes([10, 0, 0, 2]), sk_rport=8080, sk_raddr=bytes([10, 0, 0, 1]),
             fd=4, sock_family=2, valid=valid("arg0", "arg1", "arg2", "res", "fd", "sock_family")),
        dict(ts=2, nr=accept, res=5, args=[3, 0, 0, 0, 0, 0], flags=TF_SOCK, sk_family=10, sk_lport=22,
             sk_laddr=v6, sk_rport=40000, sk_raddr=v6,
             fd=3, sock_family=10, valid=valid(*ARGS4, "res", "fd", "sock_family")),
    ])
    c, a = rows
    assert (c["fd"], c["sock_family"], c["addr_ip"], c["addr_port"], c["local_ip"], c["local_port"]) == \
        (4, 2, "10.0.0.1", 8080, "10.0.0.2", 50000)
    # accept without an address argument: the peer comes from the socket
    assert (a["fd"], a["sock_family"], a["addr_ip"], a["addr_port"], a["local_ip"], a["local_port"]) == \
        (3, 10, "::1", 40000, "::1", 22)


def test_unix_socket_paths_and_abstract_names():
    connect = sc.BY_NAME["connect"].nr
    rows = decode([
        dict(ts=1, nr=connect, res=0, args=[4, 0, 20, 0, 0, 0], flags=TF_ADDR | TF_ADDR_UNIX, addr_family=1,
             path=b"/run/x.sock\0\0", sock_family=1, valid=valid("sock_family", "addr_path")),
        dict(ts=2, nr=connect, res=0, args=[4, 0, 20, 0, 0, 0], flags=TF_ADDR | TF_ADDR_UNIX, addr_family=1,
             path=b"\0abstract", sock_family=1, valid=valid("sock_family", "addr_path")),
    ])
    assert [r["addr_path"] for r in rows] == ["/run/x.sock", "@abstract"]
    assert all(r["path"] is None and r["addr_ip"] is None and r["sock_family"] == 1 for r in rows)


def bulky_record(header: dict, items: list[tuple[int, bytes]]) -> bytes:
    fixed = fixed_records([header])["hdr"]
    out = bytearray(fixed.tobytes())
    for tag, data in items:
        out += struct.pack("<HH", tag, len(data)) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def exec_info(**kw) -> bytes:
    fields = dict(start=1000, eff=0x1FF, perm=0x1FF, inh=0, loginuid=1000, tty=34816, sid=50, pgid=60, vpid=7, memfd=0,
                  upper=0)
    fields.update(kw)
    return EXEC_INFO.pack(*fields.values())


def test_exec_record_carries_image_argv_cwd_and_process_info():
    execve = sc.BY_NAME["execve"].nr
    record = bulky_record(
        dict(ts=9, nr=execve, res=0, args=[1, 2, 3, 0, 0, 0], pid=7, tid=7, comm="sh"),
        [(TI_EXEPATH, b"./bin/tool\0"), (TI_ARGV, b"tool\0-x\0a b\0"),
         (TI_CWD_PART, b"work\0"), (TI_CWD_PART, b"home\0"), (TI_EXEC_INFO, exec_info())],
    )
    [row] = decode([], [record])
    assert row["exepath"] == "/home/work/bin/tool" and row["path"] == "/home/work/bin/tool"
    assert row["argv"] == ["tool", "-x", "a b"] and row["argv_truncated"] is False
    assert row["cwd"] == "/home/work"
    assert (row["loginuid"], row["tty"], row["sid"], row["pgid"], row["vpid"]) == (1000, 34816, 50, 60, 7)
    assert row["proc_start_ts"] == BOOT + 1000 and row["cap_effective"] == 0x1FF and row["exe_from_memfd"] is False
    assert row["exe_upper_layer"] is False
    [unknown] = decode([], [bulky_record(dict(ts=9, nr=execve), [(TI_EXEC_INFO, exec_info(upper=2))])])
    assert unknown["exe_upper_layer"] is None  # kernel without overlayfs in its BTF: not a made-up False


def test_argv_truncation_is_marked():
    execve = sc.BY_NAME["execve"].nr
    many = b"".join(f"a{i}\0".encode() for i in range(10))
    rows = decode([], [
        bulky_record(dict(ts=1, nr=execve), [(TI_EXEPATH, b"/x\0"), (TI_ARGV, many), (TI_EXEC_INFO, exec_info())]),
        bulky_record(dict(ts=2, nr=execve, flags=TF_ARGV_TRUNC), [(TI_ARGV, b"a\0b"), (TI_EXEC_INFO, exec_info())]),
    ])
    assert rows[0]["argv"] == ["a0", "a1", "a2", "a3"] and rows[0]["argv_truncated"] is True  # argv_max=4
    assert rows[1]["argv"] == ["a", "b"] and rows[1]["argv_truncated"] is True  # cut by the kernel's byte bound


def test_two_rings_merge_in_time_order_and_two_paths_decode():
    rename = sc.BY_NAME["rename"].nr
    openat = sc.BY_NAME["openat"].nr
    rows = decode(
        [dict(ts=10, nr=openat, flags=TF_PATH, path="/a", valid=valid("path")),
         dict(ts=30, nr=openat, flags=TF_PATH, path="/c" * 20, valid=valid("path"))],
        [bulky_record(dict(ts=20, nr=rename), [(TI_PATH, b"/old\0"), (TI_PATH2, b"/new\0")])],
    )
    assert [r["ts"] - BOOT for r in rows] == [10, 20, 30]
    assert [r["path"] for r in rows] == ["/a", "/old", "/c" * 20]
    assert (rows[1]["syscall"], rows[1]["path"], rows[1]["path2"]) == ("rename", "/old", "/new")
    assert rows[0]["path2"] is None and rows[1]["argv"] is None


@settings(max_examples=80)
@given(st.lists(st.binary(max_size=60).filter(lambda b: b"\0" not in b), max_size=30), st.data())
def test_slot_strings_cut_each_slot_at_its_length(values, data):
    valid_rows = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))), bool)
    slots = np.full((len(values), 64), 0x5A, np.uint8)  # stale bytes past each string
    views = np.zeros((len(values), 4), np.int32)
    for i, v in enumerate(values):  # as the kernel writes them: the length, then the string, zeroed to 12 bytes
        slots[i, : max(len(v), 12)] = 0
        slots[i, : len(v)] = np.frombuffer(v, np.uint8)
        views[i, 0] = len(v)
        views[i, 1:] = slots[i, :12].view(np.int32)
    region = slots.reshape(-1)
    got = _slot_strings(views, region, np.arange(len(values)) * 64, 64, valid_rows).to_pylist()
    assert got == [_text(v) if ok else None for v, ok in zip(values, valid_rows)]


_PATHS = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60)
@given(st.lists(st.one_of(st.none(), _PATHS.filter(lambda p: len(p.encode()) <= 150)), max_size=40))
def test_path_column_holds_each_rows_path_whatever_the_share_of_rows_with_one(paths):
    openat, close = sc.BY_NAME["openat"].nr, sc.BY_NAME["close"].nr
    rows = [dict(ts=i + 1, nr=close, valid=valid("fd"), fd=3) if p is None
            else dict(ts=i + 1, nr=openat, flags=TF_PATH, path=p, valid=valid("path")) for i, p in enumerate(paths)]
    assert [r["path"] for r in decode(rows)] == paths


_COMMS = st.binary(max_size=16).map(lambda b: b.ljust(16, b"\0"))  # what the kernel writes: up to 16 bytes, NUL-padded


@settings(max_examples=80)
@given(st.lists(st.tuples(_COMMS, st.integers(1, 5)), max_size=20))
def test_comm_strings_decode_every_row_across_runs(runs):
    rows = [comm for comm, length in runs for _ in range(length)]  # runs of equal names, as consecutive events have
    words = np.frombuffer(b"".join(rows), np.uint64).reshape(-1, 2) if rows else np.zeros((0, 2), np.uint64)
    got = _comm_strings(words[:, 0].copy(), words[:, 1].copy()).to_pylist()
    assert got == [_text(comm.split(b"\0", 1)[0]) for comm in rows]


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=12),
                min_size=1, max_size=8))
def test_argv_block_round_trips(argv):
    block = b"".join(a.encode() + b"\0" for a in argv)
    _, extras = parse_bulky(bulky_record(dict(ts=1, nr=59), [(TI_ARGV, block)]), argv_max=64)
    assert extras.argv == argv and extras.argv_truncated is False


DECODED_FIELDS = {"fd": "fd", "fd2": "fd2", "dirfd": "dirfd", "dirfd2": "dirfd2", "flags": "flags_arg", "mode": "mode",
                  "sock_type": "sock_type", "sock_proto": "sock_proto", "sock_family": "sock_family"}


@settings(max_examples=80)  # each example decodes a whole batch
@given(st.lists(st.tuples(st.sampled_from(sc.SYSCALLS), st.integers(0, 2**64 - 1), st.integers(0, 2**18 - 1),
                          st.integers(-2**31, 2**31 - 1)), min_size=1, max_size=12))
def test_every_column_comes_from_its_field_where_the_kernel_marked_it_valid(records):
    """Whatever the kernel wrote, each column is its own header field, null exactly where its valid bit is clear."""
    rows = [dict(ts=i, nr=s.nr, res=value - 2**64 if value >= 2**63 else value, args=[value] * 6, valid=bits,
                 fd=small, fd2=small, dirfd=small, dirfd2=small, mode=small, sock_type=small, sock_proto=small,
                 flags_arg=value - 2**64 if value >= 2**63 else value, sock_family=small % 2**15)
            for i, (s, value, bits, small) in enumerate(records)]
    for row, (s, value, bits, small) in zip(decode(rows), records):
        signed = value - 2**64 if value >= 2**63 else value
        assert row["syscall"] == s.name
        for i in range(6):
            assert row[f"arg{i}"] == (signed if bits >> i & 1 else None)
        assert row["res"] == (signed if bits >> VALID_BITS["res"] & 1 else None)
        for column, field in DECODED_FIELDS.items():
            expected = signed if column == "flags" else small % 2**15 if column == "sock_family" else small
            assert row[column] == (expected if bits >> VALID_BITS[column] & 1 else None), column


def test_environment_keeps_whole_entries_only():
    execve = sc.BY_NAME["execve"].nr
    rows = decode([], [
        bulky_record(dict(ts=1, nr=execve), [(TI_ENV, b"A=1\0B=\0")]),
        bulky_record(dict(ts=2, nr=execve, flags=TF_ENV_TRUNC), [(TI_ENV, b"A=1\0SECRET=abc")]),
    ])
    assert rows[0]["env"] == ["A=1", "B="]
    assert rows[1]["env"] == ["A=1"]  # the cut entry is dropped, not shown half
