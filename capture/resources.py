"""Where the project's non-Python files live: bpf/, rules/ and reports/.

The design card keeps them at the top of the repository, beside the Python
packages. A source checkout (or the editable install scripts/setup.sh makes)
reads them there. A wheel cannot put top-level directories into
site-packages, so pyproject.toml ships them as data files under
``<prefix>/share/trace-forensics/`` and an installed `trace` reads them from
its own environment's prefix.
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
SHARE_SUBDIR = Path("share") / "trace-forensics"
# Each directory with a file it always holds: a source root is only taken for
# ours if that file is there (site-packages may hold an unrelated `reports`).
DATA_DIRS = {"bpf": "trace.bpf.c", "rules": "trace_rules.yaml", "reports": "report.html.j2"}


def data_dir(name: str) -> Path:
    """The directory `name` (one of DATA_DIRS): the source tree's, else the installed copy."""
    if name not in DATA_DIRS:
        raise ValueError(f"unknown data directory {name!r}")
    for root in (SOURCE_ROOT, Path(sys.prefix) / SHARE_SUBDIR):
        candidate = root / name
        if (candidate / DATA_DIRS[name]).is_file():
            return candidate
    # Neither exists: a broken install. The source path names what is missing.
    return SOURCE_ROOT / name
