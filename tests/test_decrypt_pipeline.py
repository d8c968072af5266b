"""Decryption wired into the pipeline: the lab samples read with the key logs their drivers wrote.

The lab's expected files come from the simulated server's own log (samples/lab), not from
tdslens, so the LOGIN7 user name, the routing target and the 18456 error found inside TLS are
checked against an independent record. Giving the key log must not change what the capture
says otherwise: the same roles, links and findings, only with better evidence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis, ConnectionRecord, LinkEvidence, PhaseName

EXPECTED = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]
KEYED = [e for e in EXPECTED if e.get("keylog") and (SAMPLES / e["keylog"]).exists()]
ENCRYPTED_LOGIN = ("full", "strict", "login_only")
# Scenarios whose routing token, login or login error hides inside TLS without the key log.
EQUIVALENCE_SCENARIOS = (
    "redirect_",
    "readonly_routing",
    "proxy_",
    "strict_proxy",
    "strict_redirect",
    "login_failed_tls",
)


def _id(e: dict) -> str:
    return Path(e["capture"]).stem


def _keys(e: dict) -> Path:
    return SAMPLES / e["keylog"]


def _record(a: Analysis, conn: dict) -> ConnectionRecord:
    client, server = tuple(conn["client"]), tuple(conn["server"])
    (record,) = [
        r
        for r in a.connections
        if (r.client.address, r.client.port) == client
        and (r.server.address, r.server.port) == server
    ]
    return record


def _tcp(e: dict) -> list[dict]:
    return [c for c in e["connections"] if c["transport"] == "tcp"]


def test_there_are_keyed_samples():
    assert len(KEYED) >= 100
    assert any(e["scenario"] == "login_failed_tls" for e in KEYED)


@pytest.mark.parametrize("e", KEYED, ids=_id)
def test_decrypted_login_and_routing_match_the_server_log(e: dict):
    a = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    for conn in _tcp(e):
        record = _record(a, conn)
        if conn.get("login"):
            assert record.login is not None, conn["role"]
            assert record.login.username == conn["login"]["username"]
            if conn.get("encryption") in ENCRYPTED_LOGIN:
                assert record.login.decrypted
                assert not record.phase(PhaseName.LOGIN).inferred
        routing = conn.get("routing")
        if routing:
            assert record.response is not None and record.response.routing is not None
            assert record.response.routing.server == routing["host"]
            assert record.response.routing.port == routing["port"]
            if conn.get("encryption") in ("full", "strict"):
                assert record.response.routing.decrypted
            (red,) = [r for r in a.redirects if r.gateway == record.stream]
            assert red.evidence is LinkEvidence.ROUTING_TOKEN
            assert (red.target_host, red.target_port) == (routing["host"], routing["port"])
        if conn.get("error_number"):
            numbers = [m.number for m in (record.response.messages if record.response else [])]
            assert conn["error_number"] in numbers


@pytest.mark.parametrize("e", [e for e in KEYED if e["scenario"] == "login_failed_tls"], ids=_id)
def test_login_failure_inside_tls_gives_the_exact_error(e: dict):
    a = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    failed = [c for c in _tcp(e) if c.get("error_number")]
    for conn in failed:
        record = _record(a, conn)
        assert record.response is not None and record.response.decrypted
        (error,) = [m for m in record.response.messages if m.kind == "error"]
        assert (error.number, error.state) == (18456, 1)  # the lab's gateway always says state 1
        assert "Login failed for user" in error.message
    if failed:
        assert "LOGIN_FAILED" in {f.code for f in a.findings}
        assert a.verdict is not None and a.verdict.result == "failed"


def _summary(a: Analysis, upgrade: bool) -> tuple:
    """Roles, links (without their evidence) and finding codes; ``upgrade`` maps the exact login
    error back to its without-keys form, so that everything else must be equal."""
    links = [(r.gateway, r.outcome, tuple(r.second_legs)) for r in a.redirects]
    codes = sorted(f.code for f in a.findings)
    if upgrade:
        codes = sorted("LOGIN_RESULT_HIDDEN" if c == "LOGIN_FAILED" else c for c in codes)
    roles = [(r.stream, r.role) for r in a.roles]
    return roles, links, codes


@pytest.mark.parametrize(
    "e", [e for e in KEYED if e["scenario"].startswith(EQUIVALENCE_SCENARIOS)], ids=_id
)
def test_keys_change_only_the_evidence(e: dict):
    """Without keys every link is inferred; with them it is routing_token, with the same
    gateway, outcome and second legs. The only finding that changes is LOGIN_RESULT_HIDDEN,
    which becomes LOGIN_FAILED when the 18456 inside TLS is readable."""
    plain = analyze(SAMPLES / e["capture"])
    keyed = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    assert _summary(keyed, upgrade=True) == _summary(plain, upgrade=False)
    for before, after in zip(plain.redirects, keyed.redirects, strict=True):
        assert after.evidence is LinkEvidence.ROUTING_TOKEN, (before.evidence, after.reasons)
        if before.target_host is not None:
            assert after.target_host == before.target_host
        if before.target_port is not None:
            assert after.target_port == before.target_port
