"""Byte builders for the benchmark generator: TDS, TLS 1.2 records, X.509 DER, DNS, HTTP.

Written from the specifications, not from tdslens: the benchmark captures are also used to check
tdslens's dissectors, and the two must not share a bug. References:
[MS-TDS] packet header 2.2.3.1, PRELOGIN 2.2.6.5, LOGIN7 2.2.6.4, SQLBatch 2.2.6.7 with
ALL_HEADERS 2.2.5.3, tokens 2.2.7 (COLMETADATA 2.2.7.4, DONE 2.2.7.6, ENVCHANGE 2.2.7.9,
INFO 2.2.7.13, LOGINACK 2.2.7.14, ROW 2.2.7.19); RFC 5246/8446 (TLS), RFC 5280 (X.509),
RFC 1035 (DNS).

Every builder takes its randomness from the caller's `random.Random`, so output is reproducible.
"""

from __future__ import annotations

import random
import struct

# --- TDS packet layer (MS-TDS 2.2.3.1) ---------------------------------------------------------

SQL_BATCH = 0x01
RESPONSE = 0x04  # "tabular result"
LOGIN7 = 0x10
PRELOGIN = 0x12
STATUS_EOM = 0x01

TDS_7_4 = 0x74000004
_TDS_HEADER = struct.Struct(">BBHHBB")  # type, status, length, SPID, PacketID, Window


def tds_packets(msg_type: int, payload: bytes, packet_size: int = 4096, spid: int = 0) -> bytes:
    """Split one TDS message into packets of at most `packet_size` bytes (header included).

    PacketID starts at 1 and increments modulo 256 per packet; only the last packet carries EOM.
    """
    room = packet_size - 8
    out = bytearray()
    n = max(1, -(-len(payload) // room))
    for i in range(n):
        chunk = payload[i * room : (i + 1) * room]
        status = STATUS_EOM if i == n - 1 else 0
        out += _TDS_HEADER.pack(msg_type, status, len(chunk) + 8, spid, (i + 1) & 0xFF, 0)
        out += chunk
    return bytes(out)


def _utf16(s: str) -> bytes:
    return s.encode("utf-16-le")


def b_varchar(s: str) -> bytes:
    """B_VARCHAR: 1-byte character count, UTF-16LE characters."""
    return bytes([len(s)]) + _utf16(s)


def us_varchar(s: str) -> bytes:
    """US_VARCHAR: 2-byte character count, UTF-16LE characters."""
    return struct.pack("<H", len(s)) + _utf16(s)


# --- PRELOGIN (MS-TDS 2.2.6.5) -------------------------------------------------------------------

ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0, 1, 2, 3


def _prelogin(options: list[tuple[int, bytes]]) -> bytes:
    """Option table (token, offset, length) terminated by 0xFF, then the option data."""
    table = bytearray()
    data = bytearray()
    offset = 5 * len(options) + 1
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return bytes(table) + b"\xff" + bytes(data)


def prelogin_client(rng: random.Random, encryption: int, thread_id: int) -> bytes:
    """A modern driver's PRELOGIN: VERSION, ENCRYPTION, INSTOPT, THREADID, MARS, TRACEID."""
    trace = rng.randbytes(16) + rng.randbytes(16) + struct.pack("<I", 0)  # ConnID, ActivityID, seq
    return _prelogin(
        [
            (0, bytes([17, 10, 0, 1, 0, 0])),  # UL_VERSION + US_SUBBUILD of the client library
            (1, bytes([encryption])),
            (2, b"\x00"),  # INSTOPT: default instance, NUL-terminated
            (3, struct.pack(">I", thread_id)),
            (4, b"\x00"),  # MARS off
            (5, trace),
        ]
    )


def prelogin_server(encryption: int, version: tuple[int, int, int] = (12, 0, 2000)) -> bytes:
    """The server's PRELOGIN answer as SQL Server sends it (empty THREADID and TRACEID)."""
    major, minor, build = version
    return _prelogin(
        [
            (0, struct.pack(">BBHH", major, minor, build, 0)),
            (1, bytes([encryption])),
            (2, b"\x00"),
            (3, b""),
            (4, b"\x00"),
            (5, b""),
        ]
    )


# --- LOGIN7 (MS-TDS 2.2.6.4) ---------------------------------------------------------------------

_LOGIN7_FIXED = struct.Struct("<IIIIIIBBBBiI")  # 36 bytes
_LOGIN7_VARSTART = 94  # 36 fixed + 58 bytes of offsets/lengths (TDS 7.2+)


def obfuscate_password(password: str) -> bytes:
    """MS-TDS 2.2.6.4: swap the nibbles of every byte, then XOR with 0xA5."""
    return bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in _utf16(password))


def login7(
    rng: random.Random,
    *,
    host: str,
    user: str,
    password: str,
    app: str,
    server: str,
    database: str,
    packet_size: int,
    client_pid: int,
    client_mac: bytes,
) -> bytes:
    """A SQL-authentication LOGIN7 with valid offsets for every variable field."""
    fields = [  # (ib, cch) pairs in the order of the offset table
        _utf16(host),
        _utf16(user),
        obfuscate_password(password),
        _utf16(app),
        _utf16(server),
        b"",  # ibExtension/cbExtension: no FeatureExt
        _utf16("Core Microsoft SqlClient Data Provider"),
        b"",  # Language
        _utf16(database),
    ]
    offsets = bytearray()
    data = bytearray()
    pos = _LOGIN7_VARSTART
    for i, value in enumerate(fields):
        # Lengths count characters, except the (unused) extension, which counts bytes.
        length = len(value) if i == 5 else len(value) // 2
        offsets += struct.pack("<HH", pos + len(data), length)
        data += value
    offsets += client_mac  # ClientID
    end = pos + len(data)
    offsets += struct.pack("<HH", end, 0)  # SSPI
    offsets += struct.pack("<HH", end, 0)  # AtchDBFile
    offsets += struct.pack("<HH", end, 0)  # ChangePassword
    offsets += struct.pack("<I", 0)  # cbSSPILong
    assert 36 + len(offsets) == _LOGIN7_VARSTART
    fixed = _LOGIN7_FIXED.pack(
        _LOGIN7_VARSTART + len(data),
        TDS_7_4,
        packet_size,
        0x07000000 | rng.randrange(0x10000),  # ClientProgVer
        client_pid,
        0,  # ConnectionID
        0xE0,  # OptionFlags1: USE_DB_ON, INIT_DB_FATAL, SET_LANG_ON
        0x03,  # OptionFlags2: INIT_LANG_FATAL, ODBC_ON
        0x00,  # TypeFlags
        0x00,  # OptionFlags3
        -60,  # ClientTimeZone (minutes)
        0x0409,  # ClientLCID
    )
    return fixed + bytes(offsets) + bytes(data)


# --- Tokens (MS-TDS 2.2.7) -----------------------------------------------------------------------

COLLATION = bytes.fromhex("0904d00034")  # Latin1_General_CI_AS, as SQL Server sends it


def _token(token: int, data: bytes) -> bytes:
    return bytes([token]) + struct.pack("<H", len(data)) + data


def envchange_string(env_type: int, new: str, old: str) -> bytes:
    """ENVCHANGE whose values are B_VARCHAR (database 1, language 2, packet size 4...)."""
    return _token(0xE3, bytes([env_type]) + b_varchar(new) + b_varchar(old))


def envchange_collation(new: bytes = COLLATION) -> bytes:
    """ENVCHANGE type 7: B_VARBYTE new collation, empty old value."""
    return _token(0xE3, bytes([7, len(new)]) + new + b"\x00")


def envchange_routing(port: int, server: str) -> bytes:
    """ENVCHANGE type 20 (MS-TDS 2.2.7.9): RoutingDataValueLength, Protocol 0 (TCP),
    ProtocolProperty (port), AlternateServer (US_VARCHAR); OldValue is 0x0000."""
    value = struct.pack("<BH", 0, port) + us_varchar(server)
    return _token(0xE3, bytes([20]) + struct.pack("<H", len(value)) + value + b"\x00\x00")


def info(number: int, state: int, cls: int, text: str, server: str) -> bytes:
    """INFO token (TDS 7.2+: 4-byte LineNumber)."""
    body = struct.pack("<iBB", number, state, cls) + us_varchar(text)
    body += b_varchar(server) + b_varchar("") + struct.pack("<i", 1)
    return _token(0xAB, body)


def loginack(version: tuple[int, int, int] = (16, 0, 4135)) -> bytes:
    """LOGINACK: interface 1 (SQL), TDSVersion (big-endian on the wire), ProgName, ProgVersion."""
    major, minor, build = version
    body = bytes([1]) + struct.pack(">I", TDS_7_4) + b_varchar("Microsoft SQL Server")
    body += struct.pack(">BBH", major, minor, build)
    return _token(0xAD, body)


DONE_FINAL, DONE_COUNT = 0x0000, 0x0010
CMD_SELECT = 0xC1


def done(status: int = DONE_FINAL, curcmd: int = 0, rowcount: int = 0) -> bytes:
    """DONE token with the TDS 7.2+ 8-byte row count."""
    return b"\xfd" + struct.pack("<HHQ", status, curcmd, rowcount)


def login_response(
    *, server: str, database: str, packet_size: int, routing: tuple[int, str] | None = None
) -> bytes:
    """What SQL Server answers to LOGIN7: environment changes, INFOs, LOGINACK, DONE.

    With `routing`, an Azure SQL gateway (Redirect policy): LOGINACK then ENVCHANGE type 20,
    which MS-TDS requires to follow LOGINACK.
    """
    out = bytearray()
    out += envchange_string(1, database, "master")
    out += info(5701, 2, 0, f"Changed database context to '{database}'.", server)
    out += envchange_collation()
    out += envchange_string(2, "us_english", "")
    out += info(5703, 1, 0, "Changed language setting to us_english.", server)
    out += loginack()
    if routing is not None:
        out += envchange_routing(*routing)
    else:
        out += envchange_string(4, str(packet_size), "4096")
    out += done()
    return bytes(out)


def sql_batch(sql: str) -> bytes:
    """SQLBatch with ALL_HEADERS holding one transaction-descriptor header (TDS 7.2+)."""
    headers = struct.pack("<IIHQI", 22, 18, 2, 0, 1)
    return headers + _utf16(sql)


# Column types used in result sets: (name, TYPE_INFO bytes, value encoder).
_INTN, _FLTN, _DATETIMN, _NVARCHAR, _BITN = 0x26, 0x6D, 0x6F, 0xE7, 0x68


def colmetadata(columns: list[tuple[str, bytes]]) -> bytes:
    """COLMETADATA: count, then per column UserType (4), Flags (2, nullable), TYPE_INFO, name."""
    out = bytearray(b"\x81" + struct.pack("<H", len(columns)))
    for name, type_info in columns:
        out += struct.pack("<IH", 0, 0x0009) + type_info + b_varchar(name)
    return bytes(out)


def result_set(rng: random.Random, rows: int) -> bytes:
    """COLMETADATA + `rows` ROW tokens + DONE(count): a typical OLTP query result."""
    cols = [
        ("id", bytes([_INTN, 8])),
        ("customer_id", bytes([_INTN, 4])),
        ("name", bytes([_NVARCHAR]) + struct.pack("<H", 200) + COLLATION),
        ("amount", bytes([_FLTN, 8])),
        ("created", bytes([_DATETIMN, 8])),
        ("active", bytes([_BITN, 1])),
        ("note", bytes([_NVARCHAR]) + struct.pack("<H", 1000) + COLLATION),
    ]
    words = ["alpha", "bravo", "contoso", "fabrikam", "northwind", "tailspin", "adventure", "works"]
    out = bytearray(colmetadata(cols))
    base = rng.randrange(1, 1 << 40)
    for i in range(rows):
        name = f"{rng.choice(words).title()} {rng.choice(words).title()} {i}"
        out += b"\xd1"
        out += b"\x08" + struct.pack("<q", base + i)
        out += b"\x04" + struct.pack("<i", rng.randrange(1, 1 << 31))
        out += struct.pack("<H", 2 * len(name)) + _utf16(name)
        out += b"\x08" + struct.pack("<d", rng.randrange(0, 10**7) / 100)
        out += b"\x08" + struct.pack("<ii", 45000 + rng.randrange(1000), rng.randrange(25920000))
        out += b"\x01" + bytes([rng.randrange(2)])
        if rng.random() < 0.3:
            out += b"\xff\xff"  # NULL nvarchar
        else:
            note = " ".join(rng.choice(words) for _ in range(rng.randrange(2, 12)))
            out += struct.pack("<H", 2 * len(note)) + _utf16(note)
    out += done(DONE_COUNT, CMD_SELECT, rows)
    return bytes(out)


def rowcount_result(rows: int) -> bytes:
    """Answer to an UPDATE/INSERT batch: DONE with a row count."""
    return done(DONE_COUNT, 0xC3, rows)


# --- TLS 1.2 records (RFC 5246), as carried inside TDS PRELOGIN packets ---------------------------

CT_CCS, CT_HANDSHAKE, CT_APPDATA = 20, 22, 23


def tls_record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    """One record; callers keep bodies at or below 2^14 bytes."""
    return struct.pack(">BHH", content_type, version, len(body)) + body


def _hs(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def _ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack(">HH", ext_type, len(body)) + body


_CIPHERS = bytes.fromhex(
    "130213031301c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039"
    "c009c0130033009d009c003d003c0035002f00ff"
)
_SIGALGS = bytes.fromhex("0403050306030807080808090804080508060401050106010201")


def client_hello(rng: random.Random, sni: str, alpn: str | None = None) -> bytes:
    """A TLS record holding a ClientHello as a current driver sends it (SNI, TLS 1.3/1.2).

    TDS 8.0 (strict encryption) sends it first thing on the connection with ALPN "tds/8.0".
    """
    host = sni.encode()
    exts = _ext(0, struct.pack(">HBH", len(host) + 3, 0, len(host)) + host)
    if alpn is not None:
        proto = alpn.encode()
        exts += _ext(0x0010, struct.pack(">HB", len(proto) + 1, len(proto)) + proto)
    exts += _ext(0x000B, b"\x03\x00\x01\x02")  # ec_point_formats
    exts += _ext(0x000A, bytes.fromhex("000a001d0017001e00190018"))  # supported_groups
    exts += _ext(0x0017, b"")  # extended_master_secret
    exts += _ext(0x000D, struct.pack(">H", len(_SIGALGS)) + _SIGALGS)
    exts += _ext(0x002B, bytes.fromhex("0403040303"))  # supported_versions: 1.3, 1.2
    exts += _ext(0x002D, b"\x01\x01")  # psk_key_exchange_modes
    exts += _ext(0x0033, struct.pack(">HHH", 36, 0x001D, 32) + rng.randbytes(32))  # key_share
    exts += _ext(0xFF01, b"\x00")  # renegotiation_info
    body = b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
    body += struct.pack(">H", len(_CIPHERS)) + _CIPHERS + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    return tls_record(CT_HANDSHAKE, _hs(1, body), version=0x0301)


def server_flight(rng: random.Random, chain: list[bytes]) -> bytes:
    """ServerHello (TLS 1.2, ECDHE-RSA-AES256-GCM), Certificate, ServerKeyExchange,
    ServerHelloDone, one record each."""
    exts = _ext(0xFF01, b"\x00") + _ext(0x0017, b"") + _ext(0x000B, b"\x01\x00")
    hello = b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\xc0\x30\x00"
    hello += struct.pack(">H", len(exts)) + exts
    certs = b"".join(len(c).to_bytes(3, "big") + c for c in chain)
    cert_msg = len(certs).to_bytes(3, "big") + certs
    ske = bytes([3]) + struct.pack(">HB", 0x001D, 32) + rng.randbytes(32)
    ske += struct.pack(">HH", 0x0804, 256) + rng.randbytes(256)
    return (
        tls_record(CT_HANDSHAKE, _hs(2, hello))
        + tls_record(CT_HANDSHAKE, _hs(11, cert_msg))
        + tls_record(CT_HANDSHAKE, _hs(12, ske))
        + tls_record(CT_HANDSHAKE, _hs(14, b""))
    )


def server_flight_13(rng: random.Random, chain: list[bytes]) -> bytes:
    """TLS 1.3 (TDS 8.0): ServerHello, the compatibility ChangeCipherSpec, then
    EncryptedExtensions/Certificate/CertificateVerify/Finished as encrypted records."""
    exts = _ext(0x002B, b"\x03\x04") + _ext(
        0x0033, struct.pack(">HH", 0x001D, 32) + rng.randbytes(32)
    )
    hello = b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x13\x02\x00"
    hello += struct.pack(">H", len(exts)) + exts
    inner = 40 + sum(len(c) + 5 for c in chain) + 264 + 52  # EE, Certificate, CV, Finished
    return (
        tls_record(CT_HANDSHAKE, _hs(2, hello))
        + tls_record(CT_CCS, b"\x01")
        + tls_record(CT_APPDATA, rng.randbytes(inner + 17))  # content type byte + 16-byte tag
    )


def client_finish_13(rng: random.Random) -> bytes:
    """The client's compatibility ChangeCipherSpec and its encrypted Finished."""
    return tls_record(CT_CCS, b"\x01") + tls_record(CT_APPDATA, rng.randbytes(53))


def client_finish(rng: random.Random) -> bytes:
    """ClientKeyExchange (X25519), ChangeCipherSpec, encrypted Finished."""
    cke = tls_record(CT_HANDSHAKE, _hs(16, b"\x20" + rng.randbytes(32)))
    return cke + tls_record(CT_CCS, b"\x01") + tls_record(CT_HANDSHAKE, rng.randbytes(40))


def server_finish(rng: random.Random) -> bytes:
    """ChangeCipherSpec and the encrypted Finished."""
    return tls_record(CT_CCS, b"\x01") + tls_record(CT_HANDSHAKE, rng.randbytes(40))


GCM_OVERHEAD = 24  # 8-byte explicit nonce + 16-byte tag (AES-GCM, RFC 5288)


def encrypt(rng: random.Random, plaintext_len: int) -> bytes:
    """Application-data records standing for `plaintext_len` encrypted bytes (random contents)."""
    out = bytearray()
    left = plaintext_len
    while left > 0:
        n = min(left, 16384)
        out += tls_record(CT_APPDATA, rng.randbytes(n + GCM_OVERHEAD))
        left -= n
    return bytes(out)


# --- X.509 DER (RFC 5280), just enough for a plausible certificate chain -------------------------


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _name(org: str, cn: str) -> bytes:
    def rdn(oid: str, value: str) -> bytes:
        return _der(0x31, _seq(_oid(oid), _der(0x13, value.encode())))

    return _seq(rdn("2.5.4.6", "US"), rdn("2.5.4.10", org), rdn("2.5.4.3", cn))


_SHA256_RSA = _seq(_oid("1.2.840.113549.1.1.11"), b"\x05\x00")


def certificate(
    rng: random.Random, subject_cn: str, issuer_cn: str, sans: list[str], ca: bool
) -> bytes:
    """A well-formed X.509 v3 certificate with a random RSA-2048 key and signature."""
    modulus = b"\x00" + bytes([0x80 | rng.randrange(128)]) + rng.randbytes(255)
    spki = _seq(
        _seq(_oid("1.2.840.113549.1.1.1"), b"\x05\x00"),
        _der(0x03, b"\x00" + _seq(_der(0x02, modulus), _der(0x02, b"\x01\x00\x01"))),
    )
    if ca:
        ext = _seq(_oid("2.5.29.19"), b"\x01\x01\xff", _der(0x04, _seq(b"\x01\x01\xff")))
    else:
        names = b"".join(_der(0x82, s.encode()) for s in sans)
        ext = _seq(_oid("2.5.29.17"), _der(0x04, _seq(names)))
    tbs = _seq(
        _der(0xA0, _der(0x02, b"\x02")),
        _der(0x02, bytes([rng.randrange(1, 128)]) + rng.randbytes(15)),
        _SHA256_RSA,
        _name("Microsoft Corporation" if not ca else "DigiCert Inc", issuer_cn),
        _seq(_der(0x17, b"260301000000Z"), _der(0x17, b"270301000000Z")),
        _name("Microsoft Corporation", subject_cn),
        spki,
        _der(0xA3, _seq(ext)),
    )
    return _seq(tbs, _SHA256_RSA, _der(0x03, b"\x00" + rng.randbytes(256)))


def cert_chain(rng: random.Random, host: str) -> list[bytes]:
    """Leaf for `host` (plus its wildcard parent) and one intermediate CA."""
    issuer = "Microsoft Azure RSA TLS Issuing CA 03"
    wildcard = "*." + host.split(".", 1)[1] if "." in host else host
    leaf = certificate(rng, wildcard, issuer, [wildcard, host], ca=False)
    inter = certificate(rng, issuer, "DigiCert Global Root G2", [], ca=True)
    return [leaf, inter]


# --- DNS (RFC 1035) ------------------------------------------------------------------------------


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(txid: int, name: str) -> bytes:
    """Standard recursive query for an A record."""
    return struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + _qname(name) + b"\x00\x01\x00\x01"


def dns_answer(txid: int, name: str, address: bytes | None, ttl: int = 30) -> bytes:
    """The answer: one A record pointing at the name in the question, or NXDOMAIN."""
    question = _qname(name) + b"\x00\x01\x00\x01"
    if address is None:
        return struct.pack(">HHHHHH", txid, 0x8183, 1, 0, 0, 0) + question
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, ttl, 4) + address
    return struct.pack(">HHHHHH", txid, 0x8180, 1, 1, 0, 0) + question + answer


# --- HTTP (noise) --------------------------------------------------------------------------------


def http_exchange(rng: random.Random, host: str) -> tuple[bytes, bytes]:
    """A small HTTP/1.1 GET and its 200 response (plain-text body)."""
    path = f"/health/{rng.randrange(1000)}"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: probe/1.0\r\n\r\n".encode()
    body = ("ok " * rng.randrange(1, 400)).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    return request, head.encode() + body
