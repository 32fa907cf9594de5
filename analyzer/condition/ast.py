"""The condition AST: what a Falco condition means, independent of SQL.

Nodes are frozen dataclasses in the style of sqlglot: each class declares
which of its attributes are child nodes (``child_fields``), so generic code
(walking, macro expansion, evt.type inference, the SQL generator) never needs
a per-class list of children. Every node carries ``span``, the half-open
offsets ``[start, end)`` of the text it was parsed from in the condition
string; ``analyzer.rules.errors`` maps a span to ``file:line:col``. Nodes
built by the loader (exception clauses) or by expansion keep the span of the
text that produced them.

Grammar follows libsinsp's filter parser (filter/parser.cpp):

* boolean: ``or`` < ``and`` < ``not``; ``Or``/``And`` are n-ary, flattened
  the way libsinsp builds them (``a and b and c`` is one ``And``);
* a check is ``Comparison(left, op, right)``: ``left`` is a ``FieldRef`` or a
  ``Transformer`` over fields; ``right`` is a ``Literal``, a ``ListLiteral``,
  a ``FieldValue`` (``val(field)``), a ``Transformer``, or ``None`` for the
  unary ``exists``;
* a bare identifier standing alone is a ``MacroRef``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Iterator, TypeVar, Union

# Operators, spelled as libsinsp spells them ("==" is kept distinct from "="
# so canonical text round-trips; both mean equality).
UNARY_OPERATORS = ("exists",)
NUMERIC_OPERATORS = ("<=", "<", ">=", ">")
STRING_OPERATORS = (
    "==", "=", "!=", "glob", "iglob", "contains", "icontains", "bcontains",
    "startswith", "bstartswith", "endswith", "regex",
)
LIST_OPERATORS = ("intersects", "in", "pmatch")
OPERATORS = UNARY_OPERATORS + NUMERIC_OPERATORS + STRING_OPERATORS + LIST_OPERATORS

# Operator modifiers (libsinsp 2026, falcosecurity/libs#2984 and #3005):
# ``field <string-op> <modifier> (v1, v2, ...)`` is syntactic sugar over the
# plain operator applied to each right-hand value:
#   anyof: at least one value satisfies ``field op v``;
#   allof: every value satisfies ``field op v``;
#   oneof: exactly one value satisfies ``field op v``.
MODIFIERS = ("oneof", "anyof", "allof")

# Transformers valid on the left-hand side (and on the right, except val).
TRANSFORMERS = ("tolower", "toupper", "b64", "basename", "len", "join", "concat", "getopt")


@dataclass(frozen=True)
class Span:
    """Half-open character offsets [start, end) into the condition text."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid span {self.start}..{self.end}")

    @staticmethod
    def cover(first: "Span", last: "Span") -> "Span":
        return Span(min(first.start, last.start), max(first.end, last.end))


NO_SPAN = Span(0, 0)

N = TypeVar("N", bound="Node")


@dataclass(frozen=True)
class Node:
    """Base of every AST node. ``child_fields`` names the attributes holding
    child nodes (a node or a tuple of nodes); everything else is data."""

    child_fields: ClassVar[tuple[str, ...]] = ()

    def children(self) -> Iterator["Node"]:
        for name in self.child_fields:
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                yield from (v for v in value if isinstance(v, Node))

    def walk(self) -> Iterator["Node"]:
        """Pre-order traversal of this node and all its descendants."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children())))

    def find_all(self, kind: type[N]) -> Iterator[N]:
        return (n for n in self.walk() if isinstance(n, kind))

    def transform(self, fn: Any) -> "Node":
        """Rebuild bottom-up: children first, then ``fn(node)`` on the result.
        ``fn`` returns a replacement node (or the node itself)."""
        changes: dict[str, Any] = {}
        for name in self.child_fields:
            value = getattr(self, name)
            if isinstance(value, Node):
                new = value.transform(fn)
                if new is not value:
                    changes[name] = new
            elif isinstance(value, tuple):
                new_items = tuple(v.transform(fn) if isinstance(v, Node) else v for v in value)
                if any(a is not b for a, b in zip(new_items, value)):
                    changes[name] = new_items
        node = replace(self, **changes) if changes else self
        return fn(node)

    def shape(self) -> Any:
        """The node as plain data without spans or raw source spelling: for
        structural equality (round trips) where positions and quoting style
        legitimately differ."""
        out: list[Any] = [type(self).__name__]
        for f in fields(self):
            if f.name in ("span", "raw"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Node):
                value = value.shape()
            elif isinstance(value, tuple):
                value = tuple(v.shape() if isinstance(v, Node) else v for v in value)
            out.append((f.name, value))
        return tuple(out)

    def text(self) -> str:
        """Canonical condition text (re-parses to the same shape)."""
        from analyzer.condition.render import render

        return render(self)


# ---------------------------------------------------------------- boolean


@dataclass(frozen=True)
class Or(Node):
    """``a or b or ...``: true if any operand is true (two or more operands)."""

    operands: tuple["Expr", ...]
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("operands",)


@dataclass(frozen=True)
class And(Node):
    """``a and b and ...``: true if every operand is true (two or more operands)."""

    operands: tuple["Expr", ...]
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("operands",)


@dataclass(frozen=True)
class Not(Node):
    """``not a``. libsinsp folds ``not not a`` to ``a`` while parsing."""

    operand: "Expr"
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("operand",)


@dataclass(frozen=True)
class MacroRef(Node):
    """A bare identifier standing alone in boolean position: a macro use.
    Expansion replaces it by the macro's condition."""

    name: str
    span: Span = NO_SPAN


# ---------------------------------------------------------------- operands


@dataclass(frozen=True)
class FieldRef(Node):
    """A field, with its optional bracketed argument as written:
    ``proc.aname[2]`` -> arg "2"; ``evt.arg[0]`` -> "0";
    ``container.mount.dest[/proc*]`` -> "/proc*". ``evt.arg.flags`` has no
    bracket: the field name is ``evt.arg.flags`` (libsinsp resolves the dotted
    suffix as the argument when it looks the field up)."""

    name: str
    arg: str | None = None
    span: Span = NO_SPAN


@dataclass(frozen=True)
class Literal(Node):
    """A constant: ``value`` is the unescaped text, ``raw`` the source text
    exactly as written (quotes included when ``quoted``). Numbers are
    literals too (``raw`` "0x1F"); the field's type decides how to compare."""

    value: str
    raw: str = ""
    quoted: bool = False
    span: Span = NO_SPAN

    def __post_init__(self) -> None:
        if not self.raw:
            object.__setattr__(self, "raw", self.value)


@dataclass(frozen=True)
class ListLiteral(Node):
    """``(a, b, "c d")``, possibly empty ``()``. Before list expansion an item
    may name a Falco list; after expansion every item is a plain value."""

    items: tuple[Literal, ...]
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("items",)


@dataclass(frozen=True)
class ListName(Node):
    """The right side of a list operator written without parentheses:
    ``proc.name in shell_binaries``. Expansion replaces it by the named
    list's ``ListLiteral``; an unknown name is an error."""

    name: str
    span: Span = NO_SPAN


@dataclass(frozen=True)
class Transformer(Node):
    """A field transformer: ``tolower(proc.name)``, ``len(proc.args)``,
    ``join(", ", proc.args)``, ``concat(proc.name, "-", proc.pid)``.
    ``args`` are fields, nested transformers, literals (quoted strings or
    numbers) or ``ArgList``s (libsinsp's transformer argument grammar)."""

    name: str
    args: tuple["TransformerArg", ...]
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("args",)


@dataclass(frozen=True)
class ArgList(Node):
    """A parenthesised list inside transformer arguments, e.g. the second
    argument of ``concat(proc.name, (a, b))``: items may be fields,
    transformers or constants (libsinsp's TransformerList)."""

    items: tuple["TransformerArg", ...]
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("items",)


@dataclass(frozen=True)
class FieldValue(Node):
    """``val(field)`` on the right-hand side: compare against another field
    of the same event instead of a constant."""

    field: FieldRef
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("field",)


# ---------------------------------------------------------------- checks


@dataclass(frozen=True)
class Comparison(Node):
    """``left op right``. ``op`` is one of OPERATORS as written; ``right`` is
    None for ``exists``. ``modifier`` is one of MODIFIERS or None; with a
    modifier ``right`` is a ``ListLiteral``."""

    left: "Operand"
    op: str
    right: "Value | None" = None
    modifier: str | None = None
    span: Span = NO_SPAN
    child_fields: ClassVar[tuple[str, ...]] = ("left", "right")

    def fields_used(self) -> Iterator[FieldRef]:
        """Every field this check reads, on either side."""
        return self.find_all(FieldRef)


Operand = Union[FieldRef, Transformer]
Value = Union[Literal, ListLiteral, ListName, FieldValue, Transformer]
TransformerArg = Union[FieldRef, Transformer, Literal, ArgList]
Expr = Union[Or, And, Not, Comparison, MacroRef]
