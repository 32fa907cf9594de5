"""Container ids from cgroup paths, and cgroup id -> path for event batches.

Falco derives `container.id` from the cgroup path: the 64-hex id a runtime
embeds in its scope or directory name, cut to 12 characters, or `host`.
Covered patterns (cgroup v1 and v2, systemd and cgroupfs drivers):

* docker:      /docker/<id>, .../docker-<id>.scope
* containerd:  .../cri-containerd-<id>.scope, /kubepods/.../<id>
* cri-o:       .../crio-<id>.scope
* podman:      .../libpod-<id>.scope, /libpod_parent/libpod-<id>/...
  (`libpod-conmon-<id>.scope` is podman's monitor, a host process, as in Falco)

Docker containers also get `container.name` and `container.image` from
docker's state on disk; other runtimes' names stay null for now.

Events carry the cgroup v2 id, the inode number of the cgroup's directory
under the cgroup2 mount; `CgroupMap` walks that tree to map ids to paths.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

HOST = "host"
CONTAINER_ID_LEN = 12

_ID = r"([0-9a-f]{64})"
_PATTERNS = (
    re.compile(r"(?:^|/)docker-" + _ID + r"\.scope(?:/|$)"),
    re.compile(r"(?:^|/)docker/" + _ID + r"(?:/|$)"),
    re.compile(r"(?:^|/)cri-containerd-" + _ID + r"\.scope(?:/|$)"),
    re.compile(r"(?:^|/)crio-" + _ID + r"\.scope(?:/|$)"),
    re.compile(r"(?:^|/)libpod-" + _ID + r"(?:\.scope)?(?:/|$)"),
    re.compile(r"(?:^|/)kubepods[^ ]*/" + _ID + r"(?:/|$)"),
)


def full_container_id(path: str) -> str | None:
    """The runtime's 64-hex container id named by cgroup `path`, if any."""
    for pattern in _PATTERNS:
        match = pattern.search(path)
        if match:
            return match.group(1)
    return None


def container_id_from_cgroup(path: str) -> str:
    """Falco's container.id for a process in cgroup `path` ('host' when none)."""
    full = full_container_id(path)
    return full[:CONTAINER_ID_LEN] if full else HOST


def docker_name_and_image(full_id: str, docker_root: Path = Path("/var/lib/docker")) -> tuple[str | None, str | None]:
    """container.name and container.image from docker's state on disk (None when not a docker container).

    Reads `containers/<id>/config.v2.json`: `Name` (without docker's leading
    '/') and `Config.Image` (the image as the user named it, like Falco).
    containerd and podman keep theirs elsewhere; those stay unknown (null).
    """
    try:
        config = json.loads((docker_root / "containers" / full_id / "config.v2.json").read_text())
    except (OSError, ValueError):
        return None, None
    name = config.get("Name")
    image = (config.get("Config") or {}).get("Image")
    return (name.lstrip("/") if isinstance(name, str) else None), (image if isinstance(image, str) else None)


def container_id_from_proc_cgroup(text: str) -> str:
    """container.id from the content of /proc/PID/cgroup (any hierarchy may name it)."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        found = container_id_from_cgroup(path)
        if found != HOST:
            return found
    return HOST


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid hosts)."""
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return None


class CgroupMap:
    """cgroup v2 id -> path (relative to the mount, starting with '/'), refreshed on misses.

    A cgroup created during the capture (a new container) is found by
    re-walking the tree, at most once per `refresh_interval` seconds. An id
    whose cgroup is already gone stays unknown: its `container_id` is null.
    """

    def __init__(self, mount: Path | None = None, refresh_interval: float = 1.0):
        self.mount = mount if mount is not None else cgroup2_mount()
        self.refresh_interval = refresh_interval
        self._paths: dict[int, str] = {}
        self._container_of: dict[int, str | None] = {}
        self._last_walk = float("-inf")
        self.refresh()

    def refresh(self) -> None:
        self._last_walk = time.monotonic()
        if self.mount is None:
            return
        paths = {}
        for root, _dirs, _files in os.walk(self.mount):
            try:
                inode = os.stat(root).st_ino
            except OSError:
                continue  # removed while walking
            rel = "/" + os.path.relpath(root, self.mount) if root != str(self.mount) else "/"
            paths[inode] = rel
        self._paths = paths
        self._container_of = {}

    def items(self) -> list[tuple[int, str]]:
        return sorted(self._paths.items())

    def path(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._paths and time.monotonic() - self._last_walk >= self.refresh_interval:
            self.refresh()
        return self._paths.get(cgroup_id)

    def container_id(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._container_of:
            path = self.path(cgroup_id)
            self._container_of[cgroup_id] = None if path is None else container_id_from_cgroup(path)
        return self._container_of[cgroup_id]

    def cgroup_ids_of_container(self, container_id: str) -> set[int]:
        """Ids of the cgroups whose path names `container_id` (a prefix of the full id is enough)."""
        wanted = container_id.lower()
        return {
            cgroup_id
            for cgroup_id, path in self._paths.items()
            if (found := container_id_from_cgroup(path)) != HOST and wanted[:CONTAINER_ID_LEN] == found[: len(wanted)]
        }

    def container_id_column(self, cgroup_ids: pa.Array) -> pa.DictionaryArray:
        """`container_id` for a column of cgroup ids: one lookup per distinct id."""
        encoded = pc.dictionary_encode(cgroup_ids)  # one hash pass: distinct ids and each row's position
        ids = [self.container_id(v) if v is not None else None for v in encoded.dictionary.to_pylist()]
        names = sorted({i for i in ids if i is not None})
        # Unknown cgroups get a null id, never a null dictionary entry (Parquet rejects those).
        position = pa.array([names.index(i) if i is not None else None for i in ids], pa.int32())
        indices = pc.take(position, encoded.indices)
        return pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string()))
