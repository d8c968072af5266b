"""Test helpers: a tiny, independent builder of TDS bytes, and TCP payloads of real captures.

The builder is written from MS-TDS directly and shares no code with tdslens.dissectors, so a
misreading of the specification in one is not silently repeated in the other.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# -- TDS packets (MS-TDS 2.2.3.1) -------------------------------------------------------------


def packet(ptype: int, payload: bytes, *, status: int = 0x01, spid: int = 0, pid: int = 1) -> bytes:
    return struct.pack(">BBHHBB", ptype, status, 8 + len(payload), spid, pid, 0) + payload


def message(ptype: int, payload: bytes, *, size: int = 4096, status: int = 0) -> bytes:
    """Split a payload into packets of at most ``size`` bytes (header included), EOM on the last."""
    chunk = size - 8
    parts = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    out = b""
    for i, part in enumerate(parts):
        eom = 0x01 if i == len(parts) - 1 else 0x00
        out += packet(ptype, part, status=status | eom, pid=(i + 1) % 256)
    return out


# -- PRELOGIN (2.2.6.5) ---------------------------------------------------------------------


def prelogin(options: Sequence[tuple[int, bytes]]) -> bytes:
    """Option table (token, offset BE, length BE) + 0xFF, then the data in order."""
    table_len = 5 * len(options) + 1
    table, data = b"", b""
    for token, value in options:
        table += struct.pack(">BHH", token, table_len + len(data), len(value))
        data += value
    return table + b"\xff" + data


def client_prelogin(encryption: int = 0x00, *, instance: bytes = b"\0") -> bytes:
    return prelogin(
        [
            (0x00, bytes([16, 0]) + struct.pack(">H", 1000) + b"\0\0"),
            (0x01, bytes([encryption])),
            (0x02, instance),
            (0x03, struct.pack(">I", 4242)),
            (0x04, b"\x00"),
            (0x05, bytes(range(36))),
            (0x06, b"\x01"),
        ]
    )


def server_prelogin(encryption: int = 0x02) -> bytes:
    return prelogin(
        [
            (0x00, bytes([15, 0]) + struct.pack(">H", 2000) + b"\0\0"),
            (0x01, bytes([encryption])),
            (0x02, b"\0"),
            (0x03, b""),
            (0x04, b"\x00"),
        ]
    )


# -- LOGIN7 (2.2.6.4) -----------------------------------------------------------------------


def login7(
    *,
    host: str = "WS01",
    user: str = "alice",
    password: str = "S3cret!pw",
    app: str = "tests",
    server: str = "db.example.net",
    library: str = "ODBC",
    language: str = "",
    database: str = "sales",
    type_flags: int = 0x20,
    features: Sequence[tuple[int, bytes]] = ((0x0A, b"\x01"),),
    tds_version: int = 0x74000004,
) -> bytes:
    """A TDS 7.4 LOGIN7 with the password obfuscated as 2.2.6.4 says (nibble swap, XOR 0xA5)."""
    fixed_len = 94
    strings: list[bytes] = []
    pw = bytes(((b << 4 | b >> 4) & 0xFF) ^ 0xA5 for b in password.encode("utf-16-le"))
    values = [host, user, None, app, server, None, library, language, database]
    body = b""
    pairs = []
    ext_pos = None
    for i, v in enumerate(values):
        pos = fixed_len + len(body)
        if i == 2:
            pairs.append((pos, len(password)))
            body += pw
        elif i == 5:  # extension: a DWORD offset to FeatureExt, filled in below
            ext_pos = len(body)
            pairs.append((pos, 4 if features else 0))
            body += b"\0\0\0\0" if features else b""
        else:
            assert v is not None
            pairs.append((pos, len(v)))
            body += v.encode("utf-16-le")
    strings.append(body)
    feat = b""
    if features:
        for fid, data in features:
            feat += struct.pack("<BI", fid, len(data)) + data
        feat += b"\xff"
    tail_pos = fixed_len + len(body)
    if ext_pos is not None:
        body = body[:ext_pos] + struct.pack("<I", tail_pos) + body[ext_pos + 4 :]
    total = fixed_len + len(body) + len(feat)
    fixed = struct.pack(
        "<IIIIIIBBBBiI",
        total,
        tds_version,
        4096,
        0x07000000,
        1234,
        0,
        0xE0,
        0x03,
        type_flags,
        0x10 if features else 0x00,
        -60,
        0x0409,
    )
    offsets = b"".join(struct.pack("<HH", ib, cch) for ib, cch in pairs)
    client_id = bytes.fromhex("001122334455")
    tail = struct.pack("<HHHHHHI", tail_pos, 0, tail_pos, 0, tail_pos, 0, 0)
    out = fixed + offsets + client_id + tail + body + feat
    assert len(fixed + offsets + client_id + tail) == fixed_len
    assert len(out) == total
    return out


# -- Tokens (2.2.7) -------------------------------------------------------------------------


def b_varchar(s: str) -> bytes:
    return bytes([len(s)]) + s.encode("utf-16-le")


def us_varchar(s: str) -> bytes:
    return struct.pack("<H", len(s)) + s.encode("utf-16-le")


def loginack(version: int = 0x74000004, name: str = "Microsoft SQL Server") -> bytes:
    body = b"\x01" + struct.pack(">I", version) + b_varchar(name) + bytes([16, 0, 0x10, 0x00])
    return b"\xad" + struct.pack("<H", len(body)) + body


def envchange_string(etype: int, new: str, old: str = "") -> bytes:
    body = bytes([etype]) + b_varchar(new) + b_varchar(old)
    return b"\xe3" + struct.pack("<H", len(body)) + body


def envchange_routing(server: str, port: int, protocol: int = 0) -> bytes:
    value = struct.pack("<BH", protocol, port) + us_varchar(server)
    body = b"\x14" + struct.pack("<H", len(value)) + value + b"\x00\x00"
    return b"\xe3" + struct.pack("<H", len(body)) + body


def server_message(token: int, number: int, text: str, *, state=1, severity=14, line=1) -> bytes:
    body = (
        struct.pack("<iBB", number, state, severity)
        + us_varchar(text)
        + b_varchar("gw-01")
        + b_varchar("")
        + struct.pack("<i", line)
    )
    return bytes([token]) + struct.pack("<H", len(body)) + body


def done(status: int = 0, cur_cmd: int = 0, rows: int = 0, token: int = 0xFD) -> bytes:
    return bytes([token]) + struct.pack("<HHQ", status, cur_cmd, rows)


def featureextack(features: Iterable[tuple[int, bytes]]) -> bytes:
    out = b"\xae"
    for fid, data in features:
        out += struct.pack("<BI", fid, len(data)) + data
    return out + b"\xff"


def fedauthinfo(sts: str, spn: str) -> bytes:
    a, b = sts.encode("utf-16-le"), spn.encode("utf-16-le")
    header = 4 + 9 * 2
    body = struct.pack("<I", 2)
    body += struct.pack("<BII", 1, len(a), header) + struct.pack("<BII", 2, len(b), header + len(a))
    body += a + b
    return b"\xee" + struct.pack("<I", len(body)) + body


def colmetadata_int_nvarchar() -> bytes:
    """Two columns: id INT NOT NULL, name NVARCHAR(50) NULL (TDS 7.2+ layout)."""
    col1 = struct.pack("<IH", 0, 0x0000) + b"\x38" + b_varchar("id")
    collation = bytes.fromhex("0904d00034")
    col2 = struct.pack("<IH", 0, 0x0001) + b"\xe7" + struct.pack("<H", 100) + collation
    col2 += b_varchar("name")
    return b"\x81" + struct.pack("<H", 2) + col1 + col2


def row(ident: int, name: str | None) -> bytes:
    value = (
        b"\xff\xff" if name is None else struct.pack("<H", 2 * len(name)) + name.encode("utf-16-le")
    )
    return b"\xd1" + struct.pack("<i", ident) + value


def nbcrow(ident: int) -> bytes:
    return b"\xd2" + b"\x02" + struct.pack("<i", ident)  # bitmap: column 2 is NULL


# -- TLS (RFC 8446) -------------------------------------------------------------------------


def tls_record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack(">BHH", ctype, version, len(body)) + body


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def _ext(etype: int, data: bytes) -> bytes:
    return struct.pack(">HH", etype, len(data)) + data


def client_hello(*, sni: str = "db.example.net", alpn: Sequence[str] = (), tls13=True) -> bytes:
    exts = b""
    name = sni.encode()
    exts += _ext(0, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    if alpn:
        protos = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
        exts += _ext(16, struct.pack(">H", len(protos)) + protos)
    if tls13:
        exts += _ext(43, b"\x04\x03\x04\x03\x03")
    ciphers = struct.pack(">HHH", 0x1301, 0xC02F, 0x009C)
    body = b"\x03\x03" + bytes(32) + b"\x00" + struct.pack(">H", len(ciphers)) + ciphers
    body += b"\x01\x00" + struct.pack(">H", len(exts)) + exts
    return handshake(1, body)


def server_hello(*, version: int = 0x0303, cipher: int = 0xC02F) -> bytes:
    exts = _ext(43, struct.pack(">H", version)) if version == 0x0304 else b""
    body = b"\x03\x03" + bytes(32) + b"\x00" + struct.pack(">H", cipher) + b"\x00"
    body += struct.pack(">H", len(exts)) + exts
    return handshake(2, body)


# -- Real captures: per-direction TCP payloads (scapy; test-only) ----------------------------


@dataclass
class Chunk:
    from_client: bool
    data: bytes
    frame: int
    gap: int = 0  # bytes the capture never held before this point (data is then empty)


def capture_streams(path: Path, server_port: int | None = 1433) -> list[list[Chunk]]:
    """Per connection, each direction's TCP payload in sequence order, as Chunks.

    Retransmissions, duplicates (captures on "any") and overlaps are dropped; out-of-order
    segments are put back in order; bytes never captured become a gap Chunk. The client is the
    side talking to ``server_port``; with None, the side that sent the SYN (else the higher
    port). The two directions are interleaved by frame number, each keeping its own order.
    """
    import heapq

    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    segments: dict[tuple, list[tuple[int, int, bytes]]] = {}  # (conn, dir) -> (seq, frame, data)
    isn: dict[tuple, int] = {}
    clients: dict[frozenset, tuple] = {}
    order: list[frozenset] = []
    for number, pkt in enumerate(rdpcap(str(path)), start=1):
        if TCP not in pkt:
            continue
        tcp = pkt[TCP]
        ip = tcp.underlayer
        src, dst = (ip.src, tcp.sport), (ip.dst, tcp.dport)
        conn = frozenset((src, dst))
        if conn not in clients and conn not in order:
            order.append(conn)
        if server_port is not None:
            clients.setdefault(conn, src if tcp.dport == server_port else dst)
        elif tcp.flags & 0x12 == 0x02:  # SYN without ACK: the client
            clients[conn] = src
        from_client = src == clients.get(conn, src if tcp.sport > tcp.dport else dst)
        key = (conn, from_client)
        # Trim link-layer padding (short Ethernet frames): the IP length is the truth.
        ip_len = ip.len if hasattr(ip, "ihl") else ip.plen + 40
        header = (ip.ihl * 4 if hasattr(ip, "ihl") else 40) + tcp.dataofs * 4
        payload = bytes(tcp.payload)[: max(ip_len - header, 0)]
        if tcp.flags & 0x02:  # SYN
            isn[key] = tcp.seq + 1
        elif payload:
            segments.setdefault(key, []).append((tcp.seq, number, payload))
    out: list[list[Chunk]] = []
    for conn in order:
        sides = []
        for from_client in (True, False):
            segs = sorted(segments.get((conn, from_client), []), key=lambda s: (s[0], s[1]))
            chunks: list[Chunk] = []
            expected = isn.get((conn, from_client), segs[0][0] if segs else 0)
            for seq, frame, data in segs:
                if seq + len(data) <= expected:
                    continue  # retransmission or duplicate
                if seq < expected:
                    data = data[expected - seq :]
                elif seq > expected:
                    chunks.append(Chunk(from_client, b"", frame, gap=seq - expected))
                chunks.append(Chunk(from_client, data, frame))
                expected = max(seq, expected) + len(data)
            sides.append(chunks)
        out.append(list(heapq.merge(*sides, key=lambda c: c.frame)))
    return out


def feed_chunk(direction, chunk: Chunk) -> list:
    """Hand one Chunk to a TdsDirection: data, or the gap it stands for."""
    if chunk.gap:
        return direction.gap(chunk.gap, chunk.frame)
    return direction.feed(chunk.data, chunk.frame)


Feeder = Callable[[bytes, int], list]
