"""From alerts and a capture's views to the report's context."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import duckdb

from analyzer.alerts import RuleMeta
from analyzer.errors import TraceError
from analyzer.output import Alert
from analyzer.report.activity import Activity, EventRow
from analyzer.report.alerts_input import AlertsFile
from analyzer.report.attack import attack_tag
from analyzer.report.grouping import DEFAULT_WINDOW_NS, group_alerts, grouping_rule_text
from analyzer.report.lineage import Lineage, Proc, load_lineage
from analyzer.report.model import (
    Badge, Evidence, FileAccess, Incident, Peer, ProcessDetail, ReportContext, RuleSummary, TimelineEntry,
)
from analyzer.report.narrative import describe_action, narrate
from analyzer.report.text import clip, display, format_ns
from analyzer.report.tree import Tree, build_tree
from analyzer.rules.model import Priority

_LEVEL = {"emergency": "critical", "alert": "critical", "critical": "critical", "error": "error",
          "warning": "warning", "notice": "notice"}
MAX_DETAILS = 300
MAX_EVIDENCE = 2000


def priority_rank(priority: str) -> int:
    parsed = Priority.parse(priority)
    return len(Priority) if parsed is None else int(parsed)


def priority_level(priority: str) -> str:
    return _LEVEL.get(priority.lower(), "info")


def build_context(
    con: duckdb.DuckDBPyConnection,
    alerts_file: AlertsFile | None = None,
    *,
    pid: int | None = None,
    captures: Sequence[str] = (),
    report_command: str = "",
    window_ns: int = DEFAULT_WINDOW_NS,
) -> ReportContext:
    """The report's context: alerts grouped into incidents, or one --pid investigation.

    ``con`` exposes the `events`, `processes` and `fds` views of the capture
    the alerts came from (docs/contracts.md section 2).
    """
    lineage = load_lineage(con)
    warnings: list[str] = []
    alerts = alerts_file.alerts if alerts_file else []
    rule_meta = dict(alerts_file.meta.rule_meta) if alerts_file else {}
    incidents: list[Incident] = []
    if pid is not None:
        focus = lineage.by_pid(pid)
        if not focus:
            raise TraceError(f"pid {pid} is not in the capture's process table")
        mine = [a for a in alerts if lineage.get(a.proc_key) in focus]
        incidents.append(_incident(1, f"Investigation of pid {pid}", focus, mine, lineage, con, rule_meta, warnings))
        mode, title = "investigation", f"Investigation of pid {pid}"
    else:
        for n, group in enumerate(group_alerts(alerts, lineage, window_ns), start=1):
            incidents.append(_incident(n, "", group.procs, group.alerts, lineage, con, rule_meta, warnings))
        unknown = sum(1 for a in alerts if lineage.get(a.proc_key) is None)
        if unknown:
            warnings.append(f"{unknown} alert(s) name a process the capture's process table does not hold; "
                            "they appear in the evidence but not in the trees")
        mode = "alerts"
        title = f"Incident report: {len(incidents)} incident{'s' if len(incidents) != 1 else ''}, {len(alerts)} alerts"
    return ReportContext(
        title=title,
        mode=mode,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        version=_version(),
        captures=[display(c) for c in (captures or (alerts_file.meta.captures if alerts_file else []))],
        rules_files=[display(r) for r in (alerts_file.meta.rules_files if alerts_file else [])],
        hunt_command=display(alerts_file.meta.command) if alerts_file else "",
        report_command=display(report_command),
        grouping=grouping_rule_text(window_ns),
        incidents=incidents,
        warnings=warnings,
        total_alerts=len(alerts),
    )


def _version() -> str:
    try:
        return version("trace-forensics")
    except PackageNotFoundError:
        return "dev"


def _incident(
    n: int,
    title: str,
    focus: list[Proc],
    alerts: list[Alert],
    lineage: Lineage,
    con: duckdb.DuckDBPyConnection,
    rule_meta: dict[str, RuleMeta],
    warnings: list[str],
) -> Incident:
    prefix = f"i{n}-"
    alerts_of: dict[int, list[Alert]] = defaultdict(list)
    for alert in alerts:
        proc = lineage.get(alert.proc_key)
        if proc is not None:
            alerts_of[id(proc)].append(alert)
    summary_of = _rule_summaries(alerts, rule_meta)  # by the rule's raw name
    rules = sorted(summary_of.values(), key=lambda r: (priority_rank(r.priority), -r.count, r.name))
    level_of = {rule: (r.priority, r.level) for rule, r in summary_of.items()}

    def badges_of(proc: Proc) -> list[Badge]:
        counts = Counter(a.rule for a in alerts_of.get(id(proc), ()))
        return [Badge(display(rule), level_of[rule][0], level_of[rule][1], c)
                for rule, c in sorted(counts.items(), key=lambda rc: (priority_rank(level_of[rc[0]][0]), rc[0]))]

    tree = build_tree(focus, badges_of, prefix) if focus else Tree([], {}, [], 0)
    # Activity of the focus processes and what they started; not of their ancestors.
    subject = _subject(focus, tree)
    keys = [img.key for proc in subject for img in proc.images]
    pids = [proc.pid for proc in subject]
    evt_nums = [a.evt_num for a in alerts if a.evt_num is not None]
    activity = Activity(con, keys, pids, evt_nums)
    try:
        events, omitted = activity.timeline()
        files = activity.files()
        peers = activity.peers()
        args = activity.event_args()
    finally:
        activity.close()
    if omitted:
        warnings.append(f"incident {n}: the timeline shows the first {len(events)} key events; {omitted} more are left out")
    rules_by_event = _RulesByEvent()
    for alert in alerts:
        rules_by_event.add(alert)
    timeline = _timeline(events, lineage, tree, rules_by_event)
    times = [a.time_ns for a in alerts] + [row.ts for row in events]
    start, end = (format_ns(min(times)), format_ns(max(times))) if times else ("", "")

    detail_procs = subject[:MAX_DETAILS]
    details = [_detail(proc, tree, files, peers) for proc in detail_procs]
    evidence = [_evidence(a, lineage, tree, level_of, args) for a in alerts[:MAX_EVIDENCE]]

    worst = rules[0] if rules else None
    if not title:
        title = display(worst.name) if worst else "Incident"
        if len(rules) > 1:
            title += f" and {len(rules) - 1} more rule{'s' if len(rules) > 2 else ''}"
    hosts = sorted({display(a.hostname) for a in alerts} | {display(p.image.host) for p in focus if p.image.host})
    containers = sorted({display(p.container) for p in subject} | {display(a.container_id) for a in alerts if a.container_id})
    users = sorted({u for u in (_user(p) for p in subject) if u})
    return Incident(
        incident_id=f"i{n}",
        title=f"{n}. {title}",
        priority=worst.priority if worst else "",
        level=worst.level if worst else "info",
        alert_count=len(alerts),
        rules=rules,
        hosts=hosts,
        containers=containers,
        users=users,
        start=start,
        end=end,
        narrative=narrate(focus, events, lineage, rules, start, end, len(alerts)),
        roots=tree.roots,
        node_count=tree.count,
        timeline=timeline,
        timeline_omitted=omitted,
        details=details,
        details_omitted=len(subject) - len(detail_procs),
        evidence=evidence,
        evidence_omitted=len(alerts) - len(evidence),
    )


class _RulesByEvent(dict):
    """(str(_proc_key), evt_num) -> rules that matched; ``nums`` answers "any alert here?" fast."""

    def __init__(self) -> None:
        super().__init__()
        self.nums: set[int | None] = set()

    def add(self, alert: Alert) -> None:
        self.setdefault((str(alert.proc_key), alert.evt_num), []).append(alert.rule)
        self.nums.add(alert.evt_num)


def _subject(focus: list[Proc], tree: Tree) -> list[Proc]:
    """The focus processes and their descendants shown in the tree, tree order."""
    focus_ids = {id(p) for p in focus}
    out = []
    for proc in tree.involved:
        if any(id(a) in focus_ids for a in proc.ancestors()):
            out.append(proc)
    return out


def _user(proc: Proc) -> str:
    img = proc.image
    if img.user_name:
        return display(img.user_name)
    return "" if img.uid is None else str(img.uid)


def _rule_summaries(alerts: list[Alert], rule_meta: dict[str, RuleMeta]) -> dict[str, RuleSummary]:
    counts = Counter(a.rule for a in alerts)
    first = {}
    for a in alerts:
        first.setdefault(a.rule, a)
    out = {}
    for rule, count in counts.items():
        meta = rule_meta.get(rule)
        priority = meta.priority if meta else first[rule].priority
        tags = list(meta.tags if meta else first[rule].tags)
        out[rule] = RuleSummary(
            name=display(rule),
            priority=display(priority),
            level=priority_level(priority),
            desc=clip(meta.desc if meta else "", 600),
            tags=[display(t) for t in tags],
            attack=[t for t in map(attack_tag, tags) if t is not None],
            count=count,
        )
    return out


def _timeline(events: list[EventRow], lineage: Lineage, tree: Tree, rules_by_event: dict) -> list[TimelineEntry]:
    who: dict[Any, tuple[str, int, str]] = {}  # per process key: node id, pid, name
    out = []
    for row in events:
        ident = who.get(row.proc_key)
        if ident is None:
            proc, image = lineage.get(row.proc_key), lineage.image(row.proc_key)
            ident = who[row.proc_key] = (
                tree.node_ids.get(id(proc), "") if proc else "",
                proc.pid if proc else 0,
                display(image.comm) if image else "",
            )
        rules = rules_by_event.get((str(row.proc_key), row.evt_num)) if row.evt_num in rules_by_event.nums else None
        out.append(TimelineEntry(
            time=format_ns(row.ts),
            node_id=ident[0],
            pid=ident[1],
            process=ident[2],
            category=row.category,
            what=clip(_what(row)),
            rules=tuple(display(r) for r in rules) if rules else (),
            evt_num=row.evt_num,
        ))
    return out


def _what(row: EventRow) -> str:
    """A readable line for one event; parts are display strings already."""
    if row.category == "exec":
        argv = " ".join(display(a) for a in (row.argv or []))
        return f"{display(row.exepath or row.name)}: {argv}" if argv else display(row.exepath or row.name)
    target = describe_action(row)
    if row.category == "write" and row.path2:
        target = f"{target} -> {display(row.path2)}"
    label = {"write": f"{row.syscall} (write)", "read": f"{row.syscall} (read)"}.get(row.category, row.syscall)
    line = target if row.category in ("privilege",) else f"{label} {target}"
    if row.res is not None and row.res < 0 and row.category != "connect":
        line += f" = {row.res}"
    return line


def _detail(proc: Proc, tree: Tree, files: dict, peers: dict) -> ProcessDetail:
    rows, omitted = [], 0
    for img in proc.images:
        got, more = files.get(img.key, ([], 0))
        rows.extend(got)
        omitted += more
    accesses = [
        FileAccess(clip(f.path), "/".join(k for k, on in (("exec", f.exec), ("read", f.read), ("write", f.write)) if on),
                   f.count, format_ns(f.first_ts))
        for f in rows
    ]
    peer_rows = [p for img in proc.images for p in peers.get(img.key, [])]
    return ProcessDetail(
        node_id=tree.node_ids.get(id(proc), ""),
        pid=proc.pid,
        name=display(proc.image.comm),
        cmdline=clip(proc.image.cmdline),
        files=accesses,
        files_omitted=omitted,
        peers=[_peer(p) for p in peer_rows],
        children=[(tree.node_ids.get(id(c), ""), c.pid, display(c.image.comm)) for c in proc.children],
    )


def _endpoint(ip: str | None, port: int | None) -> str:
    if ip is None and port is None:
        return ""
    ip_text = display(ip) if ip is not None else "*"
    if ":" in ip_text:
        ip_text = f"[{ip_text}]"
    return f"{ip_text}:{port if port is not None else '*'}"


def _peer(p) -> Peer:
    if p.typechar == "u":
        return Peer("unix", "", display(p.name), "unix", format_ns(p.first_ts))
    direction = "listening" if p.is_server and p.rip is None else ("inbound" if p.is_server else "outbound")
    return Peer(display(p.l4proto or ""), _endpoint(p.lip, p.lport), _endpoint(p.rip, p.rport), direction,
                format_ns(p.first_ts))


def _evidence(alert: Alert, lineage: Lineage, tree: Tree, level_of: dict, args: dict) -> Evidence:
    proc = lineage.get(alert.proc_key)
    fields = [(display(k), clip(_field_text(v))) for k, v in alert.output_fields.items()]
    return Evidence(
        time=format_ns(alert.time_ns),
        rule=display(alert.rule),
        priority=display(alert.priority),
        level=level_of.get(alert.rule, ("", priority_level(alert.priority)))[1],
        output=clip(alert.output, 400),
        fields=fields,
        evt_num=alert.evt_num,
        node_id=tree.node_ids.get(id(proc), "") if proc else "",
        pid=alert.pid,
        args=[(display(k), clip(v)) for k, v in args.get((str(alert.proc_key), alert.evt_num), [])],
    )


def _field_text(value: Any) -> str:
    # Falco's output_fields are typed; null is a missing value, shown as Falco prints it.
    if value is None:
        return "<NA>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_field_text(v) for v in value) + "]"
    return str(value)
