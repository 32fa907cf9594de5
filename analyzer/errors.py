"""Domain errors. The CLI turns any TraceError into a one-line ClickException."""

from __future__ import annotations


class TraceError(Exception):
    """An error the user can act on; its message is shown as is."""
