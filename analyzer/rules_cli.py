"""`trace rules ...`: thin click commands over analyzer.rules."""

from __future__ import annotations

import click

from analyzer.rules.loader import load_rules
from analyzer.rules.ruleset import Rule, RuleSet


@click.group()
def rules() -> None:
    """Work with Falco rules files."""


@rules.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--no-warnings", is_flag=True, help="Report errors only.")
def check(files: tuple[str, ...], no_warnings: bool) -> None:
    """Load FILES in order as Falco would; report every error and warning
    with file:line:col, and print each rule's event types.

    Exit status 0 when the files load without errors, 1 otherwise.
    """
    ruleset = load_rules(files)
    for finding in ruleset.findings:
        if finding.is_error or not no_warnings:
            click.echo(finding.format(), err=True)
    for rule in ruleset.rules:
        click.echo(describe_rule(rule))
    click.echo(summary(ruleset))
    if ruleset.errors:
        raise SystemExit(1)


def describe_rule(rule: Rule) -> str:
    """One line per rule: state, priority, name, inferred evt.types."""
    state = "enabled " if rule.enabled else "disabled"
    return f"{state} {rule.priority.falco_name:<13} {rule.name}  evt.type: {rule.evttypes.describe()}"


def summary(ruleset: RuleSet) -> str:
    enabled = len(ruleset.enabled_rules)
    return (
        f"{len(ruleset.rules)} rules loaded ({enabled} enabled), {len(ruleset.macros)} macros, "
        f"{len(ruleset.lists)} lists; {len(ruleset.errors)} errors, {len(ruleset.warnings)} warnings"
    )
