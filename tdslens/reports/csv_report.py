"""CSV tables of an analysis (pandas): one row per connection, one row per finding.

Why CSV at all when there is JSON: support engineers filter and pivot in a spreadsheet, and a
30,000-connection capture is a table, not a page. The rows are flattened from the JSON report
document, so the columns mean what the schema (docs/report.schema.json) says.

Cells are written for spreadsheets that evaluate formulas: a capture-derived text starting with
``= + - @`` (or a tab/carriage return) gets a leading apostrophe, so a hostile host name cannot
become a formula (OWASP "CSV injection").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tdslens.analyzer.model import Analysis, PhaseName
from tdslens.reports.json_report import lazy_json
from tdslens.reports.wireshark_profile import frame_filter, stream_filter

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PHASES = [p.value for p in PhaseName]


def connection_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per connection of a report document."""
    return [_connection_row(c) for c in doc["connections"]]


def finding_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "code": f["code"],
            "severity": f["severity"],
            "title": f["title"],
            "detail": f["detail"],
            "remedy": f["remedy"],
            "connections": " ".join(str(s) for s in f["connections"]),
            "frames": " ".join(str(n) for n in f["frames"]),
            "wireshark_streams": stream_filter(f["connections"]),
            "wireshark_frames": frame_filter(f["frames"]),
        }
        for f in doc.get("findings") or []
    ]


FINDING_COLUMNS = [
    "code",
    "severity",
    "title",
    "detail",
    "remedy",
    "connections",
    "frames",
    "wireshark_streams",
    "wireshark_frames",
]


def write_csv(analysis: Analysis | dict[str, Any], directory: str | Path) -> list[Path]:
    """Write connections.csv and findings.csv into ``directory``; returns the paths written.

    Takes an Analysis or an already built report document (``to_json``). From an Analysis the
    document's items are made as the rows are (``lazy_json``): a large capture's whole document
    would take several times the memory of its rows.
    """
    doc = analysis if isinstance(analysis, dict) else lazy_json(analysis)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    conns = pd.DataFrame(connection_rows(doc), columns=CONNECTION_COLUMNS)
    finds = pd.DataFrame(finding_rows(doc), columns=FINDING_COLUMNS)
    out = []
    for frame, name in ((conns, "connections.csv"), (finds, "findings.csv")):
        path = folder / name
        _defuse(frame).convert_dtypes().to_csv(
            path, index=False, encoding="utf-8", lineterminator="\n"
        )
        out.append(path)
    return out


def _defuse(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would read as a formula get a leading apostrophe."""
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v
            )
    return frame


def _icmp_text(errors: list[dict[str, Any]]) -> str | None:
    """The last ICMP error about the connection, in one cell: what, from whom, which frame."""
    if not errors:
        return None
    e = errors[-1]
    return f"{e['family']} {e['description']} from {e['reporter']} (frame {e['frame']})"


def _connection_row(c: dict[str, Any]) -> dict[str, Any]:
    tls = c["tls"] or {}
    login = c["login"] or {}
    resp = c["response"] or {}
    pre = c["tds"]["prelogin"] or {}
    routing = resp.get("routing") or {}
    errors = [m for m in resp.get("messages") or [] if m["kind"] == "error"]
    row: dict[str, Any] = {
        "id": c["id"],
        "tcp_stream": c["tcp_stream"],
        "client_address": c["client"]["address"],
        "client_port": c["client"]["port"],
        "server_address": c["server"]["address"],
        "server_port": c["server"]["port"],
        "role": c["role"],
        "role_source": c["role_source"],
        "server_name": c["server_name"],
        "attempt": c["attempt"],
        "outcome": c["outcome"],
        "reached": c["reached"],
        "protocol": c["protocol"],
        "first_frame": c["first_frame"],
        "last_frame": c["last_frame"],
        "start": c["start"],
        "start_ns": c["start_ns"],
        "end": c["end"],
        "end_ns": c["end_ns"],
        "duration_ms": c["duration_ns"] / 1e6,
        "phases": " ".join(p["name"] for p in c["phases"]),
        "tcp_state": c["tcp"]["state"],
        "tcp_history": c["tcp"]["history"],
        "syn_count": len(c["tcp"]["syn_frames"]),
        "handshake_rtt_ms": (c["tcp"]["handshake_rtt_ns"] or 0) / 1e6
        if c["tcp"]["handshake_rtt_ns"] is not None
        else None,
        "rst_side": c["tcp"]["rst_side"],
        "rst_frame": c["tcp"]["rst_frame"],
        "icmp_errors": len(c["tcp"]["icmp_errors"]),
        "icmp_last": _icmp_text(c["tcp"]["icmp_errors"]),
        "packets": c["tcp"]["packets"],
        "bytes_to_server": c["tcp"]["bytes_to_server"],
        "bytes_to_client": c["tcp"]["bytes_to_client"],
        "retransmissions": c["tcp"]["retransmissions"],
        "gaps": c["tcp"]["gaps"],
        "prelogin_client_encryption": pre.get("client_encryption"),
        "prelogin_server_encryption": pre.get("server_encryption"),
        "prelogin_server_version": pre.get("server_version"),
        "tls_version": tls.get("version"),
        "tls_sni": tls.get("sni"),
        "tls_alert": tls.get("alert"),
        "tls_certificate_subject": tls.get("certificate_subject"),
        "tds_login_version": c["tds"]["login_version"],
        "tds_server_version": c["tds"]["server_version"],
        "server_program": c["tds"]["server_program"],
        "login_username": login.get("username"),
        "login_database": login.get("database"),
        "login_appname": login.get("appname"),
        "login_hostname": login.get("hostname"),
        "login_library": login.get("library"),
        "login_read_only_intent": login.get("read_only_intent"),
        "routing_server": routing.get("server"),
        "routing_port": routing.get("port"),
        "error_number": errors[0]["number"] if errors else None,
        "error_message": errors[0]["message"] if errors else None,
        "requests": c["tds"]["requests"],
        "problems": len(c["problems"]),
    }
    by_name = {p["name"]: p for p in c["phases"]}
    for name in PHASES:
        p = by_name.get(name)
        row[f"{name}_first_frame"] = p["first_frame"] if p else None
        row[f"{name}_at_ms"] = (p["start_ns"] - c["start_ns"]) / 1e6 if p else None
    return row


CONNECTION_COLUMNS = list(
    _connection_row(
        {
            "id": "c0",
            "tcp_stream": 0,
            "client": {"address": "", "port": 0},
            "server": {"address": "", "port": 0},
            "role": "",
            "role_source": "",
            "server_name": None,
            "attempt": None,
            "outcome": "",
            "reached": None,
            "protocol": "",
            "first_frame": 1,
            "last_frame": 1,
            "start": "",
            "start_ns": 0,
            "end": "",
            "end_ns": 0,
            "duration_ns": 0,
            "phases": [],
            "tcp": {
                "state": "",
                "history": "",
                "syn_frames": [],
                "handshake_rtt_ns": None,
                "rst_side": None,
                "rst_frame": None,
                "icmp_errors": [],
                "packets": 0,
                "bytes_to_server": 0,
                "bytes_to_client": 0,
                "retransmissions": 0,
                "gaps": 0,
            },
            "tds": {
                "prelogin": None,
                "login_version": None,
                "server_version": None,
                "server_program": None,
                "requests": 0,
            },
            "tls": None,
            "login": None,
            "response": None,
            "problems": [],
        }
    )
)
