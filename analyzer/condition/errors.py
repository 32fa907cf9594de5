"""The one error the condition front end raises: located in the condition text."""

from __future__ import annotations

from analyzer.errors import TraceError


class ConditionError(TraceError):
    """A condition that libsinsp's grammar (or expansion) rejects.

    ``offset`` is where in ``condition`` the problem is (0-based); ``length``
    how many characters the offending text covers (at least 1 for the
    caret). The loader maps ``offset`` to ``file:line:col``; on its own the
    message shows the condition's line with a caret.
    """

    def __init__(self, message: str, condition: str, offset: int, length: int = 1) -> None:
        self.message = message
        self.condition = condition
        self.offset = max(0, min(offset, len(condition)))
        self.length = max(1, length)
        super().__init__(self._format())

    @property
    def offending_text(self) -> str:
        return self.condition[self.offset:self.offset + self.length]

    def line_col(self) -> tuple[int, int]:
        """1-based line and column of ``offset`` within the condition."""
        before = self.condition[:self.offset]
        line = before.count("\n") + 1
        col = self.offset - (before.rfind("\n") + 1) + 1
        return line, col

    def _format(self) -> str:
        line, col = self.line_col()
        lines = self.condition.splitlines() or [""]
        source_line = lines[line - 1] if line <= len(lines) else ""
        caret = " " * (col - 1) + "^" * max(1, min(self.length, len(source_line) - col + 1))
        return f"{self.message} (condition {line}:{col})\n    {source_line}\n    {caret}"
