"""`trace report`: self-contained HTML incident reports.

The one entry point other parts call is ``render_report``:

    from analyzer.report import render_report
    render_report("alerts.parquet", capture_set, "report.html")

Pipeline: alerts (analyzer.alerts) -> incidents (grouping) -> per incident a
process tree (lineage, tree), a timeline and per-process detail (activity),
evidence and a narrative -> ReportContext (model) -> HTML (render).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from analyzer.report.alerts_input import AlertsFile, load_alerts
from analyzer.report.builder import build_context
from analyzer.report.grouping import DEFAULT_WINDOW_NS
from analyzer.report.model import ReportContext
from analyzer.report.render import render_html, write_private

__all__ = ["render_report", "build_context", "render_html", "ReportContext", "DEFAULT_WINDOW_NS"]


def render_report(
    alerts: str | Path | pa.Table | AlertsFile | None,
    capture_set: Any,
    out_path: str | Path,
    *,
    pid: int | None = None,
    window_ns: int = DEFAULT_WINDOW_NS,
    captures: list[str] | None = None,
    report_command: str = "",
) -> ReportContext:
    """Write the HTML report to ``out_path`` (mode 0600) and return its context.

    ``alerts``: the alerts Parquet `trace hunt` stored, an Arrow table of
    the same shape (docs/contracts.md section 3), or an AlertsFile already
    loaded; None with ``pid`` for an investigation report when no rule fired.
    ``capture_set``: the captures the alerts came from, opened by
    analyzer.state (anything with a ``.con``), or a DuckDB connection that
    exposes the `events`, `processes` and `fds` views.
    ``pid``: report on this process's tree (its alerts, if any, are badges).
    ``window_ns``: the time window of the incident grouping rule.
    ``captures`` and ``report_command`` are shown in the report as provenance.
    Raises TraceError on unreadable alerts or an unknown pid.
    """
    con = capture_set if isinstance(capture_set, duckdb.DuckDBPyConnection) else capture_set.con
    alerts_file = alerts if isinstance(alerts, AlertsFile) or alerts is None else load_alerts(alerts)
    ctx = build_context(
        con, alerts_file, pid=pid, captures=captures or [], report_command=report_command, window_ns=window_ns,
    )
    write_private(Path(out_path), render_html(ctx))
    return ctx
