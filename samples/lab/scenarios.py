"""The lab's scenarios (what the simulated network does) and drivers (which real client runs).

A scenario is a set of listeners, DNS records and firewall rules plus what the client is told to
connect to. It says nothing about the result: that comes from the run (server log, firewall sets,
the client's own report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .netlab import DNS_IP, GATEWAY_IP, LISTENER_IP, REPLICA_IP, WORKER_IP

GATEWAY_NAME = "mysrv.database.windows.net"
WORKER_NAME = "wk1.tr123.eastus1-a.worker.database.windows.net"
WORKER_PORT = 11042
MISSING_WORKER = "wk9.tr404.eastus1-a.worker.database.windows.net"  # never in DNS
LISTENER_NAME = "aglisten.contoso.lab"
REPLICA_NAME = "sqlnode2.contoso.lab"

# Exact names in the certificate: a wildcard covers one label only, and worker names have more.
CERT_NAMES = [GATEWAY_NAME, WORKER_NAME, LISTENER_NAME, REPLICA_NAME]

DNS_RECORDS = {
    GATEWAY_NAME: GATEWAY_IP,
    WORKER_NAME: WORKER_IP,
    LISTENER_NAME: LISTENER_IP,
    REPLICA_NAME: REPLICA_IP,
}


@dataclass
class Scenario:
    name: str
    description: str
    listeners: list[dict[str, Any]]
    connect_host: str = GATEWAY_NAME
    connect_port: int = 1433
    encrypt: str = "on"  # off | on | strict : what the client is asked for
    readonly: bool = False
    firewall: list[dict[str, Any]] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # driver features required: strict, readonly
    timeout: int = 15  # driver login timeout, seconds
    tds_version: str | None = None  # ask the driver for this TDS version (FreeTDS-based only)
    loss_percent: int = 0  # share of server->client data segments dropped (retransmissions)


def gateway(**kw: Any) -> dict[str, Any]:
    d = {
        "name": GATEWAY_NAME,
        "role": "gateway",
        "host": GATEWAY_IP,
        "port": 1433,
        "action": "route",
        "route_host": WORKER_NAME,
        "route_port": WORKER_PORT,
    }
    d.update(kw)
    return d


def worker(**kw: Any) -> dict[str, Any]:
    d = {"name": WORKER_NAME, "role": "worker", "host": WORKER_IP, "port": WORKER_PORT}
    d.update(kw)
    return d


def proxy(**kw: Any) -> dict[str, Any]:
    d = {"name": GATEWAY_NAME, "role": "proxy", "host": GATEWAY_IP, "port": 1433, "action": "serve"}
    d.update(kw)
    return d


SCENARIOS: list[Scenario] = [
    Scenario(
        "redirect_ok",
        "Redirect policy: gateway routes to a worker on 11042; all open.",
        [gateway(), worker()],
    ),
    Scenario(
        "redirect_tls12",
        "Redirect policy with gateway and worker capped at TLS 1.2.",
        [gateway(tls_max="1.2"), worker(tls_max="1.2")],
    ),
    Scenario(
        "redirect_tds73",
        "Redirect policy (TLS 1.2) with a client logging in as TDS 7.3, older than routing needs.",
        [gateway(tls_max="1.2"), worker(tls_max="1.2")],
        tds_version="7.3",
        needs=("tdsversion",),
    ),
    Scenario(
        "redirect_blocked",
        "Redirect policy; a firewall silently drops SYNs to 11042.",
        [gateway(), worker()],
        firewall=[{"daddr": WORKER_IP, "dport": WORKER_PORT, "verdict": "drop", "role": "worker"}],
    ),
    Scenario(
        "redirect_refused",
        "Redirect policy; a firewall answers SYNs to 11042 with RST.",
        [gateway(), worker()],
        firewall=[{"daddr": WORKER_IP, "dport": WORKER_PORT, "verdict": "reset", "role": "worker"}],
    ),
    Scenario(
        "proxy_ok", "Proxy policy: the whole session stays on the gateway, port 1433.", [proxy()]
    ),
    Scenario(
        "proxy_large_result",
        "Proxy policy; SELECT 1 is answered after 64 KB of INFO messages (many packets).",
        [proxy(padding=65536)],
    ),
    Scenario(
        "redirect_lossy",
        "Redirect policy over a lossy link: 8% of the servers' data segments are dropped;"
        " the worker's reply is 64 KB long.",
        [gateway(), worker(padding=65536)],
        loss_percent=8,
    ),
    Scenario(
        "login_failed_tls",
        "Gateway (Proxy) rejects the login with error 18456 inside TLS.",
        [proxy(action="fail_login")],
    ),
    Scenario(
        "login_failed_cleartext",
        "Server with optional encryption, client asks for none: 18456 travels in cleartext.",
        [proxy(action="fail_login", encryption="optional")],
        encrypt="off",
    ),
    Scenario(
        "redirect_nxdomain",
        "Gateway routes to a worker name that DNS answers NXDOMAIN.",
        [gateway(route_host=MISSING_WORKER), worker()],
    ),
    Scenario(
        "readonly_routing",
        "Always On listener routes ApplicationIntent=ReadOnly logins to a secondary.",
        [
            {
                "name": LISTENER_NAME,
                "role": "listener",
                "host": LISTENER_IP,
                "port": 1433,
                "action": "route_readonly",
                "route_host": REPLICA_NAME,
                "route_port": 1433,
            },
            {"name": REPLICA_NAME, "role": "replica", "host": REPLICA_IP, "port": 1433},
        ],
        connect_host=LISTENER_NAME,
        readonly=True,
        needs=("readonly",),
    ),
    Scenario(
        "strict_redirect",
        "TDS 8.0 strict (TLS first, ALPN tds/8.0) gateway and worker.",
        [gateway(strict=True), worker(strict=True)],
        encrypt="strict",
        needs=("strict",),
    ),
    Scenario(
        "strict_proxy",
        "TDS 8.0 strict, Proxy policy: one TLS-first session on 1433.",
        [proxy(strict=True)],
        encrypt="strict",
        needs=("strict",),
    ),
    Scenario(
        "encryption_mismatch",
        "Client requires encryption; the server answers ENCRYPT_NOT_SUP.",
        [proxy(encryption="refuse")],
    ),
    Scenario(
        "tls13_only",
        "Server accepts only TLS 1.3 (Proxy policy).",
        [proxy(tls_min="1.3", tls_max="1.3")],
    ),
    Scenario(
        "tls12_only",
        "Server accepts only TLS 1.2 (Proxy policy).",
        [proxy(tls_min="1.2", tls_max="1.2")],
    ),
    Scenario(
        "closed_after_prelogin",
        "Server reads PRELOGIN and closes without an answer.",
        [proxy(action="close_after_prelogin")],
    ),
    Scenario(
        "strict_only_nonstrict_client",
        "Server speaks only TDS 8.0 strict; the client starts with a cleartext PRELOGIN.",
        [proxy(strict=True)],
    ),
]


@dataclass
class Driver:
    name: str
    kind: str  # python | node | tsql
    features: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    module: str = ""  # pydrivers.py runner name


DRIVERS: list[Driver] = [
    Driver("tedious", "node", ("strict", "readonly")),
    Driver(
        "mssql-python-odbc18",
        "python",
        ("strict", "readonly"),
        {"MSSQL_PYTHON_NATIVE_PROVIDER": "msodbcsql18"},
        "mssql-python",
    ),
    Driver(
        "mssql-python-rs",
        "python",
        ("strict", "readonly"),
        {"MSSQL_PYTHON_NATIVE_PROVIDER": "mssql-odbc"},
        "mssql-python",
    ),
    Driver("pytds", "python", ("readonly",), module="pytds"),
    Driver("pymssql", "python", ("readonly", "tdsversion"), module="pymssql"),
    Driver("tsql", "tsql", ("tdsversion",)),
]

BY_SCENARIO = {s.name: s for s in SCENARIOS}
BY_DRIVER = {d.name: d for d in DRIVERS}
DNS_CONFIG = {"host": DNS_IP, "records": DNS_RECORDS}
