"""A rule's event-level prefilter: what its condition requires of the event
itself (evt.*, fd.*), leaving out every check on process state.

Process fields (proc.*, user.*, container.*, ancestors) reach an event
through joins with the process tables, which cost far more per event than
the event's own columns. A filter on event fields alone is pushed below
those joins by DuckDB, so a hunt discards most events before they are
joined: `spawned_process and proc.name in (shells)` keeps only execs, and
`open_read and fd.name in (sensitive files) and not proc.name in (...)`
keeps only the opens of those files.

The prefilter is implied by the condition (every event the condition
selects passes it), so running the full condition on what it keeps gives
exactly the condition's result:

* of an AND, the prefilters of the operands that have one;
* of an OR, the OR of its operands' prefilters, or none when one has none;
* any other node (a check, a NOT) is its own prefilter when it reads event
  fields only and ``pushable`` accepts it, else it has none. (DuckDB 2.0
  keeps a filter holding a regular expression above the joins, so the
  compiler only accepts checks whose SQL has none.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from analyzer.condition import ast

# Field classes read from the event itself, not from the process state.
EVENT_FIELD_CLASSES = frozenset({"evt", "fd", "syscall", "fs"})


def _event_level(node: ast.Node) -> bool:
    return all(ref.name.split(".", 1)[0] in EVENT_FIELD_CLASSES for ref in node.find_all(ast.FieldRef))


def event_prefilter(node: ast.Node, pushable: Callable[[ast.Node], bool]) -> ast.Node | None:
    """The part of ``node`` that reads event fields only and that ``node``
    implies; None when nothing short of `true` is implied."""
    if isinstance(node, ast.And):
        parts = [p for p in (event_prefilter(op, pushable) for op in node.operands) if p is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else replace(node, operands=tuple(parts))
    if isinstance(node, ast.Or):
        parts = [event_prefilter(op, pushable) for op in node.operands]
        if any(p is None for p in parts):
            return None
        return replace(node, operands=tuple(parts))  # type: ignore[arg-type]
    return node if _event_level(node) and pushable(node) else None
