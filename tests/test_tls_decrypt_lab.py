"""Decrypt the lab's real driver captures with their key logs (docs/lab.md).

Each ``samples/pcaps/X.pcap`` with TLS has ``X.keys`` (written by the simulated server for every
session) and ``X.json`` (what the lab knows happened). The TLS records are taken from the TCP
payloads with scapy and a small test-side TDS unwrapping (tests/tls_records_util.py), decrypted,
and the plaintext must show what the lab says: the client's decrypted stream starts with LOGIN7
(after the PRELOGIN inside TLS for TDS 8.0), and the server's holds the routing ENVCHANGE (token
0xE3, type 20, MS-TDS 2.2.7.9) to the expected host and port, or the 18456 login error. The
password is never looked at: only the username is compared.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tls_records_util import Connection, capture_records

from tdslens.analyzer.keylog import read_keylog
from tdslens.dissectors.events import EnvChangeRouting, Error, Login7
from tdslens.dissectors.session import TdsDirection
from tdslens.dissectors.tls_decrypt import (
    CannotDecrypt,
    DecryptedData,
    DecryptFailure,
    TlsDecryptor,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "pcaps"
EXPECTED = sorted(
    p
    for p in SAMPLES.glob("*.json")
    if p.with_suffix(".pcap").exists() and p.with_suffix(".keys").exists()
)
PRELOGIN, LOGIN7, RESPONSE, ENVCHANGE, ROUTING = 0x12, 0x10, 0x04, 0xE3, 20


@dataclass
class Decrypted:
    client: bytes = b""
    server: bytes = b""
    failures: list[CannotDecrypt] = field(default_factory=list)


def decrypt(conn: Connection, keys: Path) -> Decrypted:
    dec = TlsDecryptor(read_keylog(keys))
    out = Decrypted()
    for r in conn.records:
        for res in dec.feed(r.from_client, r.content_type, r.version, r.fragment, r.frames):
            if isinstance(res, DecryptedData):
                if res.from_client:
                    out.client += res.data
                else:
                    out.server += res.data
            elif isinstance(res, CannotDecrypt):
                out.failures.append(res)
    return out


def packet_types(stream: bytes) -> list[int]:
    """TDS packet types of a decrypted stream (MS-TDS 2.2.3.1)."""
    types, p = [], 0
    while p + 8 <= len(stream):
        length = struct.unpack_from(">H", stream, p + 2)[0]
        if length < 8:
            break
        types.append(stream[p])
        p += length
    return types


def payloads(stream: bytes, ptype: int) -> bytes:
    out, p = b"", 0
    while p + 8 <= len(stream):
        length = struct.unpack_from(">H", stream, p + 2)[0]
        if length < 8:
            break
        if stream[p] == ptype:
            out += stream[p + 8 : p + length]
        p += length
    return out


def routing_targets(tokens: bytes) -> list[tuple[str, int]]:
    """Every well-formed ENVCHANGE type 20 in a token stream, found by a plain scan."""
    found = []
    for p in range(len(tokens) - 10):
        if tokens[p] != ENVCHANGE or tokens[p + 3] != ROUTING:
            continue
        protocol, port, chars = struct.unpack_from("<BHH", tokens, p + 6)
        name = tokens[p + 11 : p + 11 + 2 * chars]
        if protocol == 0 and len(name) == 2 * chars:
            found.append((name.decode("utf-16-le", "replace"), port))
    return found


def events(stream: bytes, from_client: bool) -> list:
    """The project's own TDS dissector over the decrypted stream (what integration will do)."""
    d = TdsDirection(from_client=from_client)
    return d.feed(stream, 1) + d.eof()


def _tcp(expected: dict) -> list[dict]:
    return [c for c in expected["connections"] if c["transport"] == "tcp"]


@pytest.mark.parametrize("path", EXPECTED, ids=[p.stem for p in EXPECTED])
def test_lab_capture_decrypts_as_the_lab_says(path: Path) -> None:
    pytest.importorskip("scapy")
    expected = json.loads(path.read_text())
    conns = {c.client: c for c in capture_records(path.with_suffix(".pcap"))}
    keys = path.with_suffix(".keys")
    for exp in _tcp(expected):
        conn = conns.get(tuple(exp["client"]))
        steps = exp["steps"] or []
        encrypted_login = exp["encryption"] in ("full", "login_only", "strict")
        where = f"{path.stem} {exp['role']} {exp['client']}"
        if conn is None or not conn.records:  # no TLS on this connection
            assert not ("login7" in steps and encrypted_login), where
            continue
        got = decrypt(conn, keys)
        if "login7" in steps and encrypted_login:
            assert got.failures == [], (where, got.failures[:3])
            types = packet_types(got.client)
            first = types[1] if exp["encryption"] == "strict" else types[0]
            assert first == LOGIN7, (where, types[:3])
            if exp["encryption"] == "strict":
                assert types[0] == PRELOGIN
            login = [e for e in events(got.client, True) if isinstance(e, Login7)]
            assert login and login[0].username == exp["login"]["username"], where
        if exp["routing"] and exp["encryption"] in ("full", "strict"):
            target = (exp["routing"]["host"], exp["routing"]["port"])
            assert target in routing_targets(payloads(got.server, RESPONSE)), where
            routed = [e for e in events(got.server, False) if isinstance(e, EnvChangeRouting)]
            assert [(e.server, e.port) for e in routed] == [target], where
        if exp["error_number"] and exp["encryption"] in ("full", "strict"):
            errors = [e for e in events(got.server, False) if isinstance(e, Error)]
            assert [e.number for e in errors] == [exp["error_number"]], where
        if exp["end"] == "tls_failed":
            # The handshake failed: no LOGIN7 was ever readable (by the server or by us).
            assert LOGIN7 not in packet_types(got.client), where
        if exp["end"] == "protocol_error" and (exp["first_bytes"] or "").startswith("1703"):
            # FreeTDS 1.3 opens its second leg with application data and no handshake.
            reasons = {f.reason for f in got.failures}
            assert reasons == {DecryptFailure.HANDSHAKE_MISSING}, where


def test_lab_routing_target_is_read_from_the_gateway_leg() -> None:
    """The headline case of issue 10: Azure's redirect is only visible decrypted."""
    path = SAMPLES / "redirect_ok__mssql-python-odbc18.json"
    if not path.exists():
        pytest.skip("the lab sample is absent")
    pytest.importorskip("scapy")
    expected = json.loads(path.read_text())
    gateway = next(c for c in _tcp(expected) if c["role"] == "gateway")
    conns = {c.client: c for c in capture_records(path.with_suffix(".pcap"))}
    got = decrypt(conns[tuple(gateway["client"])], path.with_suffix(".keys"))
    target = expected["verdict"]["routing_target"]
    assert routing_targets(payloads(got.server, RESPONSE)) == [(target["host"], target["port"])]
