"""Correlation's hard cases, on captures crafted here with scapy (the lab cannot make them).

Each capture is a few TCP sessions built from MS-TDS (tests/tds_bytes.py): a cleartext routing
token for the exact links, and for the encrypted ones a TLS 1.2 handshake inside PRELOGIN
followed by opaque TLS records, which is all tdslens sees of a real Azure login. Timings, client
addresses and ports are what each case varies: encrypted redirects with and without DNS, several
clients at once, a client retrying the worker, a second leg after the gateway leg closed, a
capture filtered to port 1433 or cut before the second leg, IPv6, and NAT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tds_bytes import (
    client_hello,
    client_prelogin,
    done,
    envchange_routing,
    handshake,
    loginack,
    message,
    packet,
    server_hello,
    server_message,
    server_prelogin,
    tls_record,
)

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis, LinkEvidence, RedirectOutcome, Role, Severity

pytest.importorskip("scapy")

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # no ARP/ND lookups
GW = ("10.0.1.10", 1433)
WK = ("10.0.2.20", 11042)
WORKER_NAME = "wk1.tr5.westeurope1-a.worker.database.windows.net"
GATEWAY_NAME = "mysrv.database.windows.net"


# -- crafting ------------------------------------------------------------------------------------


@dataclass
class Session:
    """One TCP connection to craft: who, when, what each side says, how it ends.

    `flights` are (from_client, bytes, seconds after the previous flight); empty bytes is a
    pause. `syn` is "ok",
    "drop" (SYNs at `syn_times`, no answer) or "reset" (RST to the SYN). `close` is "fin",
    "rst" or None (still open when the capture ends).
    """

    client: tuple[str, int]
    server: tuple[str, int]
    start: float
    flights: list[tuple[bool, bytes, float]] = field(default_factory=list)
    syn: str = "ok"
    syn_times: tuple[float, ...] = (0.0, 1.0, 3.0, 7.0)
    close: str | None = "fin"


def _ip(src: str, dst: str):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


def _packets(s: Session) -> list:
    """The session's packets with their capture times (scapy `time`)."""
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether

    (ca, cp), (sa, sp) = s.client, s.server
    up = lambda **kw: Ether(**MACS) / _ip(ca, sa) / TCP(sport=cp, dport=sp, **kw)  # noqa: E731
    down = lambda **kw: Ether(**MACS) / _ip(sa, ca) / TCP(sport=sp, dport=cp, **kw)  # noqa: E731
    out: list = []

    def at(pkt, t: float) -> None:
        pkt.time = t
        out.append(pkt)

    cseq, sseq, t = 1000, 5000, s.start
    if s.syn == "drop":
        for dt in s.syn_times:
            at(up(flags="S", seq=cseq), s.start + dt)
        return out
    at(up(flags="S", seq=cseq), t)
    if s.syn == "reset":
        at(down(flags="RA", seq=0, ack=cseq + 1), t + 0.0005)
        return out
    at(down(flags="SA", seq=sseq, ack=cseq + 1), t + 0.001)
    at(up(flags="A", seq=cseq + 1, ack=sseq + 1), t + 0.002)
    cseq, sseq, t = cseq + 1, sseq + 1, t + 0.002
    for from_client, data, gap in s.flights:
        t += gap
        if not data:
            continue  # a pause: only time passes
        if from_client:
            at(up(flags="PA", seq=cseq, ack=sseq) / data, t)
            cseq += len(data)
        else:
            at(down(flags="PA", seq=sseq, ack=cseq) / data, t)
            sseq += len(data)
    if s.close == "fin":
        at(up(flags="FA", seq=cseq, ack=sseq), t + 0.001)
        at(down(flags="FA", seq=sseq, ack=cseq + 1), t + 0.002)
        at(up(flags="A", seq=cseq + 1, ack=sseq + 1), t + 0.003)
    elif s.close == "rst":
        at(up(flags="R", seq=cseq), t + 0.001)
    return out


def _dns(client: str, name: str, answer: str | None, t: float, resolver: str = "10.0.0.53"):
    """A query and its answer (NXDOMAIN when `answer` is None)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    qtype = "AAAA" if answer and ":" in answer else "A"
    q = Ether(**MACS) / _ip(client, resolver) / UDP(sport=40000, dport=53)
    q /= DNS(id=7, rd=1, qd=DNSQR(qname=name, qtype=qtype))
    a = Ether(**MACS) / _ip(resolver, client) / UDP(sport=53, dport=40000)
    if answer is None:
        a /= DNS(id=7, qr=1, rcode=3, qd=DNSQR(qname=name, qtype=qtype))
    else:
        rr = DNSRR(rrname=name, type=qtype, rdata=answer, ttl=5)
        a /= DNS(id=7, qr=1, qd=DNSQR(qname=name, qtype=qtype), an=rr)
    q.time, a.time = t, t + 0.001
    return [q, a]


def write(tmp_path: Path, *parts: list, name: str = "case.pcap") -> Analysis:
    from scapy.utils import wrpcap

    packets = sorted((p for part in parts for p in part), key=lambda p: float(p.time))
    path = tmp_path / name
    wrpcap(str(path), packets)
    return analyze(path)


# -- TDS conversations -------------------------------------------------------------------------


def _tls_login(sni: str, response: bytes, after: list[tuple[bool, bytes, float]]) -> list:
    """PRELOGIN (encryption on), TLS 1.2 inside PRELOGIN packets, then opaque TLS records."""
    finished = tls_record(20, b"\x01") + tls_record(22, bytes(40))
    return [
        (True, packet(0x12, client_prelogin(0x01)), 0.001),
        (False, packet(0x04, server_prelogin(0x01)), 0.001),
        (True, packet(0x12, tls_record(22, client_hello(sni=sni, tls13=False))), 0.001),
        (False, packet(0x12, tls_record(22, server_hello())), 0.002),
        (True, packet(0x12, tls_record(22, handshake(16, bytes(66))) + finished), 0.001),
        (False, packet(0x12, finished), 0.001),
        (True, tls_record(23, bytes(300)), 0.001),  # LOGIN7, encrypted
        (False, response, 0.005),
        *after,
    ]


def encrypted_gateway(sni: str = GATEWAY_NAME) -> list:
    """An Azure gateway leg: encrypted login, encrypted (routing) answer, client hangs up."""
    return _tls_login(sni, tls_record(23, bytes(180)), [])


def encrypted_session(sni: str) -> list:
    """A leg that logs in and runs two queries (a proxy session, or a worker leg)."""
    data = [
        (True, tls_record(23, bytes(90)), 0.001),
        (False, tls_record(23, bytes(400)), 0.002),
        (True, tls_record(23, bytes(90)), 0.001),
        (False, tls_record(23, bytes(400)), 0.002),
    ]
    return _tls_login(sni, tls_record(23, bytes(250)), data)


def clear_routed_gateway(host: str, port: int) -> list:
    """Encryption off on both sides (only LOGIN7 would be encrypted; here it is clear)."""
    from tds_bytes import login7

    response = loginack() + envchange_routing(host, port) + done()
    return [
        (True, packet(0x12, client_prelogin(0x02)), 0.001),
        (False, packet(0x04, server_prelogin(0x02)), 0.001),
        (True, message(0x10, login7()), 0.001),
        (False, message(0x04, response), 0.005),
    ]


def clear_login_failed(number: int, state: int) -> list:
    from tds_bytes import login7

    response = server_message(0xAA, number, "Login failed.", state=state) + done(status=2)
    return [
        (True, packet(0x12, client_prelogin(0x02)), 0.001),
        (False, packet(0x04, server_prelogin(0x02)), 0.001),
        (True, message(0x10, login7()), 0.001),
        (False, message(0x04, response), 0.005),
    ]


def errors(a: Analysis) -> list[str]:
    return [f.code for f in a.findings if f.severity is Severity.ERROR]


def role(a: Analysis, stream: int) -> Role:
    return next(x.role for x in a.roles if x.stream == stream)


# -- encrypted redirects -----------------------------------------------------------------------


def test_encrypted_redirect_with_dns_is_inferred_and_ok(tmp_path):
    a = write(
        tmp_path,
        _dns("10.0.0.2", GATEWAY_NAME, GW[0], 0.0),
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())),
        _dns("10.0.0.2", WORKER_NAME, WK[0], 0.05),
        _packets(Session(("10.0.0.2", 50001), WK, 0.06, encrypted_session(WORKER_NAME))),
    )
    (red,) = a.redirects
    assert red.evidence is LinkEvidence.INFERRED
    assert red.outcome is RedirectOutcome.CONNECTED
    assert (red.gateway, red.second_legs) == (0, [1])
    assert (red.target_host, red.target_port) == (WORKER_NAME, 11042)
    assert any("DNS gave" in why for why in red.reasons)
    assert [role(a, 0), role(a, 1)] == [Role.GATEWAY, Role.WORKER]
    assert errors(a) == []
    assert a.verdict is not None and a.verdict.result == "ok"


def test_encrypted_redirect_without_dns_or_sni_links_by_port(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway(sni=""))),
        _packets(Session(("10.0.0.2", 50001), WK, 0.06, syn="drop")),
    )
    (red,) = a.redirects
    assert red.evidence is LinkEvidence.INFERRED and red.second_legs == [1]
    assert red.reasons[-1] == "port 11042 is in the Azure redirect ranges"
    assert red.outcome is RedirectOutcome.BLOCKED
    (f,) = [f for f in a.findings if f.code == "REDIRECT_BLOCKED"]
    assert "+0 s, +1 s, +3 s, +7 s" in f.detail  # the SYN retransmissions as observed
    assert len([x for x in f.frames if x > 0]) >= 5  # routing evidence + 4 SYNs
    assert a.attempts[0].verdict.finding == "REDIRECT_BLOCKED"


def test_encrypted_redirect_refused_and_dns_failure(tmp_path):
    refused = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50001), WK, 0.06, syn="reset")),
        name="refused.pcap",
    )
    assert refused.redirects[0].outcome is RedirectOutcome.REFUSED
    assert refused.attempts[0].verdict.finding == "REDIRECT_REFUSED"
    nx = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())),
        _dns("10.0.0.2", WORKER_NAME, None, 0.05),
        name="nx.pcap",
    )
    (red,) = nx.redirects
    assert (red.outcome, red.target_host) == (RedirectOutcome.DNS_FAILED, WORKER_NAME)
    assert nx.attempts[0].verdict.finding == "REDIRECT_DNS_FAILED"


def test_proxy_session_is_not_a_redirect_even_when_a_worker_port_follows(tmp_path):
    """A session that goes on with data is a proxy session; a later SYN elsewhere is not its leg."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_session(GATEWAY_NAME))),
        _packets(Session(("10.0.0.2", 50001), WK, 0.2, syn="drop")),
    )
    assert a.redirects == []
    assert role(a, 0) is Role.PROXY
    assert "REDIRECT_BLOCKED" not in errors(a)
    assert a.attempts[0].verdict.result == "ok"


def test_hidden_login_result_is_not_called_a_failure(tmp_path):
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())))
    assert a.redirects == [] and errors(a) == []
    assert [f.code for f in a.findings] == ["LOGIN_RESULT_HIDDEN", "CAPTURE_INCOMPLETE"]
    assert "filter" in a.findings[1].title  # only port 1433 in the capture
    assert a.attempts[0].verdict.result == "unknown"
    assert a.attempts[0].verdict.finding == "LOGIN_RESULT_HIDDEN"


# -- exact links -------------------------------------------------------------------------------


def test_routing_token_links_exactly_and_checks_dns(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, clear_routed_gateway(WORKER_NAME, 11042))),
        _dns("10.0.0.2", WORKER_NAME, WK[0], 0.05),
        # Another connection to the same port but an address DNS did not give: not a leg.
        _packets(Session(("10.0.0.2", 50002), ("10.9.9.9", 11042), 0.055, syn="drop")),
        _packets(Session(("10.0.0.2", 50001), WK, 0.06, encrypted_session(WORKER_NAME))),
    )
    (red,) = a.redirects
    assert red.evidence is LinkEvidence.ROUTING_TOKEN
    assert red.second_legs == [2] and red.outcome is RedirectOutcome.CONNECTED
    assert red.target_addresses == [WK[0]]
    assert red.frames and "ENVCHANGE" in red.reasons[0]


def test_routing_received_and_not_followed_with_port_1433_filter(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, clear_routed_gateway(WORKER_NAME, 11042))),
        _packets(Session(("10.0.0.2", 50003), ("10.0.1.11", 1433), 5.0, encrypted_gateway())),
    )
    red = a.redirects[0]
    assert red.outcome is RedirectOutcome.NOT_FOLLOWED and red.second_legs == []
    (f,) = [f for f in a.findings if f.code == "REDIRECT_NOT_FOLLOWED"]
    assert "capture filter" in f.detail
    assert a.attempts[0].verdict.finding == "REDIRECT_NOT_FOLLOWED"


def test_capture_cut_right_after_routing_is_incomplete_not_failed(tmp_path):
    a = write(
        tmp_path,
        _packets(
            Session(
                ("10.0.0.2", 50000), GW, 0.01, clear_routed_gateway(WORKER_NAME, 11042), close=None
            )
        ),
    )
    assert a.redirects[0].outcome is RedirectOutcome.UNKNOWN
    assert "REDIRECT_NOT_FOLLOWED" not in errors(a)
    assert a.attempts[0].verdict.result == "unknown"
    assert a.attempts[0].verdict.finding == "CAPTURE_INCOMPLETE"


def test_second_leg_after_the_gateway_leg_closed(tmp_path):
    """The client closes the gateway leg, resolves, and connects two seconds later."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50001), WK, 2.0, encrypted_session(WORKER_NAME))),
    )
    (red,) = a.redirects
    gateway_end = a.connections[0].tcp.last_ts_ns
    assert a.connections[1].tcp.first_ts_ns > gateway_end
    assert red.second_legs == [1] and red.outcome is RedirectOutcome.CONNECTED


# -- several clients, retries, NAT, IPv6 -------------------------------------------------------


def test_several_clients_redirecting_at_once_to_different_workers(tmp_path):
    wk2 = ("10.0.2.21", 11077)
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, encrypted_gateway())),
        _packets(Session(("10.0.0.3", 50000), GW, 0.011, encrypted_gateway())),
        _packets(Session(("10.0.0.3", 50001), wk2, 0.040, syn="drop")),
        _packets(Session(("10.0.0.2", 50001), WK, 0.041, encrypted_session(WORKER_NAME))),
    )
    by_gateway = {r.gateway: r for r in a.redirects}
    c2 = next(c.stream for c in a.connections if c.client == a.connections[0].client)
    c3 = next(c.stream for c in a.connections if c.client.address == "10.0.0.3")
    assert by_gateway[c2].outcome is RedirectOutcome.CONNECTED
    assert by_gateway[c3].outcome is RedirectOutcome.BLOCKED
    assert by_gateway[c3].target_port == 11077
    assert not any(r.ambiguous for r in a.redirects)
    assert sorted(x.verdict.result for x in a.attempts) == ["failed", "ok"]
    assert a.verdict is not None and a.verdict.result == "mixed"


def test_two_gateway_legs_of_one_client_make_the_link_ambiguous(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50001), GW, 0.011, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50002), WK, 0.040, encrypted_session(WORKER_NAME))),
        _packets(Session(("10.0.0.2", 50003), WK, 0.041, encrypted_session(WORKER_NAME))),
    )
    assert len(a.redirects) == 2
    assert any(r.ambiguous and r.candidates for r in a.redirects)
    assert errors(a) == []


def test_client_retrying_the_worker_many_times_is_one_attempt(tmp_path):
    tries = [
        _packets(Session(("10.0.0.2", 50001 + i), WK, 0.05 + i * 0.5, syn="reset"))
        for i in range(12)
    ]
    a = write(
        tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())), *tries
    )
    (red,) = a.redirects
    assert len(red.second_legs) == 12 and red.outcome is RedirectOutcome.REFUSED
    (attempt,) = a.attempts
    assert len(attempt.connections) == 13
    codes = [f.code for f in a.findings]
    assert codes.count("REDIRECT_REFUSED") == 1


def test_whole_attempt_repeated_counts_tries(tmp_path):
    parts = []
    for i in range(3):
        t = i * 2.0
        parts.append(_packets(Session(("10.0.0.2", 50000 + 2 * i), GW, t, encrypted_gateway())))
        parts.append(
            _packets(
                Session(("10.0.0.2", 50001 + 2 * i), WK, t + 0.05, syn="drop", syn_times=(0, 1))
            )
        )
    a = write(tmp_path, *parts)
    assert len(a.redirects) == 3
    (attempt,) = a.attempts
    assert attempt.tries == 3 and attempt.verdict.finding == "REDIRECT_BLOCKED"


def test_ipv6_redirect(tmp_path):
    client, gw, wk = "2001:db8::2", ("2001:db8:1::10", 1433), ("2001:db8:2::20", 11042)
    a = write(
        tmp_path,
        _dns(client, GATEWAY_NAME, gw[0], 0.0, resolver="2001:db8::53"),
        _packets(Session((client, 50000), gw, 0.01, encrypted_gateway())),
        _dns(client, WORKER_NAME, wk[0], 0.05, resolver="2001:db8::53"),
        _packets(Session((client, 50001), wk, 0.06, syn="drop")),
    )
    (red,) = a.redirects
    assert red.target_addresses == [wk[0]]
    assert red.outcome is RedirectOutcome.BLOCKED
    assert a.attempts[0].verdict.finding == "REDIRECT_BLOCKED"


def test_nat_exact_link_across_client_addresses_but_not_inferred(tmp_path):
    """Token seen: a unique connection to the routed port links even from another address
    (and says so). Token hidden: nothing links across addresses, the worker stays alone."""
    exact = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, clear_routed_gateway(WORKER_NAME, 11042))),
        _packets(Session(("192.0.2.7", 61000), WK, 0.06, encrypted_session(WORKER_NAME))),
        name="nat_exact.pcap",
    )
    (red,) = exact.redirects
    assert red.second_legs == [1] and any("NAT" in why for why in red.reasons)
    inferred = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())),
        _packets(Session(("192.0.2.7", 61000), WK, 0.06, encrypted_session(WORKER_NAME))),
        name="nat_inferred.pcap",
    )
    assert inferred.redirects == []
    assert role(inferred, 1) is Role.WORKER  # by port, unlinked
    assert [f.code for f in inferred.findings].count("LOGIN_RESULT_HIDDEN") == 1


# -- single-connection findings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "words"), [(8, "password is wrong"), (1, "error log"), (38, "database")]
)
def test_login_failed_explains_error_and_state(tmp_path, state, words):
    a = write(
        tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, clear_login_failed(18456, state)))
    )
    (f,) = [f for f in a.findings if f.code == "LOGIN_FAILED"]
    assert f"state {state}" in f.title and words in f.detail
    assert a.attempts[0].verdict.finding == "LOGIN_FAILED"


def test_gateway_unreachable_and_refused(tmp_path):
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, syn="drop")), name="s0.pcap")
    assert a.attempts[0].verdict.finding == "GATEWAY_UNREACHABLE"
    b = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, syn="reset")), name="r.pcap")
    assert b.attempts[0].verdict.finding == "CONNECTION_REFUSED"


def _icmp_answers(syns: list, reporter: str, code: int, kind: int | None = None) -> list:
    """An ICMP (or ICMPv6) error from `reporter` to the client for each SYN in `syns`, 1 ms
    later, quoting the SYN's IP packet: what a router or firewall sends instead of passing it.
    `kind` is the ICMP type (default: destination unreachable)."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6TimeExceeded, IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    out = []
    for syn in syns:
        ip = syn.payload
        if isinstance(ip, IPv6):
            error = ICMPv6DestUnreach(code=code) if kind in (None, 1) else ICMPv6TimeExceeded()
            pkt = Ether(**MACS) / IPv6(src=reporter, dst=ip.src) / error / Raw(bytes(ip))
        else:
            error = ICMP(type=3 if kind is None else kind, code=code)
            pkt = Ether(**MACS) / IP(src=reporter, dst=ip.src) / error / Raw(bytes(ip)[:48])
        pkt.time = float(syn.time) + 0.001
        out.append(pkt)
    return out


@pytest.mark.parametrize(
    ("client", "server", "reporter", "code", "words"),
    [
        ("10.0.0.2", GW, "10.0.0.1", 13, "firewall or access list at 10.0.0.1 rejects"),
        ("10.0.0.2", GW, "10.0.0.1", 1, "10.0.0.1 has no route to 10.0.1.10"),
        ("fd00::2", ("fd00:1::10", 1433), "fd00::1", 1, "firewall or access list at fd00::1"),
    ],
)
def test_gateway_syn_answered_by_icmp_names_who_rejected_it(
    tmp_path, client, server, reporter, code, words
):
    syns = _packets(Session((client, 50000), server, 0.0, syn="drop", syn_times=(0.0, 1.0)))
    a = write(tmp_path, syns, _icmp_answers(syns, reporter, code))
    (f,) = [f for f in a.findings if f.code == "GATEWAY_UNREACHABLE"]
    assert f"from {reporter}" in f.title and "SYN(s) answered by ICMP" in f.title
    assert words in f.detail and "(frame 4)" in f.detail  # the last answer: to the second SYN
    assert f.frames == [1, 2, 3, 4]  # both SYNs and both ICMP errors
    assert a.attempts[0].verdict.finding == "GATEWAY_UNREACHABLE"


def test_lone_syn_rejected_at_capture_end_is_a_failure_not_unknown(tmp_path):
    """One SYN right before the capture ends may still be answered, unless ICMP already was."""
    syns = _packets(Session(("10.0.0.2", 50000), GW, 0.0, syn="drop", syn_times=(0.0,)))
    lone = write(tmp_path, syns, name="lone.pcap")
    assert [f.code for f in lone.findings] == ["CAPTURE_INCOMPLETE"]
    a = write(tmp_path, syns, _icmp_answers(syns, "10.0.0.1", 10))
    assert [f.code for f in a.findings] == ["GATEWAY_UNREACHABLE"]


@pytest.mark.parametrize("family", [4, 6])
def test_redirect_rejected_by_icmp_port_unreachable_is_blocked_with_the_icmp_frames(
    tmp_path, family
):
    client, gateway, worker, reporter, resolver = (
        ("10.0.0.2", GW, WK, "10.0.0.1", "10.0.0.53")
        if family == 4
        else ("fd00::2", ("fd00:1::10", 1433), ("fd00:2::20", 11042), "fd00::1", "fd00::53")
    )
    gw = _packets(Session((client, 50000), gateway, 0.01, clear_routed_gateway(WORKER_NAME, 11042)))
    syns = _packets(Session((client, 50001), worker, 0.06, syn="drop", syn_times=(0.0,)))
    a = write(
        tmp_path,
        gw,
        _dns(client, WORKER_NAME, worker[0], 0.05, resolver),
        syns,
        _icmp_answers(syns, reporter, 3 if family == 4 else 4),
    )
    (red,) = a.redirects
    assert red.outcome is RedirectOutcome.BLOCKED  # one SYN at the capture's end: ICMP said no
    (f,) = [f for f in a.findings if f.code == "REDIRECT_BLOCKED"]
    assert f.title.endswith(f"unreachable (port) from {reporter}")
    assert "REJECT rule" in f.detail and "blocks port 11042" in f.detail
    icmp_frame = len(gw) + 2 + 2  # gateway leg, DNS query and answer, the SYN, then ICMP
    assert f.frames[-2:] == [icmp_frame - 1, icmp_frame]


def test_syn_expiring_in_transit_says_it_did_not_arrive(tmp_path):
    syns = _packets(Session(("10.0.0.2", 50000), GW, 0.0, syn="drop", syn_times=(0.0, 1.0)))
    a = write(tmp_path, syns, _icmp_answers(syns, "10.0.0.1", 0, kind=11))
    (f,) = [f for f in a.findings if f.code == "GATEWAY_UNREACHABLE"]
    assert "time exceeded" in f.title and "did not reach 10.0.1.10:1433" in f.detail


def test_unrelated_traffic_gets_no_attempt(tmp_path):
    web = Session(
        ("10.0.0.2", 50000), ("10.0.9.9", 443), 0.0, [(True, b"GET / HTTP/1.1\r\n\r\n", 0.01)]
    )
    a = write(tmp_path, _packets(web))
    assert a.attempts == [] and a.findings == []
    assert a.verdict is not None and a.verdict.result == "empty"


# -- what the capture cannot tell, and the rarer rules -----------------------------------------


def test_private_link_port_is_linked_by_timing_only_and_says_so(tmp_path):
    """A redirect to a port outside the ranges (6188 in a real private-endpoint case), no DNS,
    no SNI: only timing ties the legs, so the link is marked ambiguous and says why."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway(sni=""))),
        _packets(Session(("10.0.0.2", 50001), ("10.0.7.7", 6188), 0.05, syn="drop")),
    )
    (red,) = a.redirects
    assert red.ambiguous and red.reasons[-1].startswith("weak: only timing")
    assert red.outcome is RedirectOutcome.BLOCKED
    assert role(a, 0) is Role.GATEWAY  # unknown target name: an Azure gateway's redirect


def test_timing_never_links_to_web_ports_or_a_later_connection(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway(sni=""))),
        _packets(Session(("10.0.0.2", 50001), ("10.0.7.7", 443), 0.05, syn="drop")),
        _packets(Session(("10.0.0.2", 50002), ("10.0.7.8", 6188), 0.06, syn="drop")),
    )
    assert a.redirects == []  # 443 is not SQL, and 6188 is not the next connection


def test_worker_login_answered_inside_tls_then_closed_is_unknown(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50001), WK, 0.06, encrypted_gateway(sni=WORKER_NAME))),
    )
    (red,) = a.redirects
    assert red.outcome is RedirectOutcome.ANSWERED
    assert errors(a) == []
    assert a.attempts[0].verdict.result == "unknown"
    assert a.attempts[0].verdict.finding == "LOGIN_RESULT_HIDDEN"


def test_tls13_client_quitting_after_the_server_handshake(tmp_path):
    """TLS 1.3 hides the client's alert: a client rejecting the certificate just closes."""
    flights = [
        (True, packet(0x12, client_prelogin(0x01)), 0.001),
        (False, packet(0x04, server_prelogin(0x01)), 0.001),
        (True, packet(0x12, tls_record(22, client_hello(sni=GATEWAY_NAME))), 0.001),
        (
            False,
            packet(
                0x12,
                tls_record(22, server_hello(version=0x0304, cipher=0x1302))
                + tls_record(20, b"\x01")
                + tls_record(23, bytes(900)),
            ),
            0.002,
        ),
        (True, packet(0x12, tls_record(23, bytes(19))), 0.003),
    ]
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, flights)))
    assert a.attempts[0].verdict.finding == "TLS_HANDSHAKE_FAILED"
    (f,) = [f for f in a.findings if f.code == "TLS_HANDSHAKE_FAILED"]
    assert "certificate" in f.detail


def test_capture_cut_during_login_is_unknown(tmp_path):
    flights = encrypted_gateway()[:5]  # stops inside the TLS handshake, connection still open
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, flights, close=None)))
    assert errors(a) == []
    assert a.attempts[0].verdict.result == "unknown"
    assert a.attempts[0].verdict.finding == "CAPTURE_INCOMPLETE"


def test_worker_leg_without_its_gateway_leg(tmp_path):
    a = write(
        tmp_path, _packets(Session(("10.0.0.2", 50001), WK, 0.0, encrypted_session(WORKER_NAME)))
    )
    assert role(a, 0) is Role.WORKER
    assert [f.code for f in a.findings] == ["CAPTURE_INCOMPLETE"]
    assert a.attempts[0].verdict.result == "ok"


def test_one_way_capture_is_not_called_unreachable(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkts = []
    for i, (flags, data) in enumerate(
        [("S", b""), ("A", b""), ("PA", packet(0x12, client_prelogin(1)))]
    ):
        p = (
            Ether(**MACS)
            / IP(src="10.0.0.2", dst=GW[0])
            / TCP(sport=50000, dport=1433, flags=flags)
        )
        p = p / data if data else p
        p.time = 0.01 * i
        pkts.append(p)
    a = write(tmp_path, pkts)
    assert "GATEWAY_UNREACHABLE" not in errors(a)
    assert any(f.code == "CAPTURE_INCOMPLETE" and "one direction" in f.title for f in a.findings)


def test_not_followed_names_where_the_client_went_instead(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.01, clear_routed_gateway(WORKER_NAME, 11042))),
        _dns("10.0.0.2", WORKER_NAME, WK[0], 0.05),
        _packets(Session(("10.0.0.2", 50001), (WK[0], 1433), 0.06, syn="drop")),
    )
    red = a.redirects[0]
    assert red.outcome is RedirectOutcome.NOT_FOLLOWED
    (f,) = [f for f in a.findings if f.code == "REDIRECT_NOT_FOLLOWED"]
    assert f"{WK[0]}:1433 instead" in f.detail


def test_old_tds_client_on_a_proxy_session(tmp_path):
    from tds_bytes import login7

    response = loginack(0x730B0003) + done()
    flights = [
        (True, packet(0x12, client_prelogin(0x02)), 0.001),
        (False, packet(0x04, server_prelogin(0x02)), 0.001),
        (True, message(0x10, login7(tds_version=0x730B0003, server=GATEWAY_NAME)), 0.001),
        (False, message(0x04, response), 0.005),
        (True, message(0x01, "select 1".encode("utf-16-le")), 0.001),
        (False, message(0x04, done()), 0.001),
    ]
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, flights)))
    codes = [f.code for f in a.findings]
    assert "CLIENT_TDS_TOO_OLD" in codes and "PROXY_POLICY_IN_USE" in codes
    assert errors(a) == [] and a.attempts[0].verdict.result == "ok"


def test_slow_login_and_retransmissions_are_warnings_on_a_working_session(tmp_path):
    flights = encrypted_session(GATEWAY_NAME)
    flights[2] = (flights[2][0], flights[2][1], 6.0)  # the TLS handshake waits six seconds
    pkts = _packets(Session(("10.0.0.2", 50000), GW, 0.0, flights))
    data = [p for p in pkts if len(bytes(p.payload.payload.payload)) > 0]
    for i, p in enumerate(data[-4:]):  # four data segments sent twice
        again = p.copy()
        again.time = float(p.time) + 0.0002 + i * 1e-6
        pkts.append(again)
    a = write(tmp_path, pkts)
    codes = [f.code for f in a.findings]
    assert "SLOW_LOGIN" in codes and "TCP_RETRANSMISSIONS" in codes
    (slow,) = [f for f in a.findings if f.code == "SLOW_LOGIN"]
    assert "tls" in slow.detail
    assert errors(a) == [] and a.attempts[0].verdict.result == "ok"


def test_capture_starting_mid_session(tmp_path):
    pkts = _packets(Session(("10.0.0.2", 50000), GW, 0.0, encrypted_session(GATEWAY_NAME)))
    a = write(tmp_path, pkts[12:])  # no handshake, no PRELOGIN, no login
    assert any(f.code == "CAPTURE_INCOMPLETE" for f in a.findings)
    assert errors(a) == []


def _ignoring_driver(sni: str) -> list:
    """Login answered inside TLS, a query at once, no answer; the driver hangs up at 3 s."""
    return _tls_login(sni, tls_record(23, bytes(180)), [(True, tls_record(23, bytes(120)), 0.002)])


def test_driver_ignoring_an_encrypted_redirect(tmp_path):
    a = write(
        tmp_path,
        _packets(
            Session(
                ("10.0.0.2", 50000), GW, 0.0, [*_ignoring_driver(GATEWAY_NAME), (True, b"", 3.0)]
            )
        ),
    )
    (red,) = a.redirects
    assert (red.evidence, red.outcome) == (LinkEvidence.INFERRED, RedirectOutcome.NOT_FOLLOWED)
    assert "never answered" in red.reasons[0]
    assert role(a, 0) is Role.GATEWAY
    assert a.attempts[0].verdict.finding == "REDIRECT_NOT_FOLLOWED"


def test_unanswered_request_off_azure_is_not_called_a_redirect(tmp_path):
    flights = [*_ignoring_driver("sql01.corp.example"), (True, b"", 3.0)]
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), ("10.5.5.5", 1433), 0.0, flights)))
    assert a.redirects == [] and errors(a) == []
    assert role(a, 0) is Role.SERVER


def test_duplicated_frames_are_not_called_retransmissions(tmp_path):
    """A capture on Linux "any" holds every frame twice; that is not packet loss."""
    pkts = _packets(Session(("10.0.0.2", 50000), GW, 0.0, encrypted_session(GATEWAY_NAME)))
    twice = []
    for p in pkts:
        again = p.copy()
        again.time = float(p.time) + 1e-6
        twice += [p, again]
    a = write(tmp_path, twice)
    assert "TCP_RETRANSMISSIONS" not in [f.code for f in a.findings]
    assert a.attempts[0].verdict.result == "ok"


def test_lone_syn_at_the_end_of_the_capture_is_not_unreachable(tmp_path):
    a = write(tmp_path, _packets(Session(("10.0.0.2", 50000), GW, 0.0, syn="drop", syn_times=(0,))))
    assert errors(a) == []
    assert a.attempts[0].verdict.finding == "CAPTURE_INCOMPLETE"


# -- one client, several attempts at once --------------------------------------------------------
#
# A pool opening connections, or an application running several logins in parallel: gateway
# legs of one client wait for their second legs at the same time. The benchmark capture
# (benchmarks/generate.py) holds such clients; these cases are the shapes that went wrong there.

WK2 = ("10.0.2.21", 11077)
WORKER2_NAME = "wk2.tr5.westeurope1-a.worker.database.windows.net"


def by_gateway(a: Analysis) -> dict:
    return {r.gateway: r for r in a.redirects}


def test_concurrent_routing_tokens_to_one_worker_keep_their_order(tmp_path):
    """Two routing tokens name the same worker and two legs go there: nothing on the wire says
    which leg is whose. The earlier routing gets the earlier leg (the second leg's time is its
    lookup when it made one), and both links say they are ambiguous, naming each other."""
    route = clear_routed_gateway(WORKER_NAME, 11042)
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, route)),  # routed at 0.020
        _packets(Session(("10.0.0.2", 50001), GW, 0.013, route)),  # routed at 0.023
        _packets(Session(("10.0.0.2", 50002), WK, 0.030, encrypted_session(WORKER_NAME))),
        _dns("10.0.0.2", WORKER_NAME, WK[0], 0.035),
        _packets(Session(("10.0.0.2", 50003), WK, 0.040, encrypted_session(WORKER_NAME))),
    )
    links = by_gateway(a)
    assert (links[0].second_legs, links[1].second_legs) == ([2], [3])
    assert links[0].ambiguous and links[0].candidates == [1]
    assert links[1].ambiguous and links[1].candidates == [0]
    assert errors(a) == [] and [x.verdict.result for x in a.attempts] == ["ok", "ok"]


def test_concurrent_encrypted_redirects_the_lookup_dates_a_second_leg(tmp_path):
    """The first routed client resolves its worker (the lookup starts right after its
    response) and so connects after the second one, which had its worker's address cached.
    Ordered by when each client set out for its second leg, the links do not cross; both are
    marked ambiguous, since port and SNI alone fit either gateway leg."""
    gw2 = ("10.0.1.11", 1433)
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50001), gw2, 0.018, encrypted_gateway())),
        _dns("10.0.0.2", WORKER_NAME, WK[0], 0.036),
        _packets(Session(("10.0.0.2", 50002), WK2, 0.040, encrypted_session(WORKER2_NAME))),
        _packets(Session(("10.0.0.2", 50003), WK, 0.046, encrypted_session(WORKER_NAME))),
    )
    links = by_gateway(a)
    assert (links[0].second_legs, links[1].second_legs) == ([3], [2])
    assert (links[0].target_host, links[1].target_host) == (WORKER_NAME, WORKER2_NAME)
    assert all(r.ambiguous for r in a.redirects)
    assert (links[0].candidates, links[1].candidates) == ([1], [0])


def test_a_failed_lookup_follows_its_own_gateway_leg(tmp_path):
    """The first gateway leg's worker does not resolve; a later gateway leg's second leg is
    refused. The refused leg must not be pinned on the first gateway leg (whose failure is the
    lookup), and a connection elsewhere right after the second response is not its leg either:
    a redirect port beats timing."""
    bad = "wk9.tr5.westeurope1-a.worker.database.windows.net"
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, encrypted_gateway())),
        _dns("10.0.0.2", bad, None, 0.030),
        _packets(Session(("10.0.0.2", 50001), GW, 0.250, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50002), ("10.0.7.7", 1433), 0.270, syn="drop")),
        _packets(Session(("10.0.0.2", 50003), WK, 0.300, syn="reset")),
    )
    links = by_gateway(a)
    assert (links[0].outcome, links[0].target_host, links[0].second_legs) == (
        RedirectOutcome.DNS_FAILED,
        bad,
        [],
    )
    assert (links[1].outcome, links[1].second_legs) == (RedirectOutcome.REFUSED, [3])
    assert not any(r.ambiguous for r in a.redirects)
    assert 2 not in a.redirects[0].second_legs + a.redirects[1].second_legs


def test_a_nat_link_never_takes_a_leg_its_own_client_explains(tmp_path):
    """Client A's routing token names the worker client B goes to, but B has its own gateway
    leg right before: B's leg is B's (same address), not A's across a NAT."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, clear_routed_gateway(WORKER_NAME, 11042))),
        _packets(Session(("10.0.0.3", 50000), GW, 0.012, encrypted_gateway())),
        _dns("10.0.0.3", WORKER_NAME, WK[0], 0.030),
        _packets(Session(("10.0.0.3", 50001), WK, 0.032, encrypted_session(WORKER_NAME))),
    )
    links = by_gateway(a)
    assert links[1].second_legs == [2] and links[1].outcome is RedirectOutcome.CONNECTED
    assert links[0].second_legs == [] and not any("NAT" in why for why in links[0].reasons)


def test_timing_alone_never_beats_a_redirect_port(tmp_path):
    """Right after the encrypted response the client connects elsewhere (another application,
    say), then to the worker: the worker leg is the second leg; the other connection is not."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.010, encrypted_gateway(sni=""))),
        _packets(Session(("10.0.0.2", 50001), ("10.0.7.7", 6188), 0.030, syn="drop")),
        _packets(Session(("10.0.0.2", 50002), WK, 0.040, encrypted_session(WORKER_NAME))),
    )
    (red,) = a.redirects
    assert red.second_legs == [2] and red.outcome is RedirectOutcome.CONNECTED
    assert not red.ambiguous
    assert "REDIRECT_BLOCKED" not in errors(a) and a.attempts[0].verdict.result == "ok"


def test_tls12_session_with_one_query_is_a_proxy_session_not_a_redirect(tmp_path):
    """Up to TLS 1.2 an alert has its own record type, so two application-data records after
    the login response are a query and its answer, not a TLS 1.3 close_notify pair: the session
    stayed on the gateway, and the client's next connection is not its second leg."""
    one_query = _tls_login(
        GATEWAY_NAME,
        tls_record(23, bytes(250)),
        [(True, tls_record(23, bytes(90)), 0.001), (False, tls_record(23, bytes(400)), 0.002)],
    )
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.0, one_query)),
        _packets(Session(("10.0.0.2", 50001), ("10.0.5.5", 1433), 0.5, syn="drop")),
    )
    assert a.redirects == []
    assert role(a, 0) is Role.PROXY
    assert "PROXY_POLICY_IN_USE" in [f.code for f in a.findings]


# -- retries of a whole login --------------------------------------------------------------------


def _clear_login_failed_to(server: str) -> list:
    from tds_bytes import login7

    response = server_message(0xAA, 18456, "Login failed.", state=8) + done(status=2)
    return [
        (True, packet(0x12, client_prelogin(0x02)), 0.001),
        (False, packet(0x04, server_prelogin(0x02)), 0.001),
        (True, message(0x10, login7(server=server)), 0.001),
        (False, message(0x04, response), 0.005),
    ]


def test_a_login_to_another_server_behind_the_same_gateway_is_a_new_attempt(tmp_path):
    """One Azure gateway address serves many servers: after a failed login to one, a login to
    another server name is a new attempt, not a retry; the same name again is a retry."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.0, _clear_login_failed_to(GATEWAY_NAME))),
        _packets(
            Session(
                ("10.0.0.2", 50001), GW, 2.0, _clear_login_failed_to("other.database.windows.net")
            )
        ),
        _packets(
            Session(
                ("10.0.0.2", 50002), GW, 4.0, _clear_login_failed_to("other.database.windows.net")
            )
        ),
    )
    assert [(x.server_name, list(x.connections), x.tries) for x in a.attempts] == [
        (GATEWAY_NAME, [0], 1),
        ("other.database.windows.net", [1, 2], 2),
    ]


# -- one finding per problem -------------------------------------------------------------------


def _ignoring_cleartext_driver() -> list:
    """A cleartext routing token, then a query on the gateway leg; no answer, the driver waits
    2 s and hangs up (python-tds 1.9 does this, then retries the whole login)."""
    return [
        *clear_routed_gateway(WORKER_NAME, 11042),
        (True, message(0x01, "select 1".encode("utf-16-le")), 0.001),
        (True, b"", 2.0),
    ]


def test_a_driver_ignoring_routing_on_every_try_is_one_finding(tmp_path):
    tries = [
        _packets(Session(("10.0.0.2", 50000 + i), GW, i * 4.0, _ignoring_cleartext_driver()))
        for i in range(3)
    ]
    a = write(tmp_path, *tries)
    (attempt,) = a.attempts
    assert attempt.tries == 3
    (f,) = [f for f in a.findings if f.code == "REDIRECT_NOT_FOLLOWED"]
    assert f.connections == [0, 1, 2]
    assert "3 tries, all ignored the routing token" in f.title
    assert set(f.frames) >= {r.frames[0] for r in a.redirects}
    assert attempt.verdict.finding == "REDIRECT_NOT_FOLLOWED"


def test_whole_login_retries_blocked_each_time_are_one_finding_per_attempt(tmp_path):
    """Two clients, each retrying its login twice into a blocked redirect: one finding per
    client's attempt (never merged across attempts), each listing both of its tries."""
    parts = []
    for client in ("10.0.0.2", "10.0.0.3"):
        for i in range(2):
            t = i * 2.0 + (0.5 if client.endswith("3") else 0.0)
            parts.append(_packets(Session((client, 50000 + 2 * i), GW, t, encrypted_gateway())))
            parts.append(
                _packets(
                    Session((client, 50001 + 2 * i), WK, t + 0.05, syn="drop", syn_times=(0, 1))
                )
            )
    a = write(tmp_path, *parts)
    assert len(a.redirects) == 4 and len(a.attempts) == 2
    blocked = [f for f in a.findings if f.code == "REDIRECT_BLOCKED"]
    assert len(blocked) == 2
    for attempt, f in zip(a.attempts, blocked, strict=True):
        assert f.connections == sorted(attempt.connections)
        assert "4 SYN(s) in 2 tries over 2 logins" in f.title
        assert attempt.verdict.finding == "REDIRECT_BLOCKED"


def test_the_same_login_failure_on_every_try_is_one_finding_a_new_one_is_another(tmp_path):
    def failed(state: int) -> list:
        return clear_login_failed(18456, state)

    a = write(
        tmp_path,
        *[_packets(Session(("10.0.0.2", 50000 + i), GW, i * 1.0, failed(8))) for i in range(3)],
        _packets(Session(("10.0.0.2", 50003), GW, 3.0, failed(38))),
    )
    (attempt,) = a.attempts
    failures = [f for f in a.findings if f.code == "LOGIN_FAILED"]
    assert [(f.title, f.connections) for f in failures] == [
        ("Login failed: error 18456 state 8 (3 tries)", [0, 1, 2]),
        ("Login failed: error 18456 state 38", [3]),
    ]
    assert attempt.verdict.summary.endswith("Login failed: error 18456 state 38")


def test_proxy_sessions_are_one_info_finding_for_the_capture(tmp_path):
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.0, encrypted_session(GATEWAY_NAME))),
        _packets(Session(("10.0.0.3", 50000), GW, 0.1, encrypted_session(GATEWAY_NAME))),
        _packets(
            Session(
                ("10.0.0.2", 50001),
                ("10.0.1.11", 1433),
                0.2,
                encrypted_session("other.database.windows.net"),
            )
        ),
    )
    (f,) = [f for f in a.findings if f.code == "PROXY_POLICY_IN_USE"]
    assert f.severity is Severity.INFO and f.connections == [0, 1, 2]
    assert f.title.startswith("3 Azure SQL sessions")
    assert GATEWAY_NAME in f.detail and "other.database.windows.net" in f.detail
    assert [x.verdict.result for x in a.attempts] == ["ok", "ok", "ok"]


def test_after_a_second_leg_that_logged_in_a_new_connection_there_is_not_its_retry(tmp_path):
    """A readable routing and an encrypted one, at once, to the same worker: the first second
    leg logs in, so the next connection to that worker is no retry of it but the encrypted
    gateway leg's own second leg (whose login was answered after the first leg started)."""
    a = write(
        tmp_path,
        _packets(Session(("10.0.0.2", 50000), GW, 0.000, clear_routed_gateway(WORKER_NAME, 11042))),
        _packets(Session(("10.0.0.2", 50001), GW, 0.005, encrypted_gateway())),
        _packets(Session(("10.0.0.2", 50002), WK, 0.014, encrypted_session(WORKER_NAME))),
        _packets(Session(("10.0.0.2", 50003), WK, 0.160, encrypted_session(WORKER_NAME))),
    )
    links = by_gateway(a)
    assert (links[0].second_legs, links[1].second_legs) == ([2], [3])
    assert links[1].evidence is LinkEvidence.INFERRED
    assert [x.verdict.result for x in a.attempts] == ["ok", "ok"]
