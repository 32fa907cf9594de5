"""The report's context: everything `reports/report.html.j2` may show.

The template sees only these dataclasses. Every string that came from a
capture is already a display string (``text.display``: invalid UTF-8 and
control characters escaped) or a ``Clipped``; HTML escaping is left to Jinja's
autoescape, which is always on. Node ids (``p12``) and incident ids (``i1``)
are generated here, never taken from captured data, so they are safe as HTML
ids and URL fragments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzer.report.attack import AttackTag
from analyzer.report.text import Clipped


@dataclass(frozen=True)
class Badge:
    """One rule that fired on a process, shown on its tree node."""

    rule: str
    priority: str
    level: str  # css class: critical | error | warning | notice | info
    count: int


@dataclass
class ProcessNode:
    """One process in the tree: a pid from fork to exit, its exec images merged.

    ``images`` lists the earlier images of the same pid (a shell that forked
    and then exec'd ``cat`` is one node, ``cat``, with ``images=['bash']``).
    ``folded`` are uninvolved children left out of the tree and counted in
    "+N more"; ``folded_sample`` names a few of them. A root that is not the
    top of its lineage (a chain too deep to show) has ``elided_above``
    ancestors up to ``elided_top`` left out.
    """

    node_id: str
    pid: int
    name: str
    exe: Clipped
    cmdline: Clipped
    user: str
    start: str
    exit: str
    container: str
    host: str
    images: list[str]
    badges: list[Badge]
    involved: bool  # on the way from the root to a focus process, or a focus process
    focus: bool  # what the incident is about: a process that alerted, or the --pid process
    children: list[ProcessNode] = field(default_factory=list)
    folded: int = 0
    folded_sample: list[str] = field(default_factory=list)
    elided_above: int = 0
    elided_top: str = ""

    @property
    def alerting(self) -> bool:
        return bool(self.badges)


@dataclass(frozen=True)
class TimelineEntry:
    time: str
    node_id: str
    pid: int
    process: str
    category: str  # exec | write | read | connect | accept | privilege | module | alert
    what: Clipped
    rules: tuple[str, ...]  # rules that matched this very event
    evt_num: int | None


@dataclass(frozen=True)
class FileAccess:
    path: Clipped
    access: str  # "read", "write", "read/write", "exec"...
    count: int
    first: str


@dataclass(frozen=True)
class Peer:
    proto: str
    local: str
    remote: str
    direction: str  # "outbound" | "inbound" | "listening" | "unix"
    first: str


@dataclass
class ProcessDetail:
    node_id: str
    pid: int
    name: str
    cmdline: Clipped
    files: list[FileAccess]
    peers: list[Peer]
    children: list[tuple[str, int, str]]  # (node_id or "", pid, name)
    files_omitted: int = 0


@dataclass(frozen=True)
class Evidence:
    """One matched event: the alert line and every output field."""

    time: str
    rule: str
    priority: str
    level: str
    output: Clipped
    fields: list[tuple[str, Clipped]]
    evt_num: int | None
    node_id: str
    pid: int | None
    args: list[tuple[str, Clipped]]  # the event's parameters, as libsinsp renders them


@dataclass(frozen=True)
class RuleSummary:
    name: str
    priority: str
    level: str
    desc: Clipped
    tags: list[str]
    attack: list[AttackTag]
    count: int


@dataclass(frozen=True)
class NarrativePart:
    """A run of narrative text; ``code`` parts are captured names."""

    text: str
    code: bool = False


@dataclass
class Incident:
    incident_id: str
    title: str
    priority: str
    level: str
    alert_count: int
    rules: list[RuleSummary]
    hosts: list[str]
    containers: list[str]
    users: list[str]
    start: str
    end: str
    narrative: list[NarrativePart]
    roots: list[ProcessNode]
    node_count: int
    timeline: list[TimelineEntry]
    timeline_omitted: int
    details: list[ProcessDetail]
    details_omitted: int
    evidence: list[Evidence]
    evidence_omitted: int


@dataclass
class ReportContext:
    """The whole report. ``mode`` is "alerts" or "investigation" (--pid)."""

    title: str
    mode: str
    generated: str
    version: str
    captures: list[str]
    rules_files: list[str]
    hunt_command: str
    report_command: str
    grouping: str
    incidents: list[Incident]
    warnings: list[str]
    total_alerts: int
