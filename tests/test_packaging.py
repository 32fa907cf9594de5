"""A wheel of the project works where it is installed, away from the source tree.

bpf/, rules/ and reports/ are not Python packages: the wheel carries them as
data files (pyproject.toml) and capture/resources.py finds them under the
installing environment's prefix. The wheel goes into a fresh venv that sees
this venv's third-party packages (duckdb, pyarrow, bcc, ...) through a path
entry, but not the editable install of the source tree, and `trace` runs from
a directory outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from analyzer.hunt_cli import EXIT_ALERTS

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the project's wheel (plus a path to this venv's dependencies)."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # A plain path entry: this venv's .pth files (the editable finder) are not processed through it.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_installed_modules_and_data_come_from_the_install(installed: Path, tmp_path: Path) -> None:
    probe = ("import json, capture, capture.probe as p, analyzer.hunt.plan as h, analyzer.report.render as r;"
             "print(json.dumps([capture.__path__[0], str(p.BPF_DIR), str(h.DEFAULT_RULES_DIR), str(r.TEMPLATES)]))")
    result = run(installed, str(installed / "bin" / "python"), "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    package, bpf, rules, reports = (Path(p) for p in json.loads(result.stdout))
    assert package.is_relative_to(installed), package
    share = installed / "share" / "trace-forensics"
    assert (bpf, rules, reports) == (share / "bpf", share / "rules", share / "reports")
    assert (bpf / "trace.bpf.c").read_bytes() == (REPO / "bpf" / "trace.bpf.c").read_bytes()
    assert (bpf / "trace_event.h").is_file()


def test_installed_trace_hunts_and_reports_with_its_default_rules(installed: Path, tmp_path: Path) -> None:
    capture = shutil.copytree(DEMO, tmp_path / "demo")  # a hunt stores its alerts in the capture dir
    report = tmp_path / "report.html"
    result = run(installed, str(installed / "bin" / "trace"), "hunt", str(capture), "--format", "json",
                 "--report", str(report), cwd=tmp_path)
    assert result.returncode == EXIT_ALERTS, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert alerts, result.stdout
    assert report.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html>")


@pytest.mark.bpf
def test_installed_trace_records(installed: Path, tmp_path: Path) -> None:
    """The BPF C is compiled from the installed copy: a real capture of one second."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path / "cap"
    result = run(installed, str(installed / "bin" / "trace"), "record", "-o", str(out), "--duration", "1",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(out.glob("seg-*.parquet")), sorted(p.name for p in out.iterdir())
