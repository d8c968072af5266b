"""Names, ports and shapes: the facts correlation uses to say what a connection was for.

Why a module of its own: the same small questions ("is this name an Azure SQL worker?", "did
this leg stop right after its login response?", "which name did the client use for this
address?") are asked by the link rules, the role rules and the findings. Answering them in one
place keeps the thresholds in one table and the rules short.

Nothing here decides a link or a finding; it only describes one connection or one DNS answer.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from tdslens.analyzer.model import ConnectionRecord, DnsRecord, PhaseName
from tdslens.analyzer.tcp_events import IcmpError

SQL_PORT = 1433
# Azure SQL Redirect policy ports. Older documents also name 14000-14999; both count.
REDIRECT_PORT_RANGES = ((11000, 11999), (14000, 14999))
# Public DNS suffixes of Azure SQL (public cloud, sovereign clouds, Synapse, Fabric).
AZURE_SQL_SUFFIXES = (
    ".database.windows.net",
    ".database.chinacloudapi.cn",
    ".database.usgovcloudapi.net",
    ".database.cloudapi.de",
    ".sql.azuresynapse.net",
    ".database.fabric.microsoft.com",
    ".datawarehouse.fabric.microsoft.com",
)
WORKER_LABEL = ".worker."  # <guid>.tr1234.<region>-a.worker.database.windows.net

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Timing:
    """Time windows, in seconds, that decide what belongs together. Named so they are tunable
    in one place and quoted in docs/findings.md."""

    quick_close_s: float = 5.0  # a routed leg closes this soon after its login response
    follow_window_s: float = 15.0  # the first second-leg SYN comes this soon after routing
    retry_gap_s: float = 30.0  # a new try this soon after the previous one is a retry
    dns_before_s: float = 15.0  # a DNS answer this recent names the address connected to
    slow_login_s: float = 5.0  # SYN → end of login response slower than this is slow
    slow_phase_s: float = 2.0  # one phase slower than this is named in SLOW_LOGIN
    capture_tail_s: float = 1.0  # the capture ending this soon after a routing may hide legs
    next_connection_s: float = 2.0  # a timing-only link: the next connection this soon
    syn_retry_s: float = 3.0  # a lone SYN this close to the capture's end may yet be answered
    prompt_request_s: float = 1.0  # a driver sends its first request this soon after login
    gave_up_s: float = 1.0  # unanswered this long, the request was waited for in vain
    link_horizon_s: float = 300.0  # no second leg (or retry of one) comes later than this


TIMING = Timing()


def in_redirect_range(port: int) -> bool:
    return any(lo <= port <= hi for lo, hi in REDIRECT_PORT_RANGES)


def clean_host(name: str | None) -> str | None:
    """A host name as drivers write it, without 'tcp:', ',port', '\\instance' or a final dot."""
    if not name:
        return None
    host = name.strip()
    if host.lower().startswith("tcp:"):
        host = host[4:]
    host = host.split(",")[0].split("\\")[0].rstrip(".").lower()
    return host or None


def is_azure_name(name: str | None) -> bool:
    host = clean_host(name)
    return bool(host) and any(host.endswith(s) for s in AZURE_SQL_SUFFIXES)


def is_worker_name(name: str | None) -> bool:
    host = clean_host(name)
    return bool(host) and WORKER_LABEL in f".{host}" and is_azure_name(host)


# -- DNS ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One DNS response as correlation needs it: who asked, what name, what came back."""

    frame: int
    ts_ns: int
    client: str  # the asking host's address
    name: str  # the question name, cleaned
    rcode: int
    addresses: tuple[str, ...]


def dns_answers(records: Iterable[DnsRecord]) -> list[DnsAnswer]:
    """Responses only, in time order (queries without answers say nothing about addresses)."""
    out = [
        DnsAnswer(
            r.frame, r.ts_ns, r.client.address, clean_host(n) or n, r.rcode, tuple(r.addresses)
        )
        for r in records
        if r.response
        for n in r.names[:1]
    ]
    return sorted(out, key=lambda a: (a.ts_ns, a.frame))


def dns_queries(records: Iterable[DnsRecord]) -> list[DnsAnswer]:
    """Queries (no answer yet), in time order: a lookup shows the client learned a name."""
    out = [
        DnsAnswer(r.frame, r.ts_ns, r.client.address, clean_host(n) or n, -1, ())
        for r in records
        if not r.response
        for n in r.names[:1]
    ]
    return sorted(out, key=lambda a: (a.ts_ns, a.frame))


class DnsIndex:
    """The capture's DNS, indexed by asking host, so each question is a look-up and a bisect
    (captures hold thousands of lookups and connections)."""

    def __init__(self, records: Iterable[DnsRecord]) -> None:
        records = list(records)
        self.answers = dns_answers(records)
        self.queries = dns_queries(records)
        self._by_address: dict[tuple[str, str], list[DnsAnswer]] = defaultdict(list)
        self._by_name: dict[tuple[str, str], list[DnsAnswer]] = defaultdict(list)
        self._by_client: dict[str, list[DnsAnswer]] = defaultdict(list)
        for a in self.answers:
            self._by_client[a.client].append(a)
            for address in a.addresses:
                self._by_address[(a.client, address)].append(a)
        for a in sorted(self.answers + self.queries, key=lambda a: (a.ts_ns, a.frame)):
            self._by_name[(a.client, a.name)].append(a)

    def name_for(self, client: str, address: str, before_ns: int) -> DnsAnswer | None:
        """The latest answer to `client` that gave `address`, at most dns_before_s before."""
        found = self._by_address.get((client, address), [])
        i = bisect_right([a.ts_ns for a in found], before_ns)
        if i == 0:
            return None
        best = found[i - 1]
        return best if before_ns - best.ts_ns <= TIMING.dns_before_s * NS else None

    def about(self, name: str | None, client: str, start_ns: int, end_ns: int) -> list[DnsAnswer]:
        """Queries and answers about `name` from `client` between start and end."""
        if name is None:
            return []
        return [a for a in self._by_name.get((client, name), []) if start_ns <= a.ts_ns <= end_ns]

    def addresses_for(self, name: str | None, client: str, before_ns: int) -> set[str]:
        """Addresses DNS gave `client` for `name` up to before_ns (resolver caches live long)."""
        if name is None:
            return set()
        return {
            address
            for a in self._by_name.get((client, name), [])
            if a.ts_ns <= before_ns
            for address in a.addresses
        }

    def answers_to(self, client: str, start_ns: int, end_ns: int) -> list[DnsAnswer]:
        return [a for a in self._by_client.get(client, []) if start_ns <= a.ts_ns <= end_ns]


# -- one connection's shape --------------------------------------------------------------------


def leg_name(conn: ConnectionRecord, dns: DnsIndex) -> str | None:
    """The name the client used for this server: SNI, else LOGIN7 server name, else DNS."""
    if conn.tls is not None and conn.tls.sni:
        return clean_host(conn.tls.sni)
    if conn.login is not None and conn.login.servername:
        return clean_host(conn.login.servername)
    a = dns.name_for(conn.client.address, conn.server.address, conn.tcp.first_ts_ns)
    return a.name if a else None


def looks_azure(conn: ConnectionRecord, name: str | None) -> bool:
    """Azure SQL by the name the client used; the certificate's name only when no name is known
    (a test or wildcard certificate may name anything)."""
    if name is not None:
        return is_azure_name(name)
    subject = conn.tls.certificate_subject if conn.tls is not None else None
    return bool(subject) and is_azure_name(subject.rsplit("CN=", 1)[-1].split(",")[0])


def response_phase_end(conn: ConnectionRecord) -> tuple[int, int] | None:
    """(frame, time) where the login response ended, decoded or inferred."""
    p = conn.phase(PhaseName.LOGIN_RESPONSE)
    return (p.last_frame, p.end_ns) if p is not None else None


def close_time(conn: ConnectionRecord) -> int | None:
    p = conn.phase(PhaseName.CLOSE)
    return p.start_ns if p is not None else None


def data_exchanged(conn: ConnectionRecord) -> bool:
    """The session went on after login: requests and answers, not just a goodbye.

    Under TLS 1.3 a client's close_notify is an encrypted record like any other, so one lone
    encrypted record after the login response does not count as data.
    """
    p = conn.phase(PhaseName.DATA)
    if p is None:
        return False
    if not p.inferred:
        return True
    # Each client flight after the response counts as a request; more frames than requests
    # means the server answered something.
    return p.frames > conn.requests


def logged_in(conn: ConnectionRecord) -> bool:
    """The login visibly succeeded: LOGINACK seen, or (encrypted) the session carried data."""
    r = conn.response
    if r is not None and r.routing is not None:
        return False  # routed: the session is elsewhere
    if r is not None and r.login_ack:
        return not _login_error(conn)
    return conn.phase(PhaseName.LOGIN_RESPONSE) is not None and data_exchanged(conn)


def _login_error(conn: ConnectionRecord) -> bool:
    r = conn.response
    return r is not None and any(m.kind == "error" and m.severity >= 11 for m in r.messages)


def little_data(conn: ConnectionRecord) -> bool:
    """At most two encrypted records after the login response: the two close_notify alerts
    of a TLS 1.3 goodbye look exactly like that. Up to TLS 1.2 an alert shows its own record
    type, so there any record after the response is data (a query and its answer)."""
    p = conn.phase(PhaseName.DATA)
    if p is None:
        return True
    version = conn.tls.version if conn.tls is not None else None
    return p.inferred and p.frames <= 2 and version in (None, "TLS 1.3")


def closed_after_response(conn: ConnectionRecord, strict: bool = False) -> bool:
    """The redirect shape: a login response, then a close within quick_close_s and no data.

    A proxy session goes on with requests; a routed one (or a failed login) ends here.
    A leg still open at the end of the capture counts when it carried no data either.
    `strict` allows no data at all (one close_notify at most) instead of little data.
    """
    end = response_phase_end(conn)
    if end is None or (data_exchanged(conn) if strict else not little_data(conn)):
        return False
    closed = close_time(conn)
    if closed is None:
        return True
    return closed - end[1] <= TIMING.quick_close_s * NS


def requests_ignored(conn: ConnectionRecord) -> bool:
    """The routing-ignored shape: after the encrypted login response the client sent requests
    at once, the server never answered, and the client gave up after waiting.

    A gateway that has redirected a login does not serve requests on that connection, so an
    old driver that ignores the routing waits for an answer that never comes.
    """
    resp, data, close = (
        conn.phase(PhaseName.LOGIN_RESPONSE),
        conn.phase(PhaseName.DATA),
        conn.phase(PhaseName.CLOSE),
    )
    if resp is None or data is None or not data.inferred or data_exchanged(conn):
        return False
    if data.start_ns - resp.end_ns > TIMING.prompt_request_s * NS:
        return False
    ended = close.start_ns if close is not None else conn.tcp.last_ts_ns
    return ended - data.start_ns >= TIMING.gave_up_s * NS


def answered_syn(conn: ConnectionRecord) -> bool:
    return conn.tcp.synack_frame is not None


def syn_only(conn: ConnectionRecord) -> bool:
    """Only SYNs from the client and nothing back: what a dropped SYN looks like.

    A client that goes on sending data got an answer the capture missed (a one-way capture),
    so that is not "unanswered".
    """
    t = conn.tcp
    return (
        bool(t.syn_frames)
        and t.synack_frame is None
        and t.rst_side is None
        and t.to_client.packets == 0
        and t.to_server.payload_bytes == 0
    )


def icmp_rejection(conn: ConnectionRecord) -> IcmpError | None:
    """The ICMP error that answered a connection attempt: the last error about the client's
    packets of a connection whose SYNs got no SYN-ACK and no reset. None when the attempt
    simply went unanswered (or the only error is an ICMPv6 redirect, which is advice)."""
    if not syn_only(conn):
        return None
    for err in reversed(conn.tcp.icmp_errors):
        if err.from_client and not (err.family == 6 and err.type == 137):
            return err
    return None


def syn_offsets_s(conn: ConnectionRecord) -> list[float]:
    """SYN (re)transmission times relative to the first SYN, in seconds."""
    ts = conn.tcp.syn_ts_ns
    return [round((t - ts[0]) / NS, 3) for t in ts] if ts else []
