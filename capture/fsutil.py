"""Crash-safe, private file operations shared by the capture writers.

Captures hold command lines and paths, so everything is created 0600 inside
0700 directories whatever the umask, and every finalized file goes through
write-temp, fsync, rename, fsync-dir: after a crash a name either points at
complete contents or does not exist.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from capture.errors import RecorderError



class CaptureStoreError(RecorderError):
    """The capture directory cannot be written: unusable path, disk full."""


FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_private_dir(directory: Path) -> None:
    """Create `directory` (0700) or check that an existing one is writable; tighten its mode."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(directory, DIR_MODE)
    except OSError as exc:
        raise CaptureStoreError(f"cannot use capture directory {directory}: {exc.strerror or exc}") from exc
    if not directory.is_dir():
        raise CaptureStoreError(f"cannot use capture directory {directory}: not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CaptureStoreError(f"cannot use capture directory {directory}: not writable")


def create_private_file(path: Path) -> int:
    """A new 0600 file opened for writing (O_EXCL: a leftover temp is removed first)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Atomically give the fsynced file `tmp` its final name, durably."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_file_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = create_private_file(tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    publish(tmp, path)


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when pyarrow wrapped the OS error in its own exception."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


LOCK_NAME = ".lock"


def lock_capture_dir(directory: Path):
    """Hold an exclusive lock on `directory` while the returned file stays open.

    Two recorders in one directory would delete each other's temporaries and
    tail; the kernel drops the lock when its holder dies, so a crash never
    leaves the directory locked.
    """
    lock = open(os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE), "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read().strip() or "another process"
        lock.close()
        raise CaptureStoreError(f"capture directory {directory} is in use by another trace record (pid {holder})") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
