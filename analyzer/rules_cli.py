"""`trace rules ...`: thin click commands over analyzer.rules."""

from __future__ import annotations

import click

from analyzer.rules.loader import load_rules
from analyzer.rules.ruleset import Rule, RuleSet
from analyzer.sql.compiler import CompiledRule, compile_ruleset


@click.group()
def rules() -> None:
    """Work with Falco rules files."""


@rules.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--no-warnings", is_flag=True, help="Report errors only.")
@click.option("--sql", "show_sql", is_flag=True, help="Print each rule's compiled DuckDB SQL.")
def check(files: tuple[str, ...], no_warnings: bool, show_sql: bool) -> None:
    """Load FILES in order as Falco would; report every error and warning
    with file:line:col, and print each rule's event types and the fields a
    capture cannot supply (the rule is then unsupported).

    Exit status 0 when the files load without errors, 1 otherwise.
    """
    ruleset = load_rules(files)
    compiled = compile_ruleset(ruleset)
    invalid = [c for c in compiled if c.error is not None]
    for finding in ruleset.findings:
        if finding.is_error or not no_warnings:
            click.echo(finding.format(), err=True)
    for result in invalid:
        node = result.error.node
        where = ruleset.finding_at(node, result.error.reason, result.rule) if node is not None else None
        click.echo(where.format() if where else str(result.error), err=True)
    for rule, result in zip(ruleset.rules, compiled):
        click.echo(describe_rule(rule))
        for line in describe_compiled(result, show_sql):
            click.echo(line)
    click.echo(summary(ruleset) + compile_summary(compiled))
    if ruleset.errors or invalid:
        raise SystemExit(1)


def describe_compiled(result: CompiledRule, show_sql: bool) -> list[str]:
    """The rule's unsupported fields with the reason, and its SQL if asked."""
    lines = [f"    unsupported: {item}" for item in result.unsupported]
    if show_sql and result.sql is not None:
        lines.append(f"    sql: {result.sql}")
    return lines


def compile_summary(compiled: list[CompiledRule]) -> str:
    supported = sum(1 for c in compiled if c.supported)
    unsupported = sum(1 for c in compiled if c.unsupported)
    invalid = sum(1 for c in compiled if c.error is not None)
    return f"; {supported}/{len(compiled)} rules compile to SQL ({unsupported} unsupported, {invalid} invalid)"


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
