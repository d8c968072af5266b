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

When several gateway legs of one client could own the same second leg (attempts at once), the
one whose answer came last before the client set out for the leg gets it, crossing pairs are
swapped back into time order, and both links say ``ambiguous`` with the other candidates: the
wire does not tell, so tdslens says so rather than guess. A failed lookup of the target name is
what follows a redirect that never got a second leg.
Inferred links need the same client address on both legs; a routing token can also tie legs
whose client address differs (NAT, capture point in between) when only one connection matches
and nothing from its own address explains it. Links by timing alone come last.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict, deque
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
    shared_str,
    shared_strs,
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
            names={c.stream: shared_str(r.leg_name(c, dns)) for c in conns},
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
    for a in analysis.attempts:  # done: tuples keep less (and all empty ones are one)
        a.connections, a.redirects = tuple(a.connections), tuple(a.redirects)
        a.dns_frames, a.findings = tuple(a.dns_frames), tuple(a.findings)
    return analysis


# -- links -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Gateway:
    """A leg that was (or looks) routed, and what follows it: second legs, or a failed lookup
    of the target's name."""

    conn: ConnectionRecord
    routed_ns: int  # when the routing (or the encrypted response) arrived
    frames: list[int]
    evidence: LinkEvidence
    host: str | None
    port: int | None
    reasons: list[str]  # why this leg looks routed
    legs: list[ConnectionRecord] = field(default_factory=list)
    link_reasons: list[str] = field(default_factory=list)  # why its first follow-up is its own
    failed_lookup: r.DnsAnswer | None = None
    ambiguous: bool = False
    candidates: set[int] = field(default_factory=set)
    passed_over: list[_PassedOver] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        """Nothing follows it yet, so it may take a first leg (or a failed lookup)."""
        return not self.legs and self.failed_lookup is None


@dataclass(slots=True)
class _PassedOver:
    """A first leg this gateway could have taken and `winner` got. Should this gateway later
    take a leg the winner could have taken too, the two links are exchangeable."""

    winner: _Gateway
    leg: ConnectionRecord
    why: list[str]  # why the leg would have been this gateway's


def link_redirects(ctx: Context) -> list[Redirect]:
    """Four passes, strongest evidence first; each takes only what the ones before it left:
    routing tokens on the same client address, inferred links on the same client address,
    routing tokens across client addresses (NAT), and last the links by timing alone."""
    exact = [g for c in ctx.analysis.connections if (g := _routed_leg(c)) is not None]
    routed = {g.conn.stream for g in exact}  # a leg with its own routing token is no second leg
    claimed: set[int] = set()
    failed = _failed_lookups(ctx)
    _pair(ctx, exact, claimed, routed, _exact_match, failed)
    taken = claimed | routed
    shaped = [
        g
        for c in ctx.analysis.connections
        if c.stream not in taken and (g := _shaped_leg(ctx, c)) is not None
    ]
    _pair(ctx, shaped, claimed, routed, _inferred_match, _unexplained(failed, exact))
    _pair_across_nat(ctx, exact, claimed, routed)
    alone = [g for g in shaped if g.waiting and g.conn.stream not in claimed]
    _pair(ctx, alone, claimed, routed, _timing_match, weak=True)
    inferred = [g for g in shaped if g.conn.stream not in claimed and not g.waiting]
    taken = claimed | routed | {g.conn.stream for g in inferred}
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


# What ties a first leg to a gateway leg: the reasons, or None when it cannot be its leg.
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
    """Port, DNS or SNI say `c` goes to an Azure worker (or to a name looked up after g)."""
    if _elsewhere(ctx, g, c):
        return None
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
    return why or None


def _timing_match(ctx: Context, g: _Gateway, c: ConnectionRecord) -> list[str] | None:
    """Weak: the client's very next connection, soon, on a port that may be a private-link
    redirect's. Only tried once nothing stronger linked the gateway leg."""
    if _elsewhere(ctx, g, c) or not _right_after(g, c) or not _is_next(ctx, g, c):
        return None
    after = _ms(c.tcp.first_ts_ns - g.routed_ns)
    return [
        f"weak: only timing; the client's next connection, {after} after the response, "
        f"to port {c.server.port} outside the redirect ranges"
    ]


def _elsewhere(ctx: Context, g: _Gateway, c: ConnectionRecord) -> bool:
    """`c` is a new first contact, not a second leg: back to the gateway itself (a retry), or
    to an Azure SQL server's own name outside the redirect ports (another gateway)."""
    if c.server == g.conn.server:
        return True
    name = ctx.names.get(c.stream)
    gateway_like = r.is_azure_name(name) and not r.is_worker_name(name)
    return gateway_like and not r.in_redirect_range(c.server.port)


# Ports that are surely not a routed SQL endpoint: a timing-only link never goes there.
NOT_SQL_PORTS = frozenset({21, 22, 25, 53, 80, 88, 123, 135, 389, 443, 445, 636, 3389, 5985, 8080})


def _right_after(g: _Gateway, c: ConnectionRecord) -> bool:
    """Soon after the response, on a port that may be a private-link redirect, elsewhere."""
    return (
        c.server.port not in NOT_SQL_PORTS
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


def _failed_lookups(ctx: Context) -> list[r.DnsAnswer]:
    """Lookups that failed: what follows a redirect whose target does not resolve, instead of
    a second leg (unless the name resolves on a later try: see `_open_for`)."""
    return [a for a in ctx.dns.answers if a.rcode > 0]


def _unexplained(failed: list[r.DnsAnswer], exact: list[_Gateway]) -> list[r.DnsAnswer]:
    """The failed lookups no routing token explains: each failure of a name a token named
    (the first, and its repeats within the follow window) is that token's."""
    window = TIMING.follow_window_s * NS
    explained = [g.failed_lookup for g in exact if g.failed_lookup is not None]
    return [
        a
        for a in failed
        if not any(
            (e.client, e.name) == (a.client, a.name) and 0 <= a.ts_ns - e.ts_ns <= window
            for e in explained
        )
    ]


def _pair(
    ctx: Context,
    gateways: list[_Gateway],
    claimed: set[int],
    routed: set[int],
    match: Match,
    lookups: list[r.DnsAnswer] | None = None,
    weak: bool = False,
) -> None:
    """Give the client's later connections (and failed lookups) to the gateway legs they follow.

    In time order. A connection that fits a gateway leg still waiting is its first leg (see
    `_take_first_leg` when several wait); otherwise one to the same endpoint as a gateway's last
    try is a retry. `claimed` collects every connection given away; `routed` are the legs with
    their own routing token, never someone's second leg. `weak` links are always ambiguous.
    """
    by_client: dict[str, list[_Gateway]] = defaultdict(list)
    for g in sorted(gateways, key=lambda g: g.routed_ns):
        by_client[g.conn.client.address].append(g)
    pending = deque(sorted(lookups or [], key=lambda a: (a.ts_ns, a.frame)))
    for c in ctx.in_time_order():
        while pending and pending[0].ts_ns <= c.tcp.first_ts_ns:
            _take_lookup(ctx, by_client, claimed, pending.popleft())
        if c.stream in claimed or c.stream in routed:
            continue
        pool = _recent(by_client.get(c.client.address, []), c, claimed)
        fresh = [
            (g, why)
            for g in pool
            if _open_for(ctx, g, c) and (why := _first_leg_fit(ctx, g, c, match)) is not None
        ]
        if fresh:
            g = _take_first_leg(ctx, fresh, c, match)
            g.ambiguous = g.ambiguous or weak
        else:  # a retry of a second leg: the latest gateway that already went there
            retried = [g for g in pool if g.legs and _retry_fits(ctx, g, c)]
            if not retried:
                continue
            g = retried[-1]
            g.legs.append(c)
            if len(retried) > 1:  # concurrent attempts retrying the same endpoint
                g.ambiguous = True
                g.candidates.update(x.conn.stream for x in retried[:-1])
        claimed.add(c.stream)
    for a in pending:
        _take_lookup(ctx, by_client, claimed, a)


def _recent(pool: list[_Gateway], c: ConnectionRecord, claimed: set[int]) -> list[_Gateway]:
    """The gateway legs of `pool` (sorted by routing time) routed before `c`, within the link
    horizon, and not themselves someone's second leg."""
    start = c.tcp.first_ts_ns
    end = bisect_right([g.routed_ns for g in pool], start)
    horizon = start - TIMING.link_horizon_s * NS
    return [
        g
        for g in pool[:end]
        if g.routed_ns >= horizon and g.conn is not c and g.conn.stream not in claimed
    ]


def _open_for(ctx: Context, g: _Gateway, c: ConnectionRecord) -> bool:
    """g may still take `c` as its first leg: nothing follows it yet, or only a failed lookup
    of the very name that resolved on a later try and gave c's address."""
    if g.legs:
        return False
    failed = g.failed_lookup
    if failed is None:
        return True
    a = ctx.dns.name_for(c.client.address, c.server.address, c.tcp.first_ts_ns)
    return a is not None and a.name == failed.name and a.ts_ns > failed.ts_ns


def _first_leg_fit(
    ctx: Context, g: _Gateway, c: ConnectionRecord, match: Match
) -> list[str] | None:
    """Why `c` may be g's first second leg (None when it may not)."""
    delay = c.tcp.first_ts_ns - g.routed_ns
    if delay < 0 or delay > TIMING.follow_window_s * NS or g.conn is c:
        return None
    return match(ctx, g, c)


def _retry_fits(ctx: Context, g: _Gateway, c: ConnectionRecord) -> bool:
    """Another try at g's second leg: same endpoint, soon after the last try ended, the last
    try did not get in (after a second leg that logged in there is nothing to retry), and the
    client did not log in through a gateway again in between (that is a new attempt's leg)."""
    last = g.legs[-1]
    if c.server != last.server or c.tcp.first_ts_ns - last.tcp.last_ts_ns > TIMING.retry_gap_s * NS:
        return False
    if r.logged_in(last) or r.data_exchanged(last):
        return False
    return not _logged_in_between(ctx, c, last.tcp.first_ts_ns)


def _take_first_leg(
    ctx: Context, fresh: list[tuple[_Gateway, list[str]]], c: ConnectionRecord, match: Match
) -> _Gateway:
    """`c` is the first leg of one of the `fresh` gateway legs (all waiting, all fit): the
    one that took it is returned.

    The one whose answer came last before the client looked up c's name (or, without DNS,
    before its SYN) takes it: drivers resolve and connect right after reading the routing.
    With several candidates the link is ambiguous and lists them; each one passed over
    remembers it, so that a later exchangeable leg marks its own link ambiguous too (and
    restores the time order, see `_settle`).
    """
    g, why = _closest(ctx, fresh, c)
    others = [(x, w) for x, w in fresh if x is not g]
    if others:
        g.ambiguous = True
        g.candidates.update(x.conn.stream for x, _ in others)
    for x, w in others:
        x.passed_over.append(_PassedOver(g, c, w))
    g.legs.append(c)
    g.link_reasons = why
    g.failed_lookup = None  # a failure the name outlived (see _open_for) explains nothing
    _settle(ctx, g, match)
    return g


def _settle(ctx: Context, g: _Gateway, match: Match) -> None:
    """g just took its first leg. If a gateway leg that won an earlier leg over g could have
    taken this one as well, the two links are exchangeable: both are ambiguous. And if the
    two pairs cross in time (the earlier routing has the later leg), swap them: concurrent
    attempts follow their routings in the order they read them. A leg's time is when the
    client looked up its name (a lookup delays the SYN), else its SYN."""
    leg = g.legs[0]
    for p in g.passed_over:
        winner = p.winner
        why = _first_leg_fit(ctx, winner, leg, match)
        if why is None:
            continue
        g.ambiguous = winner.ambiguous = True
        g.candidates.add(winner.conn.stream)
        winner.candidates.add(g.conn.stream)
        if not winner.legs or winner.legs[0] is not p.leg:
            continue
        earlier_routed = winner.routed_ns < g.routed_ns
        earlier_leg = _leg_time(ctx, p.leg) < _leg_time(ctx, leg)
        if earlier_routed != earlier_leg:
            g.legs, winner.legs = winner.legs, g.legs
            g.link_reasons, winner.link_reasons = p.why, why
            return


def _take_lookup(
    ctx: Context, by_client: dict[str, list[_Gateway]], claimed: set[int], a: r.DnsAnswer
) -> None:
    """A failed lookup follows the waiting gateway leg whose response came last before it:
    the name its routing token gave, or (inferred) a worker name other than the gateway's.
    The same failure again (A and AAAA, the resolver retrying) belongs to a new gateway leg
    only when one was routed since the previous failure."""
    window = TIMING.follow_window_s * NS
    mine = by_client.get(a.client, [])
    earlier = [
        g.failed_lookup.ts_ns for g in mine if g.failed_lookup and g.failed_lookup.name == a.name
    ]
    since = max(earlier, default=-1)
    why = [f"right after the response the client looked up {a.name}, which did not resolve"]
    fresh = [
        (g, why)
        for g in mine
        if g.waiting
        and g.conn.stream not in claimed
        and since < g.routed_ns <= a.ts_ns <= g.routed_ns + window
        and _names_target(ctx, g, a.name)
    ]
    if not fresh:
        return
    asked = [q.ts_ns for q in ctx.dns.about(a.name, a.client, 0, a.ts_ns) if q.rcode < 0]
    g, _ = _latest_before(fresh, asked[-1] if asked else a.ts_ns)
    if len(fresh) > 1:
        g.ambiguous = True
        g.candidates.update(x.conn.stream for x, _ in fresh if x is not g)
    g.failed_lookup = a
    g.host = a.name
    if g.evidence is LinkEvidence.INFERRED:
        g.link_reasons = why


def _names_target(ctx: Context, g: _Gateway, name: str) -> bool:
    """`name` may be where g was routed: the token's host, or (inferred) an Azure worker name
    other than the gateway's own."""
    if g.evidence is LinkEvidence.ROUTING_TOKEN:
        return name == g.host
    return r.is_worker_name(name) and name != ctx.names.get(g.conn.stream)


def _logged_in_between(ctx: Context, c: ConnectionRecord, since_ns: int) -> bool:
    """Another login of this client (elsewhere) was answered between `since_ns` and c's start:
    a retry of a second leg comes without going back through a gateway."""
    start = c.tcp.first_ts_ns
    mine = ctx.by_client.get(c.client.address, [])
    horizon = bisect_right([o.tcp.first_ts_ns for o in mine], start)
    for o in mine[:horizon]:
        answered = o.phase(PhaseName.LOGIN_RESPONSE)
        if o.server != c.server and answered is not None and since_ns < answered.end_ns < start:
            return True
    return False


def _closest(
    ctx: Context, fresh: list[tuple[_Gateway, list[str]]], c: ConnectionRecord
) -> tuple[_Gateway, list[str]]:
    """Of several waiting gateway legs, the one whose answer came last before the client
    looked up the second leg's name (or, without DNS, before its SYN)."""
    return _latest_before(fresh, _leg_time(ctx, c))


def _leg_time(ctx: Context, c: ConnectionRecord) -> int:
    """When the client set out for second leg `c`: its lookup of c's name, else its SYN."""
    a = ctx.dns.name_for(c.client.address, c.server.address, c.tcp.first_ts_ns)
    if a is None:
        return c.tcp.first_ts_ns
    asked = [q.ts_ns for q in ctx.dns.about(a.name, a.client, 0, a.ts_ns) if q.rcode < 0]
    return asked[-1] if asked else a.ts_ns


def _latest_before(
    fresh: list[tuple[_Gateway, list[str]]], ref_ns: int
) -> tuple[_Gateway, list[str]]:
    before = [(g, why) for g, why in fresh if g.routed_ns <= ref_ns]
    return max(before or fresh, key=lambda x: x[0].routed_ns)


def _pair_across_nat(
    ctx: Context, exact: list[_Gateway], claimed: set[int], routed: set[int]
) -> None:
    """A routing token also ties a connection from another client address (NAT, or a capture
    point between client and NAT) when that connection is the only one to fit and nothing from
    its own address explains it: the passes before took all they could. Guessing among several
    would link strangers."""
    by_port: dict[int | None, list[_Gateway]] = defaultdict(list)
    for g in sorted(exact, key=lambda g: g.routed_ns):
        by_port[g.port].append(g)
    for c in ctx.in_time_order():
        if c.stream in claimed or c.stream in routed:
            continue
        fits: list[tuple[_Gateway, list[str]]] = []
        for g in _recent(by_port.get(c.server.port, []), c, claimed):
            if g.conn.client.address == c.client.address:
                continue
            if _open_for(ctx, g, c) and (why := _first_leg_fit(ctx, g, c, _exact_match)):
                fits.append((g, [*why, f"client address differs ({c.client.address}): NAT?"]))
            elif (
                g.legs and g.legs[-1].client.address == c.client.address and _retry_fits(ctx, g, c)
            ):
                fits.append((g, []))
        if len(fits) != 1:
            continue
        g, why = fits[0]
        if not g.legs:
            g.link_reasons = why
            g.failed_lookup = None
        g.legs.append(c)
        claimed.add(c.stream)


def _dns_for(
    ctx: Context, host: str | None, client: str, start_ns: int, end_ns: int
) -> list[r.DnsAnswer]:
    """Queries and answers about `host` from `client` between start and end."""
    return ctx.dns.about(host, client, start_ns, end_ns)


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
        target_host=shared_str(host),
        target_port=port,
        target_addresses=sorted({a for d in dns for a in d.addresses}),
        second_legs=[c.stream for c in legs],
        dns_frames=sorted({d.frame for d in dns}),
        frames=sorted(set(g.frames)),
        reasons=[shared_str(x) for x in (*g.reasons, *g.link_reasons)],
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
        if len(last.tcp.syn_frames) < 2 and recent and r.icmp_rejection(last) is None:
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
        out.append(ConnectionRole(c.stream, role, name, None, shared_strs(why)))
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

    A retry is a new first-contact leg from the same client address to the same server (and
    server name) that starts at most retry_gap_s after the attempt's last connection ended,
    while the attempt had not got in (see `_is_retry`). Overlapping connections are separate
    attempts (a pool opens several).
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
    """`c` repeats attempt `prev` (a driver retrying the whole login): same client and server
    (the key of `open_by_key`), the same server name when both are known (one Azure gateway
    address serves many servers), after prev's last connection ended and within retry_gap_s
    of it (drivers retry within their login timeout), and prev's last try did not get in."""
    start = c.tcp.first_ts_ns
    if start < prev.end_ns:
        return False  # overlapping: a separate attempt (connection pool, parallel clients)
    if start - prev.end_ns > TIMING.retry_gap_s * NS:
        return False
    name = ctx.names.get(c.stream)
    if name and prev.server_name and name != prev.server_name:
        return False
    firsts = [s for s in prev.connections if s not in ctx.second_legs]
    return not try_succeeded(ctx, ctx.by_stream[firsts[-1]])


def try_succeeded(ctx: Context, c: ConnectionRecord) -> bool:
    """A first-contact leg got the client in: its redirect connected, or (not routed) it
    logged in. A routed leg that carried requests did not: the gateway ignores them (an old
    driver that does not follow the routing), so its data says nothing about success."""
    if c.stream in ctx.gateway_of:
        return ctx.analysis.redirects[ctx.gateway_of[c.stream]].outcome is RedirectOutcome.CONNECTED
    return r.logged_in(c) or r.data_exchanged(c)


def _attempt_dns(ctx: Context, a: Attempt) -> list[int]:
    """DNS lookups of the names this attempt used, from its client, during (or just before) it."""
    names = {ctx.names.get(s) for s in a.connections} | {a.server_name}
    names |= {ctx.analysis.redirects[i].target_host for i in a.redirects}
    names.discard(None)
    start = a.start_ns - int(TIMING.dns_before_s * NS)
    return sorted(d.frame for n in names for d in ctx.dns.about(n, a.client, start, a.end_ns))
