"""The alerts file `trace hunt` stores and `trace report` reads (docs/contracts.md, section 3).

One zstd Parquet file, mode 0600, written in a temporary file beside the
target and renamed into place on close, so a reader never sees half a hunt.
The Parquet key-value metadata records how the alerts were produced.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.output import Alert, dump_json

ALERTS_VERSION = "1.0"
META_VERSION = b"trace.alerts.version"
META_CAPTURES = b"trace.alerts.captures"
META_RULES = b"trace.alerts.rules"
META_COMMAND = b"trace.alerts.command"
META_RULE_META = b"trace.alerts.rule_meta"

ALERTS_SCHEMA = pa.schema(
    [
        ("time_ns", pa.int64()),
        ("rule", pa.string()),
        ("priority", pa.string()),
        ("source", pa.string()),
        ("hostname", pa.string()),
        ("output", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("output_fields", pa.string()),
        ("evt_num", pa.int64()),
        ("_proc_key", pa.string()),
        ("pid", pa.int64()),
        ("container_id", pa.string()),
        ("_segment", pa.string()),
    ]
)


@dataclass(frozen=True)
class RuleMeta:
    desc: str
    priority: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class AlertsMeta:
    """How a set of alerts was produced."""

    captures: tuple[str, ...]
    rules_files: tuple[str, ...]
    command: str
    rule_meta: Mapping[str, RuleMeta]

    def to_parquet(self) -> dict[bytes, bytes]:
        meta = {name: {"desc": m.desc, "priority": m.priority, "tags": list(m.tags)} for name, m in self.rule_meta.items()}
        return {
            META_VERSION: ALERTS_VERSION.encode(),
            META_CAPTURES: json.dumps(list(self.captures)).encode(),
            META_RULES: json.dumps(list(self.rules_files)).encode(),
            META_COMMAND: self.command.encode(),
            META_RULE_META: json.dumps(meta, sort_keys=True).encode(),
        }


def _row(alert: Alert) -> dict[str, object]:
    return {
        "time_ns": alert.time_ns,
        "rule": alert.rule,
        "priority": alert.priority,
        "source": alert.source,
        "hostname": alert.hostname,
        "output": alert.output,
        "tags": list(alert.tags),
        "output_fields": dump_json(alert.output_fields),
        "evt_num": alert.evt_num,
        "_proc_key": alert.proc_key,
        "pid": alert.pid,
        "container_id": alert.container_id,
        "_segment": alert.segment,
    }


class AlertsWriter:
    """Streams alerts into ``path``; the file appears, complete, on close()."""

    def __init__(self, path: Path, meta: AlertsMeta, batch_rows: int = 8192) -> None:
        self.path = Path(path)
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.fchmod(fd, 0o600)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        schema = ALERTS_SCHEMA.with_metadata(meta.to_parquet())
        self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
        self._schema = schema
        self._pending: list[dict[str, object]] = []
        self._batch_rows = batch_rows
        self.count = 0

    def write(self, alert: Alert) -> None:
        self._pending.append(_row(alert))
        self.count += 1
        if len(self._pending) >= self._batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
            self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AlertsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
