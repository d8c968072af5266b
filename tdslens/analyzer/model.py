"""The analysis as plain data: the one thing reports see.

The names are the project's shared vocabulary (docs/architecture.md):
a *connection* is one TCP connection (one Wireshark ``tcp.stream``); its *phases* say how far the
TDS conversation got; a *finding* is something wrong (or worth knowing) with the frames that prove
it. Correlation (gateway leg → routing target → second legs) adds *redirects* and *attempts*.
Everything here is built by the analyzer and only read by ``tdslens.reports``.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, overload

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


_PHASE_NAMES = tuple(PhaseName)
_PHASE_CODES = {name: code for code, name in enumerate(_PHASE_NAMES)}
_INFERRED = 0x80  # high bit of a phase's code byte
_PHASE_ROW = struct.Struct("<5q")  # first_frame, last_frame, start_ns, end_ns, frames
_PHASE_SIZE = 1 + _PHASE_ROW.size


class PhaseList(Sequence[Phase]):
    """A connection's phases packed into one bytes object: one code byte per phase (its name,
    and ``inferred`` in the high bit), then five 64-bit integers per phase.

    Why: every finished connection stays in memory until the reports are written. As a list of
    ``Phase`` objects with four large ints each, ~6 phases took ~1 KB per connection; packed
    they take ~300 bytes. Reading gives ``Phase`` objects made on the spot: equal to the ones
    packed, not the same objects (changing one changes nothing in the record).
    """

    __slots__ = ("_data",)

    def __init__(self, phases: Iterable[Phase] = ()) -> None:
        phases = list(phases)
        codes = bytes(_PHASE_CODES[p.name] | (_INFERRED if p.inferred else 0) for p in phases)
        rows = [
            _PHASE_ROW.pack(p.first_frame, p.last_frame, p.start_ns, p.end_ns, p.frames)
            for p in phases
        ]
        self._data = codes + b"".join(rows)

    def __len__(self) -> int:
        return len(self._data) // _PHASE_SIZE

    def _make(self, i: int, n: int) -> Phase:
        code = self._data[i]
        row = _PHASE_ROW.unpack_from(self._data, n + i * _PHASE_ROW.size)
        return Phase(_PHASE_NAMES[code & ~_INFERRED], *row[:4], bool(code & _INFERRED), row[4])

    @overload
    def __getitem__(self, i: int) -> Phase: ...
    @overload
    def __getitem__(self, i: slice) -> list[Phase]: ...
    def __getitem__(self, i: int | slice) -> Phase | list[Phase]:
        n = len(self)
        if isinstance(i, slice):
            return [self._make(k, n) for k in range(*i.indices(n))]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("phase index out of range")
        return self._make(i, n)

    def __iter__(self) -> Iterator[Phase]:
        n = len(self)
        return (self._make(i, n) for i in range(n))

    @property
    def names(self) -> tuple[PhaseName, ...]:
        """The phases' names in order, without making Phase objects."""
        return tuple(_PHASE_NAMES[c & ~_INFERRED] for c in self._data[: len(self)])

    def find(self, name: PhaseName) -> Phase | None:
        """The phase called `name` (a connection has each at most once), or None."""
        n = len(self)
        code = _PHASE_CODES[name]
        for i, c in enumerate(self._data[:n]):
            if c & ~_INFERRED == code:
                return self._make(i, n)
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PhaseList):
            return self._data == other._data
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, like a list

    def __repr__(self) -> str:
        return f"PhaseList({list(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_phase_list, (self._data,))


def _phase_list(data: bytes) -> PhaseList:
    """Unpickle a PhaseList from its packed bytes."""
    out = PhaseList()
    out._data = data
    return out


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
    frames: list[int] | tuple[int, ...] = field(default_factory=list)  # a tuple once finished
    decrypted: bool = False  # read from decrypted TLS (TDS 8.0 sends PRELOGIN inside TLS)


@dataclass(slots=True)
class TlsFacts:
    """The TLS handshake as far as it is visible (TLS ≤ 1.2 shows the certificate)."""

    carried_in_tds: bool = True  # False: TLS straight on TCP (TDS 8.0 / strict)
    client_versions: list[str] | tuple[str, ...] = field(default_factory=list)
    version: str | None = None  # negotiated
    cipher_suite: int | None = None
    sni: str | None = None
    alpn: list[str] | tuple[str, ...] = field(default_factory=list)
    certificate_subject: str | None = None
    certificate_issuer: str | None = None
    certificate_san: list[str] | tuple[str, ...] = field(default_factory=list)
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
    features: list[str] | tuple[str, ...]
    frame: int
    decrypted: bool = False  # read from decrypted TLS with a key log, not in clear


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
    decrypted: bool = False  # read from decrypted TLS with a key log, not in clear


@dataclass(slots=True)
class LoginResponseFacts:
    """What the server answered to the login, when it was visible."""

    login_ack: bool = False
    tds_version: str | None = None
    program: str | None = None  # "Microsoft SQL Server 16.0.4003"
    routing: RoutingFacts | None = None
    messages: list[ServerMessageFacts] | tuple[ServerMessageFacts, ...] = field(
        default_factory=list
    )  # a tuple once finished
    database: str | None = None  # ENVCHANGE database
    packet_size: int | None = None  # ENVCHANGE packet size
    decrypted: bool = False  # read from decrypted TLS with a key log, not in clear


@dataclass(slots=True)
class Problem:
    """Something the dissectors could not make sense of, with the frames involved."""

    what: str
    detail: str
    frames: list[int]


@dataclass(slots=True)
class UndecryptedFacts:
    """Records of one connection left encrypted for one reason: one entry per reason, not per
    record, so a capture without keys does not flood the report."""

    reason: str  # tdslens.dissectors.tls_decrypt.DecryptFailure value, e.g. "no_key"
    detail: str  # the first record's explanation
    records: int
    frames: list[int]  # the first MAX_UNDECRYPTED_FRAMES frames


MAX_UNDECRYPTED_FRAMES = 32


@dataclass(slots=True)
class DecryptionFacts:
    """What a key log did for one TLS connection: present only when keys were given."""

    keys_found: bool  # the key log held a secret for this session
    version: str | None  # negotiated TLS version, as the decryptor saw it
    cipher_suite: str | None  # None when unsupported or unknown
    records_decrypted: int = 0
    undecrypted: list[UndecryptedFacts] = field(default_factory=list)


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
    phases: Sequence[Phase]  # given as a list; kept as a PhaseList
    prelogin: PreloginFacts | None
    tls: TlsFacts | None
    login: LoginFacts | None
    response: LoginResponseFacts | None
    requests: int
    problems: list[Problem] | tuple[Problem, ...]  # a tuple once the record is built
    decryption: DecryptionFacts | None = None  # None: no key log given, or no TLS

    def __post_init__(self) -> None:
        _keep_small(self)

    def phase(self, name: PhaseName) -> Phase | None:
        if type(self.phases) is PhaseList:
            return self.phases.find(name)
        return next((p for p in self.phases if p.name is name), None)

    @property
    def reached(self) -> PhaseName | None:
        """The furthest phase before the close: where the conversation stopped."""
        if type(self.phases) is PhaseList:
            names = [n for n in self.phases.names if n is not PhaseName.CLOSE]
        else:
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
    names: list[str] | tuple[str, ...]  # the question names
    rcode: int  # 0 NOERROR, 3 NXDOMAIN, ...
    addresses: list[str] | tuple[str, ...]  # A / AAAA values in the answer
    cnames: list[str] | tuple[str, ...]  # CNAME targets in the answer

    def __post_init__(self) -> None:
        """Shared values, as for connections (see `_keep_small`)."""
        self.client = _shared(Endpoint(shared_str(self.client.address), self.client.port))
        self.server = _shared(self.server)
        self.names = shared_strs(self.names)
        self.addresses = shared_strs(self.addresses)
        self.cnames = shared_strs(self.cnames)

    @property
    def nxdomain(self) -> bool:
        return self.response and self.rcode == 3


# -- what a finished connection keeps ----------------------------------------------------------
#
# Every finished connection stays in memory until the reports are written, and big captures hold
# tens of thousands. Built as the dissectors leave it, a record took ~5 KB, mostly Python object
# overhead: a list of ~6 Phase objects with four large ints each, its own copy of the same server
# endpoint, version strings, program name and login messages as every other connection, and
# lists left empty. So a record packs its phases (PhaseList) and, when built, shares equal values
# with the records before it and turns its finished lists into tuples (one empty tuple for all
# empty ones). Nothing a report shows changes (docs/performance.md, "Memory").

_SHARED: dict[Any, Any] = {}  # endpoints, tuples of strings and ints a record already holds
SHARED_MAX = 100_000  # distinct values remembered; beyond, the table starts over


def shared_str(value: Any) -> Any:
    """The interned copy of a string (None and other values as they are)."""
    return sys.intern(value) if type(value) is str else value


def _shared(value: Any) -> Any:
    """An equal object a record built earlier may already hold (endpoints, tuples of strings,
    ints)."""
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= SHARED_MAX:
            _SHARED.clear()
        found = _SHARED[value] = value
    return found


def _int(value: Any) -> Any:
    """An equal int a record built earlier may hold (error numbers, cipher suites, sizes: few
    values, over and over). Only exact ints beyond CPython's small-int cache: no bool can come
    back for an int from the table, nor an int for a bool."""
    if type(value) is not int or -5 <= value <= 256:
        return value
    return _shared(value)


def shared_strs(values: Sequence[str]) -> tuple[str, ...]:
    """A shared tuple of interned strings."""
    return _shared(tuple(shared_str(v) for v in values)) if values else ()


def _keep_small(rec: ConnectionRecord) -> None:
    """Pack, share and freeze what a finished connection keeps (see above)."""
    if type(rec.phases) is not PhaseList:
        rec.phases = PhaseList(rec.phases)
    tcp = rec.tcp
    server = _shared(rec.server)
    if tcp.server == server:
        tcp.server = server
    rec.server = server
    tcp.history = shared_str(tcp.history)
    rec.protocol = shared_str(rec.protocol)
    pre = rec.prelogin
    if pre is not None:
        pre.client_version = shared_str(pre.client_version)
        pre.server_version = shared_str(pre.server_version)
        pre.client_encryption = shared_str(pre.client_encryption)
        pre.server_encryption = shared_str(pre.server_encryption)
        pre.instance = shared_str(pre.instance)
        pre.frames = tuple(pre.frames)
    tls = rec.tls
    if tls is not None:
        tls.client_versions = shared_strs(tls.client_versions)
        tls.version = shared_str(tls.version)
        tls.cipher_suite = _int(tls.cipher_suite)
        tls.sni = shared_str(tls.sni)
        tls.alpn = shared_strs(tls.alpn)
        tls.certificate_subject = shared_str(tls.certificate_subject)
        tls.certificate_issuer = shared_str(tls.certificate_issuer)
        tls.certificate_san = shared_strs(tls.certificate_san)
        tls.certificate_not_after = shared_str(tls.certificate_not_after)
        tls.alert = shared_str(tls.alert)
    login = rec.login
    if login is not None:
        login.tds_version = shared_str(login.tds_version)
        login.packet_size = _int(login.packet_size)
        login.hostname = shared_str(login.hostname)
        login.username = shared_str(login.username)
        login.appname = shared_str(login.appname)
        login.servername = shared_str(login.servername)
        login.library = shared_str(login.library)
        login.database = shared_str(login.database)
        login.features = shared_strs(login.features)
    resp = rec.response
    if resp is not None:
        resp.tds_version = shared_str(resp.tds_version)
        resp.program = shared_str(resp.program)
        resp.database = shared_str(resp.database)
        resp.packet_size = _int(resp.packet_size)
        if resp.routing is not None:
            resp.routing.server = shared_str(resp.routing.server)
            resp.routing.port = _int(resp.routing.port)
        for m in resp.messages:
            m.kind = shared_str(m.kind)
            m.number = _int(m.number)
            m.message = shared_str(m.message)
            m.server = shared_str(m.server)
        resp.messages = tuple(resp.messages) if resp.messages else ()
    for p in rec.problems:
        p.what = shared_str(p.what)
        p.detail = shared_str(p.detail)
    rec.problems = tuple(rec.problems) if rec.problems else ()


@dataclass(slots=True)
class Analysis:
    """Everything one capture showed. Reports render this and nothing else."""

    capture: CaptureInfo
    frames: int
    problems: list[CaptureProblem]
    connections: list[ConnectionRecord]
    dns: list[DnsRecord]
    # Filled by analyzer/correlate.py (defaults keep older constructors working).
    roles: list[ConnectionRole] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    verdict: CaptureVerdict | None = None
    redacted: bool = False  # names and addresses are pseudonyms (reports/redact.py)


# -- correlation: roles, redirects, attempts, verdicts (analyzer/correlate.py) ---------------


class Role(StrEnum):
    """What a connection was for, as far as the capture shows (docs/findings.md).

    The values match the lab's expected files where the ideas are the same.
    """

    GATEWAY = "gateway"  # Azure SQL front door (1433), or any leg whose login was routed
    WORKER = "worker"  # the second leg of an Azure redirect (11000-11999 / 14000-14999)
    PROXY = "proxy"  # an Azure SQL session that stayed on the gateway (Proxy policy)
    LISTENER = "listener"  # an Always On listener that routed the login (read-only routing)
    REPLICA = "replica"  # the secondary a listener routed to
    SERVER = "server"  # a SQL Server reached directly (no Azure or routing hint)
    OTHER = "other"  # not TDS
    UNKNOWN = "unknown"  # no payload and nothing else to go by


class LinkEvidence(StrEnum):
    """How a redirect's second legs were tied to its gateway leg."""

    ROUTING_TOKEN = "routing_token"  # the ENVCHANGE type 20 was readable
    INFERRED = "inferred"  # the token was encrypted: shape, ports, DNS and SNI tie them


class RedirectOutcome(StrEnum):
    """What became of a redirect, judged from its second legs."""

    CONNECTED = "connected"  # a second leg logged in (or carried data)
    BLOCKED = "blocked"  # second-leg SYNs went unanswered
    REFUSED = "refused"  # second-leg SYNs were answered with RST
    DNS_FAILED = "dns_failed"  # the target name did not resolve
    NOT_FOLLOWED = "not_followed"  # routing received, no second leg in the capture
    FAILED = "failed"  # a second leg connected but failed at TLS or login
    ANSWERED = "answered"  # the second leg's login was answered inside TLS, then it closed
    UNKNOWN = "unknown"  # the capture ends before the second leg says anything


@dataclass(slots=True)
class ConnectionRole:
    """The role correlation gave one connection, and why (each reason a short phrase)."""

    stream: int
    role: Role
    server_name: str | None  # SNI, LOGIN7 server name, routing target or DNS name
    attempt: int | None  # index into Analysis.attempts
    reasons: Sequence[str] = ()  # a shared tuple of interned strings (model.shared_strs)


@dataclass(slots=True)
class Redirect:
    """Gateway leg → routing target → second legs.

    ``target_host``/``target_port`` come from the routing token (exact) or, when TLS hides it,
    from what the second legs show (port, SNI, DNS name). ``ambiguous`` says the capture allows
    another pairing; ``candidates`` then lists the other gateway legs that could own the link.
    """

    gateway: int  # tcp.stream of the routed leg
    evidence: LinkEvidence
    outcome: RedirectOutcome
    target_host: str | None
    target_port: int | None
    target_addresses: list[str] = field(default_factory=list)  # DNS answers for target_host
    second_legs: list[int] = field(default_factory=list)  # every try, in time order
    dns_frames: list[int] = field(default_factory=list)  # lookups of the target name
    frames: list[int] = field(default_factory=list)  # routing token, or the response + close
    reasons: list[str] = field(default_factory=list)
    ambiguous: bool = False
    candidates: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    """How one attempt (or the capture) ended, and the finding that explains it first.

    ``result``: "ok", "failed", or "unknown" when the capture cannot tell (encrypted login
    answered and closed with nothing after it, or the capture ends too early).
    """

    result: str
    finding: str | None  # code of the explaining finding (None when ok)
    summary: str


@dataclass(slots=True)
class Attempt:
    """What one client did to reach one server: legs, DNS lookups, second-leg tries, retries."""

    index: int
    client: str  # client address (the first leg's)
    server: Endpoint  # the first leg's server
    server_name: str | None
    # The lists are tuples once correlation is done (correlate.correlate).
    connections: list[int] | tuple[int, ...]  # tcp.stream of every leg and retry, in time order
    redirects: list[int] | tuple[int, ...]  # indices into Analysis.redirects
    dns_frames: list[int] | tuple[int, ...]
    start_ns: int
    end_ns: int
    tries: int  # first contacts (gateway / proxy / server legs) including retries
    verdict: Verdict
    findings: list[int] | tuple[int, ...] = field(default_factory=list)  # Analysis.findings


@dataclass(slots=True)
class CaptureVerdict:
    """The capture in one line: how many attempts succeeded, failed, stayed unknown."""

    result: str  # "ok", "failed", "mixed", "unknown" or "empty"
    attempts_ok: int
    attempts_failed: int
    attempts_unknown: int
    finding: str | None  # the finding of the first failed attempt
    summary: str
