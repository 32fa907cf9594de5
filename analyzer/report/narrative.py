"""A one-paragraph account of an incident, generated from its facts only.

"`nginx` (pid 812) spawned `sh` (pid 900), which ran `cat` (pid 901) and
`nc` (pid 902). `cat` (pid 901) read `/etc/shadow`. `nc` (pid 902) connected
to `10.0.0.5:4444`." The paragraph is a list of NarrativeParts so that
captured names stay data (rendered as escaped <code>), never markup.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from analyzer.report.activity import EventRow
from analyzer.report.lineage import Lineage, Proc
from analyzer.report.model import NarrativePart, RuleSummary
from analyzer.report.text import display

MAX_PROCESSES = 6  # processes whose actions are told
MAX_VALUES = 3  # values per kind of action ("read a, b, c and 4 more")
VALUE_CHARS = 80

_VERBS = (  # timeline category -> verb, in telling order
    ("read", "read"),
    ("write", "wrote"),
    ("connect", "connected to"),
    ("accept", "accepted connections from"),
    ("listen", "listened on"),
    ("privilege", "called"),
    ("module", "loaded"),
)


class _Paragraph:
    def __init__(self) -> None:
        self.parts: list[NarrativePart] = []

    def text(self, value: str) -> None:
        if self.parts and not self.parts[-1].code:
            self.parts[-1] = NarrativePart(self.parts[-1].text + value)
        else:
            self.parts.append(NarrativePart(value))

    def code(self, value: str) -> None:
        # value is already a display string: cut it, do not escape it twice.
        shown = value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS] + "…"
        self.parts.append(NarrativePart(shown, code=True))

    def proc(self, proc: Proc) -> None:
        self.code(display(proc.image.comm) or "?")
        self.text(f" (pid {proc.pid})")

    def clauses(self, clauses: Sequence[tuple[str, Sequence[str]]]) -> None:
        """"ran `cat` and `nc`, read `/etc/shadow`, and connected to `10.0.0.5:4444`"."""
        for i, (verb, values) in enumerate(clauses):
            if i:
                last = i == len(clauses) - 1
                self.text((" and " if len(clauses) == 2 else ", and ") if last else ", ")
            self.text(f"{verb} ")
            self.listing(values[:MAX_VALUES], len(values))

    def listing(self, values: Sequence[str], total: int) -> None:
        for i, value in enumerate(values):
            if i:
                self.text(" and " if i == len(values) - 1 and total == len(values) else ", ")
            self.code(value)
        if total > len(values):
            self.text(f" and {total - len(values)} more")


def _clauses(did: dict[str, list[str]] | None) -> list[tuple[str, list[str]]]:
    """(verb, values) for what a process did, in telling order."""
    if not did:
        return []
    return [(verb, did[category]) for category, verb in _VERBS if did.get(category)]


def describe_action(row: EventRow) -> str:
    """The object of an action: a path, a peer, a syscall."""
    if row.category in ("connect", "accept"):
        if row.addr_path:
            return display(row.addr_path)
        if row.addr_ip is not None:
            ip = display(row.addr_ip)
            return f"[{ip}]:{row.addr_port}" if ":" in ip else f"{ip}:{row.addr_port}"
        return display(row.name) or "a socket"
    if row.category == "privilege":
        return f"{row.syscall}({row.args[0]})" if row.syscall.startswith("set") else row.syscall
    if row.category == "module":
        return display(row.name) if row.name else ("a BPF program" if row.syscall == "bpf" else "a kernel module")
    return display(row.name or row.syscall)


def narrate(
    focus: Sequence[Proc],
    events: Sequence[EventRow],
    lineage: Lineage,
    rules: Sequence[RuleSummary],
    start: str,
    end: str,
    alert_count: int,
) -> list[NarrativePart]:
    para = _Paragraph()
    focus_ids = {id(p) for p in focus}
    # The focus processes with no focus ancestor start a story each.
    tops = [p for p in focus if not any(id(a) in focus_ids for a in list(p.ancestors())[1:])]
    actions: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in events:
        proc = lineage.get(row.proc_key)
        if proc is None or row.category not in dict(_VERBS):
            continue
        values = actions[id(proc)][row.category]
        value = describe_action(row)
        if value not in values:
            values.append(value)

    told = 0
    for top in tops:
        if told >= MAX_PROCESSES:
            break
        told += 1
        parent = top.parent
        if parent is not None:
            para.proc(parent)
            para.text(" spawned ")
        para.proc(top)
        ran = [display(c.image.comm) or "?" for c in top.children]
        clauses = ([("ran", ran)] if ran else []) + _clauses(actions.get(id(top)))
        if clauses:
            para.text(", which " if parent is not None else " ")
            para.clauses(clauses)
        para.text(". ")
        for proc in top.descendants():
            did = actions.get(id(proc))
            if not did:
                continue
            if told >= MAX_PROCESSES:
                break
            told += 1
            para.proc(proc)
            para.text(" ")
            para.clauses(_clauses(did))
            para.text(". ")
    if not focus:
        para.text("No process matched. ")
    if rules:
        worst = rules[0]
        para.text(f"{alert_count} alert{'s' if alert_count != 1 else ''} from {len(rules)} "
                  f"rule{'s' if len(rules) != 1 else ''} " + (f"at {start}" if start == end else f"between {start} and {end}")
                  + "; the most severe is ")
        para.code(worst.name)
        para.text(f" ({worst.priority}).")
    return [NarrativePart(p.text.rstrip() if i == len(para.parts) - 1 else p.text, p.code)
            for i, p in enumerate(para.parts)]
