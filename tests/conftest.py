"""Shared test set-up.

Hypothesis is derandomized with a fixed example budget everywhere, so a run
is a pure function of the code: no flaky property tests. Set
HYPOTHESIS_PROFILE=explore to search with fresh randomness locally.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, settings

from analyzer.sql.runtime import install_runtime

settings.register_profile(
    "default",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` at `mountpoint` (root only), for disk-full tests; unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture(scope="module")
def runtime_con() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with the compiled rules' runtime macros installed."""
    connection = duckdb.connect()
    install_runtime(connection)
    yield connection
    connection.close()
