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
    # With encrypt="off": ask for login-only encryption (PRELOGIN ENCRYPT_OFF) where the driver
    # has a switch for it, instead of no encryption at all (ENCRYPT_NOT_SUP).
    login_only: bool = False
    drivers: tuple[str, ...] = ()  # only these drivers (empty: every driver that has `needs`)


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
        "readonly_routing_cleartext",
        "On-premises Always On read-only routing with encryption off: the listener answers"
        " ENCRYPT_NOT_SUP and routes ReadOnly-intent logins to a secondary, all in cleartext.",
        [
            {
                "name": LISTENER_NAME,
                "role": "listener",
                "host": LISTENER_IP,
                "port": 1433,
                "action": "route_readonly",
                "route_host": REPLICA_NAME,
                "route_port": 1433,
                "encryption": "refuse",
            },
            {
                "name": REPLICA_NAME,
                "role": "replica",
                "host": REPLICA_IP,
                "port": 1433,
                "encryption": "refuse",
            },
        ],
        connect_host=LISTENER_NAME,
        readonly=True,
        encrypt="off",
        drivers=(
            "tedious",
            "mssql-python-odbc18",
            "mssql-python-rs",
            "pytds",
            "pymssql",
            "tsql",
            "pytds-1.9",
        ),
    ),
    Scenario(
        "redirect_cleartext",
        "Gateway and worker that do not support encryption (ENCRYPT_NOT_SUP): the routing"
        " ENVCHANGE travels in cleartext.",
        [gateway(encryption="refuse"), worker(encryption="refuse")],
        encrypt="off",
        drivers=(
            "tedious",
            "mssql-python-odbc18",
            "mssql-python-rs",
            "pytds",
            "pymssql",
            "tsql",
            "pytds-1.9",
            "tedious-1.0",
        ),
    ),
    Scenario(
        "redirect_login_only",
        "Gateway and worker with optional encryption (TLS 1.2), client asks for login-only"
        " encryption (ENCRYPT_OFF): LOGIN7 inside TLS, the routing ENVCHANGE in cleartext.",
        [
            gateway(encryption="optional", tls_max="1.2"),
            worker(encryption="optional", tls_max="1.2"),
        ],
        encrypt="off",
        login_only=True,
        needs=("login_only",),
    ),
    Scenario(
        "redirect_ignored",
        "Redirect policy (TLS 1.2); an old driver without routing support ignores the ENVCHANGE"
        " and sends its query on the gateway connection.",
        [gateway(tls_max="1.2"), worker(tls_max="1.2")],
        drivers=("pytds-1.9",),
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
    venv: str = "venv"  # python drivers: the venv under samples/lab/out that holds this driver
    script: str = "run_tedious.js"  # node drivers: the runner in samples/lab/drivers
    # True: runs only in scenarios that name it in `drivers` (an old release kept for one case)
    named_only: bool = False


DRIVERS: list[Driver] = [
    Driver("tedious", "node", ("strict", "readonly")),
    Driver(
        "mssql-python-odbc18",
        "python",
        ("strict", "readonly", "login_only"),
        {"MSSQL_PYTHON_NATIVE_PROVIDER": "msodbcsql18"},
        "mssql-python",
    ),
    Driver(
        "mssql-python-rs",
        "python",
        ("strict", "readonly", "login_only"),
        {"MSSQL_PYTHON_NATIVE_PROVIDER": "mssql-odbc"},
        "mssql-python",
    ),
    Driver("pytds", "python", ("readonly", "login_only"), module="pytds"),
    Driver("pymssql", "python", ("readonly", "tdsversion", "login_only"), module="pymssql"),
    Driver("tsql", "tsql", ("tdsversion", "readonly", "login_only")),
    # python-tds 1.9.1, the last release before routing support (1.10.0): it logs
    # "unknown env type: 20, skipping" and goes on using the gateway connection.
    Driver(
        "pytds-1.9", "python", ("readonly",), module="pytds", venv="venv-pytds19", named_only=True
    ),
    # tedious 1.0.0: prints "Unsupported ENVCHANGE type 20" and stays on the gateway.
    # Cleartext only: its TLS code needs crypto.createCredentials, gone from today's Node.js.
    Driver("tedious-1.0", "node", (), script="run_tedious_legacy.js", named_only=True),
]

BY_SCENARIO = {s.name: s for s in SCENARIOS}


def takes_part(sc: Scenario, drv: Driver) -> bool:
    """Whether a driver runs in a scenario: named there, or (unless named-only) has its needs."""
    if sc.drivers:
        return drv.name in sc.drivers
    return not drv.named_only and all(f in drv.features for f in sc.needs)


BY_DRIVER = {d.name: d for d in DRIVERS}
DNS_CONFIG = {"host": DNS_IP, "records": DNS_RECORDS}
