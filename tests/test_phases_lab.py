"""Phases on every lab sample, against what the simulated server logged for each connection.

The lab's expected files are written from the simulator's own event log (samples/lab), not from
tdslens: each TCP connection lists the steps the server went through (prelogin, tls, login7,
loginack / routing) and the queries it answered. Whatever the server processed must appear as a
phase on our side, whether decoded in clear or inferred from encrypted traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import ConnectionRecord, PhaseName

STEP_PHASES = {
    "prelogin": PhaseName.PRELOGIN,
    "tls": PhaseName.TLS,
    "login7": PhaseName.LOGIN,
    "loginack": PhaseName.LOGIN_RESPONSE,
    "routing": PhaseName.LOGIN_RESPONSE,
}
EXPECTED_FILES = sorted(SAMPLES.glob("*.json"))


def _record(records: list[ConnectionRecord], conn: dict) -> ConnectionRecord:
    client, server = tuple(conn["client"]), tuple(conn["server"])
    matches = [
        r
        for r in records
        if (r.client.address, r.client.port) == client
        and (r.server.address, r.server.port) == server
    ]
    assert len(matches) == 1, f"connection {client} -> {server}: {len(matches)} matches"
    return matches[0]


def test_the_sample_set_is_there():
    assert len(EXPECTED_FILES) >= 20


@pytest.mark.parametrize("expected_path", EXPECTED_FILES, ids=lambda p: p.stem)
def test_phases_cover_what_the_server_processed(expected_path: Path):
    expected = json.loads(expected_path.read_text())
    analysis = analyze(SAMPLES / expected["capture"])
    for conn in expected["connections"]:
        if conn["transport"] != "tcp":
            continue
        record = _record(analysis.connections, conn)
        names = {p.name for p in record.phases}
        steps = conn.get("steps") or []
        for step in steps:
            assert STEP_PHASES[step] in names, (conn["role"], step, record.phases)
        if conn.get("queries"):
            assert PhaseName.DATA in names, (conn["role"], record.phases)
        if not conn.get("accepted_by_server", True) or (not steps and conn["role"] != "dns"):
            # The server never read a PRELOGIN: nothing of TDS may be claimed beyond the
            # handshake, unless the client sent bytes the server did not process.
            assert PhaseName.LOGIN_RESPONSE not in names, record.phases
        routing = conn.get("routing")
        if routing and conn.get("encryption") in ("none", "login_only"):
            # The routing token travels in clear: it must be decoded exactly.
            assert record.response is not None and record.response.routing is not None
            assert record.response.routing.server == routing["host"]
            assert record.response.routing.port == routing["port"]
            assert PhaseName.REDIRECT in names
