"""The lab's own minimal TDS encoder/decoder, written from MS-TDS for the simulator only.

Deliberately independent of ``tdslens.dissectors``: the lab produces the ground truth that the
analyzer is tested against, so the two must not share code (a shared bug would hide itself).
Only what the simulated servers need is here: packet framing, PRELOGIN, LOGIN7 parsing and the
handful of server tokens a login and ``SELECT 1`` require.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Packet types (MS-TDS 2.2.3.1.1)
PKT_SQL_BATCH = 0x01
PKT_RPC = 0x03
PKT_REPLY = 0x04
PKT_ATTENTION = 0x06
PKT_TRANSACTION = 0x0E
PKT_LOGIN7 = 0x10
PKT_PRELOGIN = 0x12

STATUS_EOM = 0x01
HEADER = struct.Struct(">BBHHBB")  # type, status, length, spid, packet id, window

# PRELOGIN option tokens and ENCRYPTION values (MS-TDS 2.2.6.5)
PL_VERSION, PL_ENCRYPTION, PL_INSTOPT, PL_THREADID, PL_MARS = 0, 1, 2, 3, 4
PL_TRACEID, PL_FEDAUTHREQUIRED, PL_NONCE, PL_TERMINATOR = 5, 6, 7, 0xFF
ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0, 1, 2, 3
ENCRYPT_NAMES = {0: "off", 1: "on", 2: "not_sup", 3: "req"}

# Token types (MS-TDS 2.2.7)
TOK_COLMETADATA = 0x81
TOK_ERROR = 0xAA
TOK_INFO = 0xAB
TOK_LOGINACK = 0xAD
TOK_FEATUREEXTACK = 0xAE
TOK_ROW = 0xD1
TOK_ENVCHANGE = 0xE3
TOK_DONE = 0xFD
TOK_DONEPROC = 0xFE

DONE_FINAL, DONE_MORE, DONE_ERROR, DONE_COUNT, DONE_ATTN = 0x00, 0x01, 0x02, 0x10, 0x20

# Version the simulated server announces: SQL Server 16.0 (2022), build 1000.
SERVER_VERSION = (16, 0, 1000)
TDS74 = 0x74000004


def packets(ptype: int, payload: bytes, size: int = 4096, spid: int = 0) -> bytes:
    """Split one message into TDS packets of at most ``size`` bytes (header included)."""
    body = size - HEADER.size
    out = bytearray()
    chunks = [payload[i : i + body] for i in range(0, len(payload), body)] or [b""]
    for n, chunk in enumerate(chunks, start=1):
        status = STATUS_EOM if n == len(chunks) else 0
        out += HEADER.pack(ptype, status, HEADER.size + len(chunk), spid, n % 256, 0)
        out += chunk
    return bytes(out)


@dataclass
class Packet:
    ptype: int
    status: int
    payload: bytes

    @property
    def eom(self) -> bool:
        return bool(self.status & STATUS_EOM)


class PacketReader:
    """Incremental TDS packet splitter: feed bytes, take whole packets; keeps the remainder."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next_packet(self) -> Packet | None:
        if len(self.buf) < HEADER.size:
            return None
        ptype, status, length, _spid, _pid, _win = HEADER.unpack_from(self.buf)
        if length < HEADER.size:
            raise ValueError(f"TDS packet length {length} < 8 (type 0x{ptype:02x})")
        if len(self.buf) < length:
            return None
        payload = bytes(self.buf[HEADER.size : length])
        del self.buf[:length]
        return Packet(ptype, status, payload)

    def take_rest(self) -> bytes:
        rest = bytes(self.buf)
        self.buf.clear()
        return rest


# --- PRELOGIN -------------------------------------------------------------------------------


def parse_prelogin(payload: bytes) -> dict[int, bytes]:
    """Option token -> raw value bytes."""
    opts: dict[int, bytes] = {}
    i = 0
    while i < len(payload) and payload[i] != PL_TERMINATOR:
        token, off, ln = struct.unpack_from(">BHH", payload, i)
        opts[token] = payload[off : off + ln]
        i += 5
    return opts


def build_prelogin_response(encryption: int, fedauth: bool = False) -> bytes:
    """Server PRELOGIN: VERSION, ENCRYPTION, INSTOPT, THREADID, MARS (+FEDAUTHREQUIRED)."""
    major, minor, build = SERVER_VERSION
    values: list[tuple[int, bytes]] = [
        (PL_VERSION, struct.pack(">BBHH", major, minor, build, 0)),
        (PL_ENCRYPTION, bytes([encryption])),
        (PL_INSTOPT, b"\x00"),
        (PL_THREADID, b""),
        (PL_MARS, b"\x00"),
    ]
    if fedauth:
        values.append((PL_FEDAUTHREQUIRED, b"\x00"))
    head_len = 5 * len(values) + 1
    head, body = bytearray(), bytearray()
    for token, value in values:
        head += struct.pack(">BHH", token, head_len + len(body), len(value))
        body += value
    return bytes(head) + b"\xff" + bytes(body)


# --- LOGIN7 ---------------------------------------------------------------------------------

LOGIN7_FIELDS = (
    "hostname",
    "username",
    "password",
    "appname",
    "servername",
    "extension",
    "library",
    "language",
    "database",
)


@dataclass
class Login7:
    tds_version: int
    packet_size: int
    option_flags1: int
    option_flags2: int
    type_flags: int
    option_flags3: int
    strings: dict[str, str] = field(default_factory=dict)

    @property
    def readonly_intent(self) -> bool:
        """TypeFlags bit fReadOnlyIntent (0x20): ApplicationIntent=ReadOnly."""
        return bool(self.type_flags & 0x20)

    @property
    def wants_feature_ext(self) -> bool:
        return bool(self.option_flags3 & 0x10)


def _unobfuscate(raw: bytes) -> str:
    """LOGIN7 password: each byte XOR 0xA5, then nibbles swapped."""
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | (((b ^ 0xA5) >> 4) & 0x0F) for b in raw)
    return plain.decode("utf-16-le", "replace")


def parse_login7(payload: bytes) -> Login7:
    (_length, tds_version, packet_size, _prog, _pid, _conn) = struct.unpack_from("<IIIIII", payload)
    f1, f2, tf, f3 = payload[24:28]
    login = Login7(tds_version, packet_size, f1, f2, tf, f3)
    pos = 36  # after ClientTimeZone and ClientLCID
    for name in LOGIN7_FIELDS:
        off, ln = struct.unpack_from("<HH", payload, pos)
        pos += 4
        if name == "extension":
            continue  # points at FeatureExt, not a string
        raw = payload[off : off + 2 * ln]
        login.strings[name] = (
            _unobfuscate(raw) if name == "password" else raw.decode("utf-16-le", "replace")
        )
    return login


# --- server tokens --------------------------------------------------------------------------


def us_varchar(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return struct.pack("<H", len(raw) // 2) + raw


def b_varchar(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return bytes([len(raw) // 2]) + raw


def envchange(kind: int, new: bytes, old: bytes) -> bytes:
    body = bytes([kind]) + new + old
    return struct.pack("<BH", TOK_ENVCHANGE, len(body)) + body


def env_string(kind: int, new: str, old: str = "") -> bytes:
    return envchange(kind, b_varchar(new), b_varchar(old))


def env_routing(host: str, port: int) -> bytes:
    """ENVCHANGE type 20: protocol 0 (TCP), port, alternate server; old value empty."""
    value = struct.pack("<BH", 0, port) + us_varchar(host)
    return envchange(20, struct.pack("<H", len(value)) + value, b"\x00\x00")


def env_collation() -> bytes:
    # SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags, sort id 52
    return envchange(7, b"\x05\x09\x04\xd0\x00\x34", b"\x00")


def loginack(tds_version: int = TDS74, prog: str = "Microsoft SQL Server") -> bytes:
    major, minor, build = SERVER_VERSION
    body = (
        b"\x01"
        + struct.pack(">I", tds_version)
        + b_varchar(prog)
        + struct.pack(">BBH", major, minor, build)
    )
    return struct.pack("<BH", TOK_LOGINACK, len(body)) + body


def info_or_error(token: int, number: int, state: int, klass: int, text: str, server: str) -> bytes:
    body = (
        struct.pack("<iBB", number, state, klass)
        + us_varchar(text)
        + b_varchar(server)
        + b_varchar("")
        + struct.pack("<i", 1)
    )
    return struct.pack("<BH", token, len(body)) + body


def done(status: int = DONE_FINAL, curcmd: int = 0, rows: int = 0, token: int = TOK_DONE) -> bytes:
    return struct.pack("<BHHQ", token, status, curcmd, rows)


def feature_ext_ack_empty() -> bytes:
    return bytes([TOK_FEATUREEXTACK, 0xFF])


def select_one_result() -> bytes:
    """COLMETADATA (one unnamed INT column), ROW (1), DONE(count=1) as for ``SELECT 1``."""
    colmeta = struct.pack("<BH", TOK_COLMETADATA, 1) + struct.pack("<IH", 0, 0x0000)
    colmeta += bytes([0x26, 4])  # INTN, max length 4
    colmeta += b"\x00"  # empty column name
    row = bytes([TOK_ROW, 4]) + struct.pack("<i", 1)
    return colmeta + row + done(DONE_COUNT, 0xC1, 1)


def sql_batch_text(payload: bytes) -> str:
    """Text of an SQL batch, skipping ALL_HEADERS (present from TDS 7.2 on)."""
    if len(payload) >= 4:
        total = struct.unpack_from("<I", payload)[0]
        if 4 <= total <= len(payload) and total < 1024:
            payload = payload[total:]
    return payload.decode("utf-16-le", "replace")
