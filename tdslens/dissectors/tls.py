"""TLS records and the cleartext part of the handshake, as SQL Server carries them.

TDS 7.x wraps the TLS handshake in PRELOGIN packets (the client in 0x12; servers answer in 0x12
or 0x04 packets), then, for login-only encryption, sends the LOGIN7 as TLS records directly on TCP
and goes back to cleartext TDS. TDS 8.0 (strict) starts with TLS on TCP and never leaves it.
The session driver hands us record bytes either way, with the carrier that brought them.

We decode what is in clear: hellos (versions, SNI, ALPN, ciphers), alerts sent before
encryption, the server certificate (TLS <= 1.2 only: 1.3 encrypts it), ChangeCipherSpec.
After that, records are counted as encrypted, never guessed at.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from collections.abc import Callable
from enum import Enum, IntEnum
from typing import Any

from .buffer import ReceiveBuffer, Spans, span_frames, span_origin, span_slice
from .events import (
    Certificate,
    ChangeCipherSpec,
    ClientHello,
    EncryptedData,
    Event,
    Malformed,
    MalformedCode,
    ProtocolViolation,
    ServerHello,
    TlsAlert,
    TlsCarrier,
    TlsHandshake,
    TlsRecord,
    members,
)
from .tds import TLS_HEADER, TLS_HEADER_LEN, TLS_MAX_RECORD

HANDSHAKE_HEADER = struct.Struct(">BBH")  # msg_type, then a 24-bit length as (hi byte, low 16)
_EXTENSION_HEAD = struct.Struct(">HH")  # extension type, length
HANDSHAKE_CAP = 1 << 18
# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest (still cleartext after it)
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)  # a certificate chain of a few certificates fits easily


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


_CONTENT_TYPES = frozenset(ContentType)


class HandshakeType(IntEnum):
    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20
    CERTIFICATE_STATUS = 22


class Extension(IntEnum):
    SERVER_NAME = 0
    ALPN = 16
    SUPPORTED_VERSIONS = 43


class TlsVersion(IntEnum):
    SSL3 = 0x0300
    TLS1_0 = 0x0301
    TLS1_1 = 0x0302
    TLS1_2 = 0x0303
    TLS1_3 = 0x0304


class TlsState(Enum):
    """One side of a TLS handshake as seen on the wire."""

    START = "start"  # nothing sent yet
    HELLO = "hello"  # ClientHello / ServerHello sent, cleartext handshake continues
    ENCRYPTED = "encrypted"  # after this side's ChangeCipherSpec (or a TLS 1.3 ServerHello)

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs in Python


# The members as plain attributes (events.members: faster lookups in the per-record paths).
_CT, _H, _S = members(ContentType), members(HandshakeType), members(TlsState)
_EXT, _V = members(Extension), members(TlsVersion)

# Which cleartext handshake messages each side may send in each state; anything else is a
# ProtocolViolation (still decoded: we are passive, the wire is what it is).
LEGAL: dict[tuple[bool, TlsState], frozenset[int]] = {
    (True, TlsState.START): frozenset({_H.CLIENT_HELLO}),
    (True, TlsState.HELLO): frozenset(
        {_H.CLIENT_HELLO, _H.CERTIFICATE, _H.CLIENT_KEY_EXCHANGE, _H.CERTIFICATE_VERIFY}
    ),
    (False, TlsState.START): frozenset({_H.HELLO_REQUEST, _H.SERVER_HELLO}),
    (False, TlsState.HELLO): frozenset(
        {
            _H.SERVER_HELLO,  # after a HelloRetryRequest
            _H.CERTIFICATE,
            _H.CERTIFICATE_STATUS,
            _H.SERVER_KEY_EXCHANGE,
            _H.CERTIFICATE_REQUEST,
            _H.SERVER_HELLO_DONE,
            _H.NEW_SESSION_TICKET,
        }
    ),
}
_NOTHING: frozenset[int] = frozenset()
# Transitions: (from_client, state, trigger) -> next state. Triggers are handshake types or "CCS".
TRANSITIONS: dict[tuple[bool, TlsState, Any], TlsState] = {
    (True, TlsState.START, _H.CLIENT_HELLO): TlsState.HELLO,
    (False, TlsState.START, _H.SERVER_HELLO): TlsState.HELLO,
    (True, TlsState.HELLO, "CCS"): TlsState.ENCRYPTED,
    (False, TlsState.HELLO, "CCS"): TlsState.ENCRYPTED,
    (False, TlsState.HELLO, "TLS1.3"): TlsState.ENCRYPTED,  # ServerHello chose TLS 1.3
}


class _Short(Exception):
    pass


class _R:
    """Bounds-checked big-endian reader; running out raises _Short (malformed in context)."""

    __slots__ = ("d", "end", "p")

    def __init__(self, d: bytes, p: int = 0, end: int | None = None) -> None:
        self.d, self.p, self.end = d, p, len(d) if end is None else end

    def take(self, n: int) -> bytes:
        p = self.p + n
        if p > self.end:
            raise _Short
        self.p = p
        return self.d[p - n : p]

    def u8(self) -> int:
        p = self.p
        if p >= self.end:
            raise _Short
        self.p = p + 1
        return self.d[p]

    def u16(self) -> int:
        p = self.p + 2
        if p > self.end:
            raise _Short
        self.p = p
        return (self.d[p - 2] << 8) | self.d[p - 1]

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def u16s(self) -> tuple[int, ...]:
        """The rest as big-endian 16-bit values (cipher suites, versions); an odd byte is
        left unread."""
        n = (self.end - self.p) // 2
        values = struct.unpack_from(f">{n}H", self.d, self.p)
        self.p += 2 * n
        return values

    def vec(self, len_bytes: int) -> _R:
        """A reader over the next vector (``len_bytes`` of length, then that many bytes)."""
        start = self.skip_vec(len_bytes)
        return _R(self.d, start, self.p)

    def skip_vec(self, len_bytes: int) -> int:
        """Pass over the next vector; returns where its contents began."""
        p, d = self.p, self.d
        start = p + len_bytes
        if start > self.end:
            raise _Short
        if len_bytes == 1:
            stop = start + d[p]
        elif len_bytes == 2:
            stop = start + ((d[p] << 8) | d[p + 1])
        else:
            stop = start + int.from_bytes(d[p:start], "big")
        if stop > self.end:
            raise _Short
        self.p = stop
        return start

    def left(self) -> int:
        return self.end - self.p


def _extensions(r: _R, wanted: frozenset[int]) -> dict[int, _R]:
    """The ``wanted`` extensions (the first of each type) of an extension block. Every entry's
    length is checked, but only the wanted ones get a reader: a ClientHello has ~15."""
    out: dict[int, _R] = {}
    if not r.left():
        return out
    exts = r.vec(2)
    d, p, end = exts.d, exts.p, exts.end
    while p < end:
        start = p + 4
        if start > end:
            raise _Short
        etype, size = _EXTENSION_HEAD.unpack_from(d, p)
        stop = start + size
        if stop > end:
            raise _Short
        if etype in wanted and etype not in out:
            out[etype] = _R(d, start, stop)
        p = stop
    return out


_HELLO_EXTENSIONS = frozenset({Extension.SERVER_NAME, Extension.ALPN, Extension.SUPPORTED_VERSIONS})


def parse_client_hello(body: bytes) -> dict[str, Any]:
    """ClientHello fields (RFC 8446 4.1.2). Raises _Short when lengths overrun the body."""
    r = _R(body)
    legacy = r.u16()
    r.take(32)  # random
    r.skip_vec(1)  # legacy_session_id
    ciphers = r.vec(2).u16s()
    r.skip_vec(1)  # legacy_compression_methods
    exts = _extensions(r, _HELLO_EXTENSIONS)
    sni = None
    if _EXT.SERVER_NAME in exts:
        names = exts[_EXT.SERVER_NAME].vec(2)
        while names.left():
            kind, name = names.u8(), names.vec(2)
            if kind == 0:
                sni = name.take(name.left()).decode("ascii", "replace")
                break
    alpn: tuple[str, ...] = ()
    if _EXT.ALPN in exts:
        protos = exts[_EXT.ALPN].vec(2)
        items = []
        while protos.left():
            p = protos.vec(1)
            items.append(p.take(p.left()).decode("ascii", "replace"))
        alpn = tuple(items)
    versions: tuple[int, ...] = ()
    if _EXT.SUPPORTED_VERSIONS in exts:
        v = exts[_EXT.SUPPORTED_VERSIONS].vec(1)
        versions = v.u16s()
    return {
        "legacy_version": legacy,
        "supported_versions": versions,
        "sni": sni,
        "alpn": alpn,
        "cipher_suites": ciphers,
    }


def parse_server_hello(body: bytes) -> dict[str, Any]:
    """ServerHello fields; TLS 1.3 is visible only in supported_versions (RFC 8446 4.2.1)."""
    r = _R(body)
    legacy = r.u16()
    random = r.take(32)
    r.skip_vec(1)  # legacy_session_id_echo
    cipher = r.u16()
    r.u8()
    exts = _extensions(r, _HELLO_EXTENSIONS)
    selected = legacy
    if _EXT.SUPPORTED_VERSIONS in exts:
        selected = exts[_EXT.SUPPORTED_VERSIONS].u16()
    alpn = None
    if _EXT.ALPN in exts:
        p = exts[_EXT.ALPN].vec(2).vec(1)
        alpn = p.take(p.left()).decode("ascii", "replace")
    return {
        "legacy_version": legacy,
        "selected_version": selected,
        "cipher_suite": cipher,
        "alpn": alpn,
        "hello_retry_request": random == HELLO_RETRY_RANDOM,
    }


def parse_certificate(body: bytes) -> dict[str, Any]:
    """TLS <= 1.2 Certificate: a 24-bit list of 24-bit DER certificates; the first is the leaf."""
    r = _R(body)
    chain = r.vec(3)
    ders: list[bytes] = []
    while chain.left():
        c = chain.vec(3)
        ders.append(c.take(c.left()))
    fields: dict[str, Any] = {
        "count": len(ders),
        "subject": None,
        "issuer": None,
        "san": (),
        "not_before": None,
        "not_after": None,
        "sha256": "",
    }
    if ders:
        fields.update(_leaf_summary(ders[0]))
    return fields


# Leaf certificate → its summary. A server shows the same certificate to every client, and
# reading one with `cryptography` costs more than all the rest of a login's TLS; bounded.
_LEAVES: dict[bytes, dict[str, Any]] = {}
LEAF_CACHE = 256


def _leaf_summary(der: bytes) -> dict[str, Any]:
    """SHA-256 and the X.509 summary of a leaf certificate (a shared dict: do not modify)."""
    found = _LEAVES.get(der)
    if found is None:
        found = {"sha256": hashlib.sha256(der).hexdigest(), **_x509_summary(der)}
        if len(_LEAVES) >= LEAF_CACHE:
            _LEAVES.clear()
        _LEAVES[der] = found
    return found


def _x509_summary(der: bytes) -> dict[str, Any]:
    """Subject, issuer, SAN and validity through the `cryptography` package when present."""
    try:
        from cryptography import x509
    except ImportError:  # optional: without it we still report the fingerprint and count
        return {}
    try:
        with warnings.catch_warnings():  # odd certificates are data here, not a warning to print
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
        out: dict[str, Any] = {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            out["san"] = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            pass
        return out
    except Exception:
        return {}


# (from_client, content type, version, fragment, frames): one whole TLS record, as it crossed
# the wire. The connection layer gives this to a decryptor; the dissector never looks back.
RecordHook = Callable[[bool, int, int, bytes, tuple[int, ...]], None]


class TlsDissector:
    """One direction of a TLS conversation: records in, TLS events out.

    ``on_record``, when set, is called with every complete record (all content types: the
    hellos carry what a decryptor needs) before it is dissected. None costs one test per record,
    so captures analysed without a key log pay nothing for decryption.
    """

    def __init__(self, from_client: bool, on_record: RecordHook | None = None) -> None:
        self.from_client = from_client
        self.on_record = on_record
        self.state = _S.START
        self.records = ReceiveBuffer(cap=TLS_MAX_RECORD + TLS_HEADER_LEN)
        self.handshake = ReceiveBuffer(cap=HANDSHAKE_CAP)
        self.version: int | None = None  # negotiated version, when this side saw it
        self.broken = False  # a bad record header: stop until the driver resets us

    @property
    def encrypted(self) -> bool:
        return self.state is _S.ENCRYPTED

    def feed(self, data: bytes, spans: Spans, carrier: TlsCarrier) -> list[Event]:
        """Records in ``data`` (whose bytes came from ``spans``), joined to a record begun in
        earlier data. Whole records are sliced out of the chunk; only a record cut at its end
        waits in ``records`` for the rest."""
        if self.broken:
            return []
        out: list[Event] = []
        held = self.records
        if held.size:
            held.add_spans(data, spans)
            if not held.ready():
                return out
            data, spans = held.take_all()
        n = len(data)
        pos = 0
        # One run (one frame), the usual case: frames and offsets without the span helpers.
        one = spans[0] if len(spans) == 1 else None
        while pos < n:
            if n - pos < TLS_HEADER_LEN:
                held.add_spans(data[pos:], span_slice(spans, pos, n))
                held.need = TLS_HEADER_LEN
                break
            ctype, version, length = TLS_HEADER.unpack_from(data, pos)
            if ctype not in _CONTENT_TYPES or version >> 8 != 3 or length > TLS_MAX_RECORD:
                out.append(
                    Malformed(
                        frames=span_frames(spans, pos, n),
                        offset=span_origin(spans, pos),
                        code=MalformedCode.BAD_HEADER,
                        what="TLS record",
                        detail=f"type {ctype}, version 0x{version:04x}, length {length}",
                    )
                )
                self.broken = True
                break
            end = pos + TLS_HEADER_LEN + length
            if end > n:
                held.add_spans(data[pos:], span_slice(spans, pos, n))
                held.need = end - pos
                break
            if one is not None:
                frames, offset = (one[1],), one[2] + pos
            else:
                frames, offset = span_frames(spans, pos, end), span_origin(spans, pos)
            body = data[pos + TLS_HEADER_LEN : end]
            if self.on_record is not None:
                self.on_record(self.from_client, ctype, version, body, frames)
            if ctype == _CT.HANDSHAKE and self.state is not _S.ENCRYPTED:
                if one is not None:
                    body_spans: Spans = (
                        ((length, one[1], offset + TLS_HEADER_LEN),) if length else ()
                    )
                else:
                    body_spans = span_slice(spans, pos + TLS_HEADER_LEN, end)
                self._handshakes(body, body_spans, carrier, out)
            else:
                out.append(self._record(ctype, version, body, frames, offset, carrier))
            pos = end
        return out

    def _record(self, ctype, version, body, frames, offset, carrier) -> Event:
        """The event of one record that is not a cleartext handshake record."""
        if ctype == _CT.APPLICATION_DATA:
            return EncryptedData(frames=frames, offset=offset, length=len(body), carrier=carrier)
        if ctype == _CT.CHANGE_CIPHER_SPEC:
            self._move("CCS")
            return ChangeCipherSpec(frames=frames, offset=offset, carrier=carrier)
        if ctype == _CT.ALERT:
            if not self.encrypted and len(body) == 2:
                return TlsAlert(
                    frames=frames,
                    offset=offset,
                    level=body[0],
                    description=body[1],
                    carrier=carrier,
                )
            return TlsAlert(
                frames=frames, offset=offset, level=None, description=None, carrier=carrier
            )
        if ctype == _CT.HANDSHAKE:
            return TlsHandshake(
                frames=frames,
                offset=offset,
                msg_type=-1,
                length=len(body),
                encrypted=True,
                carrier=carrier,
            )
        return TlsRecord(frames=frames, offset=offset, content_type=ctype, version=version,
                         length=len(body), carrier=carrier)  # fmt: skip

    def _move(self, trigger: Any) -> None:
        nxt = TRANSITIONS.get((self.from_client, self.state, trigger))
        if nxt is not None:
            self.state = nxt
        elif trigger == "CCS":
            self.state = _S.ENCRYPTED

    def _handshakes(self, data: bytes, spans: Spans, carrier: TlsCarrier, out) -> None:
        """Handshake messages in one record's body, joined to a message begun in earlier
        records; as with records, only a message cut at the end waits in ``handshake``."""
        held = self.handshake
        if held.size:
            held.add_spans(data, spans)
            if held.size < 4:
                return
            data, spans = held.take_all()
        n = len(data)
        pos = 0
        one = spans[0] if len(spans) == 1 else None  # one run: as in feed
        while n - pos >= 4:
            msg_type, hi, lo = HANDSHAKE_HEADER.unpack_from(data, pos)
            length = (hi << 16) | lo
            if length + 4 > held.cap:
                out.append(
                    Malformed(
                        frames=span_frames(spans, pos, n), offset=span_origin(spans, pos),
                        code=MalformedCode.TOO_LARGE, what="TLS handshake",
                        detail=f"message type {msg_type} of {length} bytes",
                    )
                )  # fmt: skip
                return
            end = pos + 4 + length
            if end > n:
                break
            if one is not None:
                frames, offset = (one[1],), one[2] + pos
            else:
                frames, offset = span_frames(spans, pos, end), span_origin(spans, pos)
            out += self._handshake(msg_type, data[pos + 4 : end], frames, offset, carrier)
            pos = end
        if pos < n:
            held.add_spans(data[pos:], span_slice(spans, pos, n))

    def _handshake(self, msg_type, body, frames, offset, carrier) -> list[Event]:
        out: list[Event] = []
        legal = LEGAL.get((self.from_client, self.state), _NOTHING)
        if msg_type not in legal:
            side = "client" if self.from_client else "server"
            out.append(
                ProtocolViolation(
                    frames=frames, offset=offset, state=self.state.value, unit=_hs_name(msg_type),
                    detail=f"the {side} may not send this in state {self.state.value}",
                )
            )  # fmt: skip
        try:
            if msg_type == _H.CLIENT_HELLO:
                fields = parse_client_hello(body)
                out.append(ClientHello(frames=frames, offset=offset, carrier=carrier, **fields))
            elif msg_type == _H.SERVER_HELLO:
                fields = parse_server_hello(body)
                self.version = fields["selected_version"]
                out.append(ServerHello(frames=frames, offset=offset, carrier=carrier, **fields))
            elif msg_type == _H.CERTIFICATE:
                fields = parse_certificate(body)
                out.append(Certificate(frames=frames, offset=offset, carrier=carrier, **fields))
            else:
                out.append(
                    TlsHandshake(frames=frames, offset=offset, msg_type=msg_type, length=len(body),
                                 encrypted=False, carrier=carrier)
                )  # fmt: skip
        except _Short:
            out.append(
                Malformed(
                    frames=frames, offset=offset, code=MalformedCode.BAD_LENGTH,
                    what=_hs_name(msg_type), detail="a length field runs past the message",
                )
            )  # fmt: skip
        self._move(msg_type)
        retry = bool(out) and isinstance(out[-1], ServerHello) and out[-1].hello_retry_request
        if msg_type == _H.SERVER_HELLO and self.version == _V.TLS1_3 and not retry:
            self._move("TLS1.3")
        return out


def _hs_name(msg_type: int) -> str:
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return f"handshake type {msg_type}"
