"""The event types a condition can match, computed as libsinsp does
(filter/ppm_codes.cpp), over event type names instead of event codes.

* ``and``: intersection of the children; ``or``: union;
* ``evt.type = x``, ``== x``, ``in (x, y)``: those types; ``!= x``: all but x;
* any other check (other fields, other operators on evt.type, ``exists``,
  a transformer over evt.type) is neutral: all types;
* ``not`` is pushed to the leaves (De Morgan): under a negation ``and``
  behaves as ``or`` and vice versa, and a leaf's set is complemented unless
  the leaf is neutral.

The result is either a finite set of names or "all types except some names".
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.condition import ast

_EVTTYPE_OPERATORS = ("=", "==", "!=", "in")

# libsinsp counts event codes (an enter and an exit code per name) against
# this limit in Falco's "too many evt.type values" warning.
FALCO_EVTTYPE_WARN_LIMIT = 100


@dataclass(frozen=True)
class EvtTypes:
    """``names`` when ``complement`` is False; every type but ``names`` otherwise."""

    names: frozenset[str]
    complement: bool = False

    @staticmethod
    def all() -> "EvtTypes":
        return EvtTypes(frozenset(), True)

    @property
    def is_all(self) -> bool:
        return self.complement and not self.names

    def union(self, other: "EvtTypes") -> "EvtTypes":
        if not self.complement and not other.complement:
            return EvtTypes(self.names | other.names)
        if self.complement and other.complement:
            return EvtTypes(self.names & other.names, True)
        positive, negative = (self, other) if not self.complement else (other, self)
        return EvtTypes(negative.names - positive.names, True)

    def intersect(self, other: "EvtTypes") -> "EvtTypes":
        if not self.complement and not other.complement:
            return EvtTypes(self.names & other.names)
        if self.complement and other.complement:
            return EvtTypes(self.names | other.names, True)
        positive, negative = (self, other) if not self.complement else (other, self)
        return EvtTypes(positive.names - negative.names)

    def invert(self) -> "EvtTypes":
        return EvtTypes(self.names, not self.complement)

    def matches(self, name: str) -> bool:
        return (name in self.names) != self.complement

    def too_many(self) -> bool:
        """Falco's warn_evttypes test: no types at all, or more than 100 event codes."""
        if self.complement:
            return True
        return not self.names or 2 * len(self.names) > FALCO_EVTTYPE_WARN_LIMIT

    def describe(self) -> str:
        if self.is_all:
            return "all"
        if self.complement:
            return "all except " + ", ".join(sorted(self.names))
        return ", ".join(sorted(self.names)) if self.names else "none"


def evttypes(expr: ast.Expr) -> EvtTypes:
    """The event types for which ``expr`` (macros expanded) can be true."""
    return _visit(expr, negated=False)


def _visit(node: ast.Node, negated: bool) -> EvtTypes:
    if isinstance(node, (ast.And, ast.Or)):
        conjunction = isinstance(node, ast.And) != negated
        result = EvtTypes.all() if conjunction else EvtTypes(frozenset())
        for child in node.operands:
            child_types = _visit(child, negated)
            result = result.intersect(child_types) if conjunction else result.union(child_types)
        return result
    if isinstance(node, ast.Not):
        return _visit(node.operand, not negated)
    if isinstance(node, ast.Comparison):
        if node.op == "exists" and _is_evttype_field(node.left):
            # libsinsp: "evt.type exists" matches every type but is not neutral
            return EvtTypes(frozenset()) if negated else EvtTypes.all()
        names = _evttype_values(node)
        if names is None:
            return EvtTypes.all()  # neutral leaves are never inverted
        types = EvtTypes(names)
        if node.op == "!=":
            types = types.invert()
        return types.invert() if negated else types
    return EvtTypes.all()  # an unexpanded macro reference: neutral


def _evttype_values(node: ast.Comparison) -> frozenset[str] | None:
    """The names an evt.type check names, or None for a neutral check."""
    left = node.left
    if node.op not in _EVTTYPE_OPERATORS or node.modifier is not None:
        return None
    if not _is_evttype_field(left):
        return None
    right = node.right
    if isinstance(right, ast.Literal):
        return frozenset({right.value})
    if isinstance(right, ast.ListLiteral):
        return frozenset(i.value for i in right.items)
    return None


def _is_evttype_field(node: ast.Node) -> bool:
    return isinstance(node, ast.FieldRef) and node.name == "evt.type" and node.arg is None
