"""YAML as Falco (yaml-cpp) reads it: every scalar stays text, with its position.

PyYAML's safe_load resolves implicit tags and so breaks on Falco rules files:
``comps: [=, contains]`` carries the ``=`` (tag:yaml.org,2002:value) scalar
no safe constructor knows, and ``yes``/``no``/``on``/``off`` become booleans
where Falco's items expect strings. yaml-cpp resolves nothing: a scalar is a
string until the reader converts it (``as<bool>()`` for ``enabled``). So this
module only *composes* the document (PyYAML's parser, no constructor) and
converts nodes itself, keeping every scalar's raw value and source span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

import yaml

from analyzer.rules.errors import SourceFile, SourceLocation, SourceText, scalar_mapper

# yaml-cpp's convert<bool>: these spellings and their Capitalized/UPPER forms.
_TRUE = {"y", "yes", "true", "on"}
_FALSE = {"n", "no", "false", "off"}
_NULL = re.compile(r"~|null|Null|NULL|")
# libyaml when available (same nodes and character-based marks, 10x faster)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Located:
    """A node's place in its file: `start` is a character index into `source`."""

    source: SourceFile
    start: int

    @property
    def location(self) -> SourceLocation:
        return self.source.location(self.start)


@dataclass(frozen=True)
class YScalar(_Located):
    value: str
    start: int  # character index of the node in the file
    end: int
    plain: bool  # not quoted and not a block scalar
    source: SourceFile

    @property
    def is_null(self) -> bool:
        return self.plain and bool(_NULL.fullmatch(self.value))

    def as_bool(self) -> bool | None:
        """yaml-cpp's bool conversion; None when the text is not a boolean."""
        text = self.value
        if text not in (text.lower(), text.upper(), text.capitalize()):
            return None
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        return None

    def source_text(self) -> SourceText:
        """The value as a SourceText mapping back into the file."""
        return SourceText().append(self.value, scalar_mapper(self.source, self.value, self.start, self.end))


@dataclass(frozen=True)
class YSeq(_Located):
    items: tuple["YNode", ...]
    start: int
    end: int
    source: SourceFile


@dataclass(frozen=True)
class YMap(_Located):
    keys: tuple[YScalar, ...]
    values: tuple["YNode", ...]
    start: int
    end: int
    source: SourceFile

    def get(self, key: str) -> "YNode | None":
        """The value of ``key`` (the last one if repeated, as yaml-cpp does)."""
        found = None
        for k, v in zip(self.keys, self.values):
            if k.value == key:
                found = v
        return found

    def key_node(self, key: str) -> YScalar | None:
        found = None
        for k in self.keys:
            if k.value == key:
                found = k
        return found

    def key_names(self) -> list[str]:
        return [k.value for k in self.keys]


YNode = Union[YScalar, YSeq, YMap]


class YamlSyntaxError(Exception):
    def __init__(self, message: str, location: SourceLocation) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


def load_documents(source: SourceFile) -> list[YNode]:
    """Compose every document in the file (Falco reads them all, in order).
    Raises YamlSyntaxError."""
    try:
        nodes = list(yaml.compose_all(source.text, Loader=_LOADER))
    except RecursionError:
        raise YamlSyntaxError("invalid YAML: nested too deeply", source.location(0)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        index = mark.index if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(f"invalid YAML: {problem}", source.location(index)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {str(exc).splitlines()[0]}", source.location(getattr(exc, "position", 0) or 0)) from None
    seen: dict[int, YNode] = {}
    try:
        return [_convert(node, source, seen, set()) for node in nodes if node is not None]
    except RecursionError:
        raise YamlSyntaxError("invalid YAML: nested too deeply", source.location(0)) from None


def _convert(node: yaml.Node, source: SourceFile, seen: dict[int, YNode], active: set[int]) -> YNode:
    # Aliases compose to the same node object; convert each once.
    cached = seen.get(id(node))
    if cached is not None:
        return cached
    if id(node) in active:
        raise YamlSyntaxError("invalid YAML: an alias refers to a node containing it",
                              source.location(node.start_mark.index))
    active.add(id(node))
    start, end = node.start_mark.index, node.end_mark.index
    if isinstance(node, yaml.ScalarNode):
        # plain style is None from PyYAML's Python parser, "" from libyaml's
        result: YNode = YScalar(str(node.value), start, end, not node.style, source)
    elif isinstance(node, yaml.SequenceNode):
        result = YSeq(tuple(_convert(item, source, seen, active) for item in node.value), start, end, source)
    else:
        keys: list[YScalar] = []
        values: list[YNode] = []
        for key, value in node.value:
            converted_key = _convert(key, source, seen, active)
            if not isinstance(converted_key, YScalar):
                raise YamlSyntaxError("mapping keys must be scalars", source.location(key.start_mark.index))
            keys.append(converted_key)
            values.append(_convert(value, source, seen, active))
        result = YMap(tuple(keys), tuple(values), start, end, source)
    active.discard(id(node))
    seen[id(node)] = result
    return result
