"""Kernel struct member offsets, read at run time from the kernel's BTF.

The installed kernel headers do not match the running kernel, so the BPF
program never uses their struct layouts. It reads fields with
bpf_probe_read_kernel at offsets computed here from /sys/kernel/btf/vmlinux
and passed to bcc as -D defines (``-DOFF_task_struct__real_parent=2440``).

The parser reads the raw BTF format (include/uapi/linux/btf.h): a header, a
type section of variable-length records and a string section. Members of
anonymous structs and unions are flattened into their parent, the way C
lets a program name them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from capture.errors import RecorderError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 13, 14, 15, 17, 18, 19
# Bytes of kind-specific data that follow the 12-byte type header.
_FIXED_EXTRA = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_PER_MEMBER_EXTRA = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8, KIND_DATASEC: 12, KIND_ENUM64: 12}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


@dataclass(frozen=True)
class Member:
    offset: int  # bytes from the start of the outermost struct
    type_id: int


class Btf:
    """Struct layouts and enum values from one BTF blob."""

    def __init__(self, data: bytes):
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != BTF_MAGIC:
            raise RecorderError("kernel BTF is not in the expected format (bad magic)")
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self._data = data
        # type id -> (kind, vlen, kind_flag, size_or_type, extra offset); id 0 is void.
        self._types: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)]
        self._by_name: dict[tuple[int, str], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, size_or_type = unpack(data, pos)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            extra = pos + 12
            self._types.append((kind, vlen, kflag, size_or_type, extra))
            if name_off and kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
                self._by_name.setdefault((kind, self._name(name_off)), len(self._types) - 1)
            pos = extra + _FIXED_EXTRA.get(kind, 0) + vlen * _PER_MEMBER_EXTRA.get(kind, 0)

    def _name(self, off: int) -> str:
        return self._strings[off: self._strings.index(b"\0", off)].decode()

    def _resolve(self, type_id: int) -> int:
        while self._types[type_id][0] in _MODIFIERS:
            type_id = self._types[type_id][3]
        return type_id

    def _members(self, type_id: int, base: int = 0) -> dict[str, Member]:
        kind, vlen, kflag, _size, extra = self._types[type_id]
        out: dict[str, Member] = {}
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, extra + 12 * i)
            bit_off = moff & 0xFFFFFF if kflag else moff
            offset = base + bit_off // 8
            if name_off:
                out.setdefault(self._name(name_off), Member(offset, mtype))
            else:  # anonymous struct/union: its members belong to the parent
                inner = self._resolve(mtype)
                if self._types[inner][0] in (KIND_STRUCT, KIND_UNION):
                    for name, member in self._members(inner, offset).items():
                        out.setdefault(name, member)
        return out

    def struct_id(self, name: str) -> int:
        for kind in (KIND_STRUCT, KIND_UNION):
            if (kind, name) in self._by_name:
                return self._by_name[(kind, name)]
        raise RecorderError(f"kernel BTF has no struct {name}")

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a (dotted, for embedded structs) member path."""
        type_id, total = self.struct_id(struct_name), 0
        for part in path.split("."):
            members = self._members(type_id)
            if part not in members:
                raise RecorderError(f"kernel BTF: struct {struct_name} has no member {path}")
            total += members[part].offset
            type_id = self._resolve(members[part].type_id)
        return total

    def size(self, struct_name: str) -> int:
        return self._types[self.struct_id(struct_name)][3]

    def enum_value(self, enum_name: str, value_name: str) -> int:
        type_id = self._by_name.get((KIND_ENUM, enum_name))
        if type_id is None:
            raise RecorderError(f"kernel BTF has no enum {enum_name}")
        _kind, vlen, _kflag, _size, extra = self._types[type_id]
        for i in range(vlen):
            name_off, value = struct.unpack_from("<Ii", self._data, extra + 8 * i)
            if self._name(name_off) == value_name:
                return value
        raise RecorderError(f"kernel BTF: enum {enum_name} has no {value_name}")


# (define name, struct, member path). The BPF program reads exactly these.
OFFSETS: tuple[tuple[str, str, str], ...] = (
    ("task_struct__real_parent", "task_struct", "real_parent"),
    ("task_struct__tgid", "task_struct", "tgid"),
    ("task_struct__pid", "task_struct", "pid"),
    ("task_struct__loginuid", "task_struct", "loginuid"),
    ("task_struct__cred", "task_struct", "cred"),
    ("task_struct__fs", "task_struct", "fs"),
    ("task_struct__files", "task_struct", "files"),
    ("task_struct__signal", "task_struct", "signal"),
    ("task_struct__mm", "task_struct", "mm"),
    ("task_struct__group_leader", "task_struct", "group_leader"),
    ("task_struct__start_time", "task_struct", "start_time"),
    ("task_struct__thread_pid", "task_struct", "thread_pid"),
    ("task_struct__exit_code", "task_struct", "exit_code"),
    ("task_struct__comm", "task_struct", "comm"),
    ("task_struct__cgroups", "task_struct", "cgroups"),
    ("css_set__dfl_cgrp", "css_set", "dfl_cgrp"),
    ("cgroup__kn", "cgroup", "kn"),
    ("kernfs_node__id", "kernfs_node", "id"),
    ("cred__euid", "cred", "euid"),
    ("cred__egid", "cred", "egid"),
    ("cred__cap_effective", "cred", "cap_effective"),
    ("cred__cap_permitted", "cred", "cap_permitted"),
    ("cred__cap_inheritable", "cred", "cap_inheritable"),
    ("fs_struct__pwd", "fs_struct", "pwd"),
    ("fs_struct__root", "fs_struct", "root"),
    ("path__mnt", "path", "mnt"),
    ("path__dentry", "path", "dentry"),
    ("dentry__d_parent", "dentry", "d_parent"),
    ("dentry__d_name_name", "dentry", "d_name.name"),
    ("mount__mnt", "mount", "mnt"),
    ("mount__mnt_parent", "mount", "mnt_parent"),
    ("mount__mnt_mountpoint", "mount", "mnt_mountpoint"),
    ("vfsmount__mnt_root", "vfsmount", "mnt_root"),
    ("files_struct__fdt", "files_struct", "fdt"),
    ("fdtable__max_fds", "fdtable", "max_fds"),
    ("fdtable__fd", "fdtable", "fd"),
    ("file__f_inode", "file", "f_inode"),
    ("file__private_data", "file", "private_data"),
    ("inode__i_mode", "inode", "i_mode"),
    ("inode__i_nlink", "inode", "i_nlink"),
    ("socket__sk", "socket", "sk"),
    ("sock_common__skc_family", "sock_common", "skc_family"),
    ("sock_common__skc_num", "sock_common", "skc_num"),
    ("sock_common__skc_dport", "sock_common", "skc_dport"),
    ("sock_common__skc_daddr", "sock_common", "skc_daddr"),
    ("sock_common__skc_rcv_saddr", "sock_common", "skc_rcv_saddr"),
    ("sock_common__skc_v6_daddr", "sock_common", "skc_v6_daddr"),
    ("sock_common__skc_v6_rcv_saddr", "sock_common", "skc_v6_rcv_saddr"),
    ("signal_struct__tty", "signal_struct", "tty"),
    ("signal_struct__pids", "signal_struct", "pids"),
    ("tty_struct__index", "tty_struct", "index"),
    ("tty_struct__driver", "tty_struct", "driver"),
    ("tty_driver__major", "tty_driver", "major"),
    ("tty_driver__minor_start", "tty_driver", "minor_start"),
    ("pid__level", "pid", "level"),
    ("pid__numbers", "pid", "numbers"),
    ("mm_struct__arg_start", "mm_struct", "arg_start"),
    ("mm_struct__arg_end", "mm_struct", "arg_end"),
    ("mm_struct__exe_file", "mm_struct", "exe_file"),
    ("mm_struct__env_start", "mm_struct", "env_start"),
    ("mm_struct__env_end", "mm_struct", "env_end"),
    ("file__f_path", "file", "f_path"),
    ("pt_regs__di", "pt_regs", "di"),
    ("pt_regs__si", "pt_regs", "si"),
    ("pt_regs__dx", "pt_regs", "dx"),
    ("pt_regs__r10", "pt_regs", "r10"),
    ("pt_regs__r8", "pt_regs", "r8"),
    ("pt_regs__r9", "pt_regs", "r9"),
    ("pt_regs__orig_ax", "pt_regs", "orig_ax"),
)
# Offsets the program can do without (a feature is then reported unknown, null).
OPTIONAL_OFFSETS: tuple[tuple[str, str, str], ...] = (
    ("inode__i_sb", "inode", "i_sb"),
    ("inode__i_ino", "inode", "i_ino"),
    ("super_block__s_magic", "super_block", "s_magic"),
    ("dentry__d_inode", "dentry", "d_inode"),
    ("ovl_inode__vfs_inode", "ovl_inode", "vfs_inode"),  # overlayfs built in: proc.is_exe_upper_layer
    ("ovl_inode__upperdentry", "ovl_inode", "__upperdentry"),
)
SIZES: tuple[tuple[str, str], ...] = (("upid", "upid"),)
ENUMS: tuple[tuple[str, str, str], ...] = (
    ("PIDTYPE_PGID", "pid_type", "PIDTYPE_PGID"),
    ("PIDTYPE_SID", "pid_type", "PIDTYPE_SID"),
)


@cache
def kernel_defines(btf_path: Path = VMLINUX_BTF) -> tuple[str, ...]:
    """The -D flags giving the BPF program its struct offsets."""
    try:
        btf = Btf(btf_path.read_bytes())
    except OSError as exc:
        raise RecorderError(f"cannot read kernel BTF {btf_path}: {exc.strerror} (kernel built without CONFIG_DEBUG_INFO_BTF?)") from exc
    flags = [f"-DOFF_{define}={btf.offset(struct_name, member)}" for define, struct_name, member in OFFSETS]
    for define, struct_name, member in OPTIONAL_OFFSETS:
        try:
            flags.append(f"-DOFF_{define}={btf.offset(struct_name, member)}")
        except RecorderError:
            pass
    flags += [f"-DSIZEOF_{define}={btf.size(struct_name)}" for define, struct_name in SIZES]
    flags += [f"-DENUM_{define}={btf.enum_value(enum, value)}" for define, enum, value in ENUMS]
    return tuple(flags)
