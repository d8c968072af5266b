"""Build a capture's expected-result file from what the lab itself knows.

Sources, all independent of tdslens: the simulator's event log (connections it accepted, what
it saw and answered, how each ended, DNS queries), nft's sets in the server namespace (every SYN
that arrived; which ones a firewall rule dropped or reset), and the driver's own report. The
schema is documented in docs/lab.md and checked by tests/test_samples.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .scenarios import DNS_RECORDS, Driver, Scenario

SCHEMA = "tdslens-lab-expected/1"


def _tcp_from_server(ev: dict[str, Any]) -> dict[str, Any]:
    outcome = ev.get("outcome", {})
    login = outcome.get("login")
    route = outcome.get("route")
    tls = ev.get("tls")
    if tls is not None:
        # True when the client's last TLS 1.3 flight came raw, not inside a PRELOGIN packet.
        tls = {**tls, "client_final_flight_unwrapped": bool(ev.get("tls_unwrapped_client_flight"))}
    conn: dict[str, Any] = {
        "transport": "tcp",
        "role": ev["role"],
        "client": ev["client"],
        "server": ev["server"],
        "server_name": ev["listener"],
        "accepted_by_server": True,
        "steps": ev.get("steps", []),
        "encryption": ev.get("encryption"),
        "tls": tls,
        "prelogin": ev.get("prelogin"),
        "login": ev.get("login"),
        "login_result": login,
        "error_number": outcome.get("error"),
        "routing": {"host": route[0], "port": route[1]} if route else None,
        "queries": outcome.get("queries", []),
        "data_after_response": ev.get("after_response_bytes", 0),
        "end": ev.get("end"),
        "error": ev.get("error"),
        "first_bytes": ev.get("first_bytes"),
        "time": ev.get("accepted"),
    }
    return conn


def _role_for(sc: Scenario, ip: str, port: int) -> tuple[str, str | None]:
    for lst in sc.listeners:
        if lst["host"] == ip and lst["port"] == port:
            return lst["role"], lst["name"]
    return "unknown", None


def build_expected(
    *,
    scenario: Scenario,
    driver: Driver,
    client: dict[str, Any],
    events: list[dict[str, Any]],
    hits: list[dict[str, Any]],
    seen: list[list[Any]],
    capture: str,
    keylog: str | None,
    args: dict[str, Any],
    started: float,
    duration: float,
) -> dict[str, Any]:
    tcp = [_tcp_from_server(e) for e in events if e.get("event") == "connection"]
    known = {(c["client"][0], c["client"][1], c["server"][0], c["server"][1]) for c in tcp}
    dropped = {(h["daddr"], h["dport"], cl[0], cl[1]): h for h in hits for cl in h["clients"]}
    for cip, cport, sip, sport in seen:
        if (cip, cport, sip, sport) in known:
            continue
        rule = dropped.get((sip, sport, cip, cport))
        role, name = _role_for(scenario, sip, sport)
        if rule is not None:
            end = "syn_dropped_by_firewall" if rule["verdict"] == "drop" else "reset_by_firewall"
        else:
            end = "no_listener"
        tcp.append(
            {
                "transport": "tcp",
                "role": role,
                "client": [cip, cport],
                "server": [sip, sport],
                "server_name": name,
                "accepted_by_server": False,
                "steps": [],
                "encryption": None,
                "tls": None,
                "prelogin": None,
                "login": None,
                "login_result": None,
                "error_number": None,
                "routing": None,
                "queries": [],
                "data_after_response": 0,
                "end": end,
                "error": None,
                "first_bytes": None,
                "time": None,
            }
        )
    tcp.sort(key=lambda c: (c["time"] is None, c["time"] or 0, c["client"][1]))

    dns: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        if e.get("event") != "dns_query":
            continue
        key = (e["client"][0], e["client"][1])
        flow = dns.setdefault(
            key,
            {
                "transport": "udp",
                "role": "dns",
                "client": e["client"],
                "server": e["server"],
                "queries": [],
                "time": e["time"],
            },
        )
        flow["queries"].append(
            {
                "name": e["name"],
                "type": e["qtype"],
                "rcode": e["rcode"],
                "answer": e["answer"],
            }
        )

    verdict = _verdict(client, tcp, list(dns.values()))
    for c in tcp:
        c.pop("time", None)
    return {
        "schema": SCHEMA,
        "capture": capture,
        "keylog": keylog,
        "scenario": scenario.name,
        "description": scenario.description,
        "driver": {"name": driver.name, "version": client.get("version")},
        "client_request": {
            "host": args["host"],
            "port": args["port"],
            "encrypt": args["encrypt"],
            "readonly_intent": args["readonly"],
            "login_timeout_s": args["timeout"],
        },
        "verdict": verdict,
        "connections": tcp + sorted(dns.values(), key=lambda d: d.pop("time")),
        "generated": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "lab_run_seconds": round(duration, 1),
    }


def _verdict(
    client: dict[str, Any], tcp: list[dict[str, Any]], dns: list[dict[str, Any]]
) -> dict[str, Any]:
    routed = [c for c in tcp if c["routing"]]
    target = routed[0]["routing"] if routed else None
    followed: bool | None = None
    second: list[dict[str, Any]] = []
    nx = False
    if target:
        ip = DNS_RECORDS.get(target["host"])
        second = [c for c in tcp if ip and c["server"] == [ip, target["port"]]]
        followed = bool(second)
        nx = any(
            q["name"].rstrip(".").lower() == target["host"] and q["rcode"] == "NXDOMAIN"
            for d in dns
            for q in d["queries"]
        )
    reason: str | None = None
    if not client.get("ok"):
        ends = {c["end"] for c in tcp}
        if any(c["login_result"] == "failed" for c in tcp):
            reason = "login_failed"
        elif any(c["encryption"] == "mismatch" for c in tcp):
            reason = "encryption_mismatch"
        elif "server_closed_after_prelogin" in ends:
            reason = "server_closed_after_prelogin"
        elif target and not second and nx:
            reason = "routing_target_nxdomain"
        elif target and any(c["end"] == "syn_dropped_by_firewall" for c in second):
            reason = "second_leg_blocked"
        elif target and any(c["end"] == "reset_by_firewall" for c in second):
            reason = "second_leg_refused"
        elif target and not second and any(c["data_after_response"] for c in routed):
            reason = "routing_ignored"
        elif target and not second:
            reason = "routing_not_followed"
        elif "tls_failed" in ends:
            reason = "tls_handshake_failed"
        elif "protocol_error" in ends:
            reason = "protocol_error"
        elif not tcp:
            reason = "no_connection"
        else:
            reason = "client_error"
    return {
        "result": "ok" if client.get("ok") else "failed",
        "reason": reason,
        "client_error": client.get("error"),
        "client_elapsed_s": client.get("elapsed"),
        "routing_target": target,
        "followed_redirect": followed,
    }
