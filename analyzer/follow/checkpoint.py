"""Where a follower got to: the last evt_num whose alerts are all delivered.

`evt_num` is the resume key (docs/contracts.md, section 1): a restarted
follower rebuilds the state from the capture and suppresses alerts at or
below it. The checkpoint also keeps the size of the `-o` file at that point:
lines past it were written after the checkpoint, by a follower that died
before it could record them, and are matched against the replayed alerts so
none is written twice (see sinks.JsonlSink.replayed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.errors import TraceError
from capture.fsutil import write_file_atomically

CHECKPOINT_NAME = ".follow-checkpoint.json"
FORMAT = 1


def default_checkpoint_path(capture_dir: Path) -> Path:
    return Path(capture_dir) / CHECKPOINT_NAME


@dataclass
class Checkpoint:
    path: Path
    capture: str = ""
    last_evt_num: int = 0
    outputs: dict[str, int] = field(default_factory=dict)  # -o file (resolved path) -> its size

    @classmethod
    def load(cls, path: Path, capture_dir: Path) -> Checkpoint:
        path = Path(path)
        capture = str(Path(capture_dir).resolve())
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, capture)
        except (OSError, ValueError) as exc:
            raise TraceError(f"unreadable checkpoint {path}: {exc} (remove it to start over)") from exc
        if raw.get("capture") not in (None, capture):
            raise TraceError(f"checkpoint {path} belongs to capture {raw.get('capture')}, not {capture}")
        try:
            return cls(path, capture, int(raw.get("last_evt_num", 0)), {str(k): int(v) for k, v in raw.get("outputs", {}).items()})
        except (TypeError, ValueError, AttributeError) as exc:
            raise TraceError(f"malformed checkpoint {path}: {exc}") from exc

    def save(self) -> None:
        data = {"format": FORMAT, "capture": self.capture, "last_evt_num": self.last_evt_num, "outputs": self.outputs}
        try:
            write_file_atomically(self.path, (json.dumps(data) + "\n").encode())
        except OSError as exc:
            print(f"trace: warning: cannot write checkpoint {self.path}: {exc}", file=sys.stderr)
