"""The analysis as plain data: the one thing reports see.

The names are the project's shared vocabulary (docs/architecture.md):
a *connection* is one TCP connection (one Wireshark ``tcp.stream``); its *phases* say how far the
TDS conversation got; a *finding* is something wrong (or worth knowing) with the frames that prove
it. Correlation (gateway leg → routing target → second legs) adds *redirects* and *attempts*.
Everything here is built by the analyzer and only read by ``tdslens.reports``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tdslens.analyzer.frames import CaptureInfo, CaptureProblem
from tdslens.analyzer.tcp_events import ConnectionSummary, Endpoint


class PhaseName(StrEnum):
    """The stages of a TDS connection, in the order a healthy one passes them."""

    TCP_HANDSHAKE = "tcp_handshake"
    PRELOGIN = "prelogin"
    TLS = "tls"
    LOGIN = "login"
    LOGIN_RESPONSE = "login_response"
    REDIRECT = "redirect"
    DATA = "data"
    CLOSE = "close"


@dataclass(slots=True)
class Phase:
    """One stage of a connection: where it started and ended (frames and times).

    ``inferred`` marks a phase recognised from the shape of encrypted traffic (which side sent
    the n-th flight after the TLS handshake) rather than from a decoded message.
    """

    name: PhaseName
    first_frame: int
    last_frame: int
    start_ns: int
    end_ns: int
    inferred: bool = False
    frames: int = 1  # how many distinct frames carried this phase


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(slots=True)
class Finding:
    """Something the capture proves. ``code`` values are stable API (docs/findings.md)."""

    code: str
    severity: Severity
    title: str
    detail: str
    remedy: str
    connections: list[int] = field(default_factory=list)  # tcp.stream indices
    frames: list[int] = field(default_factory=list)


@dataclass(slots=True)
class PreloginFacts:
    """What the PRELOGIN exchange negotiated (MS-TDS 2.2.6.5), as seen in clear."""

    client_version: str | None = None  # driver version the client announced
    server_version: str | None = None  # SQL Server version the server announced
    client_encryption: str | None = None  # "off", "on", "not_sup", "req", ...
    server_encryption: str | None = None
    instance: str | None = None
    mars: bool | None = None
    fedauth_required: bool | None = None
    frames: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TlsFacts:
    """The TLS handshake as far as it is visible (TLS ≤ 1.2 shows the certificate)."""

    carried_in_tds: bool = True  # False: TLS straight on TCP (TDS 8.0 / strict)
    client_versions: list[str] = field(default_factory=list)
    version: str | None = None  # negotiated
    cipher_suite: int | None = None
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    certificate_subject: str | None = None
    certificate_issuer: str | None = None
    certificate_san: list[str] = field(default_factory=list)
    certificate_not_after: str | None = None
    alert: str | None = None  # e.g. "fatal handshake_failure from server"
    alert_frame: int | None = None
    handshake_complete: bool = False


@dataclass(slots=True)
class LoginFacts:
    """The LOGIN7 fields worth showing. There is no password field, on purpose."""

    tds_version: str
    packet_size: int
    hostname: str
    username: str
    appname: str
    servername: str
    library: str
    database: str
    read_only_intent: bool
    sspi: bool
    password_present: bool
    features: list[str]
    frame: int


@dataclass(slots=True)
class ServerMessageFacts:
    """An ERROR or INFO token."""

    kind: str  # "error" or "info"
    number: int
    state: int
    severity: int
    message: str
    server: str
    frame: int


@dataclass(slots=True)
class RoutingFacts:
    """ENVCHANGE type 20 (MS-TDS 2.2.7.9): where the server told the client to go."""

    server: str
    port: int
    protocol: int
    frame: int


@dataclass(slots=True)
class LoginResponseFacts:
    """What the server answered to the login, when it was visible."""

    login_ack: bool = False
    tds_version: str | None = None
    program: str | None = None  # "Microsoft SQL Server 16.0.4003"
    routing: RoutingFacts | None = None
    messages: list[ServerMessageFacts] = field(default_factory=list)
    database: str | None = None  # ENVCHANGE database
    packet_size: int | None = None  # ENVCHANGE packet size


@dataclass(slots=True)
class Problem:
    """Something the dissectors could not make sense of, with the frames involved."""

    what: str
    detail: str
    frames: list[int]


@dataclass(slots=True)
class ConnectionRecord:
    """One TCP connection with everything learned about it: the row every report shows.

    ``protocol``: "tds" (TDS 7.x), "tds8" (TLS first, strict), "other" (not TDS), "none" (no
    payload: e.g. a SYN nobody answered).
    """

    stream: int
    client: Endpoint
    server: Endpoint
    tcp: ConnectionSummary
    protocol: str
    phases: list[Phase]
    prelogin: PreloginFacts | None
    tls: TlsFacts | None
    login: LoginFacts | None
    response: LoginResponseFacts | None
    requests: int
    problems: list[Problem]

    def phase(self, name: PhaseName) -> Phase | None:
        return next((p for p in self.phases if p.name is name), None)

    @property
    def reached(self) -> PhaseName | None:
        """The furthest phase before the close: where the conversation stopped."""
        names = [p.name for p in self.phases if p.name is not PhaseName.CLOSE]
        return names[-1] if names else None


@dataclass(slots=True)
class DnsRecord:
    """One DNS message seen on UDP port 53: what was asked and what came back."""

    frame: int
    ts_ns: int
    client: Endpoint  # the resolver's client (query sender / answer receiver)
    server: Endpoint
    response: bool
    id: int
    names: list[str]  # the question names
    rcode: int  # 0 NOERROR, 3 NXDOMAIN, ...
    addresses: list[str]  # A / AAAA values in the answer
    cnames: list[str]  # CNAME targets in the answer

    @property
    def nxdomain(self) -> bool:
        return self.response and self.rcode == 3


@dataclass(slots=True)
class Analysis:
    """Everything one capture showed. Reports render this and nothing else."""

    capture: CaptureInfo
    frames: int
    problems: list[CaptureProblem]
    connections: list[ConnectionRecord]
    dns: list[DnsRecord]
