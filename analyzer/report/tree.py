"""The incident's process tree, with uninvolved siblings folded.

The tree runs from the system root of the involved lineage (pid 1, or the
container's init when every focus process is in the same container) down to
the focus processes (those that alerted, or the --pid process) and all their
descendants. A child of a node on the way down that leads to no focus
process is *uninvolved*: it is counted in the node's "+N more" instead of
shown. Limits keep a fork bomb readable: at most MAX_CHILDREN shown children
per node, MAX_NODES nodes and MAX_DEPTH levels per tree; the rest is folded
and counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from analyzer.report.grouping import system_root
from analyzer.report.lineage import Proc
from analyzer.report.model import Badge, ProcessNode
from analyzer.report.text import clip, display, format_ns

MAX_CHILDREN = 100
MAX_NODES = 3000
MAX_DEPTH = 150  # deeper chains are folded: the template and the reader both need a bottom
FOLDED_SAMPLE = 8


@dataclass
class Tree:
    roots: list[ProcessNode]
    node_ids: dict[int, str]  # id(Proc) -> node id, for every shown process
    involved: list[Proc]  # shown processes, parents before children
    count: int


def build_tree(
    focus: Sequence[Proc],
    badges_of: Callable[[Proc], list[Badge]],
    id_prefix: str,
) -> Tree:
    """The tree over ``focus`` processes; ``badges_of`` gives a node's rule badges."""
    containers = {p.container for p in focus}
    if len(containers) == 1 and "host" not in containers:
        tops = [system_root(p) for p in focus]
    else:
        tops = [list(p.ancestors())[-1] for p in focus]
    # A chain deeper than the tree can show starts lower, and says what it left out above.
    elided: dict[int, tuple[int, Proc]] = {}
    for i, (proc, top) in enumerate(zip(focus, tops)):
        chain = list(proc.ancestors())
        depth = chain.index(top) if top in chain else len(chain) - 1
        if depth >= MAX_DEPTH:
            tops[i] = chain[MAX_DEPTH // 2]
            elided[id(tops[i])] = (depth - MAX_DEPTH // 2, top)

    on_path: set[int] = set()
    for proc, top in zip(focus, tops):
        for anc in proc.ancestors():
            on_path.add(id(anc))
            if anc is top:
                break
    shown = set(on_path)
    focus_ids = {id(p) for p in focus}
    # Descendants of the focus processes, breadth first, until the budget runs out.
    queue = deque(focus)
    expanded: set[int] = set()
    while queue and len(shown) < MAX_NODES:
        proc = queue.popleft()
        if id(proc) in expanded:
            continue
        expanded.add(id(proc))
        for child in proc.children[:MAX_CHILDREN]:
            if id(child) in shown or len(shown) < MAX_NODES:
                shown.add(id(child))
                queue.append(child)

    node_ids: dict[int, str] = {}
    involved: list[Proc] = []

    def make(proc: Proc, depth: int) -> ProcessNode:
        node_ids[id(proc)] = f"{id_prefix}p{len(node_ids) + 1}"
        involved.append(proc)
        img = proc.image
        node = ProcessNode(
            node_id=node_ids[id(proc)],
            pid=proc.pid,
            name=display(img.comm),
            exe=clip(img.exepath or img.exe),
            cmdline=clip(img.cmdline),
            user=_user(img.user_name, img.uid),
            start=format_ns(proc.start_ts),
            exit=format_ns(proc.end_ts),
            container=display(proc.container),
            host=display(img.host),
            images=_earlier_images(proc),
            badges=badges_of(proc),
            involved=id(proc) in on_path or id(proc) in focus_ids,
            focus=id(proc) in focus_ids,
        )
        # A child already drawn (as the lower start of an elided chain) is not drawn twice.
        kept = [c for c in proc.children if id(c) in shown and id(c) not in node_ids] if depth < MAX_DEPTH else []
        hidden = [c for c in proc.children if id(c) not in shown or depth >= MAX_DEPTH]
        node.folded = len(hidden)
        node.folded_sample = [f"{display(c.image.comm)} ({c.pid})" for c in hidden[:FOLDED_SAMPLE]]
        node.children = [make(c, depth + 1) for c in kept]
        return node

    roots = []
    # Distinct, in focus order; lower starts of elided chains first, so a deep
    # focus process is drawn from there rather than cut off at the depth limit
    # under another root.
    ordered = sorted(dict.fromkeys(tops), key=lambda t: id(t) not in elided)
    for top in ordered:
        if id(top) in node_ids:  # already drawn below another root
            continue
        root = make(top, 0)
        if id(top) in elided:
            count, real_top = elided[id(top)]
            root.elided_above = count
            root.elided_top = f"{display(real_top.image.comm)} ({real_top.pid})"
        roots.append(root)
    return Tree(roots, node_ids, involved, len(node_ids))


def _earlier_images(proc: Proc) -> list[str]:
    """Names of the images before the current one, a repeated name once."""
    names: list[str] = []
    for img in proc.images[:-1]:
        name = display(img.comm)
        if not names or names[-1] != name:
            names.append(name)
    return names


def _user(name: str | None, uid: int | None) -> str:
    if name:
        return f"{display(name)} ({uid})" if uid is not None else display(name)
    return "" if uid is None else str(uid)
