"""Process lineage from the `processes` view, with exec images merged.

The view has one row per incarnation: an exec starts a new row for the same
pid (docs/contracts.md section 2). A responder thinks in processes, so a
``Lineage`` merges the incarnations of one pid between fork and exit into
one ``Proc`` whose last image names it and whose earlier images are kept.
The chain is followed through ``_prev_key`` when the view has it, else
through consecutive incarnations of the same pid under the same parent
(see ``_join_contiguous``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

_COLUMNS = (
    "_proc_key", "pid", "ppid", "_parent_key", "start_ts", "end_ts", "comm", "exe",
    "exepath", "cmdline", "uid", "user_name", "container_id", "_host",
)


@dataclass(frozen=True)
class Image:
    """One incarnation (one row of `processes`)."""

    key: Any
    pid: int
    parent_key: Any
    start_ts: int | None
    end_ts: int | None
    comm: str | None
    exe: str | None
    exepath: str | None
    cmdline: str | None
    uid: int | None
    user_name: str | None
    container_id: str | None
    host: str | None


@dataclass(eq=False)
class Proc:
    """A pid from fork to exit: its images in order, the last one current."""

    images: list[Image]
    parent: Proc | None = None
    children: list[Proc] = field(default_factory=list)

    @property
    def image(self) -> Image:
        return self.images[-1]

    @property
    def key(self) -> Any:
        return self.images[0].key

    @property
    def pid(self) -> int:
        return self.image.pid

    @property
    def start_ts(self) -> int | None:
        return self.images[0].start_ts

    @property
    def end_ts(self) -> int | None:
        return self.images[-1].end_ts

    @property
    def container(self) -> str:
        return self.image.container_id or "host"

    def ancestors(self) -> Iterator[Proc]:
        """Self first, then parent, up to the oldest known ancestor."""
        node: Proc | None = self
        while node is not None:
            yield node
            node = node.parent

    def descendants(self) -> Iterator[Proc]:
        stack = list(reversed(self.children))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


class Lineage:
    """Every process of the given hosts, linked parent to children."""

    def __init__(self, images: Iterable[Image], prev_of: dict[Any, Any] | None = None):
        by_key = {img.key: img for img in images}
        # Keys are looked up by their text: the alerts file stores them as
        # strings whatever type the views give them.
        self._image_of = {str(k): img for k, img in by_key.items()}
        self._proc_of: dict[str, Proc] = {}
        for chain in _chains(by_key, prev_of):
            proc = Proc(chain)
            for img in chain:
                self._proc_of[str(img.key)] = proc
        for proc in self.procs():
            parent = self.get(proc.images[0].parent_key)
            if parent is not None and parent is not proc:
                proc.parent = parent
                parent.children.append(proc)
        for proc in self.procs():
            proc.children.sort(key=lambda p: (p.start_ts or 0, p.pid))

    def procs(self) -> Iterator[Proc]:
        seen: set[int] = set()
        for proc in self._proc_of.values():
            if id(proc) not in seen:
                seen.add(id(proc))
                yield proc

    def get(self, proc_key: Any) -> Proc | None:
        return None if proc_key is None else self._proc_of.get(str(proc_key))

    def image(self, proc_key: Any) -> Image | None:
        return None if proc_key is None else self._image_of.get(str(proc_key))

    def by_pid(self, pid: int) -> list[Proc]:
        return sorted((p for p in self.procs() if p.pid == pid), key=lambda p: p.start_ts or 0)


def _chains(by_key: dict[Any, Image], prev_of: dict[Any, Any] | None) -> list[list[Image]]:
    if prev_of is None:
        return _join_contiguous([[img] for img in by_key.values()], exact=False)
    next_of = {prev: key for key, prev in prev_of.items() if prev in by_key and key in by_key}
    chains = []
    for head in (k for k in by_key if prev_of.get(k) not in by_key):
        chain, key = [by_key[head]], head
        while key in next_of:
            key = next_of[key]
            chain.append(by_key[key])
        chains.append(chain)
    # A pid can also show up as two images under one parent with nothing
    # linking them (state rebuilt from a fork seen twice): the first ends the
    # very nanosecond the second starts, so they are one process.
    return _join_contiguous(chains, exact=True)


def _join_contiguous(chains: list[list[Image]], exact: bool) -> list[list[Image]]:
    """Join chains of one pid under one parent that follow each other.

    ``exact``: only when one ends exactly when the next starts; otherwise also
    when the first has no end or they overlap. A start after the previous
    end is pid reuse: a new process.
    """
    grouped: dict[tuple[Any, int, Any], list[list[Image]]] = defaultdict(list)
    for chain in chains:
        grouped[(chain[0].host, chain[0].pid, chain[0].parent_key)].append(chain)
    out = []
    for group in grouped.values():
        group.sort(key=lambda c: c[0].start_ts or 0)
        current = group[0]
        for chain in group[1:]:
            end, start = current[-1].end_ts, chain[0].start_ts
            if exact:
                follows = end is not None and end == start
            else:
                follows = end is None or start is None or start <= end
            if follows:
                current = current + chain
            else:
                out.append(current)
                current = chain
        out.append(current)
    return out


def load_lineage(con: duckdb.DuckDBPyConnection, hosts: Iterable[str] | None = None) -> Lineage:
    """Read `processes` (of the given hosts, or all) into a Lineage."""
    available = {row[0] for row in con.execute("select column_name from (describe processes)").fetchall()}
    columns = list(_COLUMNS) + (["_prev_key"] if "_prev_key" in available else [])
    select = ", ".join(f'"{c}"' for c in columns)
    host_list = sorted(set(hosts)) if hosts is not None else None
    if host_list is None:
        rows = con.execute(f"select {select} from processes").fetchall()
    else:
        rows = con.execute(f"select {select} from processes where _host in (select unnest(?))", [host_list]).fetchall()
    images = []
    prev_of: dict[Any, Any] | None = {} if "_prev_key" in available else None
    for row in rows:
        rec = dict(zip(columns, row))
        images.append(Image(
            key=rec["_proc_key"], pid=rec["pid"], parent_key=rec["_parent_key"],
            start_ts=rec["start_ts"], end_ts=rec["end_ts"], comm=rec["comm"], exe=rec["exe"],
            exepath=rec["exepath"], cmdline=rec["cmdline"], uid=rec["uid"],
            user_name=rec["user_name"], container_id=rec["container_id"], host=rec["_host"],
        ))
        if prev_of is not None and rec["_prev_key"] is not None:
            prev_of[rec["_proc_key"]] = rec["_prev_key"]
    return Lineage(images, prev_of)
