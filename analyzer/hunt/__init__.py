"""`trace hunt`'s engine: every compiled rule in one scan over the `events` view."""

from __future__ import annotations

from analyzer.hunt.engine import BindCheck, Hunt, HuntRule, Scan, UnsupportedRule, bind_check, build_scan, run_hunt

__all__ = ["BindCheck", "Hunt", "HuntRule", "Scan", "UnsupportedRule", "bind_check", "build_scan", "run_hunt"]
