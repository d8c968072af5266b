"""Correlation and diagnosis against the lab's labelled captures of real drivers.

The expected files (docs/lab.md) come from the simulator's log, the firewall's sets and the
driver's own report, never from tdslens. Checked here, per capture: every connection's role,
the redirect link (gateway leg → second legs, target, evidence) and its outcome, the verdict and
the finding that explains it, and that a session the driver reports as working raises no error.

Each capture is checked twice: as captured (TLS hides Azure's login responses, so most links
are inferred) and decrypted with the lab's TLS key log (every routing token read, so every link is
exact and no login result stays hidden).

Where the wire cannot show what the lab knows, the test says so instead of bending the rules:
a login refused inside TLS is `LOGIN_RESULT_HIDDEN` (unknown) until the capture is decrypted, a
server that hangs up on PRELOGIN is `CLOSED_AFTER_PRELOGIN` whatever its reason, and a listener
that closes before any login cannot be told "proxy" from "gateway".
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLES as COMMITTED

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis, LinkEvidence, RedirectOutcome, Severity
from tdslens.analyzer.roles import logged_in

# TDSLENS_SAMPLES points the tests at another copy of the samples (say, a fresh lab run).
SAMPLES = Path(os.environ.get("TDSLENS_SAMPLES", COMMITTED))
EXPECTED = sorted(SAMPLES.glob("*.json"))

# The lab's failure reason → the finding codes that may explain it on the wire.
REASON_CODES: dict[str | None, set[str]] = {
    "login_failed": {"LOGIN_FAILED", "LOGIN_RESULT_HIDDEN", "REDIRECT_LOGIN_FAILED"},
    "encryption_mismatch": {"ENCRYPTION_MISMATCH"},
    "server_closed_after_prelogin": {"CLOSED_AFTER_PRELOGIN"},
    "routing_target_nxdomain": {"REDIRECT_DNS_FAILED"},
    "second_leg_blocked": {"REDIRECT_BLOCKED"},
    "second_leg_refused": {"REDIRECT_REFUSED"},
    "routing_ignored": {"REDIRECT_NOT_FOLLOWED"},
    "routing_not_followed": {"REDIRECT_NOT_FOLLOWED"},
    "tls_handshake_failed": {
        "TLS_HANDSHAKE_FAILED",
        "TLS_VERSION_REJECTED",
        "STRICT_REQUIRED",
        "CLOSED_AFTER_PRELOGIN",
    },
    "protocol_error": {"REDIRECT_LOGIN_FAILED", "CLOSED_DURING_LOGIN"},
}
OUTCOMES = {
    "second_leg_blocked": RedirectOutcome.BLOCKED,
    "second_leg_refused": RedirectOutcome.REFUSED,
    "routing_target_nxdomain": RedirectOutcome.DNS_FAILED,
    "protocol_error": RedirectOutcome.FAILED,
    None: RedirectOutcome.CONNECTED,
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@cache
def _load(path: Path, keys: bool = False) -> tuple[dict[str, Any], Analysis]:
    """The expected file and tdslens's analysis, with the capture's TLS key log if `keys`."""
    expected = json.loads(path.read_text())
    pcap = path.with_name(expected["capture"])
    if not pcap.exists():
        pytest.skip(f"{pcap.name} is not in samples/pcaps")
    if not keys:
        return expected, analyze(pcap)
    if not expected["keylog"] or not path.with_name(expected["keylog"]).exists():
        pytest.skip("no TLS key log for this capture")
    return expected, analyze(pcap, keylog=path.with_name(expected["keylog"]))


def _tcp(expected: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in expected["connections"] if c["transport"] == "tcp"]


def _stream(a: Analysis, client: list[Any]) -> int:
    return next(
        c.stream
        for c in a.connections
        if c.client.address == client[0] and c.client.port == client[1]
    )


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_roles(path):
    expected, a = _load(path)
    roles = {x.stream: x for x in a.roles}
    for conn in _tcp(expected):
        got = roles[_stream(a, conn["client"])]
        record = next(c for c in a.connections if c.stream == got.stream)
        want = conn["role"]
        if want == "proxy" and not logged_in(record):
            # No successful login: the policy (proxy or redirect) never showed on the wire.
            assert got.role.value in ("proxy", "gateway"), (conn, got)
        elif want == "listener" and not conn["routing"]:
            # A listener that served the login itself is, on the wire, a server.
            assert got.role.value in ("listener", "server"), (conn, got)
        else:
            assert got.role.value == want, (conn, got)
        assert got.attempt is not None and got.reasons


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_redirect_links(path):
    expected, a = _load(path)
    verdict = expected["verdict"]
    routed = [c for c in _tcp(expected) if c["routing"]]
    if not routed:
        assert a.redirects == [], "no routing in the lab, no redirect in tdslens"
        return
    target = verdict["routing_target"]
    by_gateway = {r.gateway: r for r in a.redirects}
    for conn in routed:
        red = by_gateway[_stream(a, conn["client"])]
        assert red.evidence in (LinkEvidence.ROUTING_TOKEN, LinkEvidence.INFERRED)
        assert red.reasons
        if red.evidence is LinkEvidence.INFERRED:
            gateway = next(c for c in a.connections if c.stream == red.gateway)
            assert gateway.response is None or gateway.response.routing is None
        if red.evidence is LinkEvidence.INFERRED and not red.second_legs:
            # Inferred from the gateway leg alone: the target is not on the wire, unless a
            # failed lookup named it.
            assert red.target_host in (None, target["host"])
            continue
        assert red.target_host == target["host"]
        if red.second_legs:
            assert red.target_port == target["port"]
    # Every connection the client made to the target is some redirect's second leg, once.
    ip_port = {
        (c["server"][0], c["server"][1])
        for c in _tcp(expected)
        if c["role"] in ("worker", "replica")
    }
    legs = [s for r in a.redirects for s in r.second_legs]
    want = sorted(_stream(a, c["client"]) for c in _tcp(expected) if tuple(c["server"]) in ip_port)
    assert sorted(legs) == want
    assert len(legs) == len(set(legs))
    outcome = OUTCOMES.get(verdict["reason"])
    if outcome is not None and verdict["followed_redirect"] is not False:
        assert a.redirects[-1].outcome is outcome


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_verdict_and_explaining_finding(path):
    expected, a = _load(path)
    verdict = expected["verdict"]
    assert a.verdict is not None and a.attempts
    last = a.attempts[-1].verdict
    if verdict["result"] == "ok":
        assert last.result == "ok", last
        assert [f for f in a.findings if f.severity is Severity.ERROR] == []
        assert a.verdict.result == "ok"
        return
    assert last.result in ("failed", "unknown"), last
    assert last.finding in REASON_CODES[verdict["reason"]], (verdict["reason"], last)
    if last.finding == "LOGIN_RESULT_HIDDEN":
        # Only when the refusal really was inside TLS.
        assert all(c.response is None or not c.response.messages for c in a.connections)


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_findings_carry_their_evidence(path):
    _, a = _load(path)
    streams = {c.stream for c in a.connections}
    for f in a.findings:
        assert f.title and f.detail and f.remedy, f
        assert set(f.connections) <= streams
        if f.connections:
            assert f.frames, f
        assert min(f.frames, default=1) > 0 and max(f.frames, default=0) <= a.frames
    for attempt in a.attempts:
        codes = {a.findings[i].code for i in attempt.findings}
        if attempt.verdict.finding is not None:
            assert attempt.verdict.finding in codes


@pytest.mark.parametrize("keys", [False, True], ids=["captured", "decrypted"])
@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_one_client_request_is_one_attempt(path, keys):
    """The lab makes one connection request per capture: every TCP connection the driver
    opened for it (gateway legs, second legs, whole-login retries) belongs to that one attempt,
    whose tries count the first-contact legs. python-tds 1.9 retries the whole login five
    times, ignoring a cleartext routing token each time: one attempt, five tries."""
    expected, a = _load(path, keys)
    tcp = _tcp(expected)
    if not tcp:
        return
    (attempt,) = a.attempts
    assert sorted(attempt.connections) == sorted(_stream(a, c["client"]) for c in tcp)
    assert attempt.tries == len([c for c in tcp if c["role"] not in ("worker", "replica")])


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_one_finding_per_problem(path):
    """A problem every try of an attempt met is one finding listing every try (python-tds 1.9
    ignores the routing on all five tries: one REDIRECT_NOT_FOLLOWED over the five gateway
    legs), and the proxy sessions of a capture are one info finding."""
    _, a = _load(path)
    for attempt in a.attempts:
        found = [a.findings[i] for i in attempt.findings]
        codes = [f.code for f in found if f.severity is Severity.ERROR]
        assert len(codes) == len(set(codes)), codes
        for f in found:
            if f.code.startswith("REDIRECT_"):
                assert {r.gateway for r in a.redirects} <= set(f.connections)
    assert [f.code for f in a.findings].count("PROXY_POLICY_IN_USE") <= 1
    for attempt in a.attempts:  # the verdict counts the tries once, not twice
        assert attempt.verdict is None or attempt.verdict.summary.count(" tries") <= 1


def test_blocked_redirect_lists_the_syn_retransmissions():
    path = SAMPLES / "redirect_blocked__tedious.json"
    if not path.exists():
        pytest.skip("redirect_blocked__tedious is not in samples/pcaps")
    _, a = _load(path)
    (f,) = [f for f in a.findings if f.code == "REDIRECT_BLOCKED"]
    worker = next(c for c in a.connections if c.stream == a.redirects[0].second_legs[0])
    assert set(worker.tcp.syn_frames) <= set(f.frames)
    assert f"{len(worker.tcp.syn_frames)} SYN(s)" in f.title
    assert "+0 s" in f.detail


def _as_if_decrypted(expected: dict[str, Any], a: Analysis) -> Analysis:
    """The same capture with the facts a decrypted login response would add, from the lab's
    own record (routing target, 18456), so the exact-link rules run on real drivers' legs."""
    from dataclasses import replace

    from tdslens.analyzer.correlate import correlate
    from tdslens.analyzer.model import (
        LoginResponseFacts,
        PhaseName,
        RoutingFacts,
        ServerMessageFacts,
    )

    conns = []
    for c in a.connections:
        lab = next(
            (x for x in _tcp(expected) if x["client"] == [c.client.address, c.client.port]),
            None,
        )
        p = c.phase(PhaseName.LOGIN_RESPONSE)
        if lab is None or p is None or c.response is not None:
            conns.append(c)
            continue
        if lab["routing"]:
            route = RoutingFacts(lab["routing"]["host"], lab["routing"]["port"], 0, p.last_frame)
            conns.append(replace(c, response=LoginResponseFacts(login_ack=True, routing=route)))
        elif lab["login_result"] == "failed":
            error = ServerMessageFacts("error", 18456, 1, 14, "Login failed", "", p.last_frame)
            conns.append(replace(c, response=LoginResponseFacts(messages=[error])))
        else:
            conns.append(c)
    fresh = Analysis(a.capture, a.frames, a.problems, conns, a.dns)
    return correlate(fresh)


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_exact_links_when_the_login_response_is_readable(path):
    expected, inferred = _load(path)
    a = _as_if_decrypted(expected, inferred)
    verdict = expected["verdict"]
    if verdict["routing_target"] is None and verdict["reason"] != "login_failed":
        return
    for red in a.redirects:
        assert red.evidence is LinkEvidence.ROUTING_TOKEN
        assert red.target_host == verdict["routing_target"]["host"]
    # The same second legs and outcomes as the links found without the added facts.
    if inferred.redirects:
        assert [(r.gateway, r.second_legs, r.outcome) for r in a.redirects] == [
            (r.gateway, r.second_legs, r.outcome) for r in inferred.redirects
        ]
    last = a.attempts[-1].verdict
    if verdict["result"] == "ok":
        assert last.result == "ok"
        assert [f for f in a.findings if f.severity is Severity.ERROR] == []
    else:
        assert last.result == "failed", last
        assert last.finding in REASON_CODES[verdict["reason"]] - {"LOGIN_RESULT_HIDDEN"}


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_with_the_key_log_links_are_exact_and_verdicts_final(path):
    """Decrypted, every routing token is read (evidence routing_token), and no login result
    stays hidden: the verdict names the lab's reason."""
    expected, a = _load(path, keys=True)
    verdict = expected["verdict"]
    routed = {_stream(a, c["client"]) for c in _tcp(expected) if c["routing"]}
    assert {r.gateway for r in a.redirects} == routed
    assert all(r.evidence is LinkEvidence.ROUTING_TOKEN for r in a.redirects)
    last = a.attempts[-1].verdict
    if verdict["result"] == "ok":
        assert last.result == "ok", last
        assert [f for f in a.findings if f.severity is Severity.ERROR] == []
    else:
        assert last.result == "failed", last
        assert last.finding in REASON_CODES[verdict["reason"]] - {"LOGIN_RESULT_HIDDEN"}
