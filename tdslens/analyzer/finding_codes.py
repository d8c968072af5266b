"""The finding codes: stable API, each with its severity and what to do about it.

Why a module of its own: reports, scripts and tests key on these codes, so they live apart from
the rules that detect them (findings.py) and change only on purpose. `PRIORITY` says which
finding explains a failed attempt first; docs/findings.md documents every code.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdslens.analyzer.model import Finding, Severity

E, W, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO


@dataclass(frozen=True, slots=True)
class Code:
    """The stable part of a finding: severity and what to do."""

    severity: Severity
    remedy: str


CODES: dict[str, Code] = {
    "REDIRECT_BLOCKED": Code(
        E,
        "Allow outbound TCP from the client to the Azure SQL addresses of the region on ports "
        "11000-11999 (firewall, NSG, proxy appliance), or switch the server's connection policy "
        "to Proxy so the whole session stays on 1433.",
    ),
    "REDIRECT_REFUSED": Code(
        E,
        "Something between client and worker rejects the redirect port with a reset: open "
        "outbound 11000-11999 to the region's Azure SQL addresses, or use the Proxy policy.",
    ),
    "REDIRECT_NOT_FOLLOWED": Code(
        E,
        "Check the capture filter first (it must include ports 11000-11999). Otherwise use a "
        "driver that supports routing (TDS 7.4: ODBC 11+, JDBC 4.2+, ADO.NET 4.5+), or set the "
        "server's connection policy to Proxy.",
    ),
    "REDIRECT_DNS_FAILED": Code(
        E,
        "The client must resolve the worker name the gateway sends: check the DNS server and "
        "any conditional forwarders / private DNS zones for database.windows.net.",
    ),
    "REDIRECT_LOGIN_FAILED": Code(
        E,
        "The redirect port is reachable, but the session on it failed: see the failure inside "
        "(TLS, login, protocol). An old or buggy driver is the usual cause; update it.",
    ),
    "GATEWAY_UNREACHABLE": Code(
        E,
        "Nothing answered the SYN: check the address the name resolves to, outbound 1433 on "
        "firewalls, and (Azure) the server's firewall rules / private endpoint.",
    ),
    "CONNECTION_REFUSED": Code(
        E,
        "The server (or a firewall in front of it) reset the connection at once: check that "
        "SQL Server listens on that port and that no firewall rejects it.",
    ),
    "LOGIN_FAILED": Code(
        E,
        "Fix the credentials, the database name or the login's permissions as the error says; "
        "for 18456 state 1 read the server's error log for the real state.",
    ),
    "ENCRYPTION_MISMATCH": Code(
        E,
        "Make the encryption settings agree: enable TLS on the server (certificate) or set the "
        "client's Encrypt option to what the server supports.",
    ),
    "TLS_HANDSHAKE_FAILED": Code(
        E,
        "Compare the TLS versions and cipher suites both sides allow, and whether the client "
        "trusts the server certificate (TrustServerCertificate / CA bundle).",
    ),
    "TLS_VERSION_REJECTED": Code(
        E,
        "Enable a TLS version both sides share (TLS 1.2 at least; Azure SQL refuses older "
        "ones): update the client's TLS library or its minimum-version setting.",
    ),
    "STRICT_REQUIRED": Code(
        E,
        "The server accepts TDS 8.0 only: set Encrypt=strict in the connection string (needs "
        "ODBC 18+, Microsoft.Data.SqlClient 5+, JDBC 11.2+ or a recent tedious).",
    ),
    "CLOSED_AFTER_PRELOGIN": Code(
        E,
        "The server hung up before answering PRELOGIN: check whether it requires strict "
        "(TDS 8.0) encryption, whether something on the path inspects and drops TDS, and the "
        "server's error log.",
    ),
    "CLOSED_DURING_LOGIN": Code(
        E,
        "The connection ended before the login completed: read the phase and who closed it; "
        "check the server's error log and the client's error text.",
    ),
    "CONNECTION_RESET": Code(
        E,
        "Find who sent the reset: the server (its error log), the client (a timeout or a "
        "crash), or a middlebox (an idle timeout or inspection on the path).",
    ),
    "LOGIN_RESULT_HIDDEN": Code(
        W,
        "Decrypt the capture with the TLS key log (SSLKEYLOGFILE) or read the client's error: "
        "a failed login and a redirect whose second leg is not in the capture look the same.",
    ),
    "SLOW_LOGIN": Code(
        W,
        "Look at the slowest phase: TCP handshake = network latency; TLS = certificate checks "
        "(revocation lookups); login = authentication (Entra ID, Kerberos) or a busy server.",
    ),
    "TCP_RETRANSMISSIONS": Code(
        W,
        "Packets are being lost on the path: check the network (MTU, congestion, a flapping "
        "link) between the capture point and the server.",
    ),
    "ZERO_WINDOW": Code(
        W,
        "One side stopped reading: a zero window from the client means the application does "
        "not consume results fast enough; from the server, it is overloaded.",
    ),
    "PROXY_POLICY_IN_USE": Code(
        INFO,
        "Nothing is wrong. For lower latency from inside Azure, the Redirect policy keeps the "
        "gateway out of the path (needs ports 11000-11999 open).",
    ),
    "CLIENT_TDS_TOO_OLD": Code(
        W,
        "The driver speaks TDS older than 7.4, so Azure SQL keeps it on the gateway (Proxy) "
        "and it cannot follow redirects: update the driver.",
    ),
    "CAPTURE_INCOMPLETE": Code(
        W,
        "Capture again from before the connection starts until after it fails, with a full "
        "snap length, on the client, without a port filter (or including 11000-11999 and "
        "DNS).",
    ),
}

# Which finding explains a failed attempt first, when one try has several.
PRIORITY = [
    "REDIRECT_BLOCKED",
    "REDIRECT_REFUSED",
    "REDIRECT_DNS_FAILED",
    "REDIRECT_NOT_FOLLOWED",
    "REDIRECT_LOGIN_FAILED",
    "GATEWAY_UNREACHABLE",
    "CONNECTION_REFUSED",
    "ENCRYPTION_MISMATCH",
    "STRICT_REQUIRED",
    "TLS_VERSION_REJECTED",
    "TLS_HANDSHAKE_FAILED",
    "CLOSED_AFTER_PRELOGIN",
    "LOGIN_FAILED",
    "CONNECTION_RESET",
    "CLOSED_DURING_LOGIN",
    "LOGIN_RESULT_HIDDEN",
    "CAPTURE_INCOMPLETE",
    "CLIENT_TDS_TOO_OLD",
    "SLOW_LOGIN",
    "TCP_RETRANSMISSIONS",
    "ZERO_WINDOW",
    "PROXY_POLICY_IN_USE",
]


def make(
    code: str, title: str, detail: str, conns: list[int], frames: list[int], remedy: str = ""
) -> Finding:
    c = CODES[code]
    return Finding(
        code=code,
        severity=c.severity,
        title=title,
        detail=detail,
        remedy=remedy or c.remedy,
        connections=sorted(set(conns)),
        frames=sorted({f for f in frames if f}),
    )
