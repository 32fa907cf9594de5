"""AST -> canonical condition text that libsinsp's grammar parses back to the
same shape. Used for round-trip tests, `trace rules check` output and error
messages showing expanded conditions."""

from __future__ import annotations

import re

from analyzer.condition import ast

BARE_VALUE = re.compile(r"[^()\"'\s=,]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """Double-quote a value with libsinsp escapes. libsinsp's lexer ends a
    quoted string at the first delimiter not preceded by a backslash, so a
    backslash right before the closing quote is written as \\x5c."""
    body = "".join(_ESCAPES.get(c, c) for c in value)
    if body.endswith("\\"):
        body = body[:-2] + "\\x5c"
    return f'"{body}"'


def value_text(literal: ast.Literal, *, numeric: bool = False) -> str:
    if numeric or _is_number_text(literal):
        return literal.raw
    if not literal.quoted and BARE_VALUE.fullmatch(literal.value):
        return literal.value
    return quote(literal.value)


def render(node: ast.Node) -> str:
    if isinstance(node, ast.Or):
        return " or ".join(_child(op, (ast.Or,)) for op in node.operands)
    if isinstance(node, ast.And):
        return " and ".join(_child(op, (ast.Or, ast.And)) for op in node.operands)
    if isinstance(node, ast.Not):
        return "not " + _child(node.operand, (ast.Or, ast.And, ast.Not))
    if isinstance(node, ast.MacroRef):
        return node.name
    if isinstance(node, ast.FieldRef):
        if node.arg is None:
            return node.name
        arg = node.arg if re.fullmatch(r"[^\]\[\"'\s]+", node.arg) else quote(node.arg)
        return f"{node.name}[{arg}]"
    if isinstance(node, ast.Transformer):
        return f"{node.name}({', '.join(_arg_text(a) for a in node.args)})"
    if isinstance(node, ast.FieldValue):
        return f"val({render(node.field)})"
    if isinstance(node, ast.Literal):
        return value_text(node)
    if isinstance(node, ast.ListLiteral):
        return "(" + ", ".join(value_text(i) for i in node.items) + ")"
    if isinstance(node, ast.ArgList):
        return "(" + ", ".join(_arg_text(i) for i in node.items) + ")"
    if isinstance(node, ast.ListName):
        return node.name
    if isinstance(node, ast.Comparison):
        return _comparison(node)
    raise TypeError(f"cannot render {type(node).__name__}")


def _comparison(node: ast.Comparison) -> str:
    left = render(node.left)
    if node.right is None:
        return f"{left} {node.op}"
    right = node.right
    if isinstance(right, ast.Literal):
        text = value_text(right, numeric=node.op in ast.NUMERIC_OPERATORS)
    else:
        text = render(right)
    if node.modifier:
        return f"{left} {node.op} {node.modifier} {text}"
    return f"{left} {node.op} {text}"


def _arg_text(node: ast.Node) -> str:
    """Transformer arguments admit only quoted strings and numbers as constants."""
    if isinstance(node, ast.Literal) and not _is_number_text(node):
        return quote(node.value)
    return render(node)


def _is_number_text(literal: ast.Literal) -> bool:
    return not literal.quoted and literal.raw == literal.value and bool(
        re.fullmatch(r"0[xX][0-9a-fA-F]+|[+\-]?[0-9]+\.?[0-9]*(?:[eE][+\-][0-9]+)?", literal.raw)
    )


def _child(node: ast.Node, needs_parens: tuple[type, ...]) -> str:
    text = render(node)
    return f"({text})" if isinstance(node, needs_parens) else text
