"""Test helpers for TLS decryption: real OpenSSL sessions in memory, and TDS captures unwrapped.

``make_session`` runs a client and a server ``ssl.SSLObject`` over ``ssl.MemoryBIO`` pairs (no
sockets), with a key log, and returns every TLS record in wire order plus the key log text. Python
cannot choose TLS 1.3 cipher suites, so a session that needs one runs in a child interpreter with
an ``OPENSSL_CONF`` that sets ``Ciphersuites`` (``python tests/tls_records_util.py SPEC``).

``capture_records`` reads a lab capture with scapy and returns, per TCP connection, the TLS records
of both directions in frame order, unwrapping the TDS 7.x PRELOGIN packets that carry the handshake.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import ssl
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HOST = "db.tdslens.test"
OP_NO_ENCRYPT_THEN_MAC = 1 << 19  # SSL_OP_NO_ENCRYPT_THEN_MAC (OpenSSL 1.1+); not in `ssl`


@dataclass(frozen=True)
class Record:
    from_client: bool
    content_type: int
    version: int
    fragment: bytes
    frames: tuple[int, ...]


@dataclass
class Session:
    records: list[Record]
    keylog: str
    cipher: str  # OpenSSL's name of the negotiated suite
    version: str  # "TLSv1.2" / "TLSv1.3"
    client_sent: bytes  # application data the client wrote, in order
    server_sent: bytes


def split_records(data: bytes) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """Whole TLS records at the front of ``data`` and the incomplete rest."""
    out = []
    p = 0
    while len(data) - p >= 5:
        ctype, version, length = struct.unpack_from(">BHH", data, p)
        if len(data) - p < 5 + length:
            break
        out.append((ctype, version, data[p + 5 : p + 5 + length]))
        p += 5 + length
    return out, data[p:]


# -- certificates ----------------------------------------------------------------------------


@cache
def cert_files(kind: str) -> tuple[str, str]:
    """A self-signed certificate for HOST with an ECDSA ("ec") or RSA ("rsa") key, as files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="tdslens-tls-"))
    certfile, keyfile = folder / f"{kind}.crt", folder / f"{kind}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certfile), str(keyfile)


# -- in-memory sessions ----------------------------------------------------------------------

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,  # old SQL Servers; OpenSSL needs @SECLEVEL=0 for these
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def make_session(
    *,
    tls: str = "1.3",
    ciphers: str | None = None,
    cert: str = "ec",
    tls13_suite: str | None = None,
    etm: bool = True,
    server_groups: str | None = None,
    close: bool = False,
    resume: bool = False,
    exchanges: tuple[tuple[bool, bytes], ...] = ((True, b"hello server"), (False, b"hi client")),
) -> Session:
    """One full TLS session; ``exchanges`` are (client writes?, data) in order.

    ``etm=False`` turns RFC 7366 encrypt-then-MAC off (CBC suites then MAC-then-encrypt);
    ``server_groups`` limits the server's key-exchange curve (a TLS 1.3 client whose key share
    does not match gets a HelloRetryRequest); ``close`` ends with the client's close_notify;
    ``resume`` returns a second connection that resumes the first one's session.
    """
    if tls13_suite is not None:
        return _in_child(tls, ciphers, cert, tls13_suite, exchanges)
    keylog = Path(tempfile.mkdtemp(prefix="tdslens-keys-")) / "keys.log"
    version = _VERSIONS[tls]
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for ctx in (cctx, sctx):
        ctx.minimum_version = ctx.maximum_version = version
        if ciphers:
            ctx.set_ciphers(ciphers)
    sctx.load_cert_chain(*cert_files(cert))
    if not etm:
        cctx.options |= OP_NO_ENCRYPT_THEN_MAC
    if server_groups:
        sctx.set_ecdh_curve(server_groups)
    cctx.keylog_filename = str(keylog)
    client, records, sent = _run(cctx, sctx, exchanges, close)
    if resume:  # a second connection resuming the first one's session (ticket / session id)
        client, records, sent = _run(cctx, sctx, exchanges, close, client.session)
        assert client.session_reused, "the session was not resumed"
    cipher, version_name = client.cipher()[0], client.version()
    return Session(records, keylog.read_text(), cipher, version_name or "", sent[True], sent[False])


def _run(
    cctx: ssl.SSLContext,
    sctx: ssl.SSLContext,
    exchanges: tuple[tuple[bool, bytes], ...],
    close: bool,
    session: ssl.SSLSession | None = None,
) -> tuple[ssl.SSLObject, list[Record], dict[bool, bytes]]:
    """One connection over MemoryBIOs: handshake, the exchanges, optionally close_notify."""
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname=HOST, session=session)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    records: list[Record] = []
    frame = [0]
    rest = {True: b"", False: b""}

    def flush() -> None:
        for from_client, src, dst in ((True, cout, sin), (False, sout, cin)):
            data = src.read()
            if not data:
                continue
            dst.write(data)
            frame[0] += 1
            whole, rest[from_client] = split_records(rest[from_client] + data)
            for ctype, ver, frag in whole:
                records.append(Record(from_client, ctype, ver, frag, (frame[0],)))

    def step(obj: ssl.SSLObject) -> bool:
        try:
            obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    done_c = done_s = False
    for _ in range(20):
        done_c = step(client) or done_c
        flush()
        done_s = step(server) or done_s
        flush()
        if done_c and done_s:
            break
    assert done_c and done_s, "handshake did not finish"
    sent = {True: b"", False: b""}
    for from_client, data in exchanges:
        writer, reader = (client, server) if from_client else (server, client)
        writer.write(data)
        sent[from_client] += data
        flush()
        got = b""
        while len(got) < len(data):
            got += reader.read(65536)
        flush()
    if close:  # the client sends close_notify (an encrypted alert)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.unwrap()
        flush()
    return client, records, sent


def _in_child(tls, ciphers, cert, tls13_suite, exchanges) -> Session:
    """Run make_session in a child interpreter whose OpenSSL config picks the TLS 1.3 suite."""
    folder = Path(tempfile.mkdtemp(prefix="tdslens-conf-"))
    conf = folder / "openssl.cnf"
    conf.write_text(
        "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n"
        f"[system_default_sect]\nCiphersuites = {tls13_suite}\n"
    )
    spec = {
        "tls": tls,
        "ciphers": ciphers,
        "cert": cert,
        "exchanges": [[c, d.hex()] for c, d in exchanges],
    }
    env = {**os.environ, "OPENSSL_CONF": str(conf)}
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data = json.loads(done.stdout)
    records = [Record(r[0], r[1], r[2], bytes.fromhex(r[3]), tuple(r[4])) for r in data["records"]]
    return Session(
        records,
        data["keylog"],
        data["cipher"],
        data["version"],
        bytes.fromhex(data["client_sent"]),
        bytes.fromhex(data["server_sent"]),
    )


def _child_main(arg: str) -> None:
    spec = json.loads(arg)
    s = make_session(
        tls=spec["tls"],
        ciphers=spec["ciphers"],
        cert=spec["cert"],
        exchanges=tuple((c, bytes.fromhex(d)) for c, d in spec["exchanges"]),
    )
    out = {
        "records": [
            [r.from_client, r.content_type, r.version, r.fragment.hex(), list(r.frames)]
            for r in s.records
        ],
        "keylog": s.keylog,
        "cipher": s.cipher,
        "version": s.version,
        "client_sent": s.client_sent.hex(),
        "server_sent": s.server_sent.hex(),
    }
    print(json.dumps(out))


# -- lab captures: TCP payloads -> TLS records, TDS PRELOGIN unwrapped -----------------------


@dataclass
class Connection:
    client: tuple[str, int]
    server: tuple[str, int]
    records: list[Record]


def capture_records(path: Path) -> list[Connection]:
    """Per TCP connection (client = the SYN's sender), the TLS records in frame order.

    Sequence numbers are followed (32-bit wrap ignored: lab captures are small), so
    retransmissions are dropped and out-of-order segments wait for the hole before them.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    conns: dict[tuple, Connection] = {}
    units: dict[tuple, _Unwrapper] = {}
    next_seq: dict[tuple, int] = {}
    pending: dict[tuple, dict[int, tuple[bytes, int]]] = {}
    for number, pkt in enumerate(rdpcap(str(path)), start=1):
        if TCP not in pkt or IP not in pkt:
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        a, b = (ip.src, tcp.sport), (ip.dst, tcp.dport)
        syn_only = tcp.flags & 0x12 == 0x02
        if syn_only and (a, b) not in conns:
            conns[(a, b)] = Connection(a, b, [])
        if (a, b) in conns:
            key, from_client = (a, b), True
        elif (b, a) in conns:
            key, from_client = (b, a), False
        else:
            continue
        payload = bytes(tcp.payload)[: max(ip.len - ip.ihl * 4 - tcp.dataofs * 4, 0)]
        dkey = (key, from_client)
        if tcp.flags & 0x02:
            next_seq[dkey] = tcp.seq + 1
            continue
        if not payload or dkey not in next_seq:
            continue
        # In-order delivery: park segments beyond a hole until the hole is filled.
        held = pending.setdefault(dkey, {})
        held.setdefault(tcp.seq, (payload, number))
        unwrap = units.setdefault(dkey, _Unwrapper(from_client))
        while True:
            expected = next_seq[dkey]
            usable = [q for q, (d, _) in held.items() if q <= expected < q + len(d)]
            for q in [q for q, (d, _) in held.items() if q + len(d) <= expected]:
                del held[q]  # retransmitted bytes we already have
            if not usable:
                break
            q = usable[0]
            data, frame = held.pop(q)
            data = data[expected - q :]
            next_seq[dkey] = expected + len(data)
            conns[key].records.extend(unwrap.feed(data, frame))
    return list(conns.values())


class _Unwrapper:
    """One direction: TDS packets (PRELOGIN carrying TLS) and raw TLS records, in any mix."""

    def __init__(self, from_client: bool) -> None:
        self.from_client = from_client
        self.buf = b""
        self.frames: list[int] = []
        self.tls = b""  # TLS bytes carried inside TDS packets, not yet a whole record
        self.tls_frames: list[int] = []

    def feed(self, data: bytes, frame: int) -> list[Record]:
        self.buf += data
        self.frames.append(frame)
        out: list[Record] = []
        while len(self.buf) >= 5:
            first = self.buf[0]
            if 20 <= first <= 23 and self.buf[1] == 3 and not self.tls:
                length = struct.unpack_from(">H", self.buf, 3)[0]
                if len(self.buf) < 5 + length:
                    break
                out.append(
                    Record(self.from_client, first, struct.unpack_from(">H", self.buf, 1)[0],
                           self.buf[5 : 5 + length], tuple(self.frames))
                )  # fmt: skip
                self.buf = self.buf[5 + length :]
            else:
                if len(self.buf) < 8:
                    break
                length = struct.unpack_from(">H", self.buf, 2)[0]
                if length < 8:
                    self.buf = b""  # not TDS: give up on this direction
                    break
                if len(self.buf) < length:
                    break
                ptype, payload = first, self.buf[8:length]
                self.buf = self.buf[length:]
                if ptype in (0x12, 0x04) and (
                    self.tls or payload[:1] in (b"\x14", b"\x15", b"\x16", b"\x17")
                ):
                    self.tls += payload
                    self.tls_frames += self.frames
                    whole, self.tls = split_records(self.tls)
                    for ctype, ver, frag in whole:
                        out.append(Record(self.from_client, ctype, ver, frag,
                                          tuple(dict.fromkeys(self.tls_frames))))  # fmt: skip
                    if not self.tls:
                        self.tls_frames = []
            self.frames = [frame] if self.buf else []
        return out


if __name__ == "__main__":
    _child_main(sys.argv[1])
