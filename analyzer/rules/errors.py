"""Where things are in rules files, and what is wrong with them.

Every finding (error or lint warning) carries a SourceLocation and is shown
like a compiler diagnostic:

    rules.yaml:12:25: error: Undefined macro 'spawned_proces' used in filter. [rule 'Terminal shell']
        condition: spawned_proces and shell_procs
                   ^^^^^^^^^^^^^^

``SourceText`` is a condition (or any text the loader builds) assembled from
pieces of YAML scalars and generated glue, able to map an offset in the
assembled text back to the file position it came from.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Sequence

from analyzer.errors import TraceError


@dataclass(frozen=True)
class SourceLocation:
    """1-based line and column in a file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SourceFile:
    """A rules file's text with fast offset -> line/col lookups."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def location(self, index: int) -> SourceLocation:
        index = max(0, min(index, len(self.text)))
        line = bisect.bisect_right(self._line_starts, index) - 1
        return SourceLocation(self.path, line + 1, index - self._line_starts[line] + 1)

    def line_text(self, line: int) -> str:
        if line < 1 or line > len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return (self.text[start:] if end < 0 else self.text[start:end]).rstrip("\r")


@dataclass
class SourceText:
    """Text assembled from located pieces. Each piece maps its own offsets to
    file indices; ``locate`` answers for the whole text."""

    text: str = ""
    _starts: list[int] = field(default_factory=list)
    _mappers: list[Callable[[int], SourceLocation]] = field(default_factory=list)

    def append(self, text: str, mapper: Callable[[int], SourceLocation]) -> "SourceText":
        self._starts.append(len(self.text))
        self._mappers.append(mapper)
        self.text += text
        return self

    def append_fixed(self, text: str, location: SourceLocation) -> "SourceText":
        """Generated glue (`` and not (``) located at one fixed place."""
        return self.append(text, lambda _offset: location)

    def extend(self, other: "SourceText") -> "SourceText":
        base = len(self.text)
        for start, mapper in zip(other._starts, other._mappers):
            self._starts.append(base + start)
            self._mappers.append(mapper)
        self.text += other.text
        return self

    def copy(self) -> "SourceText":
        return SourceText(self.text, list(self._starts), list(self._mappers))

    def locate(self, offset: int) -> SourceLocation | None:
        if not self._starts:
            return None
        piece = max(0, bisect.bisect_right(self._starts, offset) - 1)
        return self._mappers[piece](offset - self._starts[piece])


def scalar_mapper(source: SourceFile, value: str, start: int, end: int) -> Callable[[int], SourceLocation]:
    """Map offsets in a YAML scalar's value to file positions.

    The value is a subsequence of its source text once folding, indentation,
    quotes and escapes are accounted for, so each value character is matched
    greedily against the source (a folded line break stands for a space).
    A character the source does not spell literally (an escape such as
    \\u00e9) maps to the position of the previous match."""
    positions: list[int] = []  # computed on first use: most texts never need it

    def build() -> None:
        raw = source.text
        cursor = start
        for char in value:
            found = -1
            limit = min(end, cursor + 256)
            probe = cursor
            while probe < limit:
                candidate = raw[probe]
                if candidate == char or (char in " \n" and candidate in " \n\t"):
                    found = probe
                    break
                probe += 1
            if found < 0:
                positions.append(cursor if cursor < end else max(start, end - 1))
            else:
                positions.append(found)
                cursor = found + 1
        positions.append(cursor)

    def mapper(offset: int) -> SourceLocation:
        if not positions:
            build()
        index = positions[max(0, min(offset, len(positions) - 1))]
        return source.location(index)

    return mapper


_MAX_SHOWN = 120


class Severity(Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One error or lint warning about a rules file item."""

    severity: Severity
    message: str
    location: SourceLocation | None
    item_kind: str | None = None  # "rule", "macro", "list", ...
    item_name: str | None = None
    source_line: str = ""
    length: int = 1
    code: str = ""  # warning class, e.g. "no-evttype" (Falco's LOAD_NO_EVTTYPE)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def format(self) -> str:
        where = str(self.location) if self.location else "<unknown>"
        item = f" [{self.item_kind} '{self.item_name}']" if self.item_kind and self.item_name is not None else ""
        head = f"{where}: {self.severity.value}: {self.message}{item}"
        if not self.source_line or not self.location:
            return head
        line, col = self.source_line, self.location.col
        if len(line) > _MAX_SHOWN:  # show a window around the column
            start = max(0, col - 1 - _MAX_SHOWN // 2)
            line = ("..." if start else "") + line[start:start + _MAX_SHOWN] + "..."
            col = col - start + (3 if start else 0)
        width = max(1, min(self.length, len(line) - col + 1))
        caret = " " * (col - 1) + "^" * width
        return f"{head}\n    {line}\n    {caret}"


class RulesError(TraceError):
    """Raised by callers that need a loadable ruleset and got errors."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        errors = [f for f in self.findings if f.is_error]
        lines = [f.format() for f in errors]
        super().__init__(f"{len(errors)} error(s) in rules files:\n" + "\n".join(lines))
