"""The scan's outputs across all captures: ``findings.csv``, ``connections.parquet``,
``scan.json`` and ``index.html`` (docs/scan.md lists every column).

Why tables: an archive of a thousand captures is a dataset. One Parquet file with one row per
TCP connection and one CSV with one row per finding let a user ask "which captures have a
blocked redirect to port 11xxx?" in pandas or DuckDB instead of opening a thousand reports.
The column lists below are the documented API: add columns, don't rename them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# connections.parquet: (column, arrow type). Times are UTC timestamps in nanoseconds.
CONNECTION_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("capture", pa.string()),
    ("report_id", pa.string()),
    ("tcp_stream", pa.int64()),
    ("client_ip", pa.string()),
    ("client_port", pa.int32()),
    ("server_ip", pa.string()),
    ("server_port", pa.int32()),
    ("start", pa.timestamp("ns", tz="UTC")),
    ("end", pa.timestamp("ns", tz="UTC")),
    ("duration_ns", pa.int64()),
    ("protocol", pa.string()),
    ("role", pa.string()),
    ("server_name", pa.string()),
    ("attempt", pa.int64()),
    ("outcome", pa.string()),
    ("reached", pa.string()),
    ("tcp_state", pa.string()),
    ("packets", pa.int64()),
    ("bytes_to_server", pa.int64()),
    ("bytes_to_client", pa.int64()),
    ("retransmissions", pa.int64()),
    ("tls_version", pa.string()),
    ("sni", pa.string()),
    ("tls_alert", pa.string()),
    ("login_tds_version", pa.string()),
    ("login_ack", pa.bool_()),
    ("routing_server", pa.string()),
    ("routing_port", pa.int32()),
    ("error_number", pa.int64()),
    ("error_message", pa.string()),
)
CONNECTION_SCHEMA = pa.schema([pa.field(n, t) for n, t in CONNECTION_COLUMNS])

FINDING_COLUMNS = (
    "capture",
    "report_id",
    "code",
    "severity",
    "title",
    "detail",
    "remedy",
    "connections",
    "frames",
)

INDEX_COLUMNS = (
    "capture",
    "report_id",
    "status",
    "reason",
    "size",
    "first_time",
    "last_time",
    "packets",
    "connections",
    "attempts",
    "attempts_failed",
    "redirects",
    "failed_redirects",
    "verdict",
    "worst_code",
    "worst_severity",
    "worst_title",
)


def connection_rows(doc: dict[str, Any], capture: str, report_id: str) -> list[dict[str, Any]]:
    """One row per connection of one report document (``json_report.to_json``)."""
    rows = []
    for c in doc.get("connections") or []:
        tcp = c.get("tcp") or {}
        tls = c.get("tls") or {}
        resp = c.get("response") or {}
        routing = resp.get("routing") or {}
        errors = [m for m in resp.get("messages") or [] if m.get("kind") == "error"]
        rows.append(
            {
                "capture": capture,
                "report_id": report_id,
                "tcp_stream": c["tcp_stream"],
                "client_ip": c["client"].get("address"),
                "client_port": c["client"].get("port"),
                "server_ip": c["server"].get("address"),
                "server_port": c["server"].get("port"),
                "start": c.get("start_ns"),
                "end": c.get("end_ns"),
                "duration_ns": c.get("duration_ns"),
                "protocol": c.get("protocol"),
                "role": c.get("role"),
                "server_name": c.get("server_name"),
                "attempt": c.get("attempt"),
                "outcome": c.get("outcome"),
                "reached": c.get("reached"),
                "tcp_state": tcp.get("state"),
                "packets": tcp.get("packets"),
                "bytes_to_server": tcp.get("bytes_to_server"),
                "bytes_to_client": tcp.get("bytes_to_client"),
                "retransmissions": tcp.get("retransmissions"),
                "tls_version": tls.get("version"),
                "sni": tls.get("sni"),
                "tls_alert": tls.get("alert"),
                "login_tds_version": (c.get("login") or {}).get("tds_version"),
                "login_ack": resp.get("login_ack") if resp else None,
                "routing_server": routing.get("server"),
                "routing_port": routing.get("port"),
                "error_number": errors[0]["number"] if errors else None,
                "error_message": errors[0]["message"] if errors else None,
            }
        )
    return rows


def write_part(rows: list[dict[str, Any]], path: Path) -> None:
    """One capture's rows as an Arrow IPC file: typed, and ~10x quicker than a Parquet file
    to write and read back at this size (benchmarks/RESULTS.md, "Batch scan")."""
    columns = {name: [r.get(name) for r in rows] for name, _ in CONNECTION_COLUMNS}
    table = pa.Table.from_pydict(columns, schema=CONNECTION_SCHEMA)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, CONNECTION_SCHEMA) as writer:
        writer.write_table(table)


def merge_parts(parts: list[Path], path: Path) -> int:
    """Concatenate the per-capture parts into one Parquet file, part by part (memory: one part)."""
    tmp = path.with_name(path.name + ".tmp")
    rows = 0
    with pq.ParquetWriter(tmp, CONNECTION_SCHEMA) as writer:
        for part in parts:
            with pa.memory_map(str(part)) as source:
                table = pa.ipc.open_file(source).read_all()
            rows += table.num_rows
            if table.num_rows:
                writer.write_table(table)
        if not rows:
            writer.write_table(CONNECTION_SCHEMA.empty_table())
    os.replace(tmp, path)
    return rows


def write_findings_csv(summaries: list[dict[str, Any]], path: Path) -> int:
    rows = [
        {"capture": s["capture"], "report_id": s["report_id"], **f}
        for s in summaries
        for f in s.get("findings") or []
    ]
    frame = pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return len(rows)


def index_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The index table: one row per capture (ok, cached, error) and per skipped file."""
    return [
        {k: r.get(k) for k in (*INDEX_COLUMNS, "failures", "first_ns", "last_ns")} for r in rows
    ]


def write_scan_json(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({**meta, "rows": index_rows(rows)}, indent=1, ensure_ascii=False),
        encoding="utf-8",
    )
    os.replace(tmp, path)
