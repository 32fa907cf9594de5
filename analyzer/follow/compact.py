"""Drop the open/close pairs that cannot change what a batch resolves to.

A process that opens a file and closes it again, with no event of its own in
between, leaves its fd table as it found it. On a busy host such pairs are
most of the events, and the state builder's cost grows with its rows, so
the follower removes them before a build when:

* neither row can fire a rule (analyzer.follow.candidates);
* the open succeeded with fd N and the close of N by the same thread is the
  process's next event, and succeeded;
* the open is not the process's first event in the batch (a process first
  seen there starts from it);
* no fork or exec of any process lies between them (a child forked by
  another thread in between would inherit fd N), and the thread's next event
  is not a fork (the builder orders a fork after its thread's previous event).

The state after the batch, and every kept event's view of it, is then what
the full batch gives (checked against offline hunts in tests/test_follow_*).
One difference: if fd N was wrongly open in the state (the recorder lost its
close), a dropped pair no longer ends that stale entry.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.state.sql import EXEC_SYSCALLS, FORK_SYSCALLS, OPEN_SYSCALLS
from capture.schema import KIND_EVENT


def _next_in_group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position: the next position with the same key (-1: none), and whether it is the key's first."""
    n = len(keys)
    order = np.lexsort((np.arange(n), keys))
    nxt = np.full(n, -1, dtype=np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    first = np.ones(n, dtype=bool)
    first[order[1:][same]] = False
    return nxt, first


def droppable_pairs(rows: pa.Table, candidate: pa.ChunkedArray | pa.Array, *, more_may_follow: bool) -> np.ndarray:
    """A boolean per row of `rows` (capture schema, file order): True for the rows of a neutral open/close pair.

    `more_may_follow`: later rows may join these in the same build, so a pair
    must not be its thread's last event (a fork could follow it)."""
    drop = np.zeros(rows.num_rows, dtype=bool)
    is_event = pc.fill_null(pc.equal(rows["kind"].cast(pa.string()), KIND_EVENT), False).to_numpy(zero_copy_only=False)
    events = np.flatnonzero(is_event)
    if len(events) < 2:
        return drop
    ev = rows.select(["syscall", "res", "fd", "pid", "tid"]).take(pa.array(events))
    syscall = ev["syscall"].cast(pa.string())
    is_open = pc.is_in(syscall, pa.array(OPEN_SYSCALLS, pa.string())).to_numpy(zero_copy_only=False)
    is_close = pc.equal(syscall, "close").to_numpy(zero_copy_only=False)
    is_fork = pc.is_in(syscall, pa.array(FORK_SYSCALLS, pa.string())).to_numpy(zero_copy_only=False)
    is_image = is_fork | pc.is_in(syscall, pa.array(EXEC_SYSCALLS, pa.string())).to_numpy(zero_copy_only=False)
    res = pc.fill_null(ev["res"], -1).to_numpy(zero_copy_only=False)
    fd = pc.fill_null(ev["fd"].cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
    pid = pc.fill_null(ev["pid"].cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
    tid = pc.fill_null(ev["tid"].cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
    cand = pc.fill_null(pa.chunked_array([candidate]) if isinstance(candidate, pa.Array) else candidate, True)
    cand = cand.to_numpy(zero_copy_only=False)[events]

    next_of_pid, first_of_pid = _next_in_group(pid)
    next_of_tid, _ = _next_in_group(tid)
    images_before = np.cumsum(is_image)  # forks and execs up to and including each event
    i = np.flatnonzero(is_open & (res >= 0) & ~cand & ~first_of_pid & (next_of_pid >= 0))
    j = next_of_pid[i]
    after = next_of_tid[j]
    pair = (
        is_close[j] & (res[j] == 0) & (fd[j] == res[i]) & ~cand[j] & (tid[j] == tid[i])
        & (images_before[j] == images_before[i])
        & np.where(after < 0, not more_may_follow, ~is_fork[np.maximum(after, 0)])
    )
    drop[events[i[pair]]] = True
    drop[events[j[pair]]] = True
    return drop
