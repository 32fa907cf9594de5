"""Compile-time conversion of condition literals, following how libsinsp
parses a filter value for the field's type. Each function raises ValueError
with a message saying what libsinsp expects; the generator locates it."""

from __future__ import annotations

import ipaddress
import re

_DECIMAL = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_HEX_BYTES = re.compile(r"([0-9a-fA-F]{2})+")


def number(text: str) -> int:
    """An integer literal: decimal or 0x hex, as libsinsp's numeric parsers."""
    if _DECIMAL.fullmatch(text):
        return int(text, 10)
    if _HEX.fullmatch(text):
        return int(text, 16)
    raise ValueError(f"'{text}' is not a valid number")


def double(text: str) -> float:
    if _FLOAT.fullmatch(text):
        return float(text)
    raise ValueError(f"'{text}' is not a valid number")


def boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"'{text}' is not a valid boolean (true or false)")


def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a valid IP address") from None


def ip_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR network; host bits may be set (libsinsp masks them) and a bare
    address is its own /32 or /128."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"'{text}' is not a valid IP network (address/prefix)") from None


def hex_bytes(text: str) -> str:
    """bcontains/bstartswith take the bytes as hex digits."""
    if not _HEX_BYTES.fullmatch(text):
        raise ValueError(f"'{text}' is not a hex byte string (an even number of hex digits)")
    return text.upper()


def path_prefix(text: str) -> str:
    """A pmatch prefix with empty components dropped, framed by '/' the way
    the runtime's _path_norm() frames a path: '/a/b/'."""
    parts = [p for p in text.split("/") if p]
    return "/" + "".join(p + "/" for p in parts)


def ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def ascii_upper(text: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


# ---------------------------------------------------------------- glob

_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r"\t\n\v\f\r ", "blank": r"\t ", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}


def _re_char(c: str) -> str:
    """One character as a literal in RE2, in or out of brackets."""
    if c.isascii() and (c.isalnum() or c in "/_"):
        return c
    return f"\\x{{{ord(c):x}}}"


_NEVER = r"[^\x{0}-\x{10ffff}]"


def glob_to_regex(pattern: str) -> str:
    """An RE2 pattern matching exactly what glibc's fnmatch(pattern, s, 0)
    matches: '*' and '?' cross '/', a leading '.' is not special, backslash
    quotes the next character (a trailing lone backslash never matches),
    brackets take '!'/'^' negation, ranges and [:class:]. iglob is this over
    ASCII-lowered pattern and value (FNM_CASEFOLD folds with tolower)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\":
            if i + 1 == n:
                return _NEVER
            i += 1
            out.append(_re_char(pattern[i]))
        elif c == "[":
            parsed = _bracket(pattern, i)
            if parsed is None:
                out.append(_re_char(c))
            else:
                regex, i = parsed
                out.append(regex)
                continue
        else:
            out.append(_re_char(c))
        i += 1
    return "(?s)" + "".join(out)


def glob_to_like(pattern: str) -> str | None:
    """The same fnmatch pattern as a LIKE pattern without escape character,
    when it has no bracket expression, no literal '%' or '_' and no trailing
    lone backslash: '*' is '%' and '?' is '_' (one character, as
    glob_to_regex's '.'). LIKE needs no regex engine, and DuckDB pushes it
    below joins (not with ESCAPE, nor a regex)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 == n:
                return None
            i += 1
            c = pattern[i]
            if c in "%_":
                return None
            out.append(c)
        elif c in "%_" or (c == "[" and _bracket(pattern, i) is not None):
            return None
        else:
            out.append({"*": "%", "?": "_"}.get(c, c))
        i += 1
    return "".join(out)


def _bracket(pattern: str, start: int) -> tuple[str, int] | None:
    """Translate the bracket expression at pattern[start] == '['; None when
    it does not close (then '[' is an ordinary character, as in fnmatch)."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] in "!^"
    if negate:
        i += 1
    items: list[str] = []
    first = True
    while i < n:
        c = pattern[i]
        if c == "]" and not first:
            if not items:
                return None
            body = "".join(items)
            if not body:  # only empty ranges: nothing (or, negated, anything)
                return ("." if negate else _NEVER), i + 1
            return (f"[^{body}]" if negate else f"[{body}]"), i + 1
        first = False
        if c == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end == -1 or pattern[i + 2:end] not in _CLASSES:
                return None
            items.append(_CLASSES[pattern[i + 2:end]])
            i = end + 2
            continue
        if c == "\\" and i + 1 < n:
            i += 1
            c = pattern[i]
        low = c
        i += 1
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            high = pattern[i + 1]
            i += 2
            if high == "\\" and i < n:
                high = pattern[i]
                i += 1
            if ord(low) <= ord(high):
                items.append(f"{_re_char(low)}-{_re_char(high)}")
            else:  # an empty range matches nothing (glibc)
                items.append("")
            continue
        items.append(_re_char(low))
    return None
