"""The machine-readable report: an Analysis as one JSON document (schema: docs/report.schema.json).

Why a dict built by hand instead of ``dataclasses.asdict``: the document is an API. Field names,
units and shapes are fixed by a versioned schema, times come both as ISO 8601 UTC (for people and
spreadsheets) and as integer nanoseconds (exact, for tools), and nothing the model might grow
later (a password, raw bytes) leaks into it by accident. The HTML and CSV renderers read this same
document, so every output says the same thing.

Bump ``SCHEMA_VERSION``'s major number when a field changes meaning or disappears, the minor one
when fields are added.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, overload

from tdslens import __version__
from tdslens.analyzer.icmp_quote import describe
from tdslens.analyzer.model import (
    Analysis,
    ConnectionRecord,
    DnsRecord,
    Phase,
    PhaseName,
)
from tdslens.analyzer.tcp_events import Endpoint, IcmpError

SCHEMA_VERSION = "1.2"
SCHEMA_ID = "https://github.com/tdslens/tdslens/docs/report.schema.json"

# Link-layer header types by LINKTYPE_* value, for the summary (tcpdump.org list).
LINKTYPE_NAMES = {
    0: "NULL (BSD loopback)",
    1: "Ethernet",
    12: "Raw IP",
    14: "Raw IP",
    101: "Raw IP",
    108: "OpenBSD loopback",
    113: "Linux cooked (SLL)",
    228: "Raw IPv4",
    229: "Raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}
# Server ports Azure SQL uses for redirected (second-leg) connections; used only to label a
# connection's role when the analysis carries no correlation (see docs/reports.md, "Roles").
REDIRECT_PORT_RANGES = ((11000, 11999), (14000, 14999))
GATEWAY_PORT = 1433
# Field names the generic converter must never copy, whatever object they appear on.
SECRET_FIELDS = frozenset({"password", "passwd", "pwd", "secret", "token", "access_token"})
# Fields ending in _ns that are durations, not instants (no ISO sibling is added for them).
DURATION_HINTS = ("rtt", "duration", "elapsed", "delay", "timeout", "wait", "gap", "took")


def iso(ns: int | None) -> str | None:
    """Epoch nanoseconds as ISO 8601 UTC with all nine digits: ``...T10:00:00.123456789Z``."""
    if ns is None:
        return None
    sec, frac = divmod(int(ns), 1_000_000_000)
    return f"{_iso_seconds(sec)}.{frac:09d}Z"


@lru_cache(maxsize=4096)
def _iso_seconds(sec: int) -> str:
    """Cached: a capture's timestamps share few distinct seconds, and strftime is slow."""
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def to_json(analysis: Analysis) -> dict[str, Any]:
    """The report document for one analysis (plain dicts/lists/str/int/bool/None only)."""
    return {key: list(value) if isinstance(value, Entries) else value
            for key, value in _document(analysis)}  # fmt: skip


def lazy_json(analysis: Analysis) -> dict[str, Any]:
    """``to_json(analysis)`` with its long lists (connections, DNS, redirects, attempts,
    findings) as `Entries`: sequences that make each item when it is read. For renderers that
    read each item once, or only some (the HTML report): a large capture's document never
    sits in memory whole."""
    return dict(_document(analysis))


def write_json(analysis: Analysis, path: str | Path) -> Path:
    """Write ``to_json(analysis)`` as UTF-8, one connection (or DNS message, attempt,
    finding, ...) per line; returns the path written.

    The document is written as it is built, one list item at a time: a large capture's
    report never sits in memory whole (tens of thousands of connections would take ~15 KB
    each as dicts). And not ``json.dump(indent=...)``: with an indent the standard library
    encodes in pure Python, several seconds for a large capture; one C-encoded line per item
    is ~10x faster, and still easy to read, diff and grep.
    """
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        out.write("{")
        sep = "\n"
        for key, value in _document(analysis):
            out.write(f"{sep} {_dumps(key)}: ")
            sep = ",\n"
            if isinstance(value, Entries | list):
                item_sep = "[\n  "
                for item in value:
                    out.write(item_sep)
                    out.write(_dumps(item))
                    item_sep = ",\n  "
                out.write("[]" if item_sep == "[\n  " else "\n ]")
            else:
                out.write(_dumps(value))
        out.write("\n}\n")
    return path


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _document(analysis: Analysis) -> Iterator[tuple[str, Any]]:
    """The report's top-level keys in order; the long lists as `Entries`, made when read."""
    conns = ConnectionEntries(analysis)
    verdict = analysis.verdict
    yield "schema_version", SCHEMA_VERSION
    yield "generator", {"name": "tdslens", "version": __version__}
    yield "capture", _capture(analysis)
    yield "summary", _summary(analysis, conns.roles, conns.outcomes)
    yield "connections", conns
    yield "dns", Entries(analysis.dns, _dns)
    yield "redacted", analysis.redacted
    yield "correlated", bool(analysis.roles) or verdict is not None
    yield "verdict", plain(verdict)
    yield "redirects", Entries(analysis.redirects, plain)
    yield "attempts", Entries(analysis.attempts, plain)
    yield "findings", Entries(analysis.findings, _finding)


class Entries(Sequence[dict[str, Any]]):
    """A list of the document made one item at a time, when read (again if read again).

    As dicts, a large capture's connection entries alone would take ~10 KB each: 37,000 of
    them held at once cost more memory than the whole analysis. So nothing holds a long list
    whole: `write_json` writes each item as it is made, and the HTML report makes items for
    its tables and again for the few that its ladders draw.
    """

    def __init__(self, items: Sequence[Any], make: Callable[[Any], dict[str, Any]]) -> None:
        self.items = items  # the model's objects
        self.make = make  # model object -> its entry

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self.make(x) for x in self.items[i]]
        return self.make(self.items[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self.make, self.items)


class ConnectionEntries(Entries):
    """The connection entries, with each connection's role and outcome (also the summary's)."""

    def __init__(self, analysis: Analysis) -> None:
        self.roles = connection_roles(analysis)
        routed = {r.gateway for r in analysis.redirects}
        self.outcomes = {
            c.stream: connection_outcome(c, c.stream in routed) for c in analysis.connections
        }
        super().__init__(analysis.connections, self._entry)

    def _entry(self, c: ConnectionRecord) -> dict[str, Any]:
        return _connection(c, self.roles[c.stream], self.outcomes[c.stream])


# -- roles -------------------------------------------------------------------------------------


@dataclass(slots=True)
class RoleView:
    """A connection's role as the report shows it, and where the role came from."""

    role: str
    source: str  # "correlation" or "port"
    server_name: str | None = None
    attempt: int | None = None
    reasons: list[str] = field(default_factory=list)


def connection_roles(analysis: Analysis) -> dict[int, RoleView]:
    """Role per tcp.stream: the correlation's word when it has one, else the port's.

    The correlation layer (``Analysis.roles``) names each leg and says why. For an analysis made
    without it, the conventional port is the only hint a reader has; the report says which of
    the two a role came from (``role_source``).
    """
    roles: dict[int, RoleView] = {}
    for r in analysis.roles:
        roles[r.stream] = RoleView(
            str(_enum_value(r.role)), "correlation", r.server_name, r.attempt,
            [str(x) for x in r.reasons],
        )  # fmt: skip
    for conn in analysis.connections:
        if conn.stream not in roles:
            roles[conn.stream] = RoleView(_port_role(conn), "port")
    return roles


def _port_role(conn: ConnectionRecord) -> str:
    if conn.protocol == "other":
        return "other"
    port = conn.server.port
    if conn.phase(PhaseName.REDIRECT) is not None:
        return "gateway"
    if any(lo <= port <= hi for lo, hi in REDIRECT_PORT_RANGES):
        return "worker"
    return "server"


# -- outcome -----------------------------------------------------------------------------------


def connection_outcome(conn: ConnectionRecord, routed: bool = False) -> str:
    """A one-word label of where the connection ended, read straight off its recorded facts.

    ``routed``: the correlation linked this leg to a redirect (its routing token may have been
    encrypted). Order matters only where facts coexist (a redirect is also a login response).
    """
    tcp = conn.tcp
    if conn.protocol == "other":
        return "not_tds"
    if tcp.conn_state == "S0":
        return "no_answer"
    if tcp.conn_state == "REJ":
        return "refused"
    if routed or conn.phase(PhaseName.REDIRECT) is not None:
        return "redirected"
    resp = conn.response
    if resp is not None and any(m.kind == "error" for m in resp.messages):
        return "login_error"
    if conn.tls is not None and conn.tls.alert:
        return "tls_alert"
    if (resp is not None and resp.login_ack) or conn.phase(PhaseName.DATA) is not None:
        return "logged_in"
    reached = conn.reached
    return f"stopped_after_{reached.value}" if reached is not None else "no_data"


# -- pieces ------------------------------------------------------------------------------------


def _endpoint(e: Endpoint) -> dict[str, Any]:
    return {"address": e.address, "port": e.port}


def _capture(a: Analysis) -> dict[str, Any]:
    info = a.capture
    starts = [c.tcp.first_ts_ns for c in a.connections] + [d.ts_ns for d in a.dns]
    ends = [c.tcp.last_ts_ns for c in a.connections] + [d.ts_ns for d in a.dns]
    first = min(starts) if starts else None
    last = max(ends) if ends else None
    return {
        "path": info.path,
        "file_name": PurePath(info.path).name,
        "format": info.format,
        "compressed": info.compressed,
        "file_size": info.file_size,
        "frames": a.frames,
        "interfaces": [
            {
                "index": i.index,
                "linktype": i.linktype,
                "linktype_name": LINKTYPE_NAMES.get(i.linktype, f"LINKTYPE {i.linktype}"),
                "snaplen": i.snaplen,
                "name": i.name,
            }
            for i in info.interfaces
        ],
        "first_time": iso(first),
        "first_ns": first,
        "last_time": iso(last),
        "last_ns": last,
        "duration_ns": (last - first) if first is not None and last is not None else None,
        "problems": [{"frame": p.frame, "message": p.message} for p in a.problems],
    }


def _summary(a: Analysis, roles: dict[int, RoleView], outcomes: dict[int, str]) -> dict[str, Any]:
    """Counts over the connections, from the same role and outcome their entries show."""
    by_role: dict[str, int] = {}
    by_outcome: dict[str, int] = {}
    by_role_outcome: dict[str, dict[str, int]] = {}
    for conn in a.connections:
        role, outcome = roles[conn.stream].role, outcomes[conn.stream]
        by_role[role] = by_role.get(role, 0) + 1
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        cell = by_role_outcome.setdefault(role, {})
        cell[outcome] = cell.get(outcome, 0) + 1
    severities: dict[str, int] = {}
    for f in a.findings:
        key = str(_enum_value(f.severity))
        severities[key] = severities.get(key, 0) + 1
    return {
        "connections": len(a.connections),
        "tds_connections": sum(1 for c in a.connections if c.protocol in ("tds", "tds8")),
        "by_role": by_role,
        "by_outcome": by_outcome,
        "by_role_outcome": by_role_outcome,
        "findings_by_severity": severities,
        "dns_messages": len(a.dns),
    }


def _phase(p: Phase) -> dict[str, Any]:
    return {
        "name": p.name.value,
        "first_frame": p.first_frame,
        "last_frame": p.last_frame,
        "frames": p.frames,
        "start": iso(p.start_ns),
        "start_ns": p.start_ns,
        "end": iso(p.end_ns),
        "end_ns": p.end_ns,
        "inferred": p.inferred,
    }


def _connection(c: ConnectionRecord, role: RoleView, outcome: str) -> dict[str, Any]:
    tcp = c.tcp
    login = c.login
    pre = c.prelogin
    resp = c.response
    return {
        "id": f"c{c.stream}",
        "tcp_stream": c.stream,
        "client": _endpoint(c.client),
        "server": _endpoint(c.server),
        "first_frame": tcp.first_frame,
        "last_frame": tcp.last_frame,
        "start": iso(tcp.first_ts_ns),
        "start_ns": tcp.first_ts_ns,
        "end": iso(tcp.last_ts_ns),
        "end_ns": tcp.last_ts_ns,
        "duration_ns": tcp.last_ts_ns - tcp.first_ts_ns,
        "protocol": c.protocol,
        "role": role.role,
        "role_source": role.source,
        "role_reasons": role.reasons,
        "server_name": role.server_name,
        "attempt": role.attempt,
        "outcome": outcome,
        "reached": c.reached.value if c.reached is not None else None,
        "phases": [_phase(p) for p in c.phases],
        "tcp": {
            "state": tcp.conn_state,
            "history": tcp.history,
            "roles_guessed": tcp.roles_guessed,
            "continued": tcp.continued,
            "syn_frames": list(tcp.syn_frames),
            "synack_frame": tcp.synack_frame,
            "handshake_rtt_ns": tcp.handshake_rtt_ns,
            "rst_side": tcp.rst_side,
            "rst_frame": tcp.rst_frame,
            "packets": tcp.to_server.packets + tcp.to_client.packets,
            "bytes_to_server": tcp.to_server.payload_bytes,
            "bytes_to_client": tcp.to_client.payload_bytes,
            "retransmissions": tcp.to_server.retransmissions + tcp.to_client.retransmissions,
            "gaps": tcp.to_server.gaps + tcp.to_client.gaps,
            "zero_windows": len(tcp.zero_windows),
            "icmp_errors": [_icmp_error(e) for e in tcp.icmp_errors],
        },
        "tds": {
            "login_version": login.tds_version if login else None,
            "server_version": resp.tds_version if resp else None,
            "server_program": resp.program if resp else None,
            "requests": c.requests,
            "prelogin": None
            if pre is None
            else {
                "client_version": pre.client_version,
                "server_version": pre.server_version,
                "client_encryption": pre.client_encryption,
                "server_encryption": pre.server_encryption,
                "instance": pre.instance,
                "mars": pre.mars,
                "fedauth_required": pre.fedauth_required,
                "frames": list(pre.frames),
                "decrypted": pre.decrypted,
            },
        },
        "tls": None if c.tls is None else _tls(c),
        "login": None
        if login is None
        else {
            "username": login.username,
            "database": login.database,
            "appname": login.appname,
            "hostname": login.hostname,
            "servername": login.servername,
            "library": login.library,
            "tds_version": login.tds_version,
            "packet_size": login.packet_size,
            "read_only_intent": login.read_only_intent,
            "sspi": login.sspi,
            "password_present": login.password_present,
            "features": list(login.features),
            "frame": login.frame,
            "decrypted": login.decrypted,
        },
        "response": None
        if resp is None
        else {
            "login_ack": resp.login_ack,
            "tds_version": resp.tds_version,
            "program": resp.program,
            "database": resp.database,
            "packet_size": resp.packet_size,
            "decrypted": resp.decrypted,
            "routing": None
            if resp.routing is None
            else {
                "server": resp.routing.server,
                "port": resp.routing.port,
                "protocol": resp.routing.protocol,
                "frame": resp.routing.frame,
                "decrypted": resp.routing.decrypted,
            },
            "messages": [
                {
                    "kind": m.kind,
                    "number": m.number,
                    "state": m.state,
                    "severity": m.severity,
                    "message": m.message,
                    "server": m.server,
                    "frame": m.frame,
                }
                for m in resp.messages
            ],
        },
        "problems": [
            {"what": p.what, "detail": p.detail, "frames": list(p.frames)} for p in c.problems
        ],
        "decryption": plain(c.decryption),
    }


def _tls(c: ConnectionRecord) -> dict[str, Any]:
    t = c.tls
    assert t is not None
    return {
        "carried_in_tds": t.carried_in_tds,
        "client_versions": list(t.client_versions),
        "version": t.version,
        "cipher_suite": t.cipher_suite,
        "sni": t.sni,
        "alpn": list(t.alpn),
        "certificate_subject": t.certificate_subject,
        "certificate_issuer": t.certificate_issuer,
        "certificate_san": list(t.certificate_san),
        "certificate_not_after": t.certificate_not_after,
        "alert": t.alert,
        "alert_frame": t.alert_frame,
        "handshake_complete": t.handshake_complete,
    }


def _icmp_error(e: IcmpError) -> dict[str, Any]:
    return {
        "frame": e.frame,
        "time": iso(e.ts_ns),
        "ts_ns": e.ts_ns,
        "family": "icmp" if e.family == 4 else "icmpv6",
        "type": e.type,
        "code": e.code,
        "description": describe(e.family, e.type, e.code),
        "reporter": e.reporter,
        "from_client": e.from_client,
        "quoted_flags": e.quoted_flags,
    }


def _dns(d: DnsRecord) -> dict[str, Any]:
    return {
        "frame": d.frame,
        "time": iso(d.ts_ns),
        "ts_ns": d.ts_ns,
        "client": _endpoint(d.client),
        "server": _endpoint(d.server),
        "response": d.response,
        "id": d.id,
        "names": list(d.names),
        "rcode": d.rcode,
        "addresses": list(d.addresses),
        "cnames": list(d.cnames),
    }


def _finding(f: Any) -> dict[str, Any]:
    out = {
        "code": f.code,
        "severity": str(_enum_value(f.severity)),
        "title": f.title,
        "detail": f.detail,
        "remedy": f.remedy,
        "connections": [int(s) for s in f.connections],
        "frames": [int(n) for n in f.frames],
    }
    extra = plain(f)
    if isinstance(extra, dict):
        for key, value in extra.items():
            out.setdefault(key, value)
    return out


# -- generic conversion for model parts this module does not name --------------------------------


def _enum_value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


def plain(obj: Any) -> Any:
    """Any model value as JSON data: dataclasses by field, enums by value, instants as ISO too.

    Used for the correlation's records (redirects, attempts, verdicts), so that fields it adds
    appear without a change here; fields named like secrets are dropped on principle.
    """
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj.value if isinstance(obj, Enum) else obj
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Endpoint):
        return _endpoint(obj)
    plan = _plan(type(obj))
    if plan is not None:
        out: dict[str, Any] = {}
        for name, instant in plan:
            value = getattr(obj, name)
            out[name] = plain(value)
            if instant and isinstance(value, int):
                out[name[:-3] + "_time"] = iso(value)
        return out
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items() if str(k).lower() not in SECRET_FIELDS}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    return str(obj)


@lru_cache(maxsize=256)
def _plan(cls: type) -> tuple[tuple[str, bool], ...] | None:
    """(field name, is an instant in ns) for a dataclass type, secrets left out; None otherwise."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(
        (f.name, f.name.endswith("_ns") and not any(h in f.name for h in DURATION_HINTS))
        for f in dataclasses.fields(cls)
        if f.name.lower() not in SECRET_FIELDS
    )
