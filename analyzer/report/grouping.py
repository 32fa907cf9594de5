"""Alerts grouped into incidents.

GROUPING_RULE is the documented rule, shown in every report. Two alerts are
in the same incident when any of these holds (and incidents are the
transitive closure, so A~B and B~C put A, B and C together):

1. **Lineage.** One alert's process is the other's process or one of its
   ancestors (`sh` alerting, then its child `cat` alerting, at any distance
   in time).
2. **Same service, close in time.** Both processes descend from the same
   *service root* and the alerts are at most WINDOW apart. The service root
   is the ancestor just below the system root: below pid 1 on the host (the
   `nginx`, `sshd` or `cron` that started it all), below the container's
   init inside a container. A process whose oldest known ancestor is not
   pid 1 (ancestry from before the capture) uses that ancestor.
3. **Same container, close in time.** Both processes run in the same
   container (not `host`) on the same host, at most WINDOW apart.

"At most WINDOW apart" chains: alerts 4 minutes apart, then 4 more, with a
5 minute window, are one incident. An alert whose process is not in the
capture's process table is grouped by host and pid, within the window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from analyzer.report.alerts_input import Alert
from analyzer.report.lineage import Lineage, Proc

DEFAULT_WINDOW_NS = 10 * 60 * 1_000_000_000

GROUPING_RULE = (
    "Alerts belong to one incident when one alert's process is the other's or one of its "
    "ancestors (any time apart); or when both processes descend from the same service "
    "(the ancestor just below pid 1, or below the container's init) within {window} of "
    "each other; or when both run in the same container within {window}. Incidents are "
    "the transitive closure of these links."
)


def grouping_rule_text(window_ns: int) -> str:
    seconds = window_ns / 1e9
    span = f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"
    return GROUPING_RULE.format(window=span)


@dataclass
class AlertGroup:
    """The alerts of one incident, in time order, with their processes."""

    alerts: list[Alert]
    procs: list[Proc]  # the alerting processes found in the lineage, first alert first


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def system_root(proc: Proc) -> Proc:
    """pid 1 / the oldest known ancestor; inside a container, its init."""
    top = proc
    for anc in proc.ancestors():
        if proc.container != "host" and anc.container != proc.container:
            break
        top = anc
    return top


def service_root(proc: Proc) -> Proc:
    chain = list(proc.ancestors())
    root = system_root(proc)
    index = chain.index(root)
    is_init = root.pid == 1 or root.container != "host"
    return chain[index - 1] if is_init and index > 0 else root


def group_alerts(alerts: Sequence[Alert], lineage: Lineage, window_ns: int = DEFAULT_WINDOW_NS) -> list[AlertGroup]:
    """Incidents in order of their first alert (alerts must be time-sorted)."""
    uf = _UnionFind(len(alerts))
    procs = [lineage.get(a.proc_key) for a in alerts]

    # 1. lineage: every alert joins the first alert of each alerting ancestor-or-self.
    first_alert_of: dict[int, int] = {}
    for i, proc in enumerate(procs):
        if proc is not None:
            first_alert_of.setdefault(id(proc), i)
    for i, proc in enumerate(procs):
        if proc is None:
            continue
        for anc in proc.ancestors():
            j = first_alert_of.get(id(anc))
            if j is not None:
                uf.union(i, j)

    # 2 and 3: same service / same container / same unknown pid, chained in time.
    buckets: dict[Hashable, list[int]] = defaultdict(list)
    for i, (alert, proc) in enumerate(zip(alerts, procs)):
        if proc is None:
            buckets[("pid", alert.hostname, alert.pid)].append(i)
            continue
        buckets[("service", id(service_root(proc)))].append(i)
        if proc.container != "host":
            buckets[("container", proc.image.host, proc.container)].append(i)
    for members in buckets.values():
        for prev, cur in zip(members, members[1:]):
            if alerts[cur].time_ns - alerts[prev].time_ns <= window_ns:
                uf.union(prev, cur)

    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(alerts)):
        groups[uf.find(i)].append(i)
    result = []
    for members in sorted(groups.values(), key=lambda m: m[0]):
        seen: set[int] = set()
        group_procs = []
        for i in members:
            proc = procs[i]
            if proc is not None and id(proc) not in seen:
                seen.add(id(proc))
                group_procs.append(proc)
        result.append(AlertGroup([alerts[i] for i in members], group_procs))
    return result
