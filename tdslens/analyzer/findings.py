"""Findings: what went wrong (or is worth knowing), with the frames that prove it.

Why rules as small functions: each code has one detection, documented in docs/findings.md, and
a newcomer should find it by its code. Three kinds of rule, run in this order:

- **failure rules** for one connection, tried in order; the first that matches is that
  connection's failure (a connection fails once, at the first phase that broke);
- **side rules** for one connection: slow login, retransmissions, zero window, proxy policy,
  old TDS version, damaged capture; they never decide a verdict on their own;
- **redirect rules**: the outcome of a gateway → second-leg link.

One finding per problem, not per connection: a driver that retries a whole login meets the
same failure on every try, so the redirects of one attempt with the same outcome and target make
one finding, and so do one attempt's connection failures with the same code and title; its
evidence lists every try. Different attempts, or different problems, stay apart. Proxy
sessions are one info finding for the capture.

A second leg's own failure is reported as REDIRECT_LOGIN_FAILED (the failure inside says which
phase), its unanswered or refused SYNs as REDIRECT_BLOCKED / REDIRECT_REFUSED, so the code
always says where to look. The codes themselves, their severities and remedies are in
finding_codes.py (stable API); titles and details written here may change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tdslens.analyzer import roles as r
from tdslens.analyzer.correlate import Context
from tdslens.analyzer.finding_codes import make
from tdslens.analyzer.icmp_quote import error_name, error_text
from tdslens.analyzer.model import (
    ConnectionRecord,
    Finding,
    LinkEvidence,
    PhaseName,
    Redirect,
    RedirectOutcome,
    Role,
)
from tdslens.analyzer.roles import NS, TIMING
from tdslens.analyzer.sql_errors import login_error_meaning
from tdslens.analyzer.tcp_events import IcmpError


def diagnose(ctx: Context) -> list[Finding]:
    """Every finding of the capture, in the order of the connections they concern."""
    out: list[Finding] = []
    roles = {x.stream: x.role for x in ctx.analysis.roles}
    for c in ctx.analysis.connections:
        role = roles.get(c.stream, Role.UNKNOWN)
        if role in (Role.OTHER, Role.UNKNOWN) and c.stream not in ctx.second_legs:
            continue
        failure = connection_failure(ctx, c, role)
        if failure is not None and c.stream not in ctx.second_legs:
            out.append(failure)
        for rule in SIDE_RULES:
            out.extend(rule(ctx, c, role))
    out = merge_repeated_tries(ctx, out)
    for reds in _same_problem(ctx):
        f = redirect_finding(ctx, reds)
        if f is not None:
            out.append(f)
    out.extend(proxy_policy(ctx))
    out.extend(capture_findings(ctx))
    out.extend(port_filter_suspected(ctx, out))
    return out


def merge_repeated_tries(ctx: Context, found: list[Finding]) -> list[Finding]:
    """One finding per attempt and problem: the same code and title on several tries of one
    attempt (a driver retrying its login) become one finding listing every try."""
    attempt_of = {x.stream: x.attempt for x in ctx.analysis.roles}
    groups: list[list[Finding]] = []
    where: dict[tuple[int, str, str], int] = {}  # (attempt, code, title) -> index in groups
    for f in found:
        attempts = {attempt_of.get(s) for s in f.connections}
        attempt = attempts.pop() if len(attempts) == 1 else None
        key = (attempt, f.code, f.title) if attempt is not None else None
        if key is not None and key in where:
            groups[where[key]].append(f)
            continue
        if key is not None:
            where[key] = len(groups)
        groups.append([f])
    return [fs[0] if len(fs) == 1 else _one_for_all(fs) for fs in groups]


def _one_for_all(same: list[Finding]) -> Finding:
    """Findings of one problem on several tries, as one: the first's words, every try's proof."""
    first = same[0]
    streams = sorted({s for f in same for s in f.connections})
    return replace(
        first,
        title=f"{first.title} ({len(same)} tries)",
        detail=f"{first.detail} Every try of this attempt ended the same way "
        f"(streams {_list(streams)}).",
        connections=streams,
        frames=sorted({x for f in same for x in f.frames}),
    )


def _list(items: list[int]) -> str:
    return ", ".join(str(i) for i in items)


def _same_problem(ctx: Context) -> list[list[Redirect]]:
    """The capture's redirects, grouped: one attempt's redirects with the same outcome and
    target (the routed port, and the routed host when a token named it) are one problem."""
    attempt_of = {x.stream: x.attempt for x in ctx.analysis.roles}
    groups: dict[tuple, list[Redirect]] = {}
    for i, red in enumerate(ctx.analysis.redirects):
        attempt = attempt_of.get(red.gateway)
        host = red.target_host if red.evidence is LinkEvidence.ROUTING_TOKEN else None
        key = (attempt, red.outcome, red.target_port, host) if attempt is not None else (i,)
        groups.setdefault(key, []).append(red)
    return list(groups.values())


def port_filter_suspected(ctx: Context, found: list[Finding]) -> list[Finding]:
    """Only port 1433 in the capture, and an outcome that a missing second leg would explain."""
    if ctx.ports != {r.SQL_PORT}:
        return []
    open_ends = [f for f in found if f.code in ("LOGIN_RESULT_HIDDEN", "REDIRECT_NOT_FOLLOWED")]
    if not open_ends:
        return []
    return [
        make(
            "CAPTURE_INCOMPLETE",
            "Only port 1433 in the capture: a filter may hide second legs",
            "Every TCP connection in the capture goes to port 1433, and some logins end in a "
            "way a redirect would explain. If the capture was filtered (for example "
            "'tcp port 1433'), connections to the redirect ports 11000-11999 are not in it.",
            sorted({s for f in open_ends for s in f.connections}),
            sorted({x for f in open_ends for x in f.frames})[:20],
        )
    ]


# -- failure rules (one connection) ------------------------------------------------------------

FailureRule = Callable[[Context, ConnectionRecord, Role], Finding | None]


def connection_failure(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    """The first failure rule that matches this connection, if any."""
    for rule in FAILURE_RULES:
        f = rule(ctx, c, role)
        if f is not None:
            return f
    return None


def _who(c: ConnectionRecord) -> str:
    return f"{c.client} → {c.server} (stream {c.stream})"


def unreachable(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    t = c.tcp
    if not r.syn_only(c):
        return None
    times = ", ".join(f"+{x:g} s" for x in r.syn_offsets_s(c))
    icmp = r.icmp_rejection(c)
    if icmp is not None:
        return make(
            "GATEWAY_UNREACHABLE",
            f"{c.server} unreachable: {len(t.syn_frames)} SYN(s) answered by "
            f"{error_name(icmp)} from {icmp.reporter}",
            f"The client sent SYNs to {c.server} at {times}. {_icmp_meaning(icmp, c)}",
            [c.stream],
            [*t.syn_frames, *_icmp_frames(c)],
        )
    if _syn_at_capture_end(ctx, c):
        return None
    return make(
        "GATEWAY_UNREACHABLE",
        f"No answer from {c.server}: {len(t.syn_frames)} SYN(s) unanswered",
        f"The client sent SYNs to {c.server} at {times} and nothing answered (no SYN-ACK, no "
        "reset): a firewall drops them, the address is wrong, or the server is down.",
        [c.stream],
        list(t.syn_frames),
    )


# Destination unreachable (ICMP type 3, ICMPv6 type 1): by family, the codes that mean a filter
# rejected the packet and the one for a closed port; the other codes mean there is no route.
_UNREACHABLE = {4: 3, 6: 1}
_PROHIBITED = {4: (9, 10, 13), 6: (1, 5, 6)}
_PORT_CLOSED = {4: 3, 6: 4}


def _icmp_meaning(err: IcmpError, c: ConnectionRecord) -> str:
    """What an ICMP answer to a SYN says, for a support engineer: who rejected it and how."""
    at = error_text(err)
    if err.type != _UNREACHABLE[err.family]:
        return f"They were answered by {at}: the SYN did not reach {c.server}."
    if err.code in _PROHIBITED[err.family]:
        return (
            f"They were answered by {at}: a firewall or access list at {err.reporter} rejects "
            f"connections to {c.server}."
        )
    if err.code == _PORT_CLOSED[err.family]:
        return (
            f"They were answered by {at}. A host with the port closed would send a TCP reset; "
            "an ICMP port unreachable is what a firewall's REJECT rule sends by default, so a "
            f"firewall at {err.reporter} most likely blocks port {c.server.port}."
        )
    return f"They were answered by {at}: {err.reporter} has no route to {c.server.address}."


def _icmp_frames(c: ConnectionRecord) -> list[int]:
    return [e.frame for e in c.tcp.icmp_errors if e.from_client]


def _syn_at_capture_end(ctx: Context, c: ConnectionRecord) -> bool:
    """One SYN so close to the end of the capture that its answer may just be missing."""
    recent = ctx.end_ns - c.tcp.first_ts_ns < TIMING.syn_retry_s * NS
    return len(c.tcp.syn_frames) < 2 and recent


def refused(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    t = c.tcp
    if t.conn_state != "REJ":
        return None
    return make(
        "CONNECTION_REFUSED",
        f"{c.server} refused the connection (RST to SYN)",
        f"The SYN to {c.server} was answered by a reset in frame {t.rst_frame}: nothing listens "
        "on that port, or a firewall rejects it.",
        [c.stream],
        [*t.syn_frames, t.rst_frame or 0],
    )


_NEEDS_TLS = ("on", "req", "on+client_cert", "req+client_cert")


def encryption_mismatch(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    p = c.prelogin
    if p is None or p.client_encryption is None or p.server_encryption is None:
        return None
    client, server = p.client_encryption, p.server_encryption
    if client in _NEEDS_TLS and server == "not_sup":
        why = "the client requires encryption and the server answered that it does not support it"
    elif client == "not_sup" and server in _NEEDS_TLS:
        why = "the server requires encryption and the client does not support it"
    else:
        return None
    return make(
        "ENCRYPTION_MISMATCH",
        f"Encryption mismatch in PRELOGIN: client {client}, server {server}",
        f"In PRELOGIN {why}, so the login cannot go on.",
        [c.stream],
        p.frames,
    )


def strict_required(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    """A cleartext PRELOGIN answered by a TLS alert instead of a PRELOGIN response."""
    p, tls = c.prelogin, c.tls
    if c.protocol != "tds" or p is None or p.server_encryption is not None:
        return None
    if tls is None or not tls.alert or "from server" not in tls.alert or tls.client_versions:
        return None
    return make(
        "STRICT_REQUIRED",
        "The server answered a cleartext PRELOGIN with a TLS alert: it requires TDS 8.0",
        f"The client opened with a cleartext PRELOGIN; the server answered '{tls.alert}' "
        f"(frame {tls.alert_frame}) instead of a PRELOGIN response, which is what a server that "
        "only accepts strict encryption (TLS first) does.",
        [c.stream],
        [*p.frames, tls.alert_frame or 0],
    )


def closed_after_prelogin(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    p = c.prelogin
    if c.protocol != "tds" or p is None or p.client_encryption is None:
        return None
    if p.server_encryption is not None or p.server_version is not None:
        return None
    close = c.phase(PhaseName.CLOSE)
    if close is None:
        return None
    by = _closed_by(c)
    return make(
        "CLOSED_AFTER_PRELOGIN",
        f"The {by} closed the connection without a PRELOGIN response",
        f"The client sent PRELOGIN ({', '.join(map(str, p.frames))}); no answer came and the "
        f"{by} closed the connection in frame {close.first_frame}. A server that accepts only "
        "TDS 8.0 (strict) behaves like this with a TDS 7.x client, and so does an overloaded "
        "server or a middlebox that drops TDS.",
        [c.stream],
        [*p.frames, close.first_frame],
    )


def tls_failed(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    tls = c.tls
    if tls is None or c.phase(PhaseName.LOGIN_RESPONSE) is not None:
        return None
    close = c.phase(PhaseName.CLOSE)
    alert = tls.alert if tls.alert and "close_notify" not in tls.alert else None
    if alert and "protocol_version" in alert:
        return make(
            "TLS_VERSION_REJECTED",
            f"TLS version rejected: {alert}",
            f"The TLS handshake ended with '{alert}' (frame {tls.alert_frame}). The client "
            f"offered {', '.join(tls.client_versions) or 'unknown versions'}.",
            [c.stream],
            [tls.alert_frame or 0],
        )
    if _client_quit_after_tls13(c) and not alert:
        return make(
            "TLS_HANDSHAKE_FAILED",
            "The client closed the connection right after the server's TLS 1.3 handshake",
            "The server sent its TLS 1.3 handshake; the client answered with at most one "
            f"encrypted record and closed the connection in frame {close.first_frame} without "
            "logging in. In TLS 1.3 a client's alert is encrypted, so this is how a client "
            "that rejects the server certificate looks (untrusted issuer, name mismatch: "
            "Encrypt=yes without TrustServerCertificate and a self-signed certificate).",
            [c.stream],
            [close.first_frame],
        )
    if not tls.handshake_complete and (alert or close is not None):
        offered = ", ".join(tls.client_versions) or "no ClientHello seen"
        hint = ""
        if tls.client_versions and "TLS 1.3" not in tls.client_versions and tls.version is None:
            hint = (
                " The server ended it before choosing a version; a server that requires "
                "TLS 1.3 does that with a client offering at most TLS 1.2."
            )
        what = f"'{alert}' (frame {tls.alert_frame})" if alert else "no alert"
        return make(
            "TLS_HANDSHAKE_FAILED",
            f"TLS handshake failed: {alert or 'connection closed during the handshake'}",
            f"The TLS handshake did not complete ({what}); the {_closed_by(c)} closed the "
            f"connection. Client offered: {offered}; server chose: {tls.version or 'nothing'}."
            + hint,
            [c.stream],
            [tls.alert_frame or 0, close.first_frame if close else 0],
        )
    login = c.phase(PhaseName.LOGIN)
    if login is not None and login.inferred and _closed_by(c) == "server" and close is not None:
        # The client's first encrypted flight (its Finished and LOGIN7) was met with a close.
        # SQL Server answers any bad login with an ERROR token; silence means TLS broke.
        return make(
            "TLS_HANDSHAKE_FAILED",
            "The server closed the connection right after the client finished TLS",
            f"After the handshake ({tls.version or 'TLS'}) the client sent its first encrypted "
            f"flight (frame {login.first_frame}) and the server closed the connection in frame "
            f"{close.first_frame} without any answer. A failed login would get an error "
            "message; a silent close means the server could not complete TLS (for example it "
            "could not verify the client's Finished).",
            [c.stream],
            [login.first_frame, close.first_frame],
        )
    return None


def _client_quit_after_tls13(c: ConnectionRecord) -> bool:
    """TLS 1.3 chosen, no login response, and the client closed within a second of the last
    handshake or login frame (a login timeout would take seconds)."""
    close = c.phase(PhaseName.CLOSE)
    if c.tls is None or c.tls.version != "TLS 1.3" or close is None or _closed_by(c) != "client":
        return False
    if c.phase(PhaseName.LOGIN_RESPONSE) is not None or c.phase(PhaseName.DATA) is not None:
        return False
    login = c.phase(PhaseName.LOGIN)
    if login is not None and login.frames > 1:
        return False
    last = max(p.end_ns for p in c.phases if p.name is not PhaseName.CLOSE)
    return close.start_ns - last <= NS


def login_failed(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    resp = c.response
    if resp is None or resp.login_ack:
        return None
    errors = [m for m in resp.messages if m.kind == "error"]
    if not errors:
        return None
    e = errors[0]
    meaning = login_error_meaning(e.number, e.state)
    return make(
        "LOGIN_FAILED",
        f"Login failed: error {e.number} state {e.state}",
        f"The server refused the login in frame {e.frame}: {meaning}. Server message: "
        f"'{e.message}'.",
        [c.stream],
        [m.frame for m in errors],
    )


def reset(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    t = c.tcp
    if t.rst_side is None or (t.synack_frame is None and t.syn_frames):
        return None
    if r.logged_in(c) or c.phase(PhaseName.LOGIN_RESPONSE) is not None:
        return None  # a reset after the login is how many drivers hang up
    phase = _phase_at(c, t.rst_frame)
    return make(
        "CONNECTION_RESET",
        f"Connection reset by the {t.rst_side} during {phase}",
        f"The {t.rst_side} reset the connection in frame {t.rst_frame}, during {phase}, before "
        "the login completed.",
        [c.stream],
        [t.rst_frame or 0],
    )


def closed_during_login(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    close = c.phase(PhaseName.CLOSE)
    if close is None or c.tcp.synack_frame is None or c.phase(PhaseName.LOGIN_RESPONSE):
        return None
    if c.protocol == "other":
        what = "; ".join(p.detail for p in c.problems) or "the client's bytes are not TDS"
        detail = f"The client did not speak TDS on this connection ({what})."
    else:
        detail = f"The connection reached {c.reached or 'nothing'} and then ended."
    return make(
        "CLOSED_DURING_LOGIN",
        f"The {_closed_by(c)} closed the connection during {c.reached or 'the TCP handshake'}",
        f"{detail} The {_closed_by(c)} closed it in frame {close.first_frame}.",
        [c.stream],
        [close.first_frame, *(f for p in c.problems for f in p.frames)],
    )


def result_hidden(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    if c.stream in ctx.gateway_of or not r.closed_after_response(c, strict=True):
        return None
    p = c.phase(PhaseName.LOGIN_RESPONSE)
    if p is None or not p.inferred:
        return None
    only = ctx.ports == {c.server.port}
    filtered = (
        f" Every connection in the capture is on port {c.server.port} and there is no DNS: "
        "if the capture was filtered, a second leg may be missing."
        if only and not ctx.analysis.dns
        else ""
    )
    return make(
        "LOGIN_RESULT_HIDDEN",
        "Encrypted login answered, then the connection closed without any request",
        f"The login response (frame {p.last_frame}) is encrypted and the client sent no request "
        "after it. A failed login, a redirect whose second leg is not in the capture, and a "
        "bare connection test all look like this; the capture alone cannot tell which." + filtered,
        [c.stream],
        [p.first_frame, p.last_frame],
    )


def cut_by_capture(ctx: Context, c: ConnectionRecord, role: Role) -> Finding | None:
    t = c.tcp
    if c.phase(PhaseName.LOGIN_RESPONSE) is not None or c.phase(PhaseName.CLOSE) is not None:
        return None
    if t.synack_frame is None and t.syn_frames and not _syn_at_capture_end(ctx, c):
        return None
    return make(
        "CAPTURE_INCOMPLETE",
        f"The capture ends while stream {c.stream} is still in {c.reached or 'TCP setup'}",
        f"{_who(c)} was still open at the end of the capture (last frame {t.last_frame}), "
        "before its login completed.",
        [c.stream],
        [t.last_frame],
    )


FAILURE_RULES: list[FailureRule] = [
    unreachable,
    refused,
    encryption_mismatch,
    strict_required,
    closed_after_prelogin,
    tls_failed,
    login_failed,
    reset,
    closed_during_login,
    result_hidden,
    cut_by_capture,
]


def _closed_by(c: ConnectionRecord) -> str:
    t = c.tcp
    if t.rst_side is not None and (t.to_server.fin_frame is None and t.to_client.fin_frame is None):
        return t.rst_side
    fins = [
        (f, side)
        for f, side in ((t.to_server.fin_frame, "client"), (t.to_client.fin_frame, "server"))
        if f
    ]
    if t.rst_frame:
        fins.append((t.rst_frame, t.rst_side or "client"))
    return min(fins)[1] if fins else "nobody"


def _phase_at(c: ConnectionRecord, frame: int | None) -> str:
    name = "TCP setup"
    for p in c.phases:
        if p.name is PhaseName.CLOSE:
            continue
        if frame is not None and p.first_frame <= frame:
            name = p.name.value.replace("_", " ")
    return name


# -- side rules (one connection) ---------------------------------------------------------------

SideRule = Callable[[Context, ConnectionRecord, Role], list[Finding]]


def slow_login(ctx: Context, c: ConnectionRecord, role: Role) -> list[Finding]:
    end = r.response_phase_end(c)
    if end is None or not c.tcp.syn_ts_ns:
        return []
    total = (end[1] - c.tcp.syn_ts_ns[0]) / NS
    if total <= TIMING.slow_login_s:
        return []
    steps = [
        f"{p.name.value} {(p.end_ns - p.start_ns) / NS:.2f} s"
        for p in c.phases
        if p.name is not PhaseName.CLOSE and p.end_ns >= p.start_ns
    ]
    slow = [s for s in steps if float(s.split()[-2]) > TIMING.slow_phase_s]
    return [
        make(
            "SLOW_LOGIN",
            f"Login took {total:.1f} s",
            f"From the first SYN to the end of the login response took {total:.2f} s "
            f"(phases: {'; '.join(steps)}). Slowest: {', '.join(slow) or 'spread out'}.",
            [c.stream],
            [c.tcp.syn_frames[0], end[0]],
        )
    ]


def retransmissions(ctx: Context, c: ConnectionRecord, role: Role) -> list[Finding]:
    t = c.tcp
    n = t.to_server.retransmissions + t.to_client.retransmissions
    if n < 3 or n < 0.05 * max(t.packets, 1):
        return []
    sent = [d for d in (t.to_server, t.to_client) if d.payload_bytes]
    if sent and all(d.wire_payload_bytes >= 1.9 * d.payload_bytes for d in sent):
        return []  # every segment twice: a capture on "any" sees each frame twice, no loss
    return [
        make(
            "TCP_RETRANSMISSIONS",
            f"{n} TCP retransmissions on stream {c.stream}",
            f"{t.to_server.retransmissions} from the client and {t.to_client.retransmissions} "
            f"from the server, out of {t.packets} packets: packet loss on the path.",
            [c.stream],
            [t.first_frame],
        )
    ]


def zero_window(ctx: Context, c: ConnectionRecord, role: Role) -> list[Finding]:
    out = []
    for z in c.tcp.zero_windows:
        reopened = f"reopened in frame {z.reopen_frame}" if z.reopen_frame else "never reopened"
        out.append(
            make(
                "ZERO_WINDOW",
                f"The {z.side} advertised a zero window on stream {c.stream}",
                f"From frame {z.first_frame} the {z.side} could not take more data ({reopened};"
                f" {len(z.probe_frames)} window probes).",
                [c.stream],
                [z.first_frame, z.reopen_frame or 0],
            )
        )
    return out


def proxy_policy(ctx: Context) -> list[Finding]:
    """One info finding for every session that stayed on an Azure gateway, listed per server:
    nothing is wrong with any of them, so one line says it for all."""
    roles = {x.stream: x.role for x in ctx.analysis.roles}
    proxied = [c for c in ctx.analysis.connections if roles.get(c.stream) is Role.PROXY]
    if not proxied:
        return []
    by_server: dict[str, list[int]] = {}
    for c in proxied:
        name = ctx.names.get(c.stream)
        by_server.setdefault(f"{name} ({c.server})" if name else str(c.server), []).append(c.stream)
    servers = "; ".join(
        f"{server}: stream {_list(s)}" if len(s) == 1 else f"{server}: {len(s)} sessions"
        for server, s in by_server.items()
    )
    title = (
        f"Azure SQL session stayed on the gateway {proxied[0].server} (Proxy policy)"
        if len(proxied) == 1
        else f"{len(proxied)} Azure SQL sessions stayed on the gateway (Proxy policy)"
    )
    return [
        make(
            "PROXY_POLICY_IN_USE",
            title,
            "The login was answered and the session went on on the same connection: the "
            "server's connection policy is Proxy for this client (or the driver is too old to "
            f"be redirected). Per server: {servers}.",
            [c.stream for c in proxied],
            [c.tcp.first_frame for c in proxied],
        )
    ]


def tds_too_old(ctx: Context, c: ConnectionRecord, role: Role) -> list[Finding]:
    version = c.login.tds_version if c.login is not None else None
    if version is None or version[0] != "7" or version >= "7.4":
        return []
    if role not in (Role.GATEWAY, Role.PROXY) or c.stream in ctx.gateway_of:
        return []  # a redirect that happened proves the version was enough
    return [
        make(
            "CLIENT_TDS_TOO_OLD",
            f"The client logs in with TDS {version}: Azure SQL cannot redirect it",
            f"LOGIN7 (frame {c.login.frame}) asks for TDS {version}. Redirect needs TDS 7.4: "
            "Azure SQL keeps older clients on the gateway (Proxy) whatever the policy.",
            [c.stream],
            [c.login.frame],
        )
    ]


def damaged(ctx: Context, c: ConnectionRecord, role: Role) -> list[Finding]:
    t = c.tcp
    gaps = t.to_server.gaps + t.to_client.gaps
    out = []
    if gaps:
        out.append(
            make(
                "CAPTURE_INCOMPLETE",
                f"Packets missing from the capture on stream {c.stream}",
                f"{gaps} hole(s), {t.to_server.gap_bytes + t.to_client.gap_bytes} bytes the "
                "capture does not hold (dropped by the capture, or cut by the snap length); "
                "what was inside them is unknown.",
                [c.stream],
                [t.first_frame],
            )
        )
    if t.conn_state == "OTH":
        when = (
            "started before the capture"
            if t.first_frame == _first_frame(ctx)
            else "has no TCP handshake in the capture"
        )
        out.append(
            make(
                "CAPTURE_INCOMPLETE",
                f"Stream {c.stream} {when}",
                f"{_who(c)} has no SYN or SYN-ACK in the capture: its start (and maybe its "
                "login or routing) is missing.",
                [c.stream],
                [t.first_frame],
            )
        )
    return out


def orphan_second_leg(ctx: Context, c: ConnectionRecord, role: Role) -> list[Finding]:
    """A worker leg no gateway leg explains: the capture (or this client address) misses it."""
    if role is not Role.WORKER or c.stream in ctx.second_legs:
        return []
    return [
        make(
            "CAPTURE_INCOMPLETE",
            f"Second leg to {c.server} without its gateway leg",
            f"{_who(c)} goes to a redirect port (or a worker name), but no gateway leg from "
            f"{c.client.address} comes before it: the capture started after the gateway leg, "
            "a filter hid it, or the client's address changed between legs (NAT), which only "
            "a readable routing token can bridge.",
            [c.stream],
            [c.tcp.first_frame],
        )
    ]


def _first_frame(ctx: Context) -> int:
    return ctx.first_frame


SIDE_RULES: list[SideRule] = [
    orphan_second_leg,
    slow_login,
    retransmissions,
    zero_window,
    tds_too_old,
    damaged,
]


# -- redirect rules ----------------------------------------------------------------------------
#
# Each takes the redirects of one problem (see _same_problem): one redirect, or every try of an
# attempt that met the same outcome at the same target. The words speak of the last try; the
# evidence lists all of them.


def redirect_finding(ctx: Context, reds: list[Redirect]) -> Finding | None:
    rule = REDIRECT_RULES.get(reds[-1].outcome)
    return rule(ctx, reds) if rule is not None else None


def _target(red: Redirect) -> str:
    host = red.target_host or "the worker"
    return f"{host}:{red.target_port}" if red.target_port else host


def _via(red: Redirect) -> str:
    if red.evidence is LinkEvidence.ROUTING_TOKEN:
        return "The gateway's routing token (ENVCHANGE type 20) sent the client there."
    return "The routing token is encrypted; the link is inferred: " + "; ".join(red.reasons) + "."


def _legs(ctx: Context, reds: list[Redirect]) -> list[ConnectionRecord]:
    return [ctx.by_stream[s] for red in reds for s in red.second_legs]


def _gateway_legs(reds: list[Redirect]) -> str:
    """'The gateway leg (stream 4)', or for whole-login retries 'The 3 gateway legs (...)'."""
    if len(reds) == 1:
        return f"The gateway leg (stream {reds[0].gateway})"
    return f"The {len(reds)} gateway legs of this attempt (streams {_list(_gateways(reds))})"


def _gateways(reds: list[Redirect]) -> list[int]:
    return [red.gateway for red in reds]


def _tries(reds: list[Redirect], what: str = "") -> str:
    """' (5 tries, all ignored the routing token)' when the attempt repeated its login."""
    if len(reds) == 1:
        return ""
    return f" ({len(reds)} tries, {what})" if what else f" ({len(reds)} tries)"


def _over(reds: list[Redirect]) -> str:
    """' over 3 logins' after a count of second-leg tries, when the login was repeated."""
    return f" over {len(reds)} logins" if len(reds) > 1 else ""


def _streams(reds: list[Redirect]) -> list[int]:
    return [s for red in reds for s in (red.gateway, *red.second_legs)]


def _frames_of(reds: list[Redirect]) -> list[int]:
    return [f for red in reds for f in red.frames]


def redirect_blocked(ctx: Context, reds: list[Redirect]) -> Finding:
    legs = _legs(ctx, reds)
    tries = "; ".join(
        f"stream {c.stream} → {c.server}: SYN at "
        + ", ".join(f"+{x:g} s" for x in r.syn_offsets_s(c))
        for c in legs
    )
    syns = sum(len(c.tcp.syn_frames) for c in legs)
    were = "was" if len(reds) == 1 else "were each"
    rejected = [(c, err) for c in legs if (err := r.icmp_rejection(c)) is not None]
    if rejected:
        c, err = rejected[-1]
        answer = f"{error_name(err)} from {err.reporter}"
        why = f"The SYNs to the second leg ({tries}) got no SYN-ACK. {_icmp_meaning(err, c)}"
    else:
        answer = "no answer"
        why = (
            f"Every SYN to the second leg went unanswered ({tries}): a firewall drops the "
            "redirect port."
        )
    return make(
        "REDIRECT_BLOCKED",
        f"Redirect to {_target(reds[-1])} blocked: {syns} SYN(s) in {len(legs)} tries"
        f"{_over(reds)}, {answer}",
        f"{_gateway_legs(reds)} logged in and {were} redirected. {_via(reds[-1])} {why}",
        _streams(reds),
        [
            *_frames_of(reds),
            *(f for c in legs for f in c.tcp.syn_frames),
            *(f for c in legs for f in _icmp_frames(c)),
        ],
    )


def redirect_refused(ctx: Context, reds: list[Redirect]) -> Finding:
    legs = _legs(ctx, reds)
    were = "was" if len(reds) == 1 else "were each"
    return make(
        "REDIRECT_REFUSED",
        f"Redirect to {_target(reds[-1])} refused: RST to SYN ({len(legs)} tries{_over(reds)})",
        f"{_gateway_legs(reds)} {were} redirected. {_via(reds[-1])} Each try at the "
        "second leg was answered by a reset (frames "
        f"{', '.join(str(c.tcp.rst_frame) for c in legs[:10])}).",
        _streams(reds),
        [*_frames_of(reds), *(f for c in legs for f in (*c.tcp.syn_frames, c.tcp.rst_frame or 0))],
    )


def redirect_dns_failed(ctx: Context, reds: list[Redirect]) -> Finding:
    red = reds[-1]
    dns = sorted({f for x in reds for f in x.dns_frames})
    were = "was" if len(reds) == 1 else "were each"
    return make(
        "REDIRECT_DNS_FAILED",
        f"Redirect target {red.target_host} does not resolve" + _tries(reds),
        f"{_gateway_legs(reds)} {were} redirected to {_target(red)}. {_via(red)} "
        f"DNS answered the lookups of {red.target_host} with an error (frames "
        f"{', '.join(map(str, dns[:10]))}), so the client never connected.",
        _gateways(reds),
        [*_frames_of(reds), *dns],
    )


def redirect_not_followed(ctx: Context, reds: list[Redirect]) -> Finding:
    red = reds[-1]
    gw = ctx.by_stream[red.gateway]
    ports = ctx.ports
    ignored = all(ctx.by_stream[x.gateway].requests for x in reds)
    if gw.requests:
        why = (
            f"The client sent {gw.requests} request(s) on the gateway leg after the routing: "
            "the driver ignores routing (too old, or TDS < 7.4)."
        )
    elif ports <= {gw.server.port}:
        why = (
            f"Every TCP connection in the capture is on port {gw.server.port}: a capture "
            "filter may hide the second leg."
        )
    else:
        why = "The driver does not follow routing, or a filter hid the second leg."
    elsewhere = _next_elsewhere(ctx, red)
    if elsewhere:
        why += f" The client's next connection went to {elsewhere} instead."
    if red.evidence is LinkEvidence.INFERRED:
        tries = _tries(reds, "all alike")
    else:
        tries = _tries(reds, "all ignored the routing token" if ignored else "none followed it")
    again = (
        f" Every try of this attempt went the same way (gateway legs, streams "
        f"{_list(_gateways(reds))})."
        if len(reds) > 1
        else ""
    )
    if red.evidence is LinkEvidence.INFERRED:
        return make(
            "REDIRECT_NOT_FOLLOWED",
            "Requests on the gateway leg went unanswered: the driver probably ignored a "
            "redirect" + tries,
            f"On stream {red.gateway}: {'; '.join(red.reasons)}. The routing token itself is "
            "encrypted, so this is inferred; a query blocked on the server looks alike, but a "
            "driver cancels that one (attention) instead of hanging up without an answer." + again,
            _gateways(reds),
            _frames_of(reds),
            remedy="Use a driver that supports routing (TDS 7.4 and redirect support: ODBC 11+, "
            "JDBC 4.2+, Microsoft.Data.SqlClient, recent tedious), or set the server's "
            "connection policy to Proxy. Decrypting the capture confirms the routing token.",
        )
    return make(
        "REDIRECT_NOT_FOLLOWED",
        f"Routing to {_target(red)} received, no connection to it" + tries,
        f"The gateway leg (stream {red.gateway}) received a routing token for {_target(red)} "
        f"(frame {red.frames[0] if red.frames else '?'}) and no connection to it follows. "
        + why
        + again,
        _gateways(reds),
        _frames_of(reds),
    )


def _next_elsewhere(ctx: Context, red: Redirect) -> str | None:
    """Where the routed client connected next, if not to the target (port mapping, NAT?)."""
    gw = ctx.by_stream[red.gateway]
    start = gw.tcp.first_ts_ns
    later = [
        c
        for c in ctx.analysis.connections
        if c.client.address == gw.client.address
        and c.tcp.first_ts_ns > start
        and c.server != gw.server
        and c.tcp.first_ts_ns - start <= TIMING.follow_window_s * NS
    ]
    return str(min(later, key=lambda c: c.tcp.first_ts_ns).server) if later else None


def redirect_login_failed(ctx: Context, reds: list[Redirect]) -> Finding:
    red = reds[-1]
    last = _legs(ctx, [red])[-1]
    inner = connection_failure(ctx, last, Role.WORKER)
    what = f"{inner.code}: {inner.title}. {inner.detail}" if inner else "it never logged in."
    return make(
        "REDIRECT_LOGIN_FAILED",
        f"Second leg to {last.server} connected but failed"
        + (f" ({inner.code})" if inner else "")
        + _tries(reds),
        f"The redirect to {_target(red)} reached the worker (stream {last.stream}), but the "
        f"session there failed: {what}",
        _streams(reds),
        [*_frames_of(reds), *(inner.frames if inner else [last.tcp.first_frame])],
    )


def redirect_answered(ctx: Context, reds: list[Redirect]) -> Finding:
    red = reds[-1]
    last = _legs(ctx, [red])[-1]
    p = last.phase(PhaseName.LOGIN_RESPONSE)
    frame = p.last_frame if p is not None else last.tcp.last_frame
    return make(
        "LOGIN_RESULT_HIDDEN",
        f"Second leg to {last.server}: encrypted login answered, then closed without a request"
        + _tries(reds),
        f"The redirect to {_target(red)} reached the worker (stream {last.stream}), whose login "
        f"response (frame {frame}) is encrypted; the client then closed the connection without "
        "sending a request. A login refused by the worker and a bare connection test look "
        "the same.",
        _streams(reds),
        [*_frames_of(reds), frame],
    )


def redirect_unknown(ctx: Context, reds: list[Redirect]) -> Finding:
    red = reds[-1]
    return make(
        "CAPTURE_INCOMPLETE",
        f"The capture ends before the redirect to {_target(red)} shows its outcome",
        f"The gateway leg (stream {red.gateway}) was redirected, and the capture ends before "
        "the second leg succeeds or fails.",
        _streams(reds),
        _frames_of(reds),
    )


REDIRECT_RULES: dict[RedirectOutcome, Callable[[Context, list[Redirect]], Finding]] = {
    RedirectOutcome.BLOCKED: redirect_blocked,
    RedirectOutcome.REFUSED: redirect_refused,
    RedirectOutcome.DNS_FAILED: redirect_dns_failed,
    RedirectOutcome.NOT_FOLLOWED: redirect_not_followed,
    RedirectOutcome.FAILED: redirect_login_failed,
    RedirectOutcome.ANSWERED: redirect_answered,
    RedirectOutcome.UNKNOWN: redirect_unknown,
}


# -- capture rules -----------------------------------------------------------------------------


MAX_LISTED_PROBLEMS = 5  # capture problems spelled out in the finding's text
MAX_EVIDENCE_FRAMES = 100  # a capture with thousands of bad frames: the first ones prove it


def capture_findings(ctx: Context) -> list[Finding]:
    a = ctx.analysis
    out = []
    # A key log line is no part of the capture: it is listed with the problems, no finding.
    damaged = [p for p in a.problems if p.frame is not None]
    if damaged:
        shown = "; ".join(f"frame {p.frame}: {p.message}" for p in damaged[:MAX_LISTED_PROBLEMS])
        more = len(damaged) - MAX_LISTED_PROBLEMS
        out.append(
            make(
                "CAPTURE_INCOMPLETE",
                f"{len(damaged)} part(s) of the capture could not be read as written",
                f"{shown}{f'; and {more} more (see the capture problems)' if more > 0 else ''}. "
                "What could be read around them is analysed.",
                [],
                [p.frame for p in damaged[:MAX_EVIDENCE_FRAMES] if p.frame is not None],
            )
        )
    one_way = [
        c.stream
        for c in a.connections
        if c.tcp.to_server.payload_bytes and not c.tcp.to_client.packets
    ]
    if one_way and all(not c.tcp.to_client.packets for c in a.connections):
        out.append(
            make(
                "CAPTURE_INCOMPLETE",
                "The capture holds only one direction of traffic",
                "Clients send data but no packet from any server is in the capture (a one-way "
                "SPAN port or filter): answers, refusals and routing cannot be seen.",
                one_way,
                [a.connections[0].tcp.first_frame] if a.connections else [],
            )
        )
    small = [i.snaplen for i in a.capture.interfaces if 0 < i.snaplen < 1500]
    if small:
        out.append(
            make(
                "CAPTURE_INCOMPLETE",
                f"Snap length {min(small)} bytes: packets are cut",
                f"The capture kept only the first {min(small)} bytes of each packet, so TDS "
                "messages (and the routing token) may be missing.",
                [],
                [],
            )
        )
    return out
