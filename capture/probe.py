"""Load the BPF program with bcc and read its ring buffers in bulk.

Records are committed without a wakeup (BPF_RB_NO_WAKEUP): a wakeup per
event is what makes per-event callbacks slow. Instead `poll` reads the
mmapped rings directly every 5-50 ms (paced to yield ~32k records a read)
through the maps' fds (bcc 0.26 has no bulk API): the fixed-size ring as
one numpy structured array, the bulky ring record by record. The consumer
position is advanced with one aligned 8-byte store, as the kernel reads it.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from capture import syscalls as sc
from capture.btf import kernel_defines
from capture.decode import RECORD_DTYPE, Decoder
from capture.errors import RecorderError
from capture.syscalls import DEFAULT_SYSCALLS

BPF_DIR = Path(__file__).resolve().parents[1] / "bpf"
TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
RB_BUSY, RB_DISCARD = 1 << 31, 1 << 30
# How often the rings are read: often enough that a read yields about
# TARGET_BATCH_ROWS records, within these bounds. Each batch has a fixed
# cost (58 columns to build, an IPC message, ...): measured, 500-row batches
# cost 4x the CPU per event of 7 500-row ones, and 30 000-row ones a further
# 10-25 % less than 7 500 (docs/benchmarks.md). At the longest interval the
# rate is below TARGET_BATCH_ROWS / POLL_INTERVAL_MAX_S (655 k/s), so even a
# sudden burst at 1.5 M events/s fills under half of the default 64 MiB ring.
POLL_INTERVAL_S = 0.005
POLL_INTERVAL_MAX_S = 0.05
TARGET_BATCH_ROWS = 32768
PENDING_MAX = 16384  # threads inside execve/execveat at once (their arguments wait for sched_process_exec)


@dataclass(frozen=True)
class ProbeConfig:
    syscalls: frozenset[str] = DEFAULT_SYSCALLS
    pids: frozenset[int] = frozenset()  # record only these tgids (empty = all)
    comms: frozenset[str] = frozenset()  # record only these comms (empty = all)
    cgroup_ids: frozenset[int] = frozenset()  # record only these cgroup ids (empty = all)
    exclude_pids: frozenset[int] = frozenset()  # never record these
    argv_max: int = 64  # execve argv bound (truncation is marked)
    ring_bytes: int = 64 << 20
    env: bool = False  # exec events also carry the environment (4 KiB bound; holds secrets)


@dataclass
class Drops:
    kernel: dict[int, int] = field(default_factory=dict)  # cpu -> records lost (ring full)
    user: int = 0  # records the reader could not decode

    @property
    def total(self) -> int:
        return sum(self.kernel.values()) + self.user


def boot_ns() -> int:
    """Wall-clock ns at boot: ts = CLOCK_MONOTONIC ns + boot_ns (the tightest of a few samples)."""
    best = None
    for _ in range(5):
        t0 = time.time_ns()
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        t1 = time.time_ns()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, (t0 + t1) // 2 - mono)
    return best[1]


class _Ring:
    """A BPF ring buffer map, mmapped: consumer page (rw), producer page + data twice (ro)."""

    def __init__(self, map_fd: int, size: int):
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data_map = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._consumer = ctypes.c_uint64.from_buffer(self._cons_map)
        self._producer = np.frombuffer(self._data_map, np.uint64, count=1)
        self.data = np.frombuffer(self._data_map, np.uint8, offset=page)
        self._words = self.data.view(np.uint32)

    def positions(self) -> tuple[int, int]:
        return self._consumer.value, int(self._producer[0])

    def advance(self, pos: int) -> None:
        self._consumer.value = pos  # one aligned 8-byte store

    def peek_fixed(self, record_size: int) -> tuple[np.ndarray, int]:
        """The committed fixed-size records, in place in the ring, and the position after them.

        The caller decodes straight from the mapping (the decoder copies what
        it keeps) and then calls advance(): no full copy of every record.
        """
        cons, prod = self.positions()
        count = (prod - cons) // record_size
        if not count:
            return np.empty(0, RECORD_DTYPE), cons
        start = cons & self.mask
        records = self.data[start: start + count * record_size].view(RECORD_DTYPE)
        # One strided pass over the ring headers finds both kinds of record to leave out.
        state = records["rb_len"] & (RB_BUSY | RB_DISCARD)
        if state.any():
            busy = (state & RB_BUSY) != 0
            if busy.any():
                count = int(np.argmax(busy))
                records, state = records[:count], state[:count]
            discarded = state != 0
            if discarded.any():  # rare: a path moved to the bulky ring
                records = records[~discarded]
        return records, cons + count * record_size

    def read_variable(self) -> list[bytes]:
        cons, prod = self.positions()
        out: list[bytes] = []
        pos = cons
        while pos < prod:
            off = pos & self.mask
            header = int(self._words[off >> 2])
            if header & RB_BUSY:
                break
            length = header & ~(RB_BUSY | RB_DISCARD)
            if not header & RB_DISCARD:
                out.append(self.data[off + 8: off + 8 + length].tobytes())
            pos += (length + 8 + 7) & ~7
        if pos != cons:
            self.advance(pos)
        return out

    def close(self) -> None:
        del self._consumer, self._producer, self.data, self._words
        self._cons_map.close()
        self._data_map.close()


def keep_heap_pages() -> None:
    """Serve the decoder's per-batch arrays from a reused heap, not fresh mmaps.

    Batches allocate arrays of a few hundred KB every few ms; above glibc's
    mmap threshold each one is a new mapping whose first touch page-faults.
    Measured: decoding twice as fast with the threshold raised. Process-wide,
    harmless for the recorder, a no-op where libc has no mallopt.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _tracefs() -> Path:
    for root in TRACEFS_CANDIDATES:
        if (root / "events" / "syscalls").is_dir():
            return root
    raise RecorderError("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")


def _or_expr(var: str, values: frozenset[int], suffix: str = "") -> str:
    """A C expression for the -D filters; int() keeps anything but numbers out of the compiler's input."""
    return "(" + " || ".join(f"{var} == {int(v)}{suffix}" for v in sorted(values)) + ")"


def _bulky_bytes(config: ProbeConfig) -> int:
    """The variable-size ring (exec, two-path calls, long paths): a quarter of the main one."""
    return max(1 << 20, config.ring_bytes // 4)


def _check_ring_bytes(n: int) -> None:
    if n < (1 << 20) or n & (n - 1):
        raise RecorderError(f"ring_bytes must be a power of two of at least 1 MiB, not {n}")


class EventSource:
    """The loaded, attached BPF program and its decoded event stream."""

    def __init__(self, config: ProbeConfig):
        self.config = config
        self._bpf = None
        self._rings: list[_Ring] = []
        self._user_drops = 0
        self._last_read = 0.0
        self._interval = POLL_INTERVAL_S
        if os.geteuid() != 0:
            raise RecorderError("trace record must run as root (it loads an eBPF program)")
        sc.check_names(config.syscalls)
        _check_ring_bytes(config.ring_bytes)
        if config.argv_max < 1:
            raise RecorderError(f"argv_max must be at least 1, not {config.argv_max}")
        tracefs = _tracefs()
        # Most calls are read at raw_syscalls:sys_exit; the few recorded at
        # entry need their own syscalls:sys_enter_<name> tracepoint.
        self.unavailable = tuple(sorted(
            name for name in config.syscalls
            if (sc.BY_NAME[name].at_enter or sc.BY_NAME[name].exec)
            and not (tracefs / "events" / "syscalls" / f"sys_enter_{name}").is_dir()
        ))
        if self.unavailable:
            warnings.warn(
                "this kernel has no syscall tracepoint for " + ", ".join(self.unavailable)
                + " (not built in): those calls cannot be recorded", RuntimeWarning, stacklevel=2,
            )
        keep_heap_pages()
        self._decoder = Decoder(boot_ns=boot_ns(), argv_max=config.argv_max)
        self.boot_ns = self._decoder.boot_ns
        try:
            self._load(config)
        except Exception:
            self.close()
            raise

    def _cflags(self, config: ProbeConfig) -> list[str]:
        flags = [
            f"-I{BPF_DIR}", *kernel_defines(),
            f"-DMAX_NR={sc.MAX_NR}", f"-DPENDING_MAX={PENDING_MAX}",
            f"-DEVENTS_BYTES={config.ring_bytes}", f"-DBULKY_BYTES={_bulky_bytes(config)}",
            f"-DNR_PROCEXIT={sc.NR_PROCEXIT}", f"-DNR_EXECVE={sc.BY_NAME['execve'].nr}",
        ]
        if config.exclude_pids:
            flags.append(f"-DEXCLUDE_TGIDS={_or_expr('tgid', config.exclude_pids)}")
        if config.pids:
            flags.append(f"-DONLY_TGIDS={_or_expr('tgid', config.pids)}")
        if config.cgroup_ids:
            flags.append(f"-DONLY_CGROUPS={_or_expr('cgroup', config.cgroup_ids, 'ULL')}")
        if config.comms:
            flags.append("-DFILTER_COMMS=1")
        if config.env:
            flags.append("-DRECORD_ENV=1")
        return flags

    def _load(self, config: ProbeConfig) -> None:
        try:
            from bcc import BPF
        except ImportError as exc:
            raise RecorderError(f"bcc is not importable ({exc}): run scripts/setup.sh") from exc
        source = (BPF_DIR / "trace.bpf.c").read_text()
        try:
            self._bpf = BPF(text=source.encode(), cflags=self._cflags(config))
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise RecorderError(f"cannot load the BPF program: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        bpf = self._bpf
        plans = bpf[b"plans"]
        selected = [sc.BY_NAME[n] for n in sorted(config.syscalls) if n not in self.unavailable]
        for s in selected:
            leaf = plans.Leaf()
            leaf.enabled, leaf.at_enter, leaf.exec = 1, int(s.at_enter), int(s.exec)
            leaf.addr_mode, leaf.aux_len, leaf.nargs = s.addr_mode, s.aux_len, s.nargs
            leaf.path, leaf.path2 = s.path, s.path2
            leaf.addr_arg, leaf.addrlen_arg, leaf.sock_fd, leaf.aux_arg = s.addr_arg, s.addrlen_arg, s.sock_fd, s.aux_arg
            for column in (*sc.DECODED_COLUMNS, "sock_family"):  # decoded in the kernel
                setattr(leaf, f"src_{column}", getattr(s, column))
            plans[plans.Key(s.nr)] = leaf
        if config.comms:
            table = bpf[b"comm_filter"]
            for comm in config.comms:
                key = table.Key()
                key.comm = comm.encode()[:15]
                table[key] = ctypes.c_uint8(1)
        try:
            for s in selected:
                if s.at_enter or s.exec:
                    bpf.attach_tracepoint(tp=f"syscalls:sys_enter_{s.name}".encode(), fn_name=b"on_sys_enter")
            bpf.attach_raw_tracepoint(tp=b"sys_exit", fn_name=b"on_raw_exit")
            for tracepoint, fn in (("sched_process_exec", b"on_exec"), ("sched_process_exit", b"on_task_exit")):
                bpf.attach_tracepoint(tp=f"sched:{tracepoint}".encode(), fn_name=fn)
        except Exception as exc:
            raise RecorderError(f"cannot attach to tracepoints: {exc}") from exc
        self._events = _Ring(bpf[b"events"].map_fd, config.ring_bytes)
        self._bulky = _Ring(bpf[b"bulky"].map_fd, _bulky_bytes(config))
        self._rings = [self._events, self._bulky]

    def read(self) -> pa.RecordBatch | None:
        """Whatever is in the rings now, decoded (None when empty)."""
        if self._bpf is None:
            raise RecorderError("the event source is closed")
        fixed, fixed_end = self._events.peek_fixed(RECORD_DTYPE.itemsize)
        bulky = self._bulky.read_variable()
        self._pace(len(fixed) + len(bulky))
        try:
            if not len(fixed) and not bulky:
                return None
            return self._decoder.decode(fixed, bulky)
        except (ValueError, IndexError, UnicodeError, pa.ArrowException) as exc:
            self._user_drops += len(fixed) + len(bulky)  # counted in drops().user, never silent
            warnings.warn(f"could not decode {len(fixed) + len(bulky)} records: {exc}", RuntimeWarning, stacklevel=2)
            return None
        finally:
            del fixed  # no view into the ring outlives the decode
            self._events.advance(fixed_end)

    def read_raw(self) -> tuple[np.ndarray, list[bytes]]:
        """Whatever is in the rings now, undecoded: a copy of the fixed records and the bulky payloads.

        For replaying real ring contents through the decoder (bench/decode_bench).
        """
        if self._bpf is None:
            raise RecorderError("the event source is closed")
        fixed, fixed_end = self._events.peek_fixed(RECORD_DTYPE.itemsize)
        fixed = fixed.copy()
        self._events.advance(fixed_end)
        return fixed, self._bulky.read_variable()

    def poll(self, timeout_ms: int = 100) -> pa.RecordBatch | None:
        """Events recorded since the last poll; waits up to timeout_ms for some."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            wait = self._last_read + self._interval - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            batch = self.read()
            if batch is not None or time.monotonic() >= deadline:
                return batch

    def _pace(self, records: int) -> None:
        """Set the interval to the next read from the rate since the last one."""
        now = time.monotonic()
        elapsed, self._last_read = now - self._last_read, now
        wanted = elapsed * TARGET_BATCH_ROWS / records if records else POLL_INTERVAL_MAX_S
        self._interval = min(POLL_INTERVAL_MAX_S, max(POLL_INTERVAL_S, wanted))

    def drops(self) -> Drops:
        if self._bpf is None:
            return Drops(user=self._user_drops)
        table = self._bpf[b"drops"]
        per_cpu = table[table.Key(0)]
        return Drops(kernel={cpu: int(n) for cpu, n in enumerate(per_cpu)}, user=self._user_drops)

    def bpf_run_stats(self) -> dict[str, tuple[int, int]]:
        """Per attached program: (runs, ns spent), from its fd's fdinfo.

        The kernel counts only while sysctl kernel.bpf_stats_enabled is 1;
        this is how the benchmark measures the in-kernel cost per event.
        """
        stats: dict[str, tuple[int, int]] = {}
        for name, fn in (self._bpf.funcs.items() if self._bpf is not None else ()):
            info = dict(line.split(":\t", 1) for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines()
                        if ":\t" in line)
            stats[name.decode()] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
        return stats

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> EventSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
