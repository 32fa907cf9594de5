"""Read Falco rules files into definitions, the way Falco's collector does.

Files are read in order; every item is one of ``list``, ``macro``, ``rule``,
``required_engine_version``, ``required_plugin_versions``. A later
definition of a name replaces the earlier one but keeps its position
(``index``); ``visibility`` is the position of the latest definition or
append, which decides which macros and lists an item can see. ``append:
true`` and ``override: {key: append|replace}`` modify an existing item; an
item with only ``rule`` and ``enabled`` toggles an existing rule.

An item with an error is reported (file:line:col, offending text, item name)
and skipped; everything else still loads. ``load_rules`` is the entry point:
it reads, then compiles (analyzer.rules.ruleset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from analyzer.rules.errors import Finding, Severity, SourceFile, SourceLocation, SourceText
from analyzer.rules.exceptions import ExceptionError, validate
from analyzer.rules.model import ExceptionInfo, ListInfo, MacroInfo, Priority, RuleInfo
from analyzer.rules.yaml_source import YamlSyntaxError, YMap, YNode, YScalar, YSeq, load_documents

ITEM_KINDS = ("list", "macro", "rule", "required_engine_version", "required_plugin_versions")
RULE_KEYS = (
    "rule", "condition", "output", "desc", "priority", "source", "enabled", "tags", "exceptions",
    "capture", "capture_duration", "warn_evttypes", "skip-if-unknown-filter", "append", "override",
)
LIST_KEYS = ("list", "items", "append", "override")
MACRO_KEYS = ("macro", "condition", "append", "override")
EXCEPTION_KEYS = ("name", "fields", "comps", "values")
# Falco: which keys `override` may append to or replace, per item kind.
OVERRIDE_APPEND = {
    "rule": ("condition", "output", "desc", "tags", "exceptions"),
    "macro": ("condition",),
    "list": ("items",),
}
# What the deprecated `append: true` appends.
APPEND_TRUE = {"rule": ("condition", "exceptions"), "macro": ("condition",), "list": ("items",)}
OVERRIDE_REPLACE = {
    "rule": (
        "condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "warn_evttypes",
        "capture", "capture_duration", "skip-if-unknown-filter",
    ),
    "macro": ("condition",),
    "list": ("items",),
}


class ItemError(Exception):
    """An error in one item: reported, and the item skipped."""

    def __init__(self, message: str, where: "YNode | SourceLocation", length: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.length = length


@dataclass
class Collector:
    """Definitions accumulated over all files, plus findings."""

    lists: dict[str, ListInfo] = field(default_factory=dict)
    macros: dict[str, MacroInfo] = field(default_factory=dict)
    rules: dict[str, RuleInfo] = field(default_factory=dict)
    required_engine_versions: list[tuple[str, SourceLocation]] = field(default_factory=list)
    required_plugin_versions: list[dict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    sources: dict[str, SourceFile] = field(default_factory=dict)
    next_index: int = 0

    # --------------------------------------------------------- findings

    def report(
        self, severity: Severity, message: str, where: "YNode | SourceLocation | None",
        kind: str | None = None, name: str | None = None, length: int | None = None, code: str = "",
    ) -> None:
        location = where if isinstance(where, SourceLocation) or where is None else where.location
        if length is None:
            length = _node_length(where) if not isinstance(where, SourceLocation) else 1
        self.findings.append(Finding(
            severity, message, location, kind, name, self.line_text(location), length or 1, code,
        ))

    def line_text(self, location: SourceLocation | None) -> str:
        if location is None or location.file not in self.sources:
            return ""
        return self.sources[location.file].line_text(location.line)

    # --------------------------------------------------------- reading

    def read_file(self, path: str | Path) -> None:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            self.findings.append(Finding(Severity.ERROR, f"cannot read rules file: {exc}", SourceLocation(name, 1, 1)))
            return
        self.read_text(name, text)

    def read_text(self, name: str, text: str) -> None:
        source = SourceFile(name, text)
        self.sources[name] = source
        try:
            documents = load_documents(source)
        except YamlSyntaxError as exc:
            self.report(Severity.ERROR, exc.message, exc.location)
            return
        for document in documents:
            if isinstance(document, YScalar) and document.is_null:
                continue
            if not isinstance(document, YSeq):
                self.report(Severity.ERROR, "rules content is not yaml array of objects", document)
                continue
            for item in document.items:
                self.read_item(item)

    def read_item(self, item: YNode) -> None:
        if not isinstance(item, YMap):
            self.report(Severity.ERROR, "Unexpected element type. Each element should be a yaml associative array.", item)
            return
        kind = next((k for k in ITEM_KINDS if item.get(k) is not None), None)
        if kind is None:
            self.report(Severity.WARNING, "Unknown top level item: " + ", ".join(item.key_names()),
                        item, code="unknown-item")
            return
        name = None
        try:
            if kind == "required_engine_version":
                value = _scalar(item, kind)
                self.required_engine_versions.append((value.value, value.location))
                return
            if kind == "required_plugin_versions":
                self.required_plugin_versions.extend(_plugin_versions(item))
                return
            name_node = _scalar(item, kind)
            name = name_node.value
            if not name:
                raise ItemError(f"{kind} name is empty", name_node)
            reader = {"list": self.read_list, "macro": self.read_macro, "rule": self.read_rule}[kind]
            reader(item, name)
        except ItemError as exc:
            self.report(Severity.ERROR, exc.message, exc.where, kind, name, exc.length)

    def _position(self) -> int:
        self.next_index += 1
        return self.next_index - 1

    def _lint(self, kind: str, name: str):
        def warn(message: str, node: YNode | None, code: str) -> None:
            self.report(Severity.WARNING, message, node, kind, name, code=code)

        return warn

    def _unknown_keys(self, item: YMap, known: Sequence[str], kind: str, name: str) -> None:
        for key in item.keys:
            if key.value not in known:
                self.report(Severity.WARNING, f"unknown key '{key.value}' ignored", key, kind, name, code="unknown-key")

    # --------------------------------------------------------- lists

    def read_list(self, item: YMap, name: str) -> None:
        self._unknown_keys(item, LIST_KEYS, "list", name)
        mode = _modification(item, "list", self._lint("list", name))
        items = _scalar_seq(item, "items", required=True)
        position = self._position()
        previous = self.lists.get(name)
        if mode.get("items") is None:
            if previous is None:
                self.lists[name] = ListInfo(name, items, item.location, position, position)
            else:
                previous.items, previous.location, previous.visibility = items, item.location, position
            return
        if previous is None:
            raise ItemError(_no_previous("List", "list", mode["items"]), item)
        previous.items = previous.items + items if mode["items"] == "append" else items
        previous.visibility = position

    # --------------------------------------------------------- macros

    def read_macro(self, item: YMap, name: str) -> None:
        self._unknown_keys(item, MACRO_KEYS, "macro", name)
        mode = _modification(item, "macro", self._lint("macro", name))
        condition = _scalar(item, "condition")
        position = self._position()
        previous = self.macros.get(name)
        text = condition.source_text()
        if mode.get("condition") is None:
            if previous is None:
                self.macros[name] = MacroInfo(name, text, item.location, position, position)
            else:
                previous.condition, previous.location, previous.visibility = text, item.location, position
            return
        if previous is None:
            raise ItemError(_no_previous("Macro", "macro", mode["condition"]), item)
        if mode["condition"] == "append":
            previous.condition = _joined(previous.condition, text, condition)
        else:
            previous.condition = text
        previous.visibility = position

    # --------------------------------------------------------- rules

    def read_rule(self, item: YMap, name: str) -> None:
        self._unknown_keys(item, RULE_KEYS, "rule", name)
        keys = set(item.key_names())
        previous = self.rules.get(name)
        if keys <= {"rule", "enabled"} and "enabled" in keys:
            if previous is None:
                raise ItemError("Rule has 'enabled' key but no rule by that name already exists", item)
            previous.enabled = _bool(item, "enabled")
            previous.visibility = self._position()
            return
        mode = _modification(item, "rule", self._lint("rule", name))
        if not mode:
            self._define_rule(item, name)
            return
        if previous is None:
            verb = "append" if "append" in keys else "override"
            raise ItemError(f"Rule has '{verb}' key but no rule by that name already exists", item)
        self._modify_rule(item, previous, mode)
        previous.visibility = self._position()

    def _define_rule(self, item: YMap, name: str) -> None:
        for key in ("condition", "output", "desc", "priority"):
            if item.get(key) is None:
                raise ItemError(f"Item has no mapping for key '{key}'", item)
        rule = RuleInfo(
            name=name,
            location=item.location,
            index=0,
            visibility=0,
            condition=_scalar(item, "condition").source_text(),
            output=_scalar(item, "output").value.strip(),
            desc=_scalar(item, "desc").value.strip(),
            priority=_priority(item),
        )
        self._set_optional_rule_keys(item, rule)
        position = self._position()
        previous = self.rules.get(name)
        rule.index = previous.index if previous else position
        rule.visibility = position
        self.rules[name] = rule

    def _set_optional_rule_keys(self, item: YMap, rule: RuleInfo, only: Iterable[str] | None = None) -> None:
        wanted = set(only) if only is not None else None

        def has(key: str) -> bool:
            return item.get(key) is not None and (wanted is None or key in wanted)

        if has("source"):
            rule.source = _scalar(item, "source").value
        if has("enabled"):
            rule.enabled = _bool(item, "enabled")
        if has("tags"):
            rule.tags = [t.value for t in _scalar_seq(item, "tags")]
        if has("exceptions"):
            rule.exceptions = _exceptions(item, False, self._lint("rule", rule.name))
        if has("capture"):
            rule.capture = _bool(item, "capture")
        if has("capture_duration"):
            rule.capture_duration = _int(item, "capture_duration")
        if has("warn_evttypes"):
            rule.warn_evttypes = _bool(item, "warn_evttypes")
        if has("skip-if-unknown-filter"):
            rule.skip_if_unknown_filter = _bool(item, "skip-if-unknown-filter")

    def _modify_rule(self, item: YMap, rule: RuleInfo, mode: dict[str, str]) -> None:
        appended = {k for k, v in mode.items() if v == "append"}
        replaced = {k for k, v in mode.items() if v == "replace"}
        if "condition" in appended:
            node = _scalar(item, "condition")
            rule.condition = _joined(rule.condition, node.source_text(), node)
        if "output" in appended:
            rule.output = f"{rule.output} {_scalar(item, 'output').value.strip()}"
        if "desc" in appended:
            rule.desc = f"{rule.desc} {_scalar(item, 'desc').value.strip()}"
        if "tags" in appended:
            rule.tags = rule.tags + [t.value for t in _scalar_seq(item, "tags") if t.value not in rule.tags]
        if "exceptions" in appended:
            _append_exceptions(rule, _exceptions(item, True, self._lint("rule", rule.name)))
        if "condition" in replaced:
            rule.condition = _scalar(item, "condition").source_text()
        if "output" in replaced:
            rule.output = _scalar(item, "output").value.strip()
        if "desc" in replaced:
            rule.desc = _scalar(item, "desc").value.strip()
        if "priority" in replaced:
            rule.priority = _priority(item)
        self._set_optional_rule_keys(item, rule, replaced - {"condition", "output", "desc", "priority"})


# ------------------------------------------------------------- helpers


def _node_length(where) -> int:
    if isinstance(where, YScalar):
        first_line = where.source.text[where.start:where.end].split("\n", 1)[0]
        return max(1, len(first_line))
    if isinstance(where, (YMap, YSeq)):
        return 1
    return 1


def _scalar(item: YMap, key: str) -> YScalar:
    node = item.get(key)
    if node is None:
        raise ItemError(f"Item has no mapping for key '{key}'", item)
    if not isinstance(node, YScalar):
        raise ItemError(f"Value for key '{key}' must be a string", node)
    if node.is_null:
        raise ItemError(f"Value for key '{key}' is empty", item.key_node(key) or node)
    return node


def _scalar_seq(item: YMap, key: str, required: bool = False) -> list[YScalar]:
    node = item.get(key)
    if node is None:
        if required:
            raise ItemError(f"Item has no mapping for key '{key}'", item)
        return []
    if isinstance(node, YScalar) and node.is_null:
        return []
    if not isinstance(node, YSeq):
        raise ItemError(f"Value for key '{key}' must be a sequence", node)
    for entry in node.items:
        if not isinstance(entry, YScalar):
            raise ItemError(f"Items of '{key}' must be strings", entry)
    return list(node.items)  # type: ignore[arg-type]


def _bool(item: YMap, key: str) -> bool:
    node = _scalar(item, key)
    value = node.as_bool()
    if value is None:
        raise ItemError(f"Value for key '{key}' must be a boolean, got '{node.value}'", node)
    return value


def _int(item: YMap, key: str) -> int:
    node = _scalar(item, key)
    try:
        return int(node.value, 0)
    except ValueError:
        raise ItemError(f"Value for key '{key}' must be an integer, got '{node.value}'", node) from None


def _priority(item: YMap) -> Priority:
    node = _scalar(item, "priority")
    priority = Priority.parse(node.value)
    if priority is None:
        raise ItemError(f"Invalid priority '{node.value}'", node)
    return priority


def _modification(item: YMap, kind: str, warn) -> dict[str, str]:
    """key -> "append"/"replace" for ``append: true`` or ``override``; {} to define.
    ``warn(message, node, code)`` reports lint findings."""
    append_node = item.get("append")
    override_node = item.get("override")
    appending = False
    if append_node is not None:
        if not isinstance(append_node, YScalar) or append_node.as_bool() is None:
            raise ItemError("Value for key 'append' must be a boolean", append_node)
        appending = bool(append_node.as_bool())
    if appending and override_node is not None:
        raise ItemError("Keys 'override' and 'append: true' cannot be used together", override_node)
    name_key = kind
    content_keys = [k for k in item.key_names() if k not in (name_key, "append", "override")]
    if appending:
        allowed = APPEND_TRUE[kind]
        if kind == "rule" and not any(k in content_keys for k in ("condition", "exceptions")):
            raise ItemError("Appended rule must have exceptions or condition property", item)
        warn("'append' key is deprecated. Please use 'override' instead.", item.key_node("append"),
             "deprecated-append")
        for key in content_keys:
            if key not in allowed:
                warn(f"key '{key}' is ignored with 'append: true'", item.key_node(key), "ignored-key")
        return {k: "append" for k in content_keys if k in allowed}
    if override_node is None:
        return {}
    if not isinstance(override_node, YMap):
        raise ItemError("Value for key 'override' must be a map of key: append|replace", override_node)
    mode: dict[str, str] = {}
    for key_node, value in zip(override_node.keys, override_node.values):
        key = key_node.value
        if not isinstance(value, YScalar) or value.value not in ("append", "replace"):
            raise ItemError(f"Override of '{key}' must be 'append' or 'replace'", value)
        allowed = OVERRIDE_APPEND[kind] if value.value == "append" else OVERRIDE_REPLACE[kind]
        if key not in allowed:
            raise ItemError(f"Key '{key}' cannot be overridden with '{value.value}'", key_node)
        if item.get(key) is None:
            raise ItemError(f"An override key '{key}' was specified but no value was provided", key_node)
        mode[key] = value.value
    for key in content_keys:
        if key not in mode:
            raise ItemError(f"Key '{key}' must be listed in 'override' when 'override' is used",
                            item.key_node(key) or item)
    return mode


def _no_previous(title: str, kind: str, verb: str) -> str:
    return f"{title} has '{verb}' key but no {kind} by that name already exists"


def _joined(previous: SourceText, addition: SourceText, node: YScalar) -> SourceText:
    """Falco appends conditions as text: ``previous + " " + addition``."""
    return previous.copy().append_fixed(" ", node.location).extend(addition)


def _plugin_versions(item: YMap) -> list[dict]:
    node = item.get("required_plugin_versions")
    if not isinstance(node, YSeq):
        raise ItemError("Value for 'required_plugin_versions' must be a sequence", node or item)
    out = []
    for entry in node.items:
        if not isinstance(entry, YMap) or not isinstance(entry.get("name"), YScalar):
            raise ItemError("required_plugin_versions entries need a 'name' and a 'version'", entry)
        version = entry.get("version")
        out.append({
            "name": entry.get("name").value,  # type: ignore[union-attr]
            "version": version.value if isinstance(version, YScalar) else None,
        })
    return out


def _exceptions(item: YMap, for_append: bool, warn) -> list[ExceptionInfo]:
    node = item.get("exceptions")
    if node is None or (isinstance(node, YScalar) and node.is_null):
        return []
    if not isinstance(node, YSeq):
        raise ItemError("Value for key 'exceptions' must be a sequence", node)
    out: list[ExceptionInfo] = []
    for entry in node.items:
        if not isinstance(entry, YMap):
            raise ItemError("exceptions entries must be maps with name, fields, comps, values", entry)
        for key in entry.keys:
            if key.value not in EXCEPTION_KEYS:
                warn(f"unknown exception key '{key.value}' ignored (Falco ignores it too)", key, "unknown-key")
        name_node = entry.get("name")
        if not isinstance(name_node, YScalar) or not name_node.value:
            raise ItemError("Item has no mapping for key 'name'", entry)
        values_node = entry.get("values")
        if values_node is not None and not isinstance(values_node, YSeq) and not (
            isinstance(values_node, YScalar) and values_node.is_null
        ):
            raise ItemError("exception 'values' must be a sequence", values_node)
        out.append(ExceptionInfo(
            name=name_node.value,
            location=entry.location,
            fields=_scalar_or_list(entry, "fields"),
            comps=_scalar_or_list(entry, "comps"),
            values=list(values_node.items) if isinstance(values_node, YSeq) else [],
        ))
    if not for_append:
        for exception in out:
            _check(exception)
    return out


def _scalar_or_list(entry: YMap, key: str) -> YScalar | list[YScalar] | None:
    node = entry.get(key)
    if node is None or (isinstance(node, YScalar) and node.is_null):
        return None
    if isinstance(node, YScalar):
        return node
    if isinstance(node, YSeq) and all(isinstance(i, YScalar) for i in node.items):
        return list(node.items)  # type: ignore[arg-type]
    raise ItemError(f"exception '{key}' must be a string or a list of strings", node)


def _check(exception: ExceptionInfo) -> None:
    try:
        validate(exception)
    except ExceptionError as exc:
        raise ItemError(exc.message, exc.location) from None


def _append_exceptions(rule: RuleInfo, additions: list[ExceptionInfo]) -> None:
    """Falco: values of a same-named exception are appended; a new name adds
    a new exception (which must then be complete)."""
    for addition in additions:
        existing = next((e for e in rule.exceptions if e.name == addition.name), None)
        if existing is None:
            _check(addition)
            rule.exceptions.append(addition)
            continue
        if addition.fields is not None or addition.comps is not None:
            raise ItemError("Can not append exception fields or comps to existing exception, only values",
                            addition.location)
        existing.values = existing.values + addition.values


def load_rules(paths: Sequence[str | Path]):
    """Read and compile rules files in order; never raises on rule errors
    (they are in the result's findings)."""
    from analyzer.rules.ruleset import compile_ruleset

    collector = Collector()
    for path in paths:
        collector.read_file(path)
    return compile_ruleset(collector, [str(p) for p in paths])
