"""Read what `trace hunt` stored (docs/contracts.md section 3) for the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer import alerts as alerts_format
from analyzer.alerts import ALERTS_SCHEMA, AlertsMeta, RuleMeta
from analyzer.errors import TraceError
from analyzer.output import Alert


@dataclass
class AlertsFile:
    """The alerts in time order, and how they were produced."""

    alerts: list[Alert]
    meta: AlertsMeta


def load_alerts(source: str | Path | pa.Table) -> AlertsFile:
    """Alerts from an alerts Parquet path, or an Arrow table of the same shape and metadata."""
    if isinstance(source, pa.Table):
        table, where = source, "alerts table"
    else:
        where = str(source)
        try:
            table = pq.read_table(Path(source))
        except (OSError, pa.ArrowException) as err:
            raise TraceError(f"{where}: not a readable alerts file ({err})") from err
    meta = _meta(table.schema.metadata or {}, where)
    missing = [name for name in ALERTS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise TraceError(f"alerts table lacks column(s) {', '.join(missing)} (docs/contracts.md section 3)")
    alerts = [_alert(row) for row in table.select(ALERTS_SCHEMA.names).to_pylist()]
    alerts.sort(key=lambda a: (a.time_ns, a.evt_num if a.evt_num is not None else -1))
    return AlertsFile(alerts, meta)


def _meta(raw: dict[bytes, bytes], where: str) -> AlertsMeta:
    version = raw.get(alerts_format.META_VERSION, b"").decode("utf-8", "replace")
    if version.split(".", 1)[0] != alerts_format.ALERTS_VERSION.split(".", 1)[0]:
        raise TraceError(f"{where}: alerts file version {version or 'missing'}; "
                         f"this trace reads {alerts_format.ALERTS_VERSION} (is it a file trace hunt wrote?)")
    try:
        rule_meta = json.loads(raw.get(alerts_format.META_RULE_META, b"{}"))
        return AlertsMeta(
            captures=tuple(json.loads(raw.get(alerts_format.META_CAPTURES, b"[]"))),
            rules_files=tuple(json.loads(raw.get(alerts_format.META_RULES, b"[]"))),
            command=raw.get(alerts_format.META_COMMAND, b"").decode("utf-8", "replace"),
            rule_meta={name: RuleMeta(str(m.get("desc", "")), str(m.get("priority", "")), tuple(m.get("tags", ())))
                       for name, m in rule_meta.items()},
        )
    except (ValueError, AttributeError, TypeError) as err:
        raise TraceError(f"{where}: alerts metadata is malformed ({err})") from err


def _alert(row: dict[str, Any]) -> Alert:
    try:
        fields = json.loads(row["output_fields"]) if row["output_fields"] else {}
    except ValueError:
        fields = None
    if not isinstance(fields, dict):  # keep what is there rather than drop evidence
        fields = {"output_fields": row["output_fields"]}
    return Alert(
        time_ns=int(row["time_ns"]),
        rule=row["rule"] or "",
        priority=row["priority"] or "",
        source=row["source"] or "",
        hostname=row["hostname"] or "",
        output=row["output"] or "",
        tags=tuple(row["tags"] or ()),
        output_fields=fields,
        evt_num=row["evt_num"],
        proc_key=row["_proc_key"],
        pid=row["pid"],
        container_id=row["container_id"],
        segment=row["_segment"],
    )
