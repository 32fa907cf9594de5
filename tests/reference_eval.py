"""A deliberately simple evaluator of Falco conditions over event dicts: the
oracle of the differential test (tests/test_sql_differential.py).

It shares nothing with analyzer.sql but the AST: it walks the condition and
applies libsinsp's rules directly in Python, one event at a time. An event
is a dict keyed by events-view column name ("proc.name", "_anc_name", ...);
a missing key or None is a missing value.

Known, documented deviation shared with the SQL: glob's '?' and brackets
match one character (code point) where libsinsp in the C locale matches one
byte; ``glob_match`` is checked against glibc's fnmatch on ASCII input.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from functools import lru_cache

from analyzer.condition import ast

# field -> (kind, type, column). kind: scalar | ancestors | sides | list.
FIELDS: dict[str, tuple[str, str, object]] = {
    "proc.name": ("scalar", "str", "proc.name"),
    "proc.cmdline": ("scalar", "str", "proc.cmdline"),
    "fd.name": ("scalar", "str", "fd.name"),
    "proc.pid": ("scalar", "int", "proc.pid"),
    "evt.rawres": ("scalar", "int", "evt.rawres"),
    "fd.sport": ("scalar", "int", "fd.sport"),
    "fd.cport": ("scalar", "int", "fd.cport"),
    "fd.connected": ("scalar", "bool", "fd.connected"),
    "fd.sip": ("scalar", "ip", "fd.sip"),
    "fd.cip": ("scalar", "ip", "fd.cip"),
    "fd.snet": ("scalar", "net", "fd.sip"),
    "fd.ip": ("sides", "ip", ("fd.cip", "fd.sip")),
    "fd.net": ("sides", "net", ("fd.cip", "fd.sip")),
    "fd.port": ("sides", "int", ("fd.cport", "fd.sport")),
    "proc.aname": ("ancestors", "str", "_anc_name"),
    "proc.apid": ("ancestors", "int", "_anc_pid"),
    "fd.types": ("list", "str", "fd.types"),
}


class Invalid(Exception):
    """A condition libsinsp rejects (bad value for the type, bad operator)."""


def evaluate(expr: ast.Node, event: dict) -> bool:
    if isinstance(expr, ast.And):
        return all(evaluate(op, event) for op in expr.operands)
    if isinstance(expr, ast.Or):
        return any(evaluate(op, event) for op in expr.operands)
    if isinstance(expr, ast.Not):
        return not evaluate(expr.operand, event)
    if isinstance(expr, ast.Comparison):
        return compare(expr, event)
    raise Invalid(f"cannot evaluate {type(expr).__name__}")


# ------------------------------------------------------------ operands


def operand(node: ast.Node, event: dict) -> tuple[str, str, object]:
    """(kind, type, value): value is one value, or a list for the list kinds."""
    if isinstance(node, ast.FieldRef):
        if node.name.startswith("evt.arg.") or node.name == "evt.arg":
            args = event.get("_evt_args") or {}
            key = node.arg if node.name == "evt.arg" else node.name[len("evt.arg."):]
            if key.isdigit():
                items = list(args.values())
                return "scalar", "str", items[int(key)] if int(key) < len(items) else None
            return "scalar", "str", args.get(key)
        kind, type_, column = FIELDS[node.name]
        if kind == "ancestors":
            chain = event.get(column) or []
            if node.arg is not None:  # [N]: Nth ancestor, 0 = the process itself
                n = int(node.arg)
                return "scalar", type_, chain[n] if n < len(chain) else None
            return kind, type_, chain[1:]
        if kind == "sides":
            return kind, type_, [event.get(c) for c in column]
        return kind, type_, event.get(column)
    if isinstance(node, ast.Transformer):
        return "scalar", *transform(node, event)
    raise Invalid(f"unexpected operand {type(node).__name__}")


def ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def ascii_upper(s: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


def transform(node: ast.Transformer, event: dict) -> tuple[str, object]:
    args = []
    for a in node.args:
        if isinstance(a, ast.Literal):
            args.append(("str", a.value))
        else:
            kind, type_, value = operand(a, event)
            args.append((type_, value))
    if node.name == "concat":
        if any(v is None for _, v in args):
            return "str", None
        return "str", "".join(str(v) for _, v in args)
    (type_, value), = args
    if value is None:
        return ("int" if node.name == "len" else "str"), None
    if node.name == "len":
        return "int", len(value.encode())
    if node.name == "tolower":
        return "str", ascii_lower(value)
    if node.name == "toupper":
        return "str", ascii_upper(value)
    if node.name == "basename":
        return "str", value.rsplit("/", 1)[-1]
    if node.name == "b64":
        try:
            return "str", base64.b64decode(value, validate=True).decode()
        except ValueError:
            return "str", None
    raise Invalid(node.name)


# ------------------------------------------------------------ values


def parse_value(type_: str, text: str):
    if type_ == "int":
        if re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text)
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        raise Invalid(text)
    if type_ == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise Invalid(text)
    if type_ == "ip":
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise Invalid(text) from None
    if type_ == "net":
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise Invalid(text) from None
    return text


@lru_cache(maxsize=4096)
def glob_match(pattern: str, s: str) -> bool:
    """fnmatch(pattern, s, 0) as glibc does it, over code points."""

    @lru_cache(maxsize=None)
    def match(pi: int, si: int) -> bool:
        while pi < len(pattern):
            c = pattern[pi]
            if c == "*":
                return any(match(pi + 1, k) for k in range(si, len(s) + 1))
            if si == len(s):
                return False
            if c == "?":
                pi, si = pi + 1, si + 1
                continue
            if c == "\\":
                if pi + 1 == len(pattern) or s[si] != pattern[pi + 1]:
                    return False
                pi, si = pi + 2, si + 1
                continue
            if c == "[":
                result = bracket(pattern, pi, s[si])
                if result is not None:
                    ok, pi = result
                    if not ok:
                        return False
                    si += 1
                    continue
            if s[si] != c:
                return False
            pi, si = pi + 1, si + 1
        return si == len(s)

    return match(0, 0)


_CLASS_TESTS = {
    "alpha": lambda ch: ch.isascii() and ch.isalpha(), "digit": lambda ch: "0" <= ch <= "9",
    "alnum": lambda ch: ch.isascii() and ch.isalnum(), "upper": lambda ch: "A" <= ch <= "Z",
    "lower": lambda ch: "a" <= ch <= "z", "space": lambda ch: ch in " \t\n\v\f\r", "blank": lambda ch: ch in " \t",
    "punct": lambda ch: ch.isascii() and 33 <= ord(ch) <= 126 and not ch.isalnum(),
    "xdigit": lambda ch: ch in "0123456789abcdefABCDEF", "cntrl": lambda ch: ord(ch) < 32 or ord(ch) == 127,
    "print": lambda ch: 32 <= ord(ch) <= 126, "graph": lambda ch: 33 <= ord(ch) <= 126,
}


def bracket(pattern: str, start: int, ch: str) -> tuple[bool, int] | None:
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    matched = False
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            return matched != negate, i + 1
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end == -1 or pattern[i + 2:end] not in _CLASS_TESTS:
                return None
            matched |= _CLASS_TESTS[pattern[i + 2:end]](ch)
            i = end + 2
            continue
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        i += 1
        if i + 1 < len(pattern) and pattern[i] == "-" and pattern[i + 1] != "]":
            high = pattern[i + 1]
            i += 2
            if high == "\\" and i < len(pattern):
                high = pattern[i]
                i += 1
            matched |= c <= ch <= high
        else:
            matched |= ch == c
    return None


def path_components(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def pmatch(value: str, prefixes: list[str]) -> bool:
    parts = path_components(value)
    for prefix in prefixes:
        want = path_components(prefix)
        if parts[: len(want)] == want:
            return True
    return False


def scalar_check(op: str, type_: str, value, texts: list[str]) -> bool:
    """One value against the constants; value is not None."""
    if type_ == "ip":
        wanted = [parse_value("ip", t) for t in texts]
        addr = ipaddress.ip_address(value)
        if op == "!=":
            return addr != wanted[0]
        return addr in wanted
    if type_ == "net":
        nets = [parse_value("net", t) for t in texts]
        addr = ipaddress.ip_address(value)
        inside = [addr.version == n.version and addr in n for n in nets]
        return (not inside[0]) if op == "!=" else any(inside)
    wanted = [parse_value(type_, t) for t in texts]
    if op in ("in", "intersects"):
        return value in wanted
    if op == "pmatch":
        return pmatch(value, wanted)
    (w,) = wanted
    if op in ("=", "=="):
        return value == w
    if op == "!=":
        return value != w
    if op in ("<", "<=", ">", ">="):
        if type_ == "str":  # strcmp: bytes
            value, w = value.encode(), w.encode()
        return {"<": value < w, "<=": value <= w, ">": value > w, ">=": value >= w}[op]
    if op == "contains":
        return w in value
    if op == "icontains":
        return ascii_lower(w) in ascii_lower(value)
    if op == "startswith":
        return value.startswith(w)
    if op == "endswith":
        return value.endswith(w)
    if op == "glob":
        return glob_match(w, value)
    if op == "iglob":
        return glob_match(ascii_lower(w), ascii_lower(value))
    if op == "regex":
        return re.fullmatch(w, value) is not None
    raise Invalid(op)


def compare(node: ast.Comparison, event: dict) -> bool:
    kind, type_, value = operand(node.left, event)
    op = node.op
    if op == "exists":
        if kind in ("ancestors", "sides"):
            return any(v is not None for v in value)
        if kind == "list":
            return bool(value)
        return value is not None
    right = node.right
    if isinstance(right, (ast.FieldValue, ast.Transformer)):
        _, _, other = operand(right.field if isinstance(right, ast.FieldValue) else right, event)
        if other is None:
            return False
        check = lambda v: v is not None and scalar_check(op, "str", v, [str(other)]) if type_ == "str" else (
            v is not None and scalar_check(op, type_, v, [str(other)]))
    else:
        texts = [i.value for i in right.items] if isinstance(right, ast.ListLiteral) else [right.value]
        if node.modifier is not None:
            hits = [compare(ast.Comparison(node.left, op, item), event) for item in right.items]
            return {"anyof": any(hits), "allof": all(hits), "oneof": sum(hits) == 1}[node.modifier]
        check = lambda v: v is not None and scalar_check(op, type_, v, texts)
    if kind == "scalar":
        return check(value)
    if kind == "ancestors":
        return any(check(v) for v in value)
    if kind == "sides":
        if op == "!=":
            return all(check(v) for v in value)
        return any(check(v) for v in value)
    # list-valued field: in = every element in the set, intersects = overlap
    if not value:
        return False
    if op == "intersects":
        return any(check(v) for v in value)
    return all(check(v) for v in value)
