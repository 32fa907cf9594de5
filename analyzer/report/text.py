"""Attacker-controlled text made safe to show and honest about its length.

Everything a capture holds (file names, command lines, comm) is chosen by
whoever ran the processes. HTML escaping is Jinja's job (autoescape); this
module does the rest: bytes that are not UTF-8, control characters that could
fake a new line in the report, bidi overrides that reorder what the reader
sees, and values too long to show inline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

# Longer values are cut inline; the full value stays reachable in a
# <details>, however long: hiding part of the evidence is worse than a large file.
INLINE_CHARS = 160

# C0/C1 controls, DEL, and the Unicode format characters that reorder or hide
# text (bidi embeddings/overrides/isolates, zero-width joiners, BOM).
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    # \xNN is kept for ASCII controls and invalid bytes (>= 0x80): one meaning each.
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def display(value: object) -> str:
    """One line of inert text for any captured value.

    Invalid UTF-8 (bytes, or str smuggling lone surrogates from
    ``surrogateescape``) shows as ``\\xNN``; controls and invisible format
    characters show as escapes, so a newline in a file name cannot forge a
    second line. A literal backslash is doubled to keep this unambiguous.
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.isascii() and value.isprintable() and "\\" not in value:
        return value  # the common case, nothing to escape
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
            raw = None
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogateescape")
        if raw is None:
            return _escape(value)
    else:
        return _escape(str(value))
    return _escape_bytes(raw)


def _escape(text: str) -> str:
    return _UNSAFE.sub(_escape_char, text)


def _escape_bytes(raw: bytes) -> str:
    # Decode valid runs, escape invalid bytes; do the backslash escaping on
    # the decoded runs only so a real backslash and a \xNN stay distinct.
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        try:
            out.append(_escape(raw[pos:].decode("utf-8")))
            break
        except UnicodeDecodeError as err:
            out.append(_escape(raw[pos : pos + err.start].decode("utf-8")))
            bad_end = pos + max(err.end, err.start + 1)
            out.extend(f"\\x{b:02x}" for b in raw[pos + err.start : bad_end])
            pos = bad_end
    return "".join(out)


@dataclass(frozen=True)
class Clipped:
    """A display string with a short form for inline use.

    ``head`` is what fits inline; when ``clipped`` is true the template shows
    the head, how much was cut, and the full value behind a disclosure.
    """

    full: str
    head: str
    clipped: bool

    @property
    def hidden_chars(self) -> int:
        return len(self.full) - len(self.head)

    def __str__(self) -> str:
        return self.full


def clip(value: object, limit: int = INLINE_CHARS) -> Clipped:
    text = display(value)
    if len(text) <= limit:
        return Clipped(text, text, False)
    return Clipped(text, text[:limit], True)


def format_ns(ns: int | None) -> str:
    """Wall-clock ns as UTC with nanoseconds, like Falco's evt.time plus the date."""
    if ns is None:
        return ""
    seconds, nanos = divmod(int(ns), 1_000_000_000)
    return f"{_utc_second(seconds)}.{nanos:09d}Z"


@lru_cache(maxsize=4096)
def _utc_second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
