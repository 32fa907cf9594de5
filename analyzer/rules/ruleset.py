"""Compile collected definitions into a RuleSet, as Falco's rule compiler
does: expand lists, parse and expand every macro, then every rule (with its
exceptions), infer each rule's event types, and collect every error and lint
warning on the way. Items with errors are left out; the rest load.

The backend compiles ``Rule.expr`` (lists and macros expanded) to SQL; this
module knows nothing about SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from analyzer.condition import ast
from analyzer.condition.errors import ConditionError
from analyzer.condition.evttypes import EvtTypes, evttypes
from analyzer.condition.expand import ListExpansion, MacroResolver, MacroSource, expand_list_items
from analyzer.condition.parser import parse
from analyzer.rules.errors import Finding, RulesError, Severity, SourceLocation, SourceText
from analyzer.rules.exceptions import ExceptionError, append_exceptions
from analyzer.rules.loader import Collector
from analyzer.rules.model import Priority, RuleInfo

SYSCALL_SOURCE = "syscall"


@dataclass(frozen=True)
class Rule:
    """A loaded rule. ``condition`` is the text Falco compiles (exceptions
    appended); ``expr`` its AST with lists and macros expanded."""

    name: str
    desc: str
    output: str
    priority: Priority
    source: str
    enabled: bool
    tags: tuple[str, ...]
    location: SourceLocation
    condition: str
    expr: ast.Expr
    evttypes: EvtTypes
    exception_fields: frozenset[str]
    capture: bool = False
    capture_duration: int | None = None
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False


@dataclass
class RuleSet:
    """Everything loaded from a list of rules files, in Falco's order."""

    files: list[str]
    rules: list[Rule]
    macros: dict[str, ast.Expr]
    lists: dict[str, tuple[str, ...]]
    findings: list[Finding]
    required_engine_versions: list[tuple[str, SourceLocation]] = field(default_factory=list)
    required_plugin_versions: list[dict] = field(default_factory=list)
    _origins: dict[int, tuple[ast.Node, SourceText]] = field(default_factory=dict, repr=False)
    _line_text: Callable[[SourceLocation | None], str] | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_error]

    @property
    def enabled_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise RulesError(self.findings)

    def locate(self, node: ast.Node) -> SourceLocation | None:
        """Where in the rules files a node of a rule's or macro's ``expr``
        was written (a macro's nodes point into the macro)."""
        origin = self._origins.get(id(node))
        if origin is None or origin[0] is not node:
            return None
        return origin[1].locate(node.span.start)

    def finding_at(self, node: ast.Node, message: str, rule: Rule, severity: Severity = Severity.ERROR,
                   code: str = "") -> Finding:
        """A finding located at ``node``, for later stages (the SQL compiler's
        "unsupported field" reports)."""
        location = self.locate(node) or rule.location
        line = self._line_text(location) if self._line_text else ""
        return Finding(severity, message, location, "rule", rule.name, line,
                       max(1, node.span.end - node.span.start), code)


def compile_ruleset(collector: Collector, files: list[str]) -> RuleSet:
    return _Compiler(collector).run(files)


class _Compiler:
    def __init__(self, collector: Collector) -> None:
        self.col = collector
        self.origins: dict[int, tuple[ast.Node, SourceText]] = {}

    def error(self, exc: ConditionError, text: SourceText, kind: str, name: str) -> None:
        location = text.locate(exc.offset)
        self.col.findings.append(Finding(
            Severity.ERROR, exc.message, location, kind, name, self.col.line_text(location), exc.length,
        ))

    def warn(self, message: str, location: SourceLocation, kind: str, name: str, code: str) -> None:
        self.col.findings.append(Finding(
            Severity.WARNING, message, location, kind, name, self.col.line_text(location), 1, code,
        ))

    def remember(self, expr: ast.Node, text: SourceText) -> None:
        """Record which text each node was parsed from; subtrees already
        recorded (expanded macros) keep their own text."""
        stack = [expr]
        while stack:
            node = stack.pop()
            if id(node) in self.origins:
                continue
            # the node is kept alive with its text so its id is never reused
            self.origins[id(node)] = (node, text)
            stack.extend(node.children())

    def run(self, files: list[str]) -> RuleSet:
        col = self.col
        list_infos = sorted(col.lists.values(), key=lambda l: l.index)
        items, list_used = expand_list_items(
            [(l.name, [i.value for i in l.items], l.index, l.visibility) for l in list_infos]
        )
        lists = ListExpansion(items, set(list_used))

        macro_infos = sorted(col.macros.values(), key=lambda m: m.index)
        sources: dict[str, MacroSource] = {}
        for macro in macro_infos:
            expr = self.parse(macro.condition, lists, "macro", macro.name)
            sources[macro.name] = MacroSource(macro.name, expr, macro.condition.text, macro.index, macro.visibility)
        resolver = MacroResolver(sources)
        expanded_macros: dict[str, ast.Expr] = {}
        for macro in macro_infos:
            expr = resolver.resolve_macro(macro.name)
            for exc in resolver.errors.get(macro.name, []):
                self.error(exc, macro.condition, "macro", macro.name)
            if expr is not None:
                self.remember(expr, macro.condition)
                expanded_macros[macro.name] = expr

        rules = []
        for info in sorted(col.rules.values(), key=lambda r: r.index):
            rule = self.compile_rule(info, lists, resolver)
            if rule is not None:
                rules.append(rule)

        for macro in macro_infos:
            if macro.name not in resolver.used:
                self.warn(f"macro '{macro.name}' is not used by any rule or macro", macro.location,
                          "macro", macro.name, "unused-macro")
        for info in list_infos:
            if info.name not in lists.used:
                self.warn(f"list '{info.name}' is not used by any rule, macro or list", info.location,
                          "list", info.name, "unused-list")

        return RuleSet(
            files=files,
            rules=rules,
            macros=expanded_macros,
            lists=dict(items),
            findings=col.findings,
            required_engine_versions=col.required_engine_versions,
            required_plugin_versions=col.required_plugin_versions,
            _origins=self.origins,
            _line_text=col.line_text,
        )

    def parse(self, text: SourceText, lists: ListExpansion, kind: str, name: str) -> ast.Expr | None:
        try:
            expr = parse(text.text)
        except ConditionError as exc:
            self.error(exc, text, kind, name)
            return None
        expr, errors = lists.substitute(expr, text.text)
        for exc in errors:
            self.error(exc, text, kind, name)
        if errors:
            return None
        self.remember(expr, text)
        return expr

    def compile_rule(self, info: RuleInfo, lists: ListExpansion, resolver: MacroResolver) -> Rule | None:
        text = info.condition
        exception_fields: set[str] = set()
        if info.exceptions:
            try:
                text, exception_fields = append_exceptions(info.condition, info.exceptions)
            except ExceptionError as exc:
                self.col.findings.append(Finding(
                    Severity.ERROR, exc.message, exc.location, "rule", info.name, self.col.line_text(exc.location),
                ))
                return None
        expr = self.parse(text, lists, "rule", info.name)
        if expr is None:
            return None
        expr, errors = resolver.expand(expr, text.text, None)
        for exc in errors:
            self.error(exc, text, "rule", info.name)
        if errors:
            return None
        self.remember(expr, text)
        for check in _unsafe_na_checks(expr):
            location = self.origins[id(check)][1].locate(check.span.start) or info.location
            self.warn("comparing a field value with <NA> is unsafe: a missing value never equals <NA>",
                      location, "rule", info.name, "unsafe-na-check")
        types = evttypes(expr)
        if info.source == SYSCALL_SOURCE and info.warn_evttypes and types.too_many():
            self.warn("Rule matches too many evt.type values. This has a significant performance penalty.",
                      info.location, "rule", info.name, "no-evttype")
        if info.source != SYSCALL_SOURCE:
            self.warn(f"rule source '{info.source}' is not '{SYSCALL_SOURCE}': captures hold only syscall events",
                      info.location, "rule", info.name, "unknown-source")
        return Rule(
            name=info.name,
            desc=info.desc,
            output=info.output,
            priority=info.priority,
            source=info.source,
            enabled=info.enabled,
            tags=tuple(info.tags),
            location=info.location,
            condition=text.text,
            expr=expr,
            evttypes=types,
            exception_fields=frozenset(exception_fields),
            capture=info.capture,
            capture_duration=info.capture_duration,
            warn_evttypes=info.warn_evttypes,
            skip_if_unknown_filter=info.skip_if_unknown_filter,
        )


def _unsafe_na_checks(expr: ast.Expr) -> list[ast.Comparison]:
    """Falco's LOAD_UNSAFE_NA_CHECK: equality against the "<NA>" placeholder."""
    found = []
    for check in expr.find_all(ast.Comparison):
        right = check.right
        values = right.items if isinstance(right, ast.ListLiteral) else (right,)
        if check.op in ("=", "==", "!=", "in", "intersects") and any(
            isinstance(v, ast.Literal) and v.value == "<NA>" for v in values
        ):
            found.append(check)
    return found
