"""`trace record` and `trace info`: thin click commands over capture.recorder and capture.info."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import click

from capture.segments import RetentionPolicy, RotationPolicy

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Size(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(value), re.I)
        if not match:
            self.fail(f"{value!r} is not a size (e.g. 512k, 64M, 2G)", param, ctx)
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value), re.I)
        if not match:
            self.fail(f"{value!r} is not a duration (e.g. 30, 30s, 10m, 2h, 7d)", param, ctx)
        return float(match.group(1)) * _TIME_UNITS[match.group(2).lower()]


def _names(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(name.strip() for value in values for name in value.split(",") if name.strip())


@click.command()
@click.option("-o", "--output", "directory", required=True, type=click.Path(path_type=Path), help="Capture directory (created 0700).")
@click.option("--duration", type=Duration(), help="Stop after this long (30s, 10m, 2h).")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--rotate-size", type=Size(), default="256M", show_default=True, help="Close a segment at this size.")
@click.option("--rotate-time", type=Duration(), default="10m", show_default=True, help="Close a segment after this long.")
@click.option("--rotate-events", type=click.IntRange(min=1), help="Close a segment after this many events.")
@click.option("--keep-segments", type=click.IntRange(min=1), help="Keep at most this many segments.")
@click.option("--keep-bytes", type=Size(), help="Keep at most this many bytes of segments.")
@click.option("--keep-age", type=Duration(), help="Delete segments whose last event is older than this.")
@click.option("--syscalls", multiple=True, help="Comma-separated syscalls to record (default: the full set).")
@click.option("--pid", "pids", type=int, multiple=True, help="Record only these processes (repeatable).")
@click.option("--comm", "comms", multiple=True, help="Record only processes with this comm (repeatable).")
@click.option("--container", "containers", multiple=True, help="Record only this container id (repeatable).")
@click.option("--cgroup", "cgroup_paths", multiple=True, help="Record only this cgroup v2 path (repeatable).")
@click.option("--ring-size", type=Size(), default="64M", show_default=True, help="Kernel ring buffer size (a power of two, >= 1M).")
@click.option("--tail/--no-tail", default=True, show_default=True,
              help="Mirror the open segment into current.arrows for `trace hunt --follow` and crash recovery.")
@click.option("--env", "with_env", is_flag=True, help="Also record environments: exec events and snapshots (they hold secrets).")
@click.option("--status/--no-status", default=None, help="Status line on stderr [default: when stderr is a TTY].")
def record(directory, duration, count, rotate_size, rotate_time, rotate_events, keep_segments, keep_bytes, keep_age,
           syscalls, pids, comms, containers, cgroup_paths, ring_size, tail, with_env, status):
    """Record syscalls with eBPF into the capture directory -o (needs root).

    Segments are zstd Parquet files, finalized atomically; a restart in the
    same directory continues its numbering. Stop with Ctrl-C / SIGTERM.
    """
    from capture.probe import ProbeConfig
    from capture.recorder import Recorder, RecordOptions
    from capture.syscalls import check_names

    warnings.formatwarning = lambda message, *_args, **_kw: f"trace: warning: {message}\n"

    config_args = {}
    if syscalls:
        config_args["syscalls"] = _names(syscalls)
        check_names(config_args["syscalls"])
    cgroup_ids = _cgroup_filter(containers, cgroup_paths)
    config = ProbeConfig(
        **config_args,
        pids=frozenset(pids),
        comms=_names(comms),
        cgroup_ids=frozenset(cgroup_ids),
        exclude_pids=frozenset({os.getpid()}),
        ring_bytes=ring_size,
        env=with_env,
    )
    options = RecordOptions(
        directory=directory,
        probe_config=config,
        rotation=RotationPolicy(max_bytes=rotate_size, max_seconds=rotate_time, max_events=rotate_events),
        retention=RetentionPolicy(keep_segments=keep_segments, keep_bytes=keep_bytes, keep_age_seconds=keep_age),
        duration=duration,
        count=count,
        with_env=with_env,
        tail=tail,
        status_line=sys.stderr.isatty() if status is None else status,
    )
    summary = Recorder(options).run()
    click.echo(
        f"recorded {summary.events} events in {summary.seconds:.1f}s into {len(summary.segments)} segment(s) in {directory};"
        f" drops: {summary.drops.total} (kernel {sum(summary.drops.kernel.values())}, user {summary.drops.user})",
        err=True,
    )


def _cgroup_filter(containers: tuple[str, ...], cgroup_paths: tuple[str, ...]) -> set[int]:
    """cgroup v2 ids selected by --container / --cgroup (containers started later are not matched)."""
    from capture.containers import CgroupMap
    from capture.errors import RecorderError

    if not containers and not cgroup_paths:
        return set()
    cgroups = CgroupMap()
    if cgroups.mount is None:
        raise RecorderError("--container/--cgroup need the cgroup v2 hierarchy, which is not mounted")
    ids: set[int] = set()
    for container in containers:
        found = cgroups.cgroup_ids_of_container(container)
        if not found:
            raise RecorderError(f"no running container with id {container!r} (its cgroup must exist when recording starts)")
        ids |= found
    for path in cgroup_paths:
        try:
            ids.add(os.stat(cgroups.mount / path.lstrip("/")).st_ino)
        except OSError as exc:
            raise RecorderError(f"no cgroup {path!r} under {cgroups.mount}: {exc.strerror}") from exc
    return ids


@click.command()
@click.argument("capture", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(capture, as_json):
    """Summarize CAPTURE (a capture directory or one segment file)."""
    from capture.info import render_text, summarize

    summary = summarize(capture)
    if as_json:
        import json

        click.echo(json.dumps(summary.to_json(), indent=1))
    else:
        click.echo(render_text(summary))
