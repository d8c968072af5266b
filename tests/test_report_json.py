"""The JSON report validates against docs/report.schema.json for every capture we have."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from test_report_synthetic import HOSTILE, T0, build_analysis

from tdslens.analyzer.analysis import analyze
from tdslens.reports.json_report import SCHEMA_VERSION, iso, to_json, write_json

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def all_captures() -> list[Path]:
    """Committed samples, the lab's runs and the shared real captures, whichever exist."""
    found: list[Path] = []
    for pattern in ("samples/pcaps/**/*.pcap*", "samples/lab/out/runs/*/*.pcap"):
        found += sorted(REPO.glob(pattern))
    shared = REPO.parent / "shared" / "captures"
    found += sorted(p for p in shared.glob("*.pcap*")) if shared.is_dir() else []
    return found


def _errors(doc: dict) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["schema_version"]["pattern"].startswith("^" + SCHEMA_VERSION[0])


def test_every_capture_validates() -> None:
    captures = all_captures()
    if not captures:
        pytest.skip("no captures in this checkout")
    bad = {}
    for path in captures:
        keys = path.with_suffix(".keys")  # lab captures come with their TLS key log
        for keylog in (None, keys) if keys.exists() else (None,):
            doc = to_json(analyze(path, keylog=keylog))
            json.dumps(doc)  # plain data only
            if errs := _errors(doc):
                bad[f"{path} keylog={keylog is not None}"] = errs[:3]
    assert not bad


def test_synthetic_with_findings_and_correlation_validates(tmp_path: Path) -> None:
    a = build_analysis(attempts=2, text=HOSTILE[0])
    doc = to_json(a)
    assert not _errors(doc)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["findings"][0]["code"] == "REDIRECT_SECOND_LEG_BLOCKED"
    assert doc["findings"][0]["severity"] == "error"
    assert doc["attempts"][0]["connections"] == [0, 1]
    assert doc["attempts"][0]["start_time"] == iso(T0)
    assert doc["redirects"][0]["outcome"] == "blocked"
    assert doc["verdict"]["result"] == "failed"
    assert doc["correlated"] is True
    assert doc["connections"][1]["role"] == "worker"
    assert doc["connections"][1]["role_source"] == "correlation"
    assert doc["connections"][1]["outcome"] == "no_answer"
    assert doc["connections"][0]["outcome"] == "redirected"
    assert doc["summary"]["by_role_outcome"]["worker"] == {"no_answer": 2}
    out = write_json(a, tmp_path / "r.json")
    assert json.loads(out.read_text(encoding="utf-8")) == doc


def test_times_are_iso_utc_and_exact_ns() -> None:
    assert iso(1_795_428_993_986_780_123) == "2026-11-23T10:16:33.986780123Z"
    doc = to_json(build_analysis())
    ph = doc["connections"][0]["phases"][0]
    assert ph["start"] == iso(ph["start_ns"])
    assert doc["capture"]["first_ns"] == T0


def test_no_password_anywhere() -> None:
    doc = to_json(build_analysis(attempts=2))

    def keys(o: object) -> set[str]:
        if isinstance(o, dict):
            return set(o) | set().union(*(keys(v) for v in o.values()))
        if isinstance(o, list):
            return set().union(*(keys(v) for v in o)) if o else set()
        return set()

    assert not {k for k in keys(doc) if "password" in k and k != "password_present"}


def test_uncorrelated_analysis_falls_back_to_port_roles() -> None:
    """An analysis made without the correlation layer still renders, and says so."""
    from tdslens.analyzer.model import Analysis
    from tdslens.reports.html import render_html

    full = build_analysis(attempts=1)
    bare = Analysis(full.capture, full.frames, full.problems, full.connections, full.dns)
    doc = to_json(bare)
    assert not _errors(doc)
    assert doc["correlated"] is False and doc["verdict"] is None
    assert [(c["role"], c["role_source"]) for c in doc["connections"]] == [
        ("gateway", "port"),
        ("worker", "port"),
    ]
    assert "No diagnosis in this analysis" in render_html(bare)


def test_icmp_errors_of_a_connection(tmp_path: Path) -> None:
    """An ICMP error quoting a connection's packet is listed on it (schema 1.2), and redaction
    replaces the address that sent it."""
    pytest.importorskip("scapy.all")
    from icmp_cases import CASES as ICMP_CASES
    from icmp_cases import FIREWALL

    from tdslens.reports.redact import redact

    analysis = analyze(ICMP_CASES["redirect_leg_rejected"](tmp_path / "icmp.pcap"))
    doc = to_json(analysis)
    assert not _errors(doc)
    leg = next(c for c in doc["connections"] if c["tcp_stream"] == 1)
    errors = leg["tcp"]["icmp_errors"]
    assert [e["frame"] for e in errors] == [10, 12, 14]
    assert errors[0] == {
        "frame": 10,
        "time": iso(errors[0]["ts_ns"]),
        "ts_ns": errors[0]["ts_ns"],
        "family": "icmp",
        "type": 3,
        "code": 13,
        "description": "unreachable (admin prohibited)",
        "reporter": FIREWALL,
        "from_client": True,
        "quoted_flags": 2,
    }
    assert all(not c["tcp"]["icmp_errors"] for c in doc["connections"] if c["tcp_stream"] != 1)
    hidden = to_json(redact(analysis))
    assert not _errors(hidden)
    assert FIREWALL not in json.dumps(hidden)
    leg = next(c for c in hidden["connections"] if c["tcp_stream"] == 1)
    assert leg["tcp"]["icmp_errors"][0]["reporter"].startswith("ip-")
