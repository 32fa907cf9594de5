"""`trace record` option parsing: sizes and durations; bad values are usage errors (exit 2)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from analyzer.cli import main
from capture.commands import Duration, Size


@pytest.mark.parametrize("text, expected", [("512", 512), ("4k", 4096), ("64M", 64 << 20), ("2G", 2 << 30), ("1.5MiB", 3 << 19), ("10mb", 10 << 20)])
def test_sizes(text, expected):
    assert Size().convert(text, None, None) == expected


@pytest.mark.parametrize("text, expected", [("30", 30.0), ("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("7d", 604800.0), ("0.5", 0.5)])
def test_durations(text, expected):
    assert Duration().convert(text, None, None) == expected


@pytest.mark.parametrize("args", [["--rotate-size", "12 parsecs"], ["--duration", "soon"], ["--count", "0"], []])
def test_bad_values_are_usage_errors(tmp_path, args):
    output = [] if not args else ["-o", str(tmp_path / "cap")]
    result = CliRunner().invoke(main, ["record", *output, *args])
    assert result.exit_code == 2
    assert not (tmp_path / "cap").exists()
