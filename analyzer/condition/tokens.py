"""The tokenizer: libsinsp's lexical rules as a cursor over the condition.

libsinsp lexes on demand (which token is valid depends on where the parser
is: ``a=b`` has a bare string after ``=`` but a field before it), so this is
a scanner with one method per token class rather than a separate pass. The
regular expressions are libsinsp's (filter/parser.cpp), applied at the
cursor; RE2's POSIX leftmost-longest matching agrees with Python's greedy
matching on every one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analyzer.condition.ast import Span
from analyzer.condition.errors import ConditionError

NOT_BLANK = re.compile(r"not[ \t\n\r\f\v]+")  # POSIX [[:space:]]
IDENTIFIER = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
FIELD_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*(?:\.[a-zA-Z]+[a-zA-Z0-9_]*)+")
FIELD_ARG_BARE = re.compile(r"[^\]\[\"' \t\n\r\f\v]+")
HEX_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+")
NUMBER = re.compile(r"[+\-]?[0-9]+\.?[0-9]*(?:[eE][+\-][0-9]+)?")
BARE_STRING = re.compile(r"[^()\"' \t\n\r\f\v=,]+")
BLANKS = " \t\b\r\n"  # lex_blank: note \b counts, \f and \v do not

_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", "/": "/", " ": "\\"}


@dataclass(frozen=True)
class Token:
    """``text`` as written; ``value`` unescaped (differs only for quoted strings)."""

    text: str
    value: str
    span: Span
    quoted: bool = False


class Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.last = ""  # the last token's text, for libsinsp-style messages

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def blank(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in BLANKS:
            self.pos += 1
        return self.pos > start

    def literal(self, expected: str) -> Token | None:
        if self.text.startswith(expected, self.pos):
            return self._take(len(expected))
        return None

    def one_of(self, options: tuple[str, ...]) -> Token | None:
        for option in options:
            token = self.literal(option)
            if token:
                return token
        return None

    def regex(self, pattern: re.Pattern[str]) -> Token | None:
        match = pattern.match(self.text, self.pos)
        if not match or not match.group():
            return None
        return self._take(len(match.group()))

    def quoted(self) -> Token | None:
        """A ``"`` or ``'`` string. Like libsinsp, the string ends at the first
        delimiter not preceded by a backslash (so ``"a\\\\"`` does not end
        there), and an unterminated string is no token at all."""
        if self.at_end or self.text[self.pos] not in "\"'":
            return None
        delimiter = self.text[self.pos]
        prev = "\\"
        end = self.pos
        while end < len(self.text):
            char = self.text[end]
            if char == delimiter and prev != "\\":
                start = self.pos
                raw = self.text[start:end + 1]
                value = unescape(raw, self.text, start)
                self.pos = end + 1
                self.last = raw
                return Token(raw, value, Span(start, end + 1), quoted=True)
            prev = char
            end += 1
        return None

    def error(self, message: str, offset: int | None = None) -> ConditionError:
        """A located error at ``offset`` (default: the cursor), covering the
        offending word."""
        at = self.pos if offset is None else offset
        match = re.compile(r"[^\s]+").match(self.text, at)
        length = len(match.group()) if match else 1
        return ConditionError(message, self.text, at, min(length, 40))

    def _take(self, length: int) -> Token:
        start = self.pos
        self.pos += length
        text = self.text[start:self.pos]
        self.last = text
        return Token(text, text, Span(start, self.pos))


def unescape(raw: str, condition: str, offset: int) -> str:
    """libsinsp's unescape_str over a quoted token (quotes included).

    ``\\<space>`` yields a lone backslash, exactly as libsinsp does for
    compatibility with old rules; ``\\xHH`` takes two hex digits of an ASCII
    character."""
    out: list[str] = []
    i = 1
    while i < len(raw) - 1:
        char = raw[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = raw[i + 1] if i + 1 < len(raw) - 1 else ""
        if escape in _SIMPLE_ESCAPES and escape:
            out.append(_SIMPLE_ESCAPES[escape])
        elif escape in ("\"", "'"):
            if escape != raw[0]:
                other = "'-quoted" if raw[0] == "'" else '"-quoted'
                raise ConditionError(f"invalid \\{escape} escape in {other} string", condition, offset + i, 2)
            out.append(escape)
        elif escape == "x":
            digits = raw[i + 2:i + 4]
            if len(digits) != 2 or not re.fullmatch(r"[0-7][0-9a-fA-F]", digits) or i + 4 > len(raw) - 1:
                raise ConditionError(
                    "invalid \\x escape: expected two hex digits of an ASCII character (00-7f)",
                    condition, offset + i, 4,
                )
            out.append(chr(int(digits, 16)))
            i += 4
            continue
        else:
            raise ConditionError(f"unsupported string escape sequence: \\{escape}", condition, offset + i, 2)
        i += 2
    return "".join(out)
