"""`trace report`: a thin click command over analyzer.report."""

from __future__ import annotations

import shlex

import click

from analyzer.report import DEFAULT_WINDOW_NS, render_report
from analyzer.report.alerts_input import load_alerts


@click.command()
@click.argument("alerts", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="The HTML file to write (mode 0600).")
@click.option("--capture", "captures", multiple=True, metavar="CAPTURE",
              help="Capture(s) the alerts came from; default: those the alerts file names. Repeatable.")
@click.option("--pid", type=int,
              help="Report on this process's tree, even if no rule fired (with --capture, or ALERTS naming its capture).")
@click.option("--window", type=click.FloatRange(min=0), default=DEFAULT_WINDOW_NS / 1e9, show_default=True,
              help="Seconds: alerts of one service or container this close are one incident.")
def report(alerts: str | None, output: str, captures: tuple[str, ...], pid: int | None, window: float) -> None:
    """Render an HTML incident report.

    \b
    trace report ALERTS -o report.html [--capture CAPTURE]
    trace report --capture CAPTURE --pid PID -o report.html

    ALERTS is the alerts.parquet `trace hunt` stored. The report is one
    self-contained file: no network, readable without JavaScript.
    """
    if alerts is None and pid is None:
        raise click.UsageError("give ALERTS, or --capture CAPTURE --pid PID")
    alerts_file = load_alerts(alerts) if alerts is not None else None
    capture_args = list(captures) or (list(alerts_file.meta.captures) if alerts_file else [])
    if not capture_args:
        raise click.UsageError("no capture: pass --capture CAPTURE")
    command = ["trace", "report", *([alerts] if alerts else []), "-o", output]
    for capture in captures:
        command += ["--capture", capture]
    if pid is not None:
        command += ["--pid", str(pid)]
    from analyzer.state import open_captures  # DuckDB and the state build load only when needed

    with open_captures(capture_args) as capture_set:
        for warning in capture_set.warnings:
            click.echo(f"warning: {warning}", err=True)
        ctx = render_report(
            alerts_file, capture_set, output, pid=pid, window_ns=int(window * 1e9),
            captures=capture_args, report_command=shlex.join(command),
        )
    if ctx.mode == "investigation":
        click.echo(f"wrote {output}: process tree of pid {pid}", err=True)
    else:
        click.echo(f"wrote {output}: {ctx.total_alerts} alerts in {len(ctx.incidents)} incidents", err=True)

