"""Rule exceptions -> condition text, exactly as Falco builds it
(rule_loader_compiler.cpp, build_rule_exception_infos):

    (<condition>) and not (<field> <comp> (v1, v2)) and not ((f1 c1 v1 and f2 c2 v2) or (...))

* ``fields`` a single field: ``(field comp (v1, v2, ...))``, comp default ``in``;
* ``fields`` a list: one ``(f1 c1 v1 and f2 c2 v2 ...)`` per values entry,
  OR'd, comps default ``=``; a value that is itself a list becomes
  ``(a, b)``; a scalar value for a list operator gets parentheses;
* values are quoted when they contain a space and are not already quoted;
* an exception without values adds nothing.

The text is built piece by piece so every part points back to the YAML node
it came from.
"""

from __future__ import annotations

from analyzer.condition import ast
from analyzer.condition.expand import quote_item
from analyzer.rules.errors import SourceLocation, SourceText
from analyzer.rules.model import ExceptionInfo
from analyzer.rules.yaml_source import YScalar, YSeq

SINGLE_FIELD_COMPS = ("in", "pmatch", "intersects")


class ExceptionError(Exception):
    def __init__(self, message: str, location: SourceLocation) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


def validate(exception: ExceptionInfo) -> None:
    """Falco's checks on an exception's shape (the collector's part)."""
    fields, comps = exception.fields, exception.comps
    if fields is None:
        raise ExceptionError(f"exception '{exception.name}' has no fields", exception.location)
    if isinstance(fields, list):
        if comps is not None and not isinstance(comps, list):
            raise ExceptionError("fields and comps must both be lists or both be strings", comps.location)
        if comps is not None and len(comps) != len(fields):
            raise ExceptionError("fields and comps lists must have equal length", exception.location)
        for comp in comps or []:
            if comp.value not in ast.OPERATORS:
                raise ExceptionError(f"'{comp.value}' is not a supported comparison operator", comp.location)
    else:
        if isinstance(comps, list):
            raise ExceptionError("fields and comps must both be strings", exception.location)
        if comps is not None and comps.value not in SINGLE_FIELD_COMPS:
            raise ExceptionError(
                "when fields is a single value, comps must be one of (in, pmatch, intersects)", comps.location
            )


def append_exceptions(condition: SourceText, exceptions: list[ExceptionInfo]) -> tuple[SourceText, set[str]]:
    """``(condition)`` followed by one ``and not (...)`` per exception with values."""
    out = SourceText()
    start = condition.locate(0)
    out.append_fixed("(", start or exceptions[0].location)
    out.extend(condition)
    out.append_fixed(")", condition.locate(max(0, len(condition.text) - 1)) or exceptions[0].location)
    fields_used: set[str] = set()
    for exception in exceptions:
        clause = _clause(exception, fields_used)
        if clause is not None:
            out.append_fixed(" and not ", exception.location)
            out.extend(clause)
    return out, fields_used


def _clause(exception: ExceptionInfo, fields_used: set[str]) -> SourceText | None:
    fields = exception.fields
    assert fields is not None
    here = exception.location
    if not isinstance(fields, list):
        comp = exception.comps.value if isinstance(exception.comps, YScalar) else "in"
        if not exception.values:
            return None
        text = SourceText().append_fixed("(", here).extend(_scalar_text(fields))
        text.append_fixed(f" {comp} (", _where(exception.comps, here))
        for i, value in enumerate(exception.values):
            if not isinstance(value, YScalar):
                raise ExceptionError("Expected values array to contain a list of strings", _where(value, here))
            if i:
                text.append_fixed(", ", value.location)
            text.extend(_item_text(value, quote_item(value.value)))
        fields_used.add(fields.value)
        return text.append_fixed("))", here)

    comps = exception.comps if isinstance(exception.comps, list) else None
    text = SourceText().append_fixed("(", here)
    for n, values in enumerate(exception.values):
        items = values.items if isinstance(values, YSeq) else None
        if items is None or len(items) != len(fields):
            raise ExceptionError("Fields and values lists must have equal length", _where(values, here))
        text.append_fixed(" or (" if n else "(", _where(values, here))
        for k, (field, value) in enumerate(zip(fields, items)):
            comp_node = comps[k] if comps else None
            comp = comp_node.value if comp_node else "="
            text.append_fixed(" and " if k else "", _where(value, here))
            text.append_fixed(" ", field.location).extend(_scalar_text(field))
            text.append_fixed(f" {comp} ", _where(comp_node, here))
            text.extend(_value_text(value, comp))
            fields_used.add(field.value)
        text.append_fixed(")", _where(values, here))
    if not exception.values:
        return None  # Falco: "()" means no clause
    return text.append_fixed(")", here)


def _value_text(value, comp: str) -> SourceText:
    if isinstance(value, YSeq):
        text = SourceText().append_fixed("(", value.location)
        for i, item in enumerate(value.items):
            if not isinstance(item, YScalar):
                raise ExceptionError("exception values must be strings or lists of strings", item.location)
            if i:
                text.append_fixed(", ", item.location)
            text.extend(_item_text(item, quote_item(item.value)))
        return text.append_fixed(")", value.location)
    if not isinstance(value, YScalar):
        raise ExceptionError("exception values must be strings or lists of strings", value.location)
    if comp in ast.LIST_OPERATORS:
        if value.value.startswith("("):
            return _scalar_text(value)
        return SourceText().append_fixed("(", value.location).extend(_scalar_text(value)).append_fixed(
            ")", value.location
        )
    return _item_text(value, quote_item(value.value))


def _scalar_text(node: YScalar) -> SourceText:
    return node.source_text()


def _item_text(node: YScalar, text: str) -> SourceText:
    """``text`` is the node's value, possibly wrapped in added quotes."""
    if text == node.value:
        return node.source_text()
    return SourceText().append_fixed('"', node.location).extend(node.source_text()).append_fixed('"', node.location)


def _where(node, fallback: SourceLocation) -> SourceLocation:
    return node.location if node is not None and hasattr(node, "location") else fallback
