"""Plain-text rendering of an Analysis for the terminal: one phase ladder per connection.

Why plain text first: it is what a support engineer pastes into a ticket, and what tests can
read. Every line that states a fact names the frames it came from, so the reader can open them
in Wireshark (`frame.number == N`, `tcp.stream eq N`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from tdslens.analyzer.icmp_quote import error_text
from tdslens.analyzer.model import Analysis, ConnectionRecord, Phase, PhaseName, Severity

PROTOCOL_NAMES = {
    "tds": "TDS",
    "tds8": "TDS 8.0 (TLS first)",
    "other": "not TDS",
    "none": "no data",
}
PHASE_LABELS = {
    PhaseName.TCP_HANDSHAKE: "TCP handshake",
    PhaseName.PRELOGIN: "PRELOGIN",
    PhaseName.TLS: "TLS",
    PhaseName.LOGIN: "LOGIN",
    PhaseName.LOGIN_RESPONSE: "login response",
    PhaseName.REDIRECT: "redirect",
    PhaseName.DATA: "data",
    PhaseName.CLOSE: "close",
}


# A terminal report stays readable on a capture of any size: beyond these counts it lists what
# went wrong first and says how much it left to the JSON and HTML reports, which hold everything.
LADDERS_SHOWN = 50  # beyond this many TDS connections, only those named by findings get a ladder
ATTEMPTS_SHOWN = 50  # beyond this many attempts, only the ones that did not succeed are listed
STREAMS_SHOWN = 20  # streams named on a finding's evidence line
FINDINGS_SHOWN = 50  # findings written out in full; the rest are counted by code
PROBLEMS_SHOWN = 50  # capture problems (all went to stderr already) and NXDOMAIN answers listed
SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


# ANSI colours for a terminal: red errors, yellow warnings, cyan info, green OK verdicts.
COLORS = {"error": "31;1", "warning": "33;1", "info": "36", "ok": "32;1", "failed": "31;1"}


def render_text(analysis: Analysis, color: bool = False) -> str:
    """The whole analysis as text: verdict, findings, capture problems, then phase ladders.
    ``color`` adds ANSI colours to verdicts and severities (for a terminal, never a pipe)."""
    paint = _painter(color)
    lines = [_capture_line(analysis)]
    if analysis.redacted:
        lines.append("Names and addresses are pseudonyms (--redact).")
    lines += _verdict_lines(analysis, paint)
    lines += _finding_lines(analysis, paint)
    lines += [
        f"  problem: {p.message}" if p.frame is None else f"  problem: frame {p.frame}: {p.message}"
        for p in analysis.problems[:PROBLEMS_SHOWN]
    ]
    if len(analysis.problems) > PROBLEMS_SHOWN:
        lines.append(
            f"  ... {len(analysis.problems) - PROBLEMS_SHOWN} more problem(s); "
            "every one is in the JSON report"
        )
    tds = [c for c in analysis.connections if c.protocol in ("tds", "tds8", "none")]
    others = [c for c in analysis.connections if c.protocol == "other"]
    shown = tds
    if len(tds) > LADDERS_SHOWN:
        named = {
            s for f in analysis.findings if f.severity is not Severity.INFO for s in f.connections
        }
        picked = [c for c in tds if c.stream in named]
        shown = picked[:LADDERS_SHOWN]
        lines.append("")
        lines.append(
            f"Phase ladders of {len(shown)} of the {len(picked)} connection(s) named by findings; "
            f"the other {len(tds) - len(shown)} are in the JSON and HTML reports."
        )
    routed = {r.gateway for r in analysis.redirects}
    for conn in shown:
        lines.append("")
        lines += _ladder(conn, conn.stream in routed)
    if others:
        lines.append("")
        lines.append(f"{len(others)} other TCP connection(s), not TDS:")
        lines += [
            f"  stream {c.stream}: {c.client} -> {c.server} {c.tcp.conn_state}"
            for c in others[:LADDERS_SHOWN]
        ]
        if len(others) > LADDERS_SHOWN:
            lines.append(f"  ... {len(others) - LADDERS_SHOWN} more, in the JSON report")
    failed_dns = [d for d in analysis.dns if d.nxdomain]
    for d in failed_dns[:PROBLEMS_SHOWN]:
        lines.append(f"DNS: {', '.join(d.names)} does not exist (NXDOMAIN), frame {d.frame}")
    if len(failed_dns) > PROBLEMS_SHOWN:
        lines.append(
            f"DNS: {len(failed_dns) - PROBLEMS_SHOWN} more NXDOMAIN answers, in the JSON report"
        )
    return "\n".join(lines) + "\n"


def _painter(color: bool) -> Callable[[str, str], str]:
    def paint(text: str, kind: str) -> str:
        code = COLORS.get(kind)
        return f"\x1b[{code}m{text}\x1b[0m" if color and code else text

    return paint


def _verdict_lines(a: Analysis, paint: Callable[[str, str], str]) -> list[str]:
    """One line for the capture, then one per client attempt (on a busy capture, one per
    attempt that did not succeed: the successful ones are counted in the verdict line)."""
    if a.verdict is None:
        return []
    result = paint(a.verdict.result.upper(), a.verdict.result)
    lines = [f"Verdict: {result}: {a.verdict.summary}"]
    listed = a.attempts
    if len(listed) > ATTEMPTS_SHOWN:
        listed = [att for att in a.attempts if att.verdict.result != "ok"]
        lines.append(
            f"  {len(listed)} attempt(s) did not succeed"
            + (f"; the first {ATTEMPTS_SHOWN}:" if len(listed) > ATTEMPTS_SHOWN else ":")
        )
    for att in listed[:ATTEMPTS_SHOWN]:
        target = att.server_name or str(att.server)
        lines.append(
            f"  attempt {att.index + 1}: {att.client} -> {target}: {att.verdict.summary}"
            f" (streams {', '.join(str(s) for s in att.connections)})"
        )
    if len(a.attempts) > len(listed[:ATTEMPTS_SHOWN]):
        lines.append(
            f"  ... {len(a.attempts) - len(listed[:ATTEMPTS_SHOWN])} more attempt(s) "
            "in the JSON and HTML reports"
        )
    return lines


def _finding_lines(a: Analysis, paint: Callable[[str, str], str]) -> list[str]:
    """Every finding in full, worst first; on a busy capture a count per code, then the first
    FINDINGS_SHOWN in full."""
    lines: list[str] = []
    ordered = sorted(a.findings, key=lambda f: SEVERITY_ORDER[f.severity])
    if len(ordered) > FINDINGS_SHOWN:
        counts = Counter((f.severity, f.code) for f in ordered)
        lines += ["", f"{len(ordered)} findings, by code:"]
        lines += [
            f"  {n:>6} {paint(sev.value, sev.value)} {code}"
            for (sev, code), n in sorted(
                counts.items(), key=lambda kv: (SEVERITY_ORDER[kv[0][0]], -kv[1], kv[0][1])
            )
        ]
        lines.append(
            f"The first {FINDINGS_SHOWN} in full; all {len(ordered)} are in the JSON and HTML "
            "reports."
        )
    for f in ordered[:FINDINGS_SHOWN]:
        lines.append("")
        tag = paint(f"[{f.severity.value.upper()}]", f.severity.value)
        lines.append(f"{tag} {f.code}: {f.title}")
        lines.append(f"    {f.detail}")
        lines.append(f"    What to do: {f.remedy}")
        where = []
        if f.connections:
            where.append("streams " + _streams(f.connections))
        if f.frames:
            where.append("frames " + _frames(f.frames))
        if where:
            lines.append(f"    Evidence: {'; '.join(where)}")
    return lines


def _capture_line(a: Analysis) -> str:
    info = a.capture
    fmt = info.format + (" (gzip)" if info.compressed else "")
    return f"{info.path}: {fmt}, {a.frames} frames, {len(a.connections)} TCP connections"


def _ladder(conn: ConnectionRecord, redirected: bool) -> list[str]:
    """``redirected``: this connection is a gateway leg that handed out a routing token."""
    t0 = conn.tcp.first_ts_ns
    reached = conn.reached
    stop = ""
    if redirected:
        stop = ", redirected"
    elif reached and _stopped_early(conn):
        stop = f", stopped after {PHASE_LABELS[reached]}"
    head = (
        f"stream {conn.stream}  {conn.client} -> {conn.server}  "
        f"{PROTOCOL_NAMES[conn.protocol]}  [{conn.tcp.conn_state} {conn.tcp.history}]{stop}"
    )
    lines = [head]
    for phase in conn.phases:
        lines.append(f"  {_phase_line(phase, t0)}{_phase_detail(conn, phase)}")
    lines += [f"  ! {p.what}: {p.detail} (frames {_frames(p.frames)})" for p in conn.problems]
    lines += [
        f"  ! {error_text(e)}, about a packet of the {'client' if e.from_client else 'server'}"
        for e in conn.tcp.icmp_errors[:FRAMES_SHOWN]
    ]
    lines += _decryption_lines(conn)
    return lines


def _decryption_lines(conn: ConnectionRecord) -> list[str]:
    """What the key log did for this connection; what stayed encrypted is never left unsaid."""
    d = conn.decryption
    if d is None:
        return []
    suite = f", {d.cipher_suite}" if d.cipher_suite else ""
    version = d.version or "no ServerHello"
    lines = [f"  key log: {d.records_decrypted} TLS record(s) decrypted ({version}{suite})"]
    lines += [
        f"  ! not decrypted, {u.reason}: {u.detail} ({u.records} record(s), "
        f"frames {_frames(u.frames)})"
        for u in d.undecrypted
    ]
    return lines


def _stopped_early(conn: ConnectionRecord) -> bool:
    return conn.reached not in (PhaseName.DATA, PhaseName.REDIRECT)


def _phase_line(p: Phase, t0: int) -> str:
    frames = (
        f"frame {p.first_frame}"
        if p.first_frame == p.last_frame
        else (f"frames {p.first_frame}-{p.last_frame}")
    )
    start_ms = (p.start_ns - t0) / 1e6
    took = (p.end_ns - p.start_ns) / 1e6
    inferred = " (inferred from encrypted traffic)" if p.inferred else ""
    return f"{PHASE_LABELS[p.name]:<15} {frames:<16} +{start_ms:9.3f} ms  {took:8.3f} ms{inferred}"


def _phase_detail(conn: ConnectionRecord, phase: Phase) -> str:
    """The facts that belong on a phase's line."""
    tcp = conn.tcp
    if phase.name is PhaseName.TCP_HANDSHAKE:
        if tcp.synack_frame is None:
            answer = "RST" if tcp.conn_state == "REJ" else "no answer"
            refused = [e for e in tcp.icmp_errors if e.from_client]
            if refused and tcp.conn_state != "REJ":
                answer = f"answered by {error_text(refused[-1])}"
            return f"  {len(tcp.syn_frames)} SYN(s), {answer}"
        return f"  rtt {tcp.handshake_rtt_ns / 1e6:.3f} ms" if tcp.handshake_rtt_ns else ""
    if phase.name is PhaseName.PRELOGIN and conn.prelogin:
        pre = conn.prelogin
        return f"  encryption client={pre.client_encryption} server={pre.server_encryption}" + (
            f", server version {pre.server_version}" if pre.server_version else ""
        )
    if phase.name is PhaseName.TLS and conn.tls:
        tls = conn.tls
        parts = [tls.version or "version not seen"]
        if tls.sni:
            parts.append(f"SNI {tls.sni}")
        if tls.alpn:
            parts.append(f"ALPN {','.join(tls.alpn)}")
        if tls.alert:
            parts.append(f"alert: {tls.alert} (frame {tls.alert_frame})")
        return "  " + ", ".join(parts)
    if phase.name is PhaseName.LOGIN and conn.login:
        lg = conn.login
        intent = ", read-only intent" if lg.read_only_intent else ""
        return (
            f"  TDS {lg.tds_version}, user {lg.username!r}, database {lg.database!r}, "
            f"app {lg.appname!r}{intent}{_decrypted(lg.decrypted)}"
        )
    if phase.name is PhaseName.LOGIN_RESPONSE and conn.response:
        r = conn.response
        parts = [f"LOGINACK TDS {r.tds_version} {r.program}" if r.login_ack else "no LOGINACK"]
        parts += [
            f"{m.kind} {m.number} state {m.state} class {m.severity} (frame {m.frame}): {m.message}"
            for m in r.messages
            if m.kind == "error"
        ]
        return "  " + "; ".join(parts) + _decrypted(r.decrypted)
    if phase.name is PhaseName.REDIRECT and conn.response and conn.response.routing:
        rt = conn.response.routing
        return (
            f"  routed to {rt.server}:{rt.port} (ENVCHANGE type 20, frame {rt.frame})"
            f"{_decrypted(rt.decrypted)}"
        )
    if phase.name is PhaseName.CLOSE:
        if tcp.rst_frame is not None:
            return f"  reset by the {tcp.rst_side} (frame {tcp.rst_frame})"
        return ""
    return ""


def _decrypted(flag: bool) -> str:
    return " [decrypted]" if flag else ""


FRAMES_SHOWN = 20  # evidence frames listed on one line; the JSON and HTML reports list all


def _streams(streams: list[int]) -> str:
    if len(streams) <= STREAMS_SHOWN:
        return ", ".join(str(s) for s in streams)
    head = ", ".join(str(s) for s in streams[:STREAMS_SHOWN])
    return f"{head}, ... ({len(streams)} streams in all; every one is in the JSON report)"


def _frames(frames: list[int]) -> str:
    if len(frames) <= FRAMES_SHOWN:
        return ", ".join(str(f) for f in frames)
    head = ", ".join(str(f) for f in frames[:FRAMES_SHOWN])
    return f"{head}, ... ({len(frames)} frames in all; every one is in the JSON report)"
