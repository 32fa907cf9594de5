"""The alerts Parquet file (docs/contracts.md section 3): schema, metadata, mode, atomicity."""

from __future__ import annotations

import json
import stat

import pyarrow.parquet as pq
import pytest

from analyzer.alerts import ALERTS_SCHEMA, AlertsMeta, AlertsWriter, RuleMeta
from analyzer.fields.spec import FieldSpec, FieldType
from analyzer.output import build_alert, parse_output

CATALOG = {"fd.name": FieldSpec("fd.name", FieldType.STRING, '"fd.name"'),
           "proc.pid": FieldSpec("proc.pid", FieldType.INT, '"proc.pid"')}
META = AlertsMeta(
    captures=("/cap/a",),
    rules_files=("rules/trace_rules.yaml",),
    command="trace hunt /cap/a",
    rule_meta={"Read shadow": RuleMeta("reads <shadow>", "Warning", ("T1003.008", "filesystem"))},
)


def _alert(i: int):
    return build_alert(
        rule="Read shadow", priority="Warning", source="syscall", tags=["filesystem", "T1003.008"],
        output=parse_output("file=%fd.name pid=%proc.pid", CATALOG),
        values={"fd.name": "/etc/shadow", "proc.pid": None}, ts_ns=1_700_000_000_000_000_000 + i,
        hostname="h1", utc_offset=0, evt_num=i, proc_key="42:1", pid=42, container_id="host", segment="seg-1",
    )


def test_alerts_file_has_contract_columns_metadata_and_mode(tmp_path):
    path = tmp_path / "out" / "alerts.parquet"
    with AlertsWriter(path, META, batch_rows=2) as writer:
        for i in range(5):
            writer.write(_alert(i))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary left behind
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == ALERTS_SCHEMA
    rows = table.to_pylist()
    assert [r["evt_num"] for r in rows] == list(range(5))
    assert json.loads(rows[0]["output_fields"]) == {"evt.time": 1_700_000_000_000_000_000, "fd.name": "/etc/shadow",
                                                    "proc.pid": None}
    assert rows[0]["tags"] == ["T1003.008", "filesystem"]
    meta = table.schema.metadata
    assert meta[b"trace.alerts.version"] == b"1.0"
    assert json.loads(meta[b"trace.alerts.captures"]) == ["/cap/a"]
    assert json.loads(meta[b"trace.alerts.rule_meta"])["Read shadow"]["tags"] == ["T1003.008", "filesystem"]


def test_report_reads_what_hunt_writes(tmp_path):
    from analyzer.report.alerts_input import load_alerts

    path = tmp_path / "alerts.parquet"
    with AlertsWriter(path, META) as writer:
        writer.write(_alert(7))
    loaded = load_alerts(path)
    assert loaded.alerts == [_alert(7)]  # the very Alert that was written
    assert loaded.meta == META


def test_failed_hunt_leaves_no_alerts_file(tmp_path):
    path = tmp_path / "alerts.parquet"
    with pytest.raises(RuntimeError):
        with AlertsWriter(path, META) as writer:
            writer.write(_alert(1))
            raise RuntimeError("scan failed")
    assert list(tmp_path.iterdir()) == []
