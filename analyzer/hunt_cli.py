"""`trace hunt`: a thin click command over analyzer.hunt."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

import click

from analyzer.errors import TraceError
from analyzer.hunt.engine import MATCH_FIRST, MATCH_MODES, bind_check, build_scan, run_hunt
from analyzer.hunt.plan import HuntPlan, default_rules_files, field_sql, plan_hunt

EXIT_NO_ALERTS = 0
EXIT_ALERTS = 3

class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        from analyzer.state import parse_time

        if isinstance(value, int):
            return value
        try:
            return parse_time(value)
        except TraceError as exc:
            self.fail(str(exc), param, ctx)


def _default_alerts_path(captures: tuple[str, ...]) -> Path:
    first = Path(captures[0])
    base = first if first.is_dir() else first.parent
    return base / "alerts.parquet"


def _print_summary(plan: HuntPlan, hits: dict[str, int], rejected, field_gaps, total: int) -> None:
    echo = lambda line="": click.echo(line, err=True)  # noqa: E731
    echo(f"{total} alert(s) from {len(plan.runnable) - len(rejected)} rule(s)")
    width = max((len(str(n)) for n in hits.values()), default=1)
    for rule in plan.runnable:
        if rule.name in {r.rule for r in rejected}:
            continue
        echo(f"  {hits.get(rule.name, 0):>{width}}  {rule.priority:<13} {rule.name}")
    unsupported = list(plan.unsupported) + list(rejected)
    if unsupported:
        echo(f"UNSUPPORTED: {len({u.rule for u in unsupported})} rule(s) did not run:")
        for item in unsupported:
            echo(f"  {item}")
    gaps = list(plan.output_gaps) + list(field_gaps)
    if gaps:
        echo("output fields printed as <NA> (the capture cannot supply them):")
        for item in gaps:
            echo(f"  {item}")


def _open_captures(captures: tuple[str, ...], since: int | None, until: int | None):
    from analyzer.state import open_captures  # DuckDB and the state build load only when needed

    return open_captures(list(captures), since=since, until=until)


@click.command()
@click.argument("captures", nargs=-1, required=True, metavar="CAPTURE...")
@click.option("--rules", "rules_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Falco rules file; repeat for several, loaded in order. Default: trace's rules in rules/.")
@click.option("--since", type=_Time(), help="Only events at or after TIME (ISO 8601, UTC unless a zone is given, or epoch seconds).")
@click.option("--until", type=_Time(), help="Only events before TIME.")
@click.option("--rule", "rule_names", multiple=True, metavar="NAME", help="Run only the rule NAME. Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Run only rules tagged TAG. Repeatable (any of them).")
@click.option("--match", type=click.Choice(MATCH_MODES), default=MATCH_FIRST, show_default=True,
              help="first: per event only the first matching rule fires, as in Falco. all: every matching rule fires.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Alerts on stdout as Falco's text lines or its json_output lines.")
@click.option("-o", "--output", "jsonl_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the alerts to this file as Falco JSON lines (mode 0600).")
@click.option("--alerts", "alerts_path", type=click.Path(dir_okay=False, writable=True),
              help="Where to store the alerts for `trace report` (Parquet). Default: alerts.parquet in the first capture's directory.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True),
              help="Also render the HTML incident report here.")
@click.option("--follow", is_flag=True,
              help="Follow a capture directory being recorded: its segments, then new ones and the live tail, until Ctrl-C.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
              help="With --follow: progress file for restarts (default: .follow-checkpoint.json in the capture dir).")
@click.option("--webhook", "webhook_url", metavar="URL",
              help="With --follow: also POST each alert's Falco JSON to URL (falcosidekick), with retries.")
def hunt(captures, rules_files, since, until, rule_names, tags, match, output_format, jsonl_path, alerts_path,
         report_path, follow, checkpoint_path, webhook_url) -> None:
    """Run Falco rules over recorded captures and print Falco-compatible alerts.

    CAPTURE is a capture directory, its manifest.json, segment Parquet
    files or globs of them; captures from several hosts hunt together.
    Alert times print in this machine's time zone, as Falco does.

    \b
    Exit status:
      0  the hunt ran and no rule fired
      3  the hunt ran and at least one alert fired
      1  error (bad capture, unreadable rules, failed query)
      2  usage error
    """
    from analyzer.alerts import AlertsMeta, AlertsWriter, RuleMeta
    from analyzer.hunt.candidates import hunt_source
    from analyzer.hunt.progress import QueryProgress, quiet_duckdb
    from analyzer.output import utc_offset_now

    if since is not None and until is not None and since >= until:
        raise click.BadParameter("--since must be before --until")
    files = list(rules_files) or [str(p) for p in default_rules_files()]
    plan = plan_hunt(files, names=rule_names, tags=tags)
    for finding in plan.findings:
        click.echo(finding.format(), err=True)
    errors = [f for f in plan.findings if f.is_error]
    if errors:
        click.echo(f"warning: {len(errors)} rules-file error(s): the rules they concern did not load", err=True)
    if not plan.runnable:
        _print_summary(plan, {}, [], [], 0)
        raise TraceError("no rule to run: the rules files define none that can run on a capture")
    if follow:
        _follow(captures, plan, match, output_format, jsonl_path, checkpoint_path, webhook_url,
                unsupported=(since, until, alerts_path, report_path))
        return
    if checkpoint_path or webhook_url:
        raise click.UsageError("--checkpoint and --webhook need --follow")

    capture_set = _open_captures(captures, since, until)
    for warning in capture_set.warnings:
        click.echo(f"warning: {warning}", err=True)
    try:
        from analyzer.sql.compiler import install_runtime

        con = capture_set.con
        install_runtime(con)
        show_progress = sys.stderr.isatty()
        quiet_duckdb(con, show_progress)
        checked = bind_check(con, plan.runnable, field_sql)
        runnable, rejected = checked.rules, checked.rejected
        if not runnable:
            _print_summary(plan, {}, rejected, [], 0)
            raise TraceError("none of the selected rules can run on a capture")

        def progress(label: str) -> contextlib.AbstractContextManager:
            return QueryProgress(con, sys.stderr, label) if show_progress else contextlib.nullcontext()

        with progress("selecting"):
            source = hunt_source(capture_set, runnable, checked.sql_for)
        # the candidate events alone when few (analyzer.hunt.candidates), else the events a range at a time
        scan = build_scan(runnable, match=match, field_sql=checked.sql_for, relation=source.relation)
        run = run_hunt(con, scan, utc_offset=utc_offset_now(), parts=source.parts)
        with progress("hunting"):
            run.execute()

        meta = AlertsMeta(
            captures=tuple(str(Path(c).resolve()) for c in captures),
            rules_files=tuple(str(Path(f).resolve()) for f in files),
            command=_command_line(files, since, until, rule_names, tags, match, captures),
            rule_meta={r.name: RuleMeta(r.desc, r.priority, r.tags) for r in runnable},
        )
        alerts_file = Path(alerts_path) if alerts_path else _default_alerts_path(captures)
        jsonl = _open_private(Path(jsonl_path)) if jsonl_path else None
        try:
            with AlertsWriter(alerts_file, meta) as store:
                for alert in run.alerts():
                    line = alert.to_json() if output_format == "json" else alert.output
                    # As Falco prints it: click.echo would strip escape sequences off a pipe.
                    sys.stdout.write(line + "\n")
                    if jsonl is not None:
                        jsonl.write(alert.to_json() + "\n")
                    store.write(alert)
        finally:
            if jsonl is not None:
                jsonl.close()
        total = sum(run.hits.values())
        _print_summary(plan, dict(run.hits), rejected, checked.field_gaps, total)
        click.echo(f"alerts stored in {alerts_file}", err=True)
        if report_path:
            _render_report(alerts_file, capture_set, report_path, list(captures), meta.command)
    finally:
        close = getattr(capture_set, "close", None)
        if close is not None:
            close()
    click.get_current_context().exit(EXIT_ALERTS if total else EXIT_NO_ALERTS)


def _follow(captures, plan, match, output_format, jsonl_path, checkpoint_path, webhook_url, unsupported) -> None:
    """`--follow`: analyzer/follow does the work; stops on SIGINT/SIGTERM with exit 0."""
    from analyzer.follow.cli import follow_capture

    if any(value is not None for value in unsupported):
        raise click.UsageError("--follow does not take --since, --until, --alerts or --report")
    result = follow_capture(captures, plan, match=match, output_format=output_format, jsonl_path=jsonl_path,
                            checkpoint_path=checkpoint_path, webhook_url=webhook_url)
    _print_summary(plan, dict(result.hits), result.rejected, result.field_gaps, sum(result.hits.values()))


def _command_line(files, since, until, rule_names, tags, match, captures) -> str:
    """The hunt as a command a reader of the report can rerun (times as epoch ns)."""
    words = ["trace", "hunt"]
    for flag, values in (("--rules", files), ("--rule", rule_names), ("--tag", tags)):
        for value in values:
            words += [flag, str(value)]
    for flag, value in (("--since", since), ("--until", until)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join([*words, "--match", match, *map(str, captures)])


def _open_private(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace")


def _render_report(alerts_file: Path, capture_set, report_path: str, captures: list[str], command: str) -> None:
    from analyzer.report import DEFAULT_WINDOW_NS, render_report

    ctx = render_report(alerts_file, capture_set, report_path, pid=None, window_ns=DEFAULT_WINDOW_NS,
                        captures=captures, report_command=command)
    click.echo(f"wrote {report_path}: {ctx.total_alerts} alerts in {len(ctx.incidents)} incidents", err=True)
