"""The TDS packet layer: the 8-byte header, message reassembly, content detection, resync.

MS-TDS 2.2.3.1: every TDS message travels as one or more packets, each with an 8-byte header;
the last packet of a message has the EOM status bit. Packets may be split over TCP segments and
several may share one segment, so the driver (session.py) reads them from a ReceiveBuffer.

This module is only tables and small pure functions; state lives in session.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .events import PacketType

# MS-TDS 2.2.3.1 packet header, network byte order except where noted.
#   Type    BYTE    2.2.3.1.1
#   Status  BYTE    2.2.3.1.2
#   Length  USHORT  2.2.3.1.3  big-endian, includes the header
#   SPID    USHORT  2.2.3.1.4  big-endian
#   PacketID BYTE   2.2.3.1.5  (modulo 256, not checked by servers)
#   Window  BYTE    2.2.3.1.6  (always 0)
HEADER = struct.Struct(">BBHHBB")
HEADER_LEN = HEADER.size  # 8

# The client may negotiate packets up to 32767 bytes (LOGIN7 PacketSize, ENVCHANGE 4); the
# length field allows 65535. Anything shorter than the header itself is impossible.
MAX_PACKET = 0xFFFF
KNOWN_TYPES = frozenset(int(t) for t in PacketType)
STATUS_MASK = 0x1F  # EOM | IGNORE | EVENT_NOTIFICATION | RESETCONNECTION | RESETCONNECTIONSKIPTRAN

# TLS record header (RFC 8446 5.1): ContentType BYTE, ProtocolVersion USHORT, length USHORT.
TLS_HEADER = struct.Struct(">BHH")
TLS_HEADER_LEN = TLS_HEADER.size
TLS_CONTENT_TYPES = frozenset({20, 21, 22, 23})  # ChangeCipherSpec, Alert, Handshake, AppData
TLS_MAX_RECORD = (1 << 14) + 2048  # TLSCiphertext limit


@dataclass(frozen=True, slots=True)
class PacketHeader:
    type: int
    status: int
    length: int
    spid: int
    packet_id: int
    window: int


def parse_header(data: bytes | bytearray | memoryview, pos: int = 0) -> PacketHeader:
    return PacketHeader(*HEADER.unpack_from(data, pos))


def header_plausible(data: bytes | bytearray | memoryview, pos: int = 0) -> bool:
    """True if 8 bytes at ``pos`` could be a TDS packet header (type, status and length sane)."""
    if len(data) - pos < HEADER_LEN:
        return False
    ptype, status, length, _spid, _pid, window = HEADER.unpack_from(data, pos)
    return (
        ptype in KNOWN_TYPES and not status & ~STATUS_MASK and length >= HEADER_LEN and window == 0
    )


def tls_record_plausible(data: bytes | bytearray | memoryview, pos: int = 0) -> bool:
    """True if 5 bytes at ``pos`` could start a TLS record (SSL 3.0 .. TLS 1.3 versions)."""
    if len(data) - pos < TLS_HEADER_LEN:
        return False
    ctype, version, length = TLS_HEADER.unpack_from(data, pos)
    return (
        ctype in TLS_CONTENT_TYPES and 0x0300 <= version <= 0x0304 and 0 < length <= TLS_MAX_RECORD
    )


def starts_tls(first_byte: int) -> bool:
    """TLS content types (20-23) never collide with TDS packet types (1-18): one byte decides."""
    return first_byte in TLS_CONTENT_TYPES


def looks_like_tds(first_bytes: bytes) -> bool:
    """Content heuristic: does a client stream start with a TDS PRELOGIN (any port)?

    Checks the header (type 0x12, EOM or not, sane length) and the PRELOGIN option table
    (MS-TDS 2.2.6.5): tokens ascending from VERSION, offsets inside the message, 0xFF terminator.
    A TLS-first stream (TDS 8.0) is recognised by ``looks_like_tds8`` instead.
    """
    if len(first_bytes) < HEADER_LEN + 1 or not header_plausible(first_bytes):
        return False
    ptype, _status, length, _spid, _pid, _window = HEADER.unpack_from(first_bytes)
    if ptype != PacketType.PRELOGIN or length < HEADER_LEN + 6:
        return False
    payload = first_bytes[HEADER_LEN:length]
    limit = length - HEADER_LEN
    end = 0
    while end < len(payload) and payload[end] != 0xFF:
        end += 5
    if end >= len(payload):  # the table is cut by the sample
        return _prelogin_table_ok(payload, limit)
    key = (payload[:end], limit)  # a whole table: its verdict depends on nothing else
    verdict = _PRELOGIN_TABLES.get(key)
    if verdict is None:
        verdict = _prelogin_table_ok(payload, limit)
        if len(_PRELOGIN_TABLES) >= TABLE_CACHE:
            _PRELOGIN_TABLES.clear()
        _PRELOGIN_TABLES[key] = verdict
    return verdict


# (option table, message length) → looks_like_tds's verdict: every connection of a driver
# starts with the same table. Bounded for captures of many odd clients.
_PRELOGIN_TABLES: dict[tuple[bytes, int], bool] = {}
TABLE_CACHE = 512


def _prelogin_table_ok(payload: bytes, limit: int) -> bool:
    """Tokens ascending from VERSION, data inside the message, up to 0xFF or the sample's end."""
    pos = 0
    last = -1
    while pos < len(payload):
        token = payload[pos]
        if token == 0xFF:
            return last >= 0
        if pos + 5 > len(payload):
            return last >= 0  # table cut by the sample: what we saw was consistent
        if token <= last or token > 0x20:
            return False
        offset, length = struct.unpack_from(">HH", payload, pos + 1)
        if offset + length > limit:
            return False
        last = token
        pos += 5
    return last >= 0


def looks_like_tds8(first_bytes: bytes) -> bool:
    """TDS 8.0 (strict encryption) starts with a raw TLS ClientHello offering ALPN ``tds/8.0``."""
    if not tls_record_plausible(first_bytes) or first_bytes[0] != 22:
        return False
    return b"\x07tds/8.0" in first_bytes[: TLS_MAX_RECORD + TLS_HEADER_LEN]


def _unit_plausible(data: bytes | bytearray | memoryview, pos: int) -> bool | None:
    """Could a unit start at ``pos``? None when too few bytes are here to tell."""
    left = len(data) - pos
    b = data[pos]
    if b in TLS_CONTENT_TYPES:
        return None if left < TLS_HEADER_LEN else tls_record_plausible(data, pos)
    if b in KNOWN_TYPES:
        return None if left < HEADER_LEN else header_plausible(data, pos)
    return False


def find_resync(
    data: bytes | bytearray | memoryview, start: int = 0, final: bool = False
) -> tuple[int, bool]:
    """Where a unit plausibly begins again after lost sync: ``(index, found)``.

    A lone plausible header is weak evidence, so we also require the *next* unit (at header +
    length) to look plausible. The answer must not depend on how TCP cut the bytes, so when
    the bytes at hand cannot decide, we return ``(index, False)``: drop what is before ``index``
    and ask again with more data. ``(len(data), False)`` means nothing here is worth keeping.
    """
    n = len(data)
    for i in range(start, n):
        here = _unit_plausible(data, i)
        if here is None and not final:
            return i, False
        if not here:
            continue
        if data[i] in TLS_CONTENT_TYPES:
            nxt = i + TLS_HEADER_LEN + struct.unpack_from(">H", data, i + 3)[0]
        else:
            nxt = i + struct.unpack_from(">H", data, i + 2)[0]
        if final and nxt == n:
            return i, True
        if nxt >= n:
            if final:
                continue
            return i, False
        follow = _unit_plausible(data, nxt)
        if follow is None and not final:
            return i, False
        if follow:
            return i, True
    return n, False
