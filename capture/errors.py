"""Recorder errors: one line the user can act on (not root, no BPF, ...)."""

from __future__ import annotations

from analyzer.errors import TraceError


class RecorderError(TraceError):
    """The recorder cannot start or continue; the message says why."""
