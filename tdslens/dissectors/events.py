"""What the dissectors say about a byte stream: small immutable records named after MS-TDS.

Every event carries ``frames`` (the Wireshark frame numbers its bytes came from, in order, so a
finding can point at them) and ``offset`` (where its first byte sits in the direction's byte
stream, counting from 0). Events are slotted, hashable and never changed once built: cheap and
safe to pass upward.

Nothing here holds secrets. ``Login7`` keeps only the *length* of the password; no attribute of
any event ever holds password bytes, so no ``repr`` can leak one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum
from types import SimpleNamespace
from typing import Any

# How every event class is declared. Not ``frozen``: a frozen dataclass sets each field through
# ``object.__setattr__``, which made building an event 3-4x dearer (a 12-field PreLogin: ~7 µs
# against ~2 µs); a login yields ~30 events, and building them was a tenth of its dissection.
# Nothing changes an event after it is built; ``unsafe_hash`` keeps them hashable by value,
# as frozen ones were.
_event = dataclass(slots=True, kw_only=True, unsafe_hash=True)


def members(enum: type[Enum]) -> Any:
    """The members of ``enum`` as plain attributes: ``members(PacketType).RPC is PacketType.RPC``.

    On Python 3.11 every ``PacketType.RPC`` goes through the slow lookup hook of
    ``EnumType.__getattr__`` (~100 ns, against ~30 ns here); the dissectors' hot paths compare
    against members several times per unit."""
    return SimpleNamespace(**enum.__members__)


@_event
class Event:
    """Base of every dissector event."""

    frames: tuple[int, ...]
    offset: int


# ---------------------------------------------------------------------------------------------
# Errors are data (a passive analyzer records what it could not read and goes on)


class MalformedCode(StrEnum):
    """Why bytes could not be read as the protocol says. Values are stable API."""

    BAD_HEADER = "bad_header"  # a TDS/TLS/DNS header with impossible fields
    BAD_LENGTH = "bad_length"  # a length that points outside its container
    BAD_VALUE = "bad_value"  # a field value the specification does not allow
    TRUNCATED = "truncated"  # the message ended (EOM, EOF, gap) before its content did
    TOO_LARGE = "too_large"  # more bytes than we are willing to buffer for one unit
    UNKNOWN_TYPE = "unknown_type"  # a type code we cannot skip safely
    TRAILING_BYTES = "trailing_bytes"  # bytes left after a complete structure
    LOST_SYNC = "lost_sync"  # no plausible header where one must be; scanning forward
    NOT_TDS = "not_tds"  # the stream does not start like TDS or TLS at all


@_event
class Malformed(Event):
    """Bytes that do not parse. ``what`` names the structure (e.g. "LOGIN7", "ENVCHANGE")."""

    code: MalformedCode
    what: str
    detail: str


@_event
class CannotContinue(Event):
    """The token stream of one message cannot be followed further (e.g. an ALTMETADATA token).

    Parsing resumes at the next message; nothing between here and there is guessed.
    """

    what: str
    detail: str


@_event
class Gap(Event):
    """Bytes the capture missed (the TCP layer told us how many)."""

    length: int


@_event
class Resync(Event):
    """After lost sync, a plausible header was found again; ``skipped`` bytes were dropped."""

    skipped: int


@_event
class ProtocolViolation(Event):
    """A legal unit in an illegal place: e.g. LOGIN7 before PRELOGIN, or a ServerHello twice."""

    state: str
    unit: str
    detail: str


# ---------------------------------------------------------------------------------------------
# The TDS packet layer (MS-TDS 2.2.3)


class PacketType(IntEnum):
    """TDS packet types, MS-TDS 2.2.3.1.1."""

    SQL_BATCH = 0x01
    PRE_TDS7_LOGIN = 0x02
    RPC = 0x03
    TABULAR_RESULT = 0x04
    ATTENTION = 0x06
    BULK_LOAD = 0x07
    FEDAUTH_TOKEN = 0x08
    TRANSACTION_MANAGER = 0x0E
    LOGIN7 = 0x10
    SSPI = 0x11
    PRELOGIN = 0x12


class PacketStatus(IntEnum):
    """Status bits of the packet header, MS-TDS 2.2.3.1.2."""

    EOM = 0x01
    IGNORE = 0x02
    RESET_CONNECTION = 0x08
    RESET_CONNECTION_SKIP_TRAN = 0x10


@_event
class TdsPacket(Event):
    """One TDS packet header (the payload goes to the message parsers)."""

    type: int
    status: int
    length: int
    spid: int
    packet_id: int
    window: int

    @property
    def eom(self) -> bool:
        return bool(self.status & PacketStatus.EOM)

    @property
    def reset_connection(self) -> bool:
        return bool(self.status & PacketStatus.RESET_CONNECTION)


@_event
class TdsMessage(Event):
    """A complete message of a type we only summarise (bulk load, transaction manager, ...)."""

    type: int
    length: int  # payload bytes, all packets
    packets: int


# ---------------------------------------------------------------------------------------------
# PRELOGIN (MS-TDS 2.2.6.5)


class Encryption(IntEnum):
    """PRELOGIN ENCRYPTION option values, MS-TDS 2.2.6.5 (0x80 is the CLIENT_CERT flag)."""

    OFF = 0x00
    ON = 0x01
    NOT_SUP = 0x02
    REQ = 0x03
    CLIENT_CERT_OFF = 0x80
    CLIENT_CERT_ON = 0x81
    CLIENT_CERT_REQ = 0x83


@dataclass(frozen=True, slots=True, kw_only=True)
class PreLoginOption:
    """One raw option entry as listed in the option table."""

    token: int
    position: int
    length: int


@_event
class PreLogin(Event):
    """A PRELOGIN message from either side, options decoded."""

    from_client: bool
    version: tuple[int, int, int, int] | None  # major, minor, build, sub-build
    encryption: int | None  # an Encryption value, or the unknown raw byte
    instance: str | None
    thread_id: int | None
    mars: bool | None
    trace_id: bytes | None  # connection id GUID (16) + activity id (20)
    fedauth_required: bool | None
    nonce: bytes | None
    options: tuple[PreLoginOption, ...]


# ---------------------------------------------------------------------------------------------
# TLS (RFC 8446 / 5246), as carried inside PRELOGIN packets or directly on TCP


class TlsCarrier(StrEnum):
    """How a TLS record reached us: inside TDS packets (7.x handshake) or straight on TCP."""

    TDS = "tds"
    RAW = "raw"


@_event
class TlsRecord(Event):
    """A TLS record of a content type we do not decode further."""

    content_type: int
    version: int
    length: int
    carrier: TlsCarrier


@_event
class ClientHello(Event):
    legacy_version: int
    supported_versions: tuple[int, ...]
    sni: str | None
    alpn: tuple[str, ...]
    cipher_suites: tuple[int, ...]
    carrier: TlsCarrier


@_event
class ServerHello(Event):
    legacy_version: int
    selected_version: int  # supported_versions if present (TLS 1.3), else legacy_version
    cipher_suite: int
    alpn: str | None
    carrier: TlsCarrier
    hello_retry_request: bool = False  # TLS 1.3 HRR: the server asks for another ClientHello


@_event
class Certificate(Event):
    """The server's leaf certificate (visible only up to TLS 1.2)."""

    count: int  # certificates in the chain
    subject: str | None
    issuer: str | None
    san: tuple[str, ...]
    not_before: str | None  # ISO 8601, UTC
    not_after: str | None
    sha256: str
    carrier: TlsCarrier


@_event
class TlsHandshake(Event):
    """Any other handshake message (ServerHelloDone, ClientKeyExchange, encrypted Finished...)."""

    msg_type: int  # -1 when encrypted (type unknown)
    length: int
    encrypted: bool
    carrier: TlsCarrier


@_event
class TlsAlert(Event):
    level: int | None  # None when the alert is encrypted
    description: int | None
    carrier: TlsCarrier


@_event
class ChangeCipherSpec(Event):
    carrier: TlsCarrier


@_event
class EncryptedData(Event):
    """One TLS application-data record: opaque bytes (LOGIN7 in login-only encryption, or all)."""

    length: int
    carrier: TlsCarrier


# ---------------------------------------------------------------------------------------------
# LOGIN7 (MS-TDS 2.2.6.4)


@dataclass(frozen=True, slots=True, kw_only=True)
class Feature:
    """One FeatureExt / FEATUREEXTACK entry: id and data length (the data is rarely needed)."""

    id: int
    length: int
    data: bytes = b""  # only for small, non-secret features (never FEDAUTH tokens)


@_event
class Login7(Event):
    """A LOGIN7 message. The password is never decoded: only its length in characters."""

    tds_version: int
    packet_size: int
    client_version: int
    client_pid: int
    connection_id: int
    option_flags1: int
    option_flags2: int
    type_flags: int
    option_flags3: int
    client_timezone: int
    client_lcid: int
    hostname: str
    username: str
    password_chars: int
    appname: str
    servername: str
    library: str
    language: str
    database: str
    client_id: str  # MAC address as hex
    sspi_length: int
    attach_db_file: str
    change_password_chars: int
    features: tuple[Feature, ...]

    @property
    def password_present(self) -> bool:
        return self.password_chars > 0

    @property
    def read_only_intent(self) -> bool:
        return bool(self.type_flags & 0x20)

    @property
    def integrated_security(self) -> bool:
        return bool(self.option_flags2 & 0x80)


# ---------------------------------------------------------------------------------------------
# Client requests, summarised (the text of a query is data, never dumped)


@_event
class SqlBatch(Event):
    length: int  # payload bytes including ALL_HEADERS
    packets: int


@_event
class Rpc(Event):
    length: int
    packets: int
    proc_id: int | None  # well-known procedure (sp_executesql = 10), when sent by id
    proc_name: str | None  # when sent by name


@_event
class Attention(Event):
    pass


@_event
class Sspi(Event):
    """An SSPI blob (client 0x11 message or server SSPI token): size only."""

    length: int
    from_client: bool


@_event
class FedAuthToken(Event):
    """A client federated-authentication token message (0x08): size only, never the token."""

    length: int


# ---------------------------------------------------------------------------------------------
# The token stream of server responses (MS-TDS 2.2.7)


@_event
class LoginAck(Event):
    interface: int
    tds_version: int
    prog_name: str
    prog_version: tuple[int, int, int]  # major, minor, build


class EnvChangeType(IntEnum):
    """ENVCHANGE types, MS-TDS 2.2.7.9."""

    DATABASE = 1
    LANGUAGE = 2
    CHARSET = 3
    PACKET_SIZE = 4
    UNICODE_SORT_LCID = 5
    UNICODE_COMPARISON = 6
    SQL_COLLATION = 7
    BEGIN_TRANSACTION = 8
    COMMIT_TRANSACTION = 9
    ROLLBACK_TRANSACTION = 10
    ENLIST_DTC = 11
    DEFECT_TRANSACTION = 12
    MIRROR_PARTNER = 13
    PROMOTE_TRANSACTION = 15
    TM_ADDRESS = 16
    TRANSACTION_ENDED = 17
    RESET_ACK = 18
    USER_INSTANCE = 19
    ROUTING = 20


@_event
class EnvChange(Event):
    """An ENVCHANGE; string types decoded, binary types as hex."""

    type: int
    new: str
    old: str


@_event
class EnvChangeRouting(Event):
    """ENVCHANGE type 20: the server sends the client elsewhere (Azure SQL redirect)."""

    protocol: int  # 0 = TCP
    port: int
    server: str


@_event
class ServerMessage(Event):
    number: int
    state: int
    severity: int  # "class" in the specification
    message: str
    server: str
    procedure: str
    line: int


@_event
class Error(ServerMessage):
    """ERROR token, MS-TDS 2.2.7.10."""


@_event
class Info(ServerMessage):
    """INFO token, MS-TDS 2.2.7.13."""


class DoneKind(IntEnum):
    DONE = 0xFD
    DONEPROC = 0xFE
    DONEINPROC = 0xFF


class DoneStatus(IntEnum):
    """DONE status bits, MS-TDS 2.2.7.6."""

    MORE = 0x0001
    ERROR = 0x0002
    INXACT = 0x0004
    COUNT = 0x0010
    ATTN = 0x0020
    SRVERROR = 0x0100


@_event
class Done(Event):
    kind: DoneKind
    status: int
    cur_cmd: int
    row_count: int

    @property
    def error(self) -> bool:
        return bool(self.status & (DoneStatus.ERROR | DoneStatus.SRVERROR))

    @property
    def attention_ack(self) -> bool:
        return bool(self.status & DoneStatus.ATTN)


@_event
class FeatureExtAck(Event):
    features: tuple[Feature, ...]


@_event
class FedAuthInfo(Event):
    sts_url: str | None
    spn: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    name: str
    type: int  # TYPE_INFO type byte
    user_type: int
    flags: int
    max_length: int | None


@_event
class ColMetadata(Event):
    columns: tuple[Column, ...]


@_event
class Order(Event):
    columns: tuple[int, ...]


@_event
class Rows(Event):
    """ROW / NBCROW tokens between two other tokens, counted not kept (the data is the user's)."""

    count: int
    length: int


@_event
class ReturnStatus(Event):
    value: int


@_event
class ReturnValue(Event):
    ordinal: int
    name: str
    type: int


@_event
class Token(Event):
    """A token we skip by its length (SESSIONSTATE, TABNAME, COLINFO, unknown skippable ones)."""

    token: int
    length: int


@_event
class EndOfResponse(Event):
    """The last packet (EOM) of a server token-stream message."""

    length: int
    packets: int


# ---------------------------------------------------------------------------------------------
# DNS (RFC 1035 / 3596)


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAnswer:
    name: str
    type: int  # 1 A, 5 CNAME, 28 AAAA, ...
    ttl: int
    value: str  # address, target name, or hex for other types


@_event
class DnsMessage(Event):
    id: int
    response: bool
    rcode: int  # 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...
    questions: tuple[tuple[str, int], ...]  # (name, qtype)
    answers: tuple[DnsAnswer, ...]

    def addresses(self) -> tuple[str, ...]:
        return tuple(a.value for a in self.answers if a.type in (1, 28))
