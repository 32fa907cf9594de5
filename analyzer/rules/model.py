"""What a rules file defines, as read (before compilation)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from analyzer.rules.errors import SourceLocation, SourceText
from analyzer.rules.yaml_source import YNode, YScalar


class Priority(enum.IntEnum):
    """Falco's priorities, most severe first (Falco's numeric order)."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @classmethod
    def parse(cls, text: str) -> "Priority | None":
        """Case-insensitive, as Falco reads it; ``info`` means Informational."""
        name = text.strip().upper()
        if name == "INFO":
            return cls.INFORMATIONAL
        return cls.__members__.get(name)

    @property
    def falco_name(self) -> str:
        """The spelling in Falco's alerts: ``Warning``, ``Informational``."""
        return self.name.capitalize()


@dataclass
class ListInfo:
    name: str
    items: list[YScalar]
    location: SourceLocation
    index: int  # position of the first definition among all items loaded
    visibility: int  # position of the latest definition or append


@dataclass
class MacroInfo:
    name: str
    condition: SourceText
    location: SourceLocation
    index: int
    visibility: int


@dataclass
class ExceptionInfo:
    """One entry of a rule's ``exceptions``: ``fields`` and ``comps`` are a
    scalar or a list of scalars; ``values`` the raw value nodes."""

    name: str
    location: SourceLocation
    fields: YScalar | list[YScalar] | None
    comps: YScalar | list[YScalar] | None
    values: list[YNode] = field(default_factory=list)


@dataclass
class RuleInfo:
    name: str
    location: SourceLocation
    index: int
    visibility: int
    condition: SourceText
    output: str
    desc: str
    priority: Priority
    source: str = "syscall"
    enabled: bool = True
    tags: list[str] = field(default_factory=list)
    exceptions: list[ExceptionInfo] = field(default_factory=list)
    capture: bool = False
    capture_duration: int | None = None
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
