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
    BUFFER = "buffer"  # PT_BYTEBUF: raw bytes (bcontains/bstartswith take hex)


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
    # Additive extensions (analyzer.fields.catalog, analyzer.sql):
    # ``arg_sql``: the expression when an argument is given, with ``{arg}``
    # (the argument as a quoted SQL string) or ``{index}`` (a validated
    # integer, for ``arg_is_index`` fields such as proc.aname[N]).
    arg_sql: str | None = None
    arg_is_index: bool = False
    # ``any_element``: ``sql`` yields a LIST and a check holds when it holds
    # for any element (proc.aname without index: any ancestor).
    any_element: bool = False
    # ``sides``: filter-only fields that match either end of a connection
    # (fd.ip, fd.port, fd.net): `=`/`in` hold if any side matches, `!=` if
    # every side differs, as libsinsp's compare_ip/compare_port/compare_net.
    sides: tuple[str, ...] = ()
    # ``derivable``: unsupported only because the analyzer does not derive
    # it yet (the data exists in a capture); False means it cannot exist.
    derivable: bool = False

    @property
    def supported(self) -> bool:
        return self.sql is not None
