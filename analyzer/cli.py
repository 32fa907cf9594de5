"""The `trace` command line: a thin click group.

Each subcommand lives next to the feature it drives and is imported only when
invoked, so `trace hunt` never pays for loading bcc and `trace record` never
pays for DuckDB. Domain errors (TraceError) become ClickException: exit 1.
Usage errors are click's own: exit 2.
"""

from __future__ import annotations

import importlib

import click

from analyzer.errors import TraceError

# name -> "module:attribute" of a click.Command
SUBCOMMANDS = {
    "record": "capture.commands:record",
    "info": "capture.commands:info",
    "rules": "analyzer.rules_cli:rules",
    "hunt": "analyzer.hunt_cli:hunt",
    "query": "analyzer.query_cli:query",
    "report": "analyzer.report_cli:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TraceError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=LazyGroup)
@click.version_option(package_name="trace-forensics", prog_name="trace")
def main() -> None:
    """Forensic flight recorder and threat hunter for Linux hosts.

    \b
    trace record -o CAPTURE_DIR            record syscalls with eBPF
    trace info CAPTURE                     summarize a capture
    trace rules check RULES...             validate Falco rules files
    trace hunt --rules RULES CAPTURE...    run Falco rules over captures
    trace query SQL CAPTURE...             ad hoc SQL over a capture
    trace report ALERTS -o report.html     render an incident report
    """
