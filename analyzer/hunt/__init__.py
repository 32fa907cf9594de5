"""`trace hunt`'s engine: every compiled rule in one scan over the `events` view."""

from __future__ import annotations

from analyzer.hunt.engine import HuntResult, HuntRule, Scan, UnsupportedRule, build_scan, run_hunt

__all__ = ["HuntResult", "HuntRule", "Scan", "UnsupportedRule", "build_scan", "run_hunt"]
