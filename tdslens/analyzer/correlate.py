"""Tie connections together: gateway leg → routing target → second legs, then attempts.

Why: a redirect failure never shows on one connection. The gateway leg looks healthy (login,
answer, clean close); the second leg is a few SYNs to another address and port. Only the link
between them says "the firewall blocks the redirect ports". This module builds those links, gives
every connection a role, and groups what one client did into attempts. `findings.py` then says
what went wrong and `verdicts.py` which finding explains each failed attempt.

Two kinds of link, each with its reasons:

- **routing_token**: the login response was readable (cleartext, or decrypted) and carried
  ENVCHANGE type 20. The second legs are the client's next connections to that port (and to an
  address DNS gave for that host, when DNS is in the capture).
- **inferred**: TLS hides the login response. A leg whose response is followed by a quick close
  with no data (the redirect shape), then the same client's next connection to a redirect port
  (11000-11999, 14000-14999), to an address a DNS answer gave for a name looked up after that
  response, or with a TLS SNI naming an Azure worker.

When several gateway legs of one client could own the same second leg, the earliest unpaired one
gets it and the link says ``ambiguous`` with the other candidates.
Inferred links need the same client address on both legs; a routing token can also tie legs
whose client address differs (NAT, capture point in between) when only one connection matches.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tdslens.analyzer import roles as r
from tdslens.analyzer.model import (
    Analysis,
    Attempt,
    ConnectionRecord,
    ConnectionRole,
    LinkEvidence,
    PhaseName,
    Redirect,
    RedirectOutcome,
    Role,
    Verdict,
)
from tdslens.analyzer.roles import NS, TIMING

SQL_PROTOCOLS = ("tds", "tds8")


@dataclass(slots=True)
class Context:
    """What every rule may look at: the analysis plus indexes built once."""

    analysis: Analysis
    dns: r.DnsIndex
    by_stream: dict[int, ConnectionRecord]
    by_client: dict[str, list[ConnectionRecord]]  # each client's connections by start time
    names: dict[int, str | None]
    ports: set[int]  # every server port in the capture
    first_frame: int
    end_ns: int  # time of the last packet in the capture
    second_legs: dict[int, int] = field(default_factory=dict)  # stream → redirect index
    gateway_of: dict[int, int] = field(default_factory=dict)  # gateway stream → redirect index

    @classmethod
    def build(cls, analysis: Analysis) -> Context:
        dns = r.DnsIndex(analysis.dns)
        conns = sorted(analysis.connections, key=lambda c: (c.tcp.first_ts_ns, c.stream))
        by_client: dict[str, list[ConnectionRecord]] = defaultdict(list)
        for c in conns:
            by_client[c.client.address].append(c)
        ends = [c.tcp.last_ts_ns for c in conns] + [d.ts_ns for d in analysis.dns]
        return cls(
            analysis=analysis,
            dns=dns,
            by_stream={c.stream: c for c in conns},
            by_client=dict(by_client),
            names={c.stream: r.leg_name(c, dns) for c in conns},
            ports={c.server.port for c in conns},
            first_frame=min((c.tcp.first_frame for c in conns), default=0),
            end_ns=max(ends, default=0),
        )

    def in_time_order(self) -> list[ConnectionRecord]:
        return sorted(self.by_stream.values(), key=lambda c: (c.tcp.first_ts_ns, c.stream))


def correlate(analysis: Analysis) -> Analysis:
    """Fill roles, redirects, attempts, findings and verdicts of `analysis`; return it."""
    # Imported here: findings and verdicts read this module's Context.
    from tdslens.analyzer.findings import diagnose
    from tdslens.analyzer.verdicts import judge

    ctx = Context.build(analysis)
    analysis.redirects = link_redirects(ctx)
    analysis.roles = assign_roles(ctx)
    analysis.attempts = group_attempts(ctx)
    analysis.findings = diagnose(ctx)
    judge(ctx)
    return analysis


# -- links -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Gateway:
    """A leg that was (or looks) routed, waiting for its second legs."""

    conn: ConnectionRecord
    routed_ns: int  # when the routing (or the encrypted response) arrived
    frames: list[int]
    evidence: LinkEvidence
    host: str | None
    port: int | None
    reasons: list[str]
    legs: list[ConnectionRecord] = field(default_factory=list)
    ambiguous: bool = False
    candidates: set[int] = field(default_factory=set)


def link_redirects(ctx: Context) -> list[Redirect]:
    """Exact links first (they may claim legs an inference would also want), then inferred."""
    exact = [g for c in ctx.analysis.connections if (g := _routed_leg(c)) is not None]
    claimed: set[int] = set()
    _pair(ctx, exact, claimed, _exact_match)
    taken = claimed | {g.conn.stream for g in exact}
    shaped = [
        g
        for c in ctx.analysis.connections
        if c.stream not in taken and (g := _shaped_leg(ctx, c)) is not None
    ]
    _pair(ctx, shaped, claimed, _inferred_match, same_client_only=True)
    inferred = [
        g
        for g in shaped
        if g.conn.stream not in claimed and (g.legs or _inferred_dns_failure(ctx, g))
    ]
    taken |= {g.conn.stream for g in inferred} | claimed
    inferred += [
        g
        for c in ctx.analysis.connections
        if c.stream not in taken and (g := _ignored_leg(ctx, c)) is not None
    ]
    redirects = [_finish(ctx, g) for g in sorted(exact + inferred, key=lambda g: g.routed_ns)]
    for i, red in enumerate(redirects):
        ctx.gateway_of[red.gateway] = i
        for s in red.second_legs:
            ctx.second_legs[s] = i
    return redirects


def _routed_leg(c: ConnectionRecord) -> _Gateway | None:
    routing = c.response.routing if c.response is not None else None
    if routing is None:
        return None
    p = c.phase(PhaseName.REDIRECT) or c.phase(PhaseName.LOGIN_RESPONSE)
    ts = p.end_ns if p is not None else c.tcp.first_ts_ns
    return _Gateway(
        conn=c,
        routed_ns=ts,
        frames=[routing.frame],
        evidence=LinkEvidence.ROUTING_TOKEN,
        host=r.clean_host(routing.server),
        port=routing.port,
        reasons=[f"ENVCHANGE routing to {routing.server}:{routing.port} in frame {routing.frame}"],
    )


def _shaped_leg(ctx: Context, c: ConnectionRecord) -> _Gateway | None:
    """An encrypted login response followed by a quick close without data."""
    if c.protocol not in SQL_PROTOCOLS or not r.closed_after_response(c):
        return None
    p = c.phase(PhaseName.LOGIN_RESPONSE)
    if p is None or not p.inferred:
        return None  # a readable response without routing is not a redirect
    close = c.phase(PhaseName.CLOSE)
    frames = [p.last_frame] + ([close.first_frame] if close is not None else [])
    return _Gateway(
        conn=c,
        routed_ns=p.start_ns,
        frames=frames,
        evidence=LinkEvidence.INFERRED,
        host=None,
        port=None,
        reasons=[
            f"encrypted login response (frame {p.last_frame}) followed by a close without data"
        ],
    )


def _ignored_leg(ctx: Context, c: ConnectionRecord) -> _Gateway | None:
    """An Azure gateway leg whose requests after the encrypted login went unanswered."""
    if c.protocol not in SQL_PROTOCOLS or not r.requests_ignored(c):
        return None
    if not r.looks_azure(c, ctx.names.get(c.stream)):
        return None  # elsewhere a silent server is not a redirect
    resp, data = c.phase(PhaseName.LOGIN_RESPONSE), c.phase(PhaseName.DATA)
    if resp is None or data is None:
        return None
    close = c.phase(PhaseName.CLOSE)
    waited = ((close.start_ns if close else c.tcp.last_ts_ns) - data.start_ns) / NS
    return _Gateway(
        conn=c,
        routed_ns=resp.start_ns,
        frames=[resp.last_frame, data.first_frame] + ([close.first_frame] if close else []),
        evidence=LinkEvidence.INFERRED,
        host=None,
        port=None,
        reasons=[
            f"encrypted login response (frame {resp.last_frame}), then {c.requests} client "
            f"request(s) from frame {data.first_frame} that the server never answered; the "
            f"client gave up after {waited:.1f} s: an Azure gateway that redirected a login "
            "ignores requests on that connection"
        ],
    )


Match = Callable[[Context, _Gateway, ConnectionRecord], list[str] | None]


def _exact_match(ctx: Context, g: _Gateway, c: ConnectionRecord) -> list[str] | None:
    if c.server.port != g.port:
        return None
    if g.host == c.server.address:
        return [f"connects to {c.server} as the routing token says"]
    addrs = ctx.dns.addresses_for(g.host, c.client.address, c.tcp.first_ts_ns)
    if addrs and c.server.address not in addrs:
        return None
    if addrs:
        return [
            f"connects to port {c.server.port} of {c.server.address}, which DNS gave for {g.host}"
        ]
    return [f"connects to port {c.server.port}, the routed port (no DNS answer in the capture)"]


def _inferred_match(ctx: Context, g: _Gateway, c: ConnectionRecord) -> list[str] | None:
    if c.server == g.conn.server:
        return None  # back to the gateway: a retry, not a second leg
    name = ctx.names.get(c.stream)
    gateway_like = r.is_azure_name(name) and not r.is_worker_name(name)
    if gateway_like and not r.in_redirect_range(c.server.port):
        return None  # to an Azure SQL server's own name: another gateway, a new attempt
    why: list[str] = []
    if r.in_redirect_range(c.server.port):
        why.append(f"port {c.server.port} is in the Azure redirect ranges")
    looked_up = _looked_up_after(ctx, c, g)
    if looked_up is not None:
        why.append(
            f"{c.server.address} is what DNS gave for {looked_up}, looked up after the response"
        )
    sni = c.tls.sni if c.tls is not None else None
    if r.is_worker_name(sni):
        why.append(f"TLS SNI names an Azure worker ({sni})")
    if not why and g.legs and c.server == g.legs[-1].server:
        why.append("another try at the same second leg")
    if not why and _right_after(g, c) and _is_next(ctx, g, c):
        after = _ms(c.tcp.first_ts_ns - g.routed_ns)
        why.append(
            f"weak: only timing; the client's next connection, {after} after the response, "
            f"to port {c.server.port} outside the redirect ranges"
        )
    return why or None


# Ports that are surely not a routed SQL endpoint: a timing-only link never goes there.
NOT_SQL_PORTS = frozenset({21, 22, 25, 53, 80, 88, 123, 135, 389, 443, 445, 636, 3389, 5985, 8080})


def _right_after(g: _Gateway, c: ConnectionRecord) -> bool:
    """The very next thing this client did, on a port that may be a private-link redirect."""
    return (
        not g.legs
        and c.server.port not in NOT_SQL_PORTS
        and c.server.address != g.conn.server.address
        and c.tcp.first_ts_ns - g.routed_ns <= TIMING.next_connection_s * NS
    )


def _is_next(ctx: Context, g: _Gateway, c: ConnectionRecord) -> bool:
    """No other connection from this client started between the response and `c`."""
    mine = ctx.by_client.get(c.client.address, [])
    starts = [o.tcp.first_ts_ns for o in mine]
    i = bisect_right(starts, g.routed_ns - 1)
    between = [o for o in mine[i:] if o.tcp.first_ts_ns <= c.tcp.first_ts_ns and o is not c]
    return not any(o.tcp.first_ts_ns < c.tcp.first_ts_ns for o in between)


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.0f} ms"


def _looked_up_after(ctx: Context, c: ConnectionRecord, g: _Gateway) -> str | None:
    """A name, other than the gateway's, the client resolved to c's address after g's response."""
    a = ctx.dns.name_for(c.client.address, c.server.address, c.tcp.first_ts_ns)
    if a is None or a.ts_ns < g.routed_ns or a.name == ctx.names.get(g.conn.stream):
        return None
    return a.name


def _pair(
    ctx: Context,
    gateways: list[_Gateway],
    claimed: set[int],
    match: Match,
    same_client_only: bool = False,
) -> None:
    """Give each later connection to the gateway leg it follows (see module docstring)."""
    exact = {g.conn.stream for g in gateways if g.evidence is LinkEvidence.ROUTING_TOKEN}
    by_client: dict[str, list[_Gateway]] = defaultdict(list)
    by_port: dict[int | None, list[_Gateway]] = defaultdict(list)
    for g in sorted(gateways, key=lambda g: g.routed_ns):
        by_client[g.conn.client.address].append(g)
        by_port[g.port].append(g)
    for c in ctx.in_time_order():
        if c.stream in claimed or c.stream in exact:
            continue  # a leg with its own routing token is a gateway, not someone's second leg
        fits = _fits(ctx, by_client.get(c.client.address, []), c, claimed, match)
        if not fits and not same_client_only:
            others = [g for g in by_port.get(c.server.port, []) if g.conn.client != c.client]
            fits = _fits(ctx, others, c, claimed, match)
            if len(fits) != 1:
                continue  # other client addresses and several candidates: cannot tell
            g, why = fits[0]
            fits = [(g, [*why, f"client address differs ({c.client.address}): NAT?"])]
        if not fits:
            continue
        fresh = [(g, why) for g, why in fits if not g.legs]
        if fresh:
            g, why = _closest(ctx, fresh, c)
            if len(fresh) > 1:
                g.ambiguous = True
                g.candidates.update(x.conn.stream for x, _ in fresh if x is not g)
        else:  # a retry of a second leg: the latest gateway that already went there
            same_target = [(g, why) for g, why in fits if g.legs[-1].server == c.server]
            if not same_target:
                continue  # a served gateway does not take a connection elsewhere
            g, why = same_target[-1]
            if _logged_in_between(ctx, c, g.legs[-1].tcp.first_ts_ns):
                continue  # the client went back through a gateway: a new attempt's leg
        if not g.legs:
            g.reasons.extend(why)
            g.ambiguous = g.ambiguous or why[0].startswith("weak:")
        g.legs.append(c)
        claimed.add(c.stream)


def _logged_in_between(ctx: Context, c: ConnectionRecord, since_ns: int) -> bool:
    """Another login answered for this client between `since_ns` and c's start: a retry of a
    second leg comes without going back through a gateway."""
    mine = ctx.by_client.get(c.client.address, [])
    i = bisect_right([o.tcp.first_ts_ns for o in mine], since_ns)
    for o in mine[i:]:
        if o.tcp.first_ts_ns >= c.tcp.first_ts_ns:
            return False
        if o.server != c.server and o.phase(PhaseName.LOGIN_RESPONSE) is not None:
            return True
    return False


def _closest(
    ctx: Context, fresh: list[tuple[_Gateway, list[str]]], c: ConnectionRecord
) -> tuple[_Gateway, list[str]]:
    """Of several waiting gateway legs, the one whose answer came last before the client
    looked up the second leg's name (or, without DNS, before its SYN): drivers resolve and
    connect right after reading the routing."""
    ref = c.tcp.first_ts_ns
    a = ctx.dns.name_for(c.client.address, c.server.address, ref)
    if a is not None:
        asked = [q.ts_ns for q in ctx.dns.about(a.name, a.client, 0, a.ts_ns) if q.rcode < 0]
        ref = asked[-1] if asked else a.ts_ns
    before = [(g, why) for g, why in fresh if g.routed_ns <= ref]
    return max(before or fresh, key=lambda x: x[0].routed_ns)


def _fits(
    ctx: Context, pool: list[_Gateway], c: ConnectionRecord, claimed: set[int], match: Match
) -> list[tuple[_Gateway, list[str]]]:
    """The gateways of `pool` (sorted by routing time) that `c` may follow, oldest first."""
    start = c.tcp.first_ts_ns
    end = bisect_right([g.routed_ns for g in pool], start)
    horizon = start - TIMING.link_horizon_s * NS
    out = []
    for g in pool[:end]:
        if g.routed_ns < horizon or g.conn is c or g.conn.stream in claimed:
            continue
        if _in_window(g, c) and (why := match(ctx, g, c)) is not None:
            out.append((g, why))
    return out


def _in_window(g: _Gateway, c: ConnectionRecord) -> bool:
    start = c.tcp.first_ts_ns
    if start < g.routed_ns:
        return False
    if not g.legs:
        return start - g.routed_ns <= TIMING.follow_window_s * NS
    return start - g.legs[-1].tcp.last_ts_ns <= TIMING.retry_gap_s * NS


def _dns_for(
    ctx: Context, host: str | None, client: str, start_ns: int, end_ns: int
) -> list[r.DnsAnswer]:
    """Queries and answers about `host` from `client` between start and end."""
    return ctx.dns.about(host, client, start_ns, end_ns)


def _inferred_dns_failure(ctx: Context, g: _Gateway) -> bool:
    """No second leg, but right after the response the client failed to resolve a worker name."""
    name_of_gateway = ctx.names.get(g.conn.stream)
    limit = g.routed_ns + int(TIMING.follow_window_s * NS)
    for a in ctx.dns.answers_to(g.conn.client.address, g.routed_ns, limit):
        if a.rcode != 0 and a.name != name_of_gateway and r.is_worker_name(a.name):
            g.host = a.name
            g.reasons.append(f"right after the response the client looked up {a.name}")
            return True
    return False


def _finish(ctx: Context, g: _Gateway) -> Redirect:
    legs = sorted(g.legs, key=lambda c: c.tcp.first_ts_ns)
    host, port = g.host, g.port
    if g.evidence is LinkEvidence.INFERRED and legs:
        port = legs[0].server.port
        # DNS after the response is the best witness; SNI may repeat the gateway's name
        # (tedious in strict mode does), so it only counts when it names something else.
        sni = r.clean_host(legs[0].tls.sni) if legs[0].tls is not None else None
        host = host or _looked_up_after(ctx, legs[0], g)
        host = host or (sni if sni != ctx.names.get(g.conn.stream) else None)
    client = g.conn.client.address
    last = legs[-1].tcp.last_ts_ns if legs else g.routed_ns + int(TIMING.follow_window_s * NS)
    dns = _dns_for(ctx, host, client, g.routed_ns, last)
    return Redirect(
        gateway=g.conn.stream,
        evidence=g.evidence,
        outcome=_outcome(ctx, g, legs, dns),
        target_host=host,
        target_port=port,
        target_addresses=sorted({a for d in dns for a in d.addresses}),
        second_legs=[c.stream for c in legs],
        dns_frames=sorted({d.frame for d in dns}),
        frames=sorted(set(g.frames)),
        reasons=g.reasons,
        ambiguous=g.ambiguous,
        candidates=sorted(g.candidates),
    )


def _outcome(ctx: Context, g: _Gateway, legs: list[ConnectionRecord], dns: list) -> RedirectOutcome:
    if not legs:
        if any(d.rcode > 0 for d in dns):
            return RedirectOutcome.DNS_FAILED
        if ctx.end_ns - g.routed_ns < TIMING.capture_tail_s * NS:
            return RedirectOutcome.UNKNOWN
        return RedirectOutcome.NOT_FOLLOWED
    if any(r.logged_in(c) for c in legs):
        return RedirectOutcome.CONNECTED
    last = legs[-1]
    if last.tcp.conn_state == "REJ":
        return RedirectOutcome.REFUSED
    if r.syn_only(last):
        recent = ctx.end_ns - last.tcp.first_ts_ns < TIMING.syn_retry_s * NS
        if len(last.tcp.syn_frames) < 2 and recent:
            return RedirectOutcome.UNKNOWN  # one SYN at the very end of the capture
        return RedirectOutcome.BLOCKED
    if last.tcp.synack_frame is None and last.tcp.syn_frames:
        return RedirectOutcome.UNKNOWN  # the client went on: the capture misses the answers
    still_open = last.tcp.conn_state == "S1" and last.tcp.last_ts_ns >= ctx.end_ns
    if still_open and last.phase(PhaseName.LOGIN_RESPONSE) is None:
        return RedirectOutcome.UNKNOWN  # still logging in when the capture ended
    if r.closed_after_response(last, strict=True) and not _visible_error(last):
        return RedirectOutcome.ANSWERED  # a login test, or a refusal: TLS hides which
    return RedirectOutcome.FAILED


def _visible_error(c: ConnectionRecord) -> bool:
    return c.response is not None and any(m.kind == "error" for m in c.response.messages)


# -- roles -------------------------------------------------------------------------------------


def assign_roles(ctx: Context) -> list[ConnectionRole]:
    out = []
    for c in ctx.analysis.connections:
        role, why = _role(ctx, c)
        name = ctx.names.get(c.stream)
        if c.stream in ctx.second_legs:  # the routed name, not a repeated gateway SNI
            name = ctx.analysis.redirects[ctx.second_legs[c.stream]].target_host or name
        out.append(ConnectionRole(c.stream, role, name, None, why))
    return out


def _role(ctx: Context, c: ConnectionRecord) -> tuple[Role, list[str]]:
    """First rule that applies wins; each returns the role and why."""
    reds = ctx.analysis.redirects
    if c.stream in ctx.gateway_of:
        red = reds[ctx.gateway_of[c.stream]]
        if _azure_redirect(ctx, red):
            return Role.GATEWAY, [f"its login was routed ({red.evidence})"]
        return Role.LISTENER, ["its login was routed to a server outside the Azure ranges"]
    if c.stream in ctx.second_legs:
        red = reds[ctx.second_legs[c.stream]]
        if _azure_redirect(ctx, red):
            return Role.WORKER, [f"second leg of the redirect from stream {red.gateway}"]
        return Role.REPLICA, [f"second leg of the routing from stream {red.gateway}"]
    name = ctx.names.get(c.stream)
    sql_port = c.server.port == r.SQL_PORT or r.in_redirect_range(c.server.port)
    if c.protocol == "other" and not (c.tcp.conn_state == "OTH" and sql_port):
        return Role.OTHER, ["not TDS"]
    if c.protocol == "other":  # joined mid-session: encrypted bytes cannot be checked as TDS
        why = ["started before the capture, on a SQL Server port (role by port)"]
        if r.in_redirect_range(c.server.port):
            return Role.WORKER, why
        return (Role.GATEWAY if r.looks_azure(c, name) else Role.SERVER), why
    if r.in_redirect_range(c.server.port) or r.is_worker_name(name):
        return Role.WORKER, ["redirect port or worker name, but no gateway leg links to it"]
    if c.protocol not in SQL_PROTOCOLS and c.server.port != r.SQL_PORT:
        return Role.UNKNOWN, ["no payload on a port tdslens does not know"]
    if r.looks_azure(c, name):
        if r.data_exchanged(c):
            return Role.PROXY, [f"Azure SQL name ({name}) and the session stayed on it"]
        return Role.GATEWAY, [f"Azure SQL name ({name})"]
    return Role.SERVER, ["TDS without an Azure name or routing"]


def _azure_redirect(ctx: Context, red: Redirect) -> bool:
    """An Azure redirect (gateway → worker) rather than Always On read-only routing.

    With no name on either side nothing says Always On, and tdslens takes the Azure reading.
    """
    gateway_name = ctx.names.get(red.gateway)
    if red.target_port is not None and r.in_redirect_range(red.target_port):
        return True
    if r.is_worker_name(red.target_host):
        return True
    if red.target_host is None:
        return gateway_name is None or r.is_azure_name(gateway_name)
    return r.is_azure_name(gateway_name) and r.is_azure_name(red.target_host)


# -- attempts ----------------------------------------------------------------------------------

FIRST_CONTACT = (Role.GATEWAY, Role.PROXY, Role.LISTENER, Role.SERVER, Role.WORKER)


def group_attempts(ctx: Context) -> list[Attempt]:
    """One attempt per client and server: first leg, its redirects, then retries.

    A retry is a new first-contact leg from the same client address to the same server that
    starts at most retry_gap_s after the attempt's last connection ended, while the attempt
    had not succeeded. Overlapping connections are separate attempts (a pool opens several).
    """
    roles = {x.stream: x for x in ctx.analysis.roles}
    attempts: list[Attempt] = []
    open_by_key: dict[tuple[str, str, int], Attempt] = {}
    for c in ctx.in_time_order():
        role = roles[c.stream].role
        if c.stream in ctx.second_legs or role not in FIRST_CONTACT:
            continue
        key = (c.client.address, c.server.address, c.server.port)
        legs = _legs_of(ctx, c)
        prev = open_by_key.get(key)
        if prev is not None and _is_retry(ctx, prev, c):
            prev.connections.extend(s.stream for s in legs)
            prev.redirects.extend(_redirects_of(ctx, c))
            prev.end_ns = max(prev.end_ns, *(s.tcp.last_ts_ns for s in legs))
            prev.tries += 1
            attempt = prev
        else:
            attempt = Attempt(
                index=len(attempts),
                client=c.client.address,
                server=c.server,
                server_name=ctx.names.get(c.stream),
                connections=[s.stream for s in legs],
                redirects=_redirects_of(ctx, c),
                dns_frames=[],
                start_ns=c.tcp.first_ts_ns,
                end_ns=max(s.tcp.last_ts_ns for s in legs),
                tries=1,
                verdict=Verdict("unknown", None, ""),
            )
            attempts.append(attempt)
        open_by_key[key] = attempt
        for s in legs:
            roles[s.stream].attempt = attempt.index
    for a in attempts:
        a.connections.sort(key=lambda s: ctx.by_stream[s].tcp.first_ts_ns)
        a.dns_frames = _attempt_dns(ctx, a)
    return attempts


def _legs_of(ctx: Context, c: ConnectionRecord) -> list[ConnectionRecord]:
    legs = [c]
    if c.stream in ctx.gateway_of:
        red = ctx.analysis.redirects[ctx.gateway_of[c.stream]]
        legs += [ctx.by_stream[s] for s in red.second_legs]
    return legs


def _redirects_of(ctx: Context, c: ConnectionRecord) -> list[int]:
    return [ctx.gateway_of[c.stream]] if c.stream in ctx.gateway_of else []


def _is_retry(ctx: Context, prev: Attempt, c: ConnectionRecord) -> bool:
    start = c.tcp.first_ts_ns
    if start < prev.end_ns:
        return False  # overlapping: a separate attempt (connection pool, parallel clients)
    if start - prev.end_ns > TIMING.retry_gap_s * NS:
        return False
    last = ctx.by_stream[prev.connections[-1]]
    return not r.logged_in(last) and not r.data_exchanged(last)


def _attempt_dns(ctx: Context, a: Attempt) -> list[int]:
    """DNS lookups of the names this attempt used, from its client, during (or just before) it."""
    names = {ctx.names.get(s) for s in a.connections} | {a.server_name}
    names |= {ctx.analysis.redirects[i].target_host for i in a.redirects}
    names.discard(None)
    start = a.start_ns - int(TIMING.dns_before_s * NS)
    return sorted(d.frame for n in names for d in ctx.dns.about(n, a.client, start, a.end_ns))
