"""List substitution and macro expansion, at AST level, with Falco's semantics.

Lists: Falco substitutes every list name found in a condition's text by the
list's items joined with ``, `` (an item with a space and no leading quote
gets double quotes), one list at a time in definition order, before parsing.
Here the same happens on the AST: an unquoted item of a list literal that
names a list is replaced by that list's items, parsed exactly as libsinsp
would parse them at that spot, lists taken in definition order (so items a
substitution brings in are substituted by later lists only, as in Falco).
A list named as a single value (``proc.name = mylist``) is pasted too: it
works for a one-item list and is an error otherwise, as in Falco.
Deliberate differences: a quoted string is never rewritten (Falco's textual
pass would rewrite ``"a mylist b"``), and ``in mylist`` without parentheses
is reported instead of becoming the unparsable ``in a, b``.

Macros: a ``MacroRef`` is replaced by the macro's expanded condition. A
macro sees only macros whose first definition came before its own (latest)
definition; a rule sees every macro. Unknown macros, macros that failed to
load, and reference loops are located errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from analyzer.condition import ast
from analyzer.condition.errors import ConditionError
from analyzer.condition.parser import parse_list


def quote_item(item: str) -> str:
    """Falco's quote_item: items with a space, not already quoted, get quotes."""
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


def parse_list_items(items: Sequence[str]) -> tuple[ast.Literal, ...]:
    """Parse list items the way libsinsp reads them once Falco has pasted
    them into a parenthesised list. Raises ConditionError on the joined text."""
    return parse_list("(" + ", ".join(quote_item(i) for i in items) + ")").items


@dataclass
class ListExpansion:
    """The items of every list, in definition order. ``items`` are already
    expanded for lists naming earlier lists (see ``expand_list_items``)."""

    items: dict[str, tuple[str, ...]]
    used: set[str] = field(default_factory=set)
    _parsed: dict[str, tuple[ast.Literal, ...] | ConditionError] = field(default_factory=dict)
    _positions: dict[str, int] = field(default_factory=dict)

    def _order(self) -> dict[str, int]:
        if len(self._positions) != len(self.items):
            self._positions = {name: i for i, name in enumerate(self.items)}
        return self._positions

    def parsed(self, name: str) -> tuple[ast.Literal, ...]:
        cached = self._parsed.get(name)
        if cached is None:
            try:
                cached = parse_list_items(self.items[name])
            except ConditionError as exc:
                cached = exc
            self._parsed[name] = cached
        if isinstance(cached, ConditionError):
            raise cached
        return cached

    def substitute(self, expr: ast.Expr, condition: str) -> tuple[ast.Expr, list[ConditionError]]:
        """Replace list names in ``expr`` (parsed from ``condition``)."""
        errors: list[ConditionError] = []

        def visit(node: ast.Node) -> ast.Node:
            if isinstance(node, ast.ListLiteral):
                return self._substitute_literal(node, condition, errors)
            if isinstance(node, ast.Comparison) and isinstance(node.right, ast.Literal):
                return self._substitute_single_value(node, node.right, condition, errors)
            if isinstance(node, ast.ListName):
                if node.name in self.items:
                    message = (
                        f"list '{node.name}' must be written in parentheses: '({node.name})' "
                        f"(Falco pastes its items as text, which libsinsp cannot parse here)"
                    )
                else:
                    message = f"unknown list '{node.name}'"
                errors.append(ConditionError(message, condition, node.span.start, node.span.end - node.span.start))
            return node

        return expr.transform(visit), errors

    def _substitute_single_value(
        self, node: ast.Comparison, value: ast.Literal, condition: str, errors: list[ConditionError]
    ) -> ast.Comparison:
        """``proc.name = mylist``: Falco pastes the items there too, which
        parses only when the list has exactly one item."""
        if value.quoted or value.value not in self.items:
            return node
        self.used.add(value.value)
        try:
            items = self.parsed(value.value)
        except ConditionError as exc:
            items = ()
            problem = exc.message
        else:
            problem = f"it has {len(items)} items where '{node.op}' takes one value"
        if len(items) == 1:
            return ast.Comparison(node.left, node.op, ast.Literal(items[0].value, items[0].raw, items[0].quoted,
                                                                 value.span), node.modifier, node.span)
        errors.append(ConditionError(
            f"list '{value.value}' is pasted here by Falco and then cannot be parsed: {problem}",
            condition, value.span.start, value.span.end - value.span.start,
        ))
        return node

    def _substitute_literal(
        self, node: ast.ListLiteral, condition: str, errors: list[ConditionError]
    ) -> ast.ListLiteral:
        order = self._order()
        items = list(node.items)
        done = -1  # lists are applied one pass each, in definition order
        while True:
            present = {i.value for i in items if not i.quoted and order.get(i.value, -1) > done}
            if not present:
                break
            name = min(present, key=order.__getitem__)
            done = order[name]
            spliced: list[ast.Literal] = []
            for item in items:
                if item.quoted or item.value != name:
                    spliced.append(item)
                    continue
                self.used.add(name)
                try:
                    replacement = self.parsed(name)
                except ConditionError as exc:
                    errors.append(ConditionError(
                        f"list '{name}' has items libsinsp cannot parse: {exc.message}",
                        condition, item.span.start, item.span.end - item.span.start,
                    ))
                    spliced.append(item)
                    continue
                spliced.extend(ast.Literal(r.value, r.raw, r.quoted, item.span) for r in replacement)
            items = spliced
        return ast.ListLiteral(tuple(items), node.span)


def expand_list_items(
    lists: Sequence[tuple[str, Sequence[str], int, int]],
) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """Falco's compile_list_infos. ``lists`` holds (name, raw items, index,
    visibility) in definition order; an item naming a list whose first
    definition came before this list's (latest) definition is replaced by
    that list's raw items (one level, exactly as Falco does). Returns the
    expanded items and the names of lists used that way."""
    by_name = {name: (items, index) for name, items, index, _ in lists}
    expanded: dict[str, tuple[str, ...]] = {}
    used: set[str] = set()
    for name, items, _index, visibility in lists:
        out: list[str] = []
        for item in items:
            ref = by_name.get(item)
            if ref is not None and ref[1] < visibility:
                used.add(item)
                out.extend(ref[0])
            else:
                out.append(item)
        expanded[name] = tuple(out)
    return expanded, used


@dataclass(frozen=True)
class MacroSource:
    """A macro's parsed (list-substituted) condition and its definition order."""

    name: str
    expr: ast.Expr | None  # None: the macro failed to parse
    condition: str
    index: int
    visibility: int


class MacroResolver:
    """Expands macro references; each macro resolved once, under its own
    visibility. ``errors[name]`` holds a macro's own errors."""

    def __init__(self, macros: Mapping[str, MacroSource]) -> None:
        self.macros = macros
        self.resolved: dict[str, ast.Expr | None] = {}
        self.errors: dict[str, list[ConditionError]] = {}
        self.used: set[str] = set()
        self._in_progress: list[str] = []

    def resolve_macro(self, name: str) -> ast.Expr | None:
        if name in self.resolved:
            return self.resolved[name]
        source = self.macros[name]
        if source.expr is None:
            self.resolved[name] = None
            return None
        self._in_progress.append(name)
        expr, errors = self.expand(source.expr, source.condition, source.visibility)
        self._in_progress.pop()
        self.errors[name] = errors
        result = None if errors else expr
        self.resolved[name] = result
        return result

    def expand(self, expr: ast.Expr, condition: str, visibility: int | None) -> tuple[ast.Expr, list[ConditionError]]:
        """Replace every macro reference in ``expr`` (parsed from
        ``condition``). ``visibility`` None means every macro is visible."""
        errors: list[ConditionError] = []

        def visit(node: ast.Node) -> ast.Node:
            if not isinstance(node, ast.MacroRef):
                return node
            where = (condition, node.span.start, max(1, node.span.end - node.span.start))
            source = self.macros.get(node.name)
            if source is None or (visibility is not None and source.index >= visibility):
                errors.append(ConditionError(f"Undefined macro '{node.name}' used in filter.", *where))
                return node
            if node.name in self._in_progress:
                errors.append(ConditionError(f"reference loop in macro '{node.name}'", *where))
                return node
            self.used.add(node.name)
            body = self.resolve_macro(node.name)
            if body is None:
                errors.append(ConditionError(f"macro '{node.name}' has errors (reported at its definition)", *where))
                return node
            return body

        return expr.transform(visit), errors
