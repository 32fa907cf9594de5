"""What the compiler may know about a field: FieldSpec."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FieldType(enum.Enum):
    """libsinsp's field types, folded to what changes comparison semantics."""

    STRING = "string"  # PT_CHARBUF, PT_FSPATH, PT_FSRELPATH, PT_BYTEBUF
    INT = "int"  # PT_INT*, PT_UINT*, PT_PID, PT_FD, PT_UID, PT_GID, PT_ERRNO, PT_SYSCALLID
    DOUBLE = "double"  # PT_DOUBLE
    BOOL = "bool"  # PT_BOOL
    IPADDR = "ipaddr"  # PT_IPADDR: compares against an address or a CIDR
    IPNET = "ipnet"  # PT_IPNET: the field is a network, the value an address
    PORT = "port"  # PT_PORT
    ABSTIME = "abstime"  # PT_ABSTIME: ns since the epoch
    RELTIME = "reltime"  # PT_RELTIME: ns


class ArgKind(enum.Enum):
    NONE = "none"  # proc.name
    OPTIONAL = "optional"  # proc.aname, proc.aname[2]
    REQUIRED = "required"  # evt.arg[0], evt.arg.flags, container.label[app]


@dataclass(frozen=True)
class FieldSpec:
    """One Falco field.

    ``sql`` is an expression over the `events` view (docs/contracts.md) with
    ``{arg}`` standing for the field argument where the field takes one, or
    None when the field is unsupported, in which case ``unsupported`` says
    why the capture cannot hold the data. ``is_list`` marks list-valued
    fields (``in`` means subset, ``intersects`` means overlap).
    """

    name: str
    type: FieldType
    sql: str | None
    arg: ArgKind = ArgKind.NONE
    is_list: bool = False
    unsupported: str | None = None
    doc: str = ""

    @property
    def supported(self) -> bool:
        return self.sql is not None
