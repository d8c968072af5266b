"""Synthetic Analyses for the report tests: built from the model's dataclasses, no capture needed.

Why synthetic: the renderers must be tested on shapes no lab capture has (30,000 connections,
hostile strings in every text field, findings before the correlation layer produces them).
Other report tests import ``build_analysis`` and ``HOSTILE`` from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tdslens.analyzer.frames import CaptureInfo, CaptureProblem, Interface
from tdslens.analyzer.model import (
    Analysis,
    ConnectionRecord,
    DnsRecord,
    Finding,
    LoginFacts,
    LoginResponseFacts,
    Phase,
    PhaseName,
    PreloginFacts,
    Problem,
    RoutingFacts,
    ServerMessageFacts,
    Severity,
    TlsFacts,
)
from tdslens.analyzer.tcp_events import ConnectionSummary, DirectionStats, Endpoint

T0 = 1_795_428_993_986_780_000  # 2026-11-23, the lab's clock
MS = 1_000_000
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</svg><script>alert(2)</script>",
)

_ANALYSIS_HAS = {f.name for f in dataclasses.fields(Analysis)}


try:  # the correlation's records, once the model has them
    from tdslens.analyzer.model import (  # type: ignore[attr-defined]
        Attempt,
        CaptureVerdict,
        ConnectionRole,
        LinkEvidence,
        Redirect,
        RedirectOutcome,
        Role,
        Verdict,
    )
except ImportError:  # stand-ins with the same public fields

    @dataclass(slots=True)
    class ConnectionRole:  # type: ignore[no-redef]
        stream: int
        role: str
        server_name: str | None
        attempt: int | None
        reasons: list[str] = field(default_factory=list)

    @dataclass(slots=True)
    class Redirect:  # type: ignore[no-redef]
        gateway: int
        evidence: str
        outcome: str
        target_host: str | None
        target_port: int | None
        target_addresses: list[str] = field(default_factory=list)
        second_legs: list[int] = field(default_factory=list)
        dns_frames: list[int] = field(default_factory=list)
        frames: list[int] = field(default_factory=list)
        reasons: list[str] = field(default_factory=list)
        ambiguous: bool = False
        candidates: list[int] = field(default_factory=list)

    @dataclass(slots=True)
    class Verdict:  # type: ignore[no-redef]
        result: str
        finding: str | None
        summary: str

    @dataclass(slots=True)
    class Attempt:  # type: ignore[no-redef]
        index: int
        client: str
        server: Endpoint
        server_name: str | None
        connections: list[int]
        redirects: list[int]
        dns_frames: list[int]
        start_ns: int
        end_ns: int
        tries: int
        verdict: Verdict
        findings: list[int] = field(default_factory=list)

    @dataclass(slots=True)
    class CaptureVerdict:  # type: ignore[no-redef]
        result: str
        attempts_ok: int
        attempts_failed: int
        attempts_unknown: int
        finding: str | None
        summary: str

    class Role:  # type: ignore[no-redef]
        GATEWAY, WORKER = "gateway", "worker"

    class LinkEvidence:  # type: ignore[no-redef]
        ROUTING_TOKEN = "routing_token"

    class RedirectOutcome:  # type: ignore[no-redef]
        BLOCKED = "blocked"


def _analysis_class() -> type:
    """Analysis itself once the model has the correlation's fields; a subclass until then."""
    if {"findings", "attempts", "redirects", "roles", "verdict"} <= _ANALYSIS_HAS:
        return Analysis

    @dataclass(slots=True)
    class AnalysisPlus(Analysis):
        roles: list[Any] = field(default_factory=list)
        redirects: list[Any] = field(default_factory=list)
        attempts: list[Any] = field(default_factory=list)
        findings: list[Finding] = field(default_factory=list)
        verdict: Any = None

    return AnalysisPlus


def _stats(packets: int, nbytes: int, fin: int | None) -> DirectionStats:
    return DirectionStats(
        packets=packets,
        payload_bytes=nbytes,
        wire_payload_bytes=nbytes,
        retransmissions=0,
        keepalives=0,
        conflict_frames=(),
        gaps=0,
        gap_bytes=0,
        buffer_cap_hit=False,
        fin_frame=fin,
        midstream=False,
    )


def gateway_connection(
    stream: int,
    frame: int,
    t: int,
    text: str = "",
    client_ip: str = "10.99.0.2",
    worker: str = "wk1.tr123.eastus1-a.worker.database.windows.net",
) -> ConnectionRecord:
    """A decoded gateway leg that ends in a routing ENVCHANGE (frames frame..frame+15)."""
    client = Endpoint(client_ip, 40000 + stream % 20000)
    server = Endpoint("10.99.1.10", 1433)
    f = frame
    phases = [
        Phase(PhaseName.TCP_HANDSHAKE, f, f + 1, t, t + 20_000, frames=2),
        Phase(PhaseName.PRELOGIN, f + 3, f + 5, t + 1 * MS, t + 2 * MS, frames=2),
        Phase(PhaseName.TLS, f + 6, f + 9, t + 3 * MS, t + 6 * MS, frames=4),
        Phase(PhaseName.LOGIN, f + 10, f + 10, t + 7 * MS, t + 7 * MS),
        Phase(PhaseName.LOGIN_RESPONSE, f + 11, f + 11, t + 8 * MS, t + 8 * MS),
        Phase(PhaseName.REDIRECT, f + 11, f + 11, t + 8 * MS, t + 8 * MS),
        Phase(PhaseName.CLOSE, f + 12, f + 15, t + 9 * MS, t + 9 * MS, frames=3),
    ]
    tcp = ConnectionSummary(
        stream=stream, client=client, server=server, roles_guessed=False, continued=False,
        first_frame=f, last_frame=f + 15, first_ts_ns=t, last_ts_ns=t + 9 * MS,
        syn_frames=(f,), syn_ts_ns=(t,), synack_frame=f + 1, synack_ts_ns=t + 20_000,
        handshake_rtt_ns=20_000, rst_side=None, rst_frame=None, rst_ts_ns=None,
        zero_windows=(), to_server=_stats(8, 745, f + 12), to_client=_stats(7, 1345, f + 13),
        conn_state="SF", history="ShADadFf",
    )  # fmt: skip
    return ConnectionRecord(
        stream=stream,
        client=client,
        server=server,
        tcp=tcp,
        protocol="tds",
        phases=phases,
        prelogin=PreloginFacts(
            "18.6.2.0", "16.0.1000.0", "on", "on", text, False, False, [f + 3, f + 5]
        ),
        tls=TlsFacts(
            client_versions=["TLS 1.2"],
            version="TLS 1.2",
            cipher_suite=49196,
            sni=("mysrv.database.windows.net" + text),
            certificate_subject="CN=x" + text,
            certificate_san=["*.database.windows.net", text],
            handshake_complete=True,
        ),
        login=LoginFacts(
            tds_version="7.4",
            packet_size=4096,
            hostname="clienthost" + text,
            username="appuser" + text,
            appname="tedious" + text,
            servername="mysrv" + text,
            library="Tedious" + text,
            database="salesdb" + text,
            read_only_intent=False,
            sspi=False,
            password_present=True,
            features=["FEDAUTH"],
            frame=f + 10,
        ),
        response=LoginResponseFacts(
            login_ack=True,
            tds_version="7.4",
            program="Microsoft SQL Server 16.0" + text,
            routing=RoutingFacts(worker + text, 11042, 0, f + 11),
            messages=[
                *(
                    [
                        ServerMessageFacts(
                            "error",
                            18456,
                            1,
                            14,
                            "Login failed for user 'appuser" + text + "'.",
                            "gw" + text,
                            f + 11,
                        )
                    ]
                    if text
                    else []
                ),
                ServerMessageFacts(
                    "info", 5701, 2, 0, "Changed database context" + text, "gw" + text, f + 11
                ),
            ],
            database="salesdb" + text,
        ),
        requests=0,
        problems=[Problem("odd" + text, "detail" + text, [f + 2])] if text else [],
    )


def blocked_worker(
    stream: int, frame: int, t: int, text: str = "", client_ip: str = "10.99.0.2"
) -> ConnectionRecord:
    """A second leg to 11042 whose SYNs nobody answers (8 tries over 11 s)."""
    client = Endpoint(client_ip, 45000 + stream % 20000)
    server = Endpoint("10.99.2.20", 11042)
    syns = tuple(range(frame, frame + 8))
    times = tuple(t + i * 1400 * MS for i in range(8))
    tcp = ConnectionSummary(
        stream=stream, client=client, server=server, roles_guessed=False, continued=False,
        first_frame=frame, last_frame=frame + 7, first_ts_ns=t, last_ts_ns=times[-1],
        syn_frames=syns, syn_ts_ns=times, synack_frame=None, synack_ts_ns=None,
        handshake_rtt_ns=None, rst_side=None, rst_frame=None, rst_ts_ns=None, zero_windows=(),
        to_server=_stats(8, 0, None), to_client=_stats(0, 0, None), conn_state="S0", history="S",
    )  # fmt: skip
    return ConnectionRecord(
        stream=stream, client=client, server=server, tcp=tcp, protocol="none",
        phases=[Phase(PhaseName.TCP_HANDSHAKE, frame, frame + 7, t, times[-1], frames=8)],
        prelogin=None, tls=None, login=None, response=None, requests=0, problems=[],
    )  # fmt: skip


def dns_pair(
    frame: int, t: int, name: str, address: str, client_ip: str = "10.99.0.2"
) -> list[DnsRecord]:
    c, s = Endpoint(client_ip, 34316), Endpoint("10.99.0.53", 53)
    return [
        DnsRecord(frame, t, c, s, False, 7, [name], 0, [], []),
        DnsRecord(frame + 1, t + 300_000, c, s, True, 7, [name], 0, [address], ["alias." + name]),
    ]  # fmt: skip


def build_analysis(
    attempts: int = 1, text: str = "", path: str = "synthetic.pcap", findings: bool = True
) -> Analysis:
    """``attempts`` redirect-blocked client attempts (2 connections and 4 DNS messages each).

    ``text`` is appended to every capture-derived string (hostile-input tests).
    """
    conns: list[ConnectionRecord] = []
    dns: list[DnsRecord] = []
    atts: list[Any] = []
    reds: list[Any] = []
    roles: list[Any] = []
    frame = 1
    code = "REDIRECT_SECOND_LEG_BLOCKED"
    for i in range(attempts):
        t = T0 + i * 20 * MS
        ip = f"10.{100 + (i >> 16) % 100}.{(i >> 8) & 255}.{i & 255}"
        worker = f"wk{i}.tr123.eastus1-a.worker.database.windows.net"
        dns += dns_pair(frame, t, "mysrv.database.windows.net" + text, "10.99.1.10", ip)
        gw = gateway_connection(2 * i, frame + 2, t + 1 * MS, text, ip, worker)
        dns += dns_pair(frame + 18, t + 11 * MS, worker + text, "10.99.2.20", ip)
        wk = blocked_worker(2 * i + 1, frame + 20, t + 12 * MS, text, ip)
        conns += [gw, wk]
        roles += [
            ConnectionRole(gw.stream, Role.GATEWAY, "mysrv.database.windows.net" + text, i,
                           ["port 1433", "routing token" + text]),
            ConnectionRole(wk.stream, Role.WORKER, worker + text, i, ["routing target"]),
        ]  # fmt: skip
        reds.append(
            Redirect(gw.stream, LinkEvidence.ROUTING_TOKEN, RedirectOutcome.BLOCKED,
                     worker + text, 11042, ["10.99.2.20"], [wk.stream], [frame + 18, frame + 19],
                     [frame + 13], ["routing token names it" + text])
        )  # fmt: skip
        atts.append(
            Attempt(i, ip, gw.server, "mysrv.database.windows.net" + text, [gw.stream, wk.stream],
                    [i], [frame, frame + 1, frame + 18, frame + 19], t, wk.tcp.last_ts_ns, 1,
                    Verdict("failed", code, "second leg blocked" + text), [0])
        )  # fmt: skip
        frame += 28
    finds = [
        Finding(
            code=code,
            severity=Severity.ERROR,
            title="The redirected connection to the worker was never answered" + text,
            detail=f"The gateway routed the client to {worker}{text}:11042; "
            "8 SYNs got no answer." + text,
            remedy="Allow outbound TCP 11000-11999 to the Azure SQL worker addresses." + text,
            connections=[c.stream for c in conns[:2]],
            frames=[13, 21, 22, 23],
        ),
        Finding(
            code="TLS_SNI" + text,
            severity=Severity.INFO,
            title="SNI" + text,
            detail="d" + text,
            remedy="r" + text,
            connections=[0],
            frames=[9],
        ),
    ]
    cls = _analysis_class()
    return cls(
        capture=CaptureInfo(
            path, "pcap", False, 5094 * attempts, (Interface(0, 1, 262144, "eth0" + text),)
        ),
        frames=frame - 1,
        problems=[CaptureProblem(path, frame, "truncated last record" + text)] if text else [],
        connections=conns,
        dns=dns,
        roles=roles,
        redirects=reds,
        attempts=atts,
        findings=finds if findings else [],
        verdict=CaptureVerdict(
            "failed",
            0,
            attempts,
            0,
            code,
            f"{attempts} attempt(s) failed: second leg blocked" + text,
        ),
    )


def test_builder_makes_consistent_streams() -> None:
    a = build_analysis(attempts=3)
    assert [c.stream for c in a.connections] == list(range(6))
    assert len(a.dns) == 12
    assert a.findings[0].connections == [0, 1]  # type: ignore[attr-defined]
    assert [r.stream for r in a.roles] == list(range(6))  # type: ignore[attr-defined]
