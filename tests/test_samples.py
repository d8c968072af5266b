"""The committed lab samples: every capture opens in tshark, and its TCP/UDP conversations are
exactly the connections its expected file lists (which the lab wrote from its own simulator log,
firewall sets and the driver's report, never from tdslens). Also checks the expected files'
documented shape (docs/lab.md). Needs tshark, but neither root nor the network.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "pcaps"
EXPECTED = sorted(SAMPLES.glob("*.json"))

ROLES = {"gateway", "worker", "proxy", "listener", "replica", "server", "dns", "unknown"}
TCP_ENDS = {
    "client_closed",
    "client_reset",
    "server_closed",
    "server_closed_after_wait",
    "server_closed_after_prelogin",
    "tls_failed",
    "protocol_error",
    "timeout",
    "syn_dropped_by_firewall",
    "reset_by_firewall",
    "no_listener",
}
REASONS = {
    None,
    "login_failed",
    "encryption_mismatch",
    "server_closed_after_prelogin",
    "routing_target_nxdomain",
    "second_leg_blocked",
    "second_leg_refused",
    "routing_ignored",
    "routing_not_followed",
    "tls_handshake_failed",
    "protocol_error",
    "no_connection",
    "client_error",
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _endpoint(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and 0 < value[1] < 65536
    )


def check_shape(doc: dict[str, Any]) -> list[str]:
    """Problems with one expected file, against the schema in docs/lab.md."""
    bad: list[str] = []

    def need(cond: bool, what: str) -> None:
        if not cond:
            bad.append(what)

    need(doc.get("schema") == "tdslens-lab-expected/1", "schema")
    need(isinstance(doc.get("capture"), str), "capture")
    need(doc.get("keylog") is None or isinstance(doc["keylog"], str), "keylog")
    need(isinstance(doc.get("scenario"), str), "scenario")
    need(isinstance(doc.get("description"), str), "description")
    drv = doc.get("driver", {})
    need(isinstance(drv.get("name"), str), "driver.name")
    req = doc.get("client_request", {})
    need(isinstance(req.get("host"), str) and isinstance(req.get("port"), int), "client_request")
    need(req.get("encrypt") in {"off", "on", "strict"}, "client_request.encrypt")
    v = doc.get("verdict", {})
    need(v.get("result") in {"ok", "failed"}, "verdict.result")
    need(v.get("reason") in REASONS, f"verdict.reason {v.get('reason')!r}")
    need((v.get("result") == "ok") == (v.get("reason") is None), "verdict.reason iff failed")
    need(v.get("followed_redirect") in {True, False, None}, "verdict.followed_redirect")
    tgt = v.get("routing_target")
    need(tgt is None or (isinstance(tgt["host"], str) and isinstance(tgt["port"], int)), "target")
    conns = doc.get("connections")
    need(isinstance(conns, list) and bool(conns), "connections")
    for i, c in enumerate(conns or []):
        need(c.get("transport") in {"tcp", "udp"}, f"connections[{i}].transport")
        need(c.get("role") in ROLES, f"connections[{i}].role {c.get('role')!r}")
        need(_endpoint(c.get("client")) and _endpoint(c.get("server")), f"connections[{i}] ends")
        if c.get("transport") == "tcp":
            need(c.get("end") in TCP_ENDS, f"connections[{i}].end {c.get('end')!r}")
            r = c.get("routing")
            need(r is None or (isinstance(r["host"], str) and isinstance(r["port"], int)), "r")
            need(isinstance(c.get("accepted_by_server"), bool), f"connections[{i}].accepted")
        else:
            need(c.get("role") == "dns" and isinstance(c.get("queries"), list), f"dns[{i}]")
    return bad


def _conversations(tshark: str, pcap: Path) -> tuple[set[tuple], set[tuple]]:
    """(tcp, udp) conversations as (client ip, client port, server ip, server port) per stream."""
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            "-n",
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "tcp.stream",
            "-e",
            "udp.stream",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "udp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
            "-e",
            "udp.dstport",
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.ack",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    tcp: dict[str, tuple] = {}
    udp: dict[str, tuple] = {}
    for line in out.stdout.splitlines():
        ts, us, src, tsp, usp, dst, tdp, udp_dp, syn, ack = line.split(",")
        if ts:
            # the client is whoever sent the bare SYN; otherwise the first sender
            key = (src, int(tsp), dst, int(tdp))
            if syn in {"1", "True"} and ack in {"0", "False"}:
                tcp[ts] = key
            else:
                tcp.setdefault(ts, key)
        elif us:
            udp.setdefault(us, (src, int(usp), dst, int(udp_dp)))
    return set(tcp.values()), set(udp.values())


def test_there_are_samples() -> None:
    assert EXPECTED, f"no expected files in {SAMPLES}"


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_expected_shape(path: Path) -> None:
    doc = _load(path)
    assert check_shape(doc) == []
    assert doc["capture"] == path.stem + ".pcap"
    assert (SAMPLES / doc["capture"]).is_file()
    if doc["keylog"]:
        assert (SAMPLES / doc["keylog"]).is_file()
    scenario, driver = path.stem.split("__")
    assert (doc["scenario"], doc["driver"]["name"]) == (scenario, driver)


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_capture_matches_expected(tshark: str, path: Path) -> None:
    doc = _load(path)
    tcp, udp = _conversations(tshark, SAMPLES / doc["capture"])

    def key(c: dict[str, Any]) -> tuple:
        return (c["client"][0], c["client"][1], c["server"][0], c["server"][1])

    want_tcp = {key(c) for c in doc["connections"] if c["transport"] == "tcp"}
    want_udp = {key(c) for c in doc["connections"] if c["transport"] == "udp"}
    assert tcp == want_tcp
    assert udp == want_udp


def test_samples_stay_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file())
    assert total < 20 * 1024 * 1024


def _tcp(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in doc["connections"] if c["transport"] == "tcp"]


def _routed_in_clear(doc: dict[str, Any]) -> bool:
    """Routed, and every routing response went unencrypted (no TLS, or TLS for LOGIN7 only)."""
    routed = [c for c in _tcp(doc) if c["routing"]]
    return bool(routed) and all(c["encryption"] in {"none", "login_only"} for c in routed)


ROUTED_IN_CLEAR = [p for p in EXPECTED if _routed_in_clear(_load(p))]
NOT_FOLLOWED = [
    p
    for p in EXPECTED
    if _load(p)["verdict"]["reason"] in {"routing_ignored", "routing_not_followed"}
]


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_keylog_iff_tls(path: Path) -> None:
    """A connection with TLS has a key log beside it; a null keylog means no TLS at all."""
    doc = _load(path)
    if any(c["tls"] for c in _tcp(doc)):
        assert doc["keylog"]
    if doc["keylog"] is None:
        assert not any(c["tls"] for c in _tcp(doc))


def _secret_lines(keys: Path) -> list[str]:
    return [ln for ln in keys.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_every_key_log_holds_a_secret_and_belongs_to_an_expected_file() -> None:
    """No key log without a secret (Python writes its comment line even with no TLS at all),
    and each is the one its expected file names; a null keylog has no .keys file beside it."""
    keys = sorted(SAMPLES.glob("*.keys"))
    assert [k.name for k in keys if not _secret_lines(k)] == []
    named = {_load(p)["keylog"] for p in EXPECTED} - {None}
    assert {k.name for k in keys} == named


def test_the_lab_keeps_no_key_log_without_a_secret(tmp_path: Path, monkeypatch) -> None:
    """Publishing a run without TLS leaves no key log, and removes the one an earlier run left."""
    from samples.lab import run

    base = "login_failed_cleartext__pytds"
    work, pcaps = tmp_path / "runs" / base, tmp_path / "pcaps"
    work.mkdir(parents=True)
    pcaps.mkdir()
    for suffix in (".pcap", ".json"):
        (work / f"{base}{suffix}").write_text("x")
    comment = "# TLS secrets log file, generated by OpenSSL / Python\n"
    (work / f"{base}.keys").write_text(comment)
    (pcaps / f"{base}.keys").write_text(comment)  # published by an earlier lab
    monkeypatch.setattr(run, "PCAPS", pcaps)
    run.publish(tmp_path / "runs")
    assert sorted(p.name for p in pcaps.iterdir()) == [f"{base}.json", f"{base}.pcap"]
    assert not (work / f"{base}.keys").exists()


def test_some_routing_tokens_travel_in_clear() -> None:
    scenarios = {_load(p)["scenario"] for p in ROUTED_IN_CLEAR}
    assert {"redirect_cleartext", "readonly_routing_cleartext", "redirect_login_only"} <= scenarios


@pytest.mark.parametrize("path", ROUTED_IN_CLEAR, ids=_ids(ROUTED_IN_CLEAR))
def test_cleartext_routing_token_is_readable_without_keys(tshark: str, path: Path) -> None:
    """tshark, given no key log, finds the ENVCHANGE type 20 on every routed connection, and
    its bytes carry the expected target (MS-TDS 2.2.7.9: protocol 0, port, UCS-2 server)."""
    doc = _load(path)
    cmd = [tshark, "-r", str(SAMPLES / doc["capture"]), "-n", "-Y", "tds.envchange.type == 20"]
    cmd += ["-T", "fields", "-E", "occurrence=l", "-e", "ip.src", "-e", "tcp.srcport"]
    cmd += ["-e", "tcp.payload"]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen: set[tuple[str, int]] = set()
    for line in out.stdout.splitlines():
        ip, port, payload = line.split("\t")
        seen.add((ip, int(port)))
        host, tport = doc["verdict"]["routing_target"].values()
        value = b"\x00" + struct.pack("<HH", tport, len(host)) + host.encode("utf-16-le")
        assert value in bytes.fromhex(payload.replace(":", ""))
    assert seen == {tuple(c["server"]) for c in _tcp(doc) if c["routing"]}


@pytest.mark.parametrize("path", NOT_FOLLOWED, ids=_ids(NOT_FOLLOWED))
def test_ignored_routing_has_no_second_leg(tshark: str, path: Path) -> None:
    """An old driver that ignores the routing token: never resolves the target, never connects
    to it; with routing_ignored it kept talking on the routed connection instead."""
    doc = _load(path)
    v = doc["verdict"]
    assert v["followed_redirect"] is False
    target = v["routing_target"]["host"]
    asked = [
        q["name"].rstrip(".").lower()
        for c in doc["connections"]
        if c["transport"] == "udp"
        for q in c["queries"]
    ]
    assert target not in asked
    routed = [c for c in _tcp(doc) if c["routing"]]
    assert routed
    # every TCP connection (retries included) went to the server that sent the routing token
    assert {tuple(c["server"]) for c in _tcp(doc)} == {tuple(routed[0]["server"])}
    if v["reason"] == "routing_ignored":
        assert all(c["data_after_response"] > 0 for c in routed)
