"""From rules files to the rules a hunt runs, and the ones it cannot.

Loading and compiling belong to analyzer.rules and analyzer.sql; this module
selects rules (--rule, --tag), parses their outputs with the field catalog,
and sorts every rule into runnable (HuntRule) or unsupported, each
unsupported one with the field and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analyzer.errors import TraceError
from analyzer.fields.catalog import CATALOG, Catalog, FieldError
from analyzer.hunt.engine import HuntRule, UnsupportedRule
from analyzer.output import OutputField, OutputFormatError, parse_output
from analyzer.rules.errors import Finding
from analyzer.rules.loader import load_rules
from analyzer.rules.ruleset import SYSCALL_SOURCE
from analyzer.sql.compiler import CompiledRule, compile_ruleset
from capture.resources import data_dir

DEFAULT_RULES_DIR = data_dir("rules")


def default_rules_files() -> list[Path]:
    files = sorted(DEFAULT_RULES_DIR.glob("*.yaml"))
    if not files:
        raise TraceError(f"no default rules in {DEFAULT_RULES_DIR}: pass --rules")
    return files


@dataclass(frozen=True)
class HuntPlan:
    rules_files: tuple[str, ...]
    runnable: tuple[HuntRule, ...]
    unsupported: tuple[UnsupportedRule, ...]
    findings: tuple[Finding, ...]  # loader errors and warnings, located
    output_gaps: tuple[UnsupportedRule, ...]  # output fields the capture cannot fill (rendered <NA>)
    descriptions: dict[str, str]


def field_sql(out_field: OutputField, catalog: Catalog = CATALOG) -> str | None:
    """The SQL for an output field, or None (rendered <NA>) when the capture cannot supply it."""
    return catalog.resolve(out_field.spec.name, out_field.arg).sql


def _select(
    rules: Sequence[CompiledRule], names: Sequence[str], tags: Sequence[str], disabled: set[str]
) -> list[CompiledRule]:
    known = {rule.name for rule in rules}
    off = [name for name in names if name in disabled and name not in known]
    if off:
        raise TraceError(f"--rule: {', '.join(repr(n) for n in off)} is disabled in the rules files (enabled: false)")
    missing = [name for name in names if name not in known]
    if missing:
        raise TraceError(f"--rule: no rule named {', '.join(repr(m) for m in missing)} in the rules files")
    chosen = [
        rule
        for rule in rules
        if (not names or rule.name in names) and (not tags or set(tags) & set(rule.tags))
    ]
    if not chosen and (names or tags):
        raise TraceError("no rule matches the --rule/--tag selection")
    return chosen


def _output_gaps(rule: CompiledRule, fmt_fields: Sequence[OutputField], catalog: Catalog) -> list[UnsupportedRule]:
    gaps = []
    for out_field in fmt_fields:
        if out_field.is_clock:
            continue
        resolved = catalog.resolve(out_field.spec.name, out_field.arg)
        if resolved.sql is None:
            gaps.append(UnsupportedRule(rule.name, out_field.key, resolved.spec.unsupported or "unsupported"))
    return gaps


def plan_hunt(
    rules_files: Sequence[str | Path],
    *,
    names: Sequence[str] = (),
    tags: Sequence[str] = (),
    catalog: Catalog = CATALOG,
) -> HuntPlan:
    ruleset = load_rules([str(f) for f in rules_files])
    disabled = {rule.name for rule in ruleset.rules if not rule.enabled}
    compiled = _select(compile_ruleset(ruleset.enabled_rules, catalog), names, tags, disabled)
    runnable: list[HuntRule] = []
    unsupported: list[UnsupportedRule] = []
    gaps: list[UnsupportedRule] = []
    for rule in compiled:
        if rule.source != SYSCALL_SOURCE:
            unsupported.append(UnsupportedRule(rule.name, None, f"source '{rule.source}': a capture holds syscall events only"))
            continue
        if rule.error is not None:
            unsupported.append(UnsupportedRule(rule.name, None, f"condition rejected: {rule.error}"))
            continue
        if not rule.supported:
            unsupported.extend(UnsupportedRule(rule.name, u.field, u.reason) for u in rule.unsupported)
            continue
        try:
            output = parse_output(rule.output, catalog.specs)
            gaps.extend(_output_gaps(rule, output.fields, catalog))
        except (OutputFormatError, FieldError) as exc:
            unsupported.append(UnsupportedRule(rule.name, None, f"output rejected: {exc}"))
            continue
        runnable.append(
            HuntRule(
                name=rule.name,
                condition_sql=rule.filter_sql,  # type: ignore[arg-type]
                prefilter_sql=rule.prefilter_sql,
                evttypes=rule.evttypes,
                priority=rule.priority.falco_name,
                output=output,
                tags=rule.tags,
                source=rule.source,
                desc=rule.desc,
            )
        )
    return HuntPlan(
        rules_files=tuple(str(f) for f in rules_files),
        runnable=tuple(runnable),
        unsupported=tuple(unsupported),
        findings=tuple(ruleset.findings),
        output_gaps=tuple(gaps),
        descriptions={rule.name: rule.desc for rule in compiled},
    )
