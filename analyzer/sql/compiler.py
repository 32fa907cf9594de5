"""Falco conditions and rules -> DuckDB SQL over the `events` view.

Public API (what `trace hunt` and `trace rules check --sql` call):

* ``compile_condition(expr, catalog=CATALOG, rule=None) -> CompiledCondition``
  for one expanded condition AST (macros and lists substituted).
  ``CompiledCondition.sql`` is a boolean SQL expression over the events view
  (None when unsupported), never NULL; ``filter_sql`` the same condition for
  a WHERE or CASE WHEN (NULL where ``sql`` is false; much cheaper there, as
  DuckDB short-circuits its AND/OR), ``prefilter_sql`` the part of it that
  reads event fields only (see analyzer.sql.prefilter; None when there is
  none), ``evttypes`` the event-type names the condition
  can match (None: not restricted to a finite set), ``unsupported`` every
  field the capture cannot serve, with the reason, and ``error`` a condition
  libsinsp itself would reject (bad number, operator not valid for the type).
* ``compile_ruleset(rules, catalog=CATALOG) -> list[CompiledRule]``: every
  rule of a loaded ruleset, in definition order, with its metadata, SQL and
  unsupported reasons. A rule is supported when ``sql`` is not None.
* ``install_runtime(con)`` (from analyzer.sql.runtime) must run on a DuckDB
  connection before any compiled SQL: it creates the macros the SQL calls.

Every literal reaches SQL as a quoted string or a Python-formatted number,
never pasted: see analyzer.fields.catalog.sql_string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from analyzer.condition import ast
from analyzer.condition.evttypes import evttypes as infer_evttypes
from analyzer.fields.catalog import CATALOG, Catalog, FieldError
from analyzer.sql.generator import CompileError, Generator, definite
from analyzer.sql.prefilter import event_prefilter
from analyzer.sql.runtime import install_runtime, uses_regex

__all__ = [
    "CompiledCondition", "CompiledRule", "Unsupported", "CompileError", "compile_condition",
    "compile_ruleset", "install_runtime", "unsupported_fields",
]


@dataclass(frozen=True)
class Unsupported:
    """Why (part of) a condition cannot run on a capture. ``node`` is the
    offending AST node; ``location`` its file:line:col when compiled from a
    loaded RuleSet."""

    field: str | None
    reason: str
    span: ast.Span = ast.NO_SPAN
    rule: str | None = None
    node: ast.Node | None = field(default=None, compare=False, repr=False)
    location: Any = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        rule = f"rule '{self.rule}': " if self.rule else ""
        what = f"field {self.field}: " if self.field else ""
        return f"{where}{rule}{what}{self.reason}"


@dataclass(frozen=True)
class CompiledCondition:
    sql: str | None
    evttypes: frozenset[str] | None
    unsupported: list[Unsupported] = field(default_factory=list)
    error: CompileError | None = None
    filter_sql: str | None = None  # the same condition for WHERE / CASE WHEN: NULL there means false
    prefilter_sql: str | None = None  # implied by the condition, reads event fields only (analyzer.sql.prefilter)

    @property
    def supported(self) -> bool:
        return self.sql is not None


@dataclass(frozen=True)
class CompiledRule:
    name: str
    priority: Any
    output: str
    tags: tuple[str, ...]
    desc: str
    source: str
    enabled: bool
    evttypes: frozenset[str] | None
    sql: str | None
    unsupported: list[Unsupported] = field(default_factory=list)
    error: CompileError | None = None
    rule: Any = None  # the loader's rule object, for locations
    filter_sql: str | None = None  # ``sql`` for WHERE / CASE WHEN: may be NULL where ``sql`` is false
    prefilter_sql: str | None = None  # implied by ``sql``, reads event fields only; None: no such part

    @property
    def supported(self) -> bool:
        return self.sql is not None


def unsupported_fields(expr: ast.Node, catalog: Catalog = CATALOG, rule: str | None = None) -> list[Unsupported]:
    """Every field reference in ``expr`` the catalog cannot serve, each once."""
    found: dict[str, Unsupported] = {}
    for ref in expr.find_all(ast.FieldRef):
        try:
            resolved = catalog.resolve(ref.name, ref.arg)
        except FieldError:
            continue  # an invalid reference: reported as the condition's error
        if resolved.sql is None and resolved.display not in found:
            found[resolved.display] = Unsupported(resolved.display, resolved.spec.unsupported or "unsupported",
                                                  ref.span, rule, ref)
    return list(found.values())


def _evttypes(expr: ast.Node) -> frozenset[str] | None:
    inferred = infer_evttypes(expr)
    return None if inferred.complement else frozenset(inferred.names)


def compile_condition(expr: ast.Node, catalog: Catalog = CATALOG, rule: str | None = None) -> CompiledCondition:
    evttypes = _evttypes(expr)
    missing = unsupported_fields(expr, catalog, rule)
    try:
        generator = Generator(catalog, rule)
        filter_sql = generator.filter(expr)
        prefilter = event_prefilter(expr, lambda check: not uses_regex(generator.filter(check)))
        prefilter_sql = generator.filter(prefilter) if prefilter is not None else None
    except CompileError as exc:
        if exc.invalid:
            return CompiledCondition(None, evttypes, missing, exc)
        if not missing:
            missing = [Unsupported(exc.field, exc.reason, exc.span, rule, exc.node)]
        return CompiledCondition(None, evttypes, missing)
    return CompiledCondition(definite(filter_sql), evttypes, [], filter_sql=filter_sql, prefilter_sql=prefilter_sql)


def compile_ruleset(ruleset: Any, catalog: Catalog = CATALOG,
                    locate: Callable[[ast.Node], Any] | None = None) -> list[CompiledRule]:
    """Compile every rule of a loaded ruleset (analyzer.rules RuleSet, or any
    iterable of rules with ``name, priority, output, tags, desc, source,
    enabled, expr``), in definition order. Unsupported fields carry their
    file:line:col from the RuleSet's ``locate`` (or the one passed, e.g.
    ``compile_ruleset(rs.enabled_rules, locate=rs.locate)``)."""
    rules = ruleset.rules if hasattr(ruleset, "rules") else ruleset
    locate = locate or getattr(ruleset, "locate", None)
    compiled = []
    for rule in rules:
        result = compile_condition(rule.expr, catalog, rule.name)
        unsupported = result.unsupported
        if locate is not None:
            unsupported = [
                replace(u, location=(locate(u.node) if u.node is not None else None) or getattr(rule, "location", None))
                for u in unsupported
            ]
        compiled.append(CompiledRule(
            name=rule.name, priority=rule.priority, output=rule.output, tags=tuple(rule.tags), desc=rule.desc,
            source=rule.source, enabled=rule.enabled, evttypes=result.evttypes, sql=result.sql,
            unsupported=unsupported, error=result.error, rule=rule, filter_sql=result.filter_sql,
            prefilter_sql=result.prefilter_sql,
        ))
    return compiled
