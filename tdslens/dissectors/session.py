"""The per-direction driver: one TCP byte stream in, TDS/TLS events out (sans-IO, h11-style).

``TdsDirection(from_client)`` is fed the payload of one direction of one TCP connection:

    d = TdsDirection(from_client=True)
    events = d.feed(data, frame)      # any chunking; events come out when units complete
    events += d.gap(length, frame)    # the capture missed `length` bytes here
    events += d.eof()                 # FIN/RST or end of capture

Layering (mitmproxy-style): the stream is a sequence of *units*, each either a TDS packet
(first byte 1..18) or a TLS record sent straight on TCP (first byte 20..23): one byte tells
them apart. TDS packets are grouped into messages; a message's payload goes to the parser of
its kind: PRELOGIN options, a child TLS dissector (the 7.x handshake rides inside PRELOGIN
packets), LOGIN7, or the server's token stream. Raw TLS records go to the same TLS child: the
TDS 8.0 handshake, the 7.x client's last flight, the LOGIN7 under login-only encryption, or
everything under full encryption.

Where the conversation is (``Phase``) changes only through ``CLIENT_TRANSITIONS`` /
``SERVER_TRANSITIONS``; a unit the table does not allow yields a ProtocolViolation and the phase
moves to the unit's usual phase (we are passive: the wire is what it is). ``feed`` never raises
on bad input: damage becomes Malformed, Gap and Resync events.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from .buffer import ReceiveBuffer, Spans
from .events import (
    Attention,
    EncryptedData,
    EndOfResponse,
    Event,
    FedAuthToken,
    Gap,
    Malformed,
    MalformedCode,
    PacketStatus,
    PacketType,
    PreLogin,
    ProtocolViolation,
    Resync,
    Rpc,
    SqlBatch,
    Sspi,
    TdsMessage,
    TdsPacket,
    TlsCarrier,
    members,
)
from .login7 import parse_login7
from .prelogin import is_prelogin_payload, parse_prelogin
from .tds import (
    HEADER,
    HEADER_LEN,
    KNOWN_TYPES,
    STATUS_MASK,
    TLS_CONTENT_TYPES,
    TLS_HEADER,
    TLS_HEADER_LEN,
    TLS_MAX_RECORD,
    find_resync,
    header_plausible,
    starts_tls,
    tls_record_plausible,
)
from .tls import ContentType, RecordHook, TlsDissector
from .tokens import TokenStream

_PT, _PS = members(PacketType), members(PacketStatus)
_CARRIER = members(TlsCarrier)
_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)
_T = TypeVar("_T")
KEEP_CAP = 1 << 20  # PRELOGIN / LOGIN7 payloads are kept whole; real ones are < 10 KB
RPC_HEAD = 4096  # bytes of an RPC kept to read its procedure name or id


class Phase(Enum):
    """Where one direction of a TDS connection is."""

    INITIAL = "initial"
    PRELOGIN = "prelogin"
    TLS_HANDSHAKE = "tls_handshake"  # TLS records inside TDS PRELOGIN packets (7.x)
    TLS_FIRST = "tls_first"  # TDS 8.0: TLS straight on TCP from the first byte
    ENCRYPTED = "encrypted"  # TLS records straight on TCP after a 7.x handshake
    LOGIN = "login"  # client: LOGIN7 (and SSPI / federated auth legs) sent in clear
    SESSION = "session"  # requests and responses
    CLOSED = "closed"

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs in Python


class Unit(Enum):
    """What arrived: a whole message of one kind, or one raw TLS record."""

    PRELOGIN = "PRELOGIN"
    TLS_IN_TDS = "TLS in PRELOGIN packets"
    TLS_RAW = "TLS record on TCP"
    LOGIN7 = "LOGIN7"
    SSPI = "SSPI"
    FEDAUTH = "FEDAUTH token"
    REQUEST = "request"  # SQL batch, RPC
    ATTENTION = "attention"
    OTHER = "other request"  # bulk load, transaction manager, pre-TDS7 login
    RESPONSE = "response"  # server token stream

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs in Python


P, U = members(Phase), members(Unit)  # fast member lookups (events.members)
CLIENT_TRANSITIONS: dict[tuple[Phase, Unit], Phase] = {
    (P.INITIAL, U.PRELOGIN): P.PRELOGIN,
    (P.INITIAL, U.TLS_RAW): P.TLS_FIRST,
    (P.INITIAL, U.LOGIN7): P.LOGIN,  # TDS 7.0 clients send no PRELOGIN
    (P.PRELOGIN, U.TLS_IN_TDS): P.TLS_HANDSHAKE,
    (P.PRELOGIN, U.LOGIN7): P.LOGIN,  # no encryption at all
    (P.TLS_HANDSHAKE, U.TLS_IN_TDS): P.TLS_HANDSHAKE,
    (P.TLS_HANDSHAKE, U.TLS_RAW): P.ENCRYPTED,  # LOGIN7 in TLS, or a raw final TLS 1.3 flight
    (P.ENCRYPTED, U.TLS_RAW): P.ENCRYPTED,
    (P.ENCRYPTED, U.SSPI): P.LOGIN,  # login-only encryption: back to clear TDS
    (P.ENCRYPTED, U.FEDAUTH): P.LOGIN,
    (P.ENCRYPTED, U.REQUEST): P.SESSION,
    (P.ENCRYPTED, U.ATTENTION): P.SESSION,
    (P.ENCRYPTED, U.OTHER): P.SESSION,
    (P.TLS_FIRST, U.TLS_RAW): P.TLS_FIRST,
    (P.LOGIN, U.SSPI): P.LOGIN,
    (P.LOGIN, U.FEDAUTH): P.LOGIN,
    (P.LOGIN, U.REQUEST): P.SESSION,
    (P.LOGIN, U.ATTENTION): P.SESSION,
    (P.LOGIN, U.OTHER): P.SESSION,
    (P.SESSION, U.REQUEST): P.SESSION,
    (P.SESSION, U.ATTENTION): P.SESSION,
    (P.SESSION, U.OTHER): P.SESSION,
    (P.SESSION, U.SSPI): P.SESSION,
}
SERVER_TRANSITIONS: dict[tuple[Phase, Unit], Phase] = {
    (P.INITIAL, U.PRELOGIN): P.PRELOGIN,
    (P.INITIAL, U.TLS_RAW): P.TLS_FIRST,
    (P.INITIAL, U.RESPONSE): P.SESSION,  # answer to a TDS 7.0 login without PRELOGIN
    (P.PRELOGIN, U.TLS_IN_TDS): P.TLS_HANDSHAKE,
    (P.PRELOGIN, U.RESPONSE): P.SESSION,
    (P.TLS_HANDSHAKE, U.TLS_IN_TDS): P.TLS_HANDSHAKE,
    (P.TLS_HANDSHAKE, U.TLS_RAW): P.ENCRYPTED,  # full encryption
    (P.TLS_HANDSHAKE, U.RESPONSE): P.SESSION,  # login-only encryption: LOGINACK in clear
    (P.ENCRYPTED, U.TLS_RAW): P.ENCRYPTED,
    (P.ENCRYPTED, U.RESPONSE): P.SESSION,
    (P.TLS_FIRST, U.TLS_RAW): P.TLS_FIRST,
    (P.SESSION, U.RESPONSE): P.SESSION,
}
# Where a unit the table does not allow leaves us (the best guess after a ProtocolViolation).
FALLBACK: dict[Unit, Phase] = {
    U.PRELOGIN: P.PRELOGIN,
    U.TLS_IN_TDS: P.TLS_HANDSHAKE,
    U.TLS_RAW: P.ENCRYPTED,
    U.LOGIN7: P.LOGIN,
    U.SSPI: P.LOGIN,
    U.FEDAUTH: P.LOGIN,
    U.REQUEST: P.SESSION,
    U.ATTENTION: P.SESSION,
    U.OTHER: P.SESSION,
    U.RESPONSE: P.SESSION,
}


def mermaid(from_client: bool) -> str:
    """The transition table as a Mermaid state diagram (docs/dissectors.md is generated from it)."""
    table = CLIENT_TRANSITIONS if from_client else SERVER_TRANSITIONS
    lines = ["stateDiagram-v2", "    [*] --> initial"]
    for (src, unit), dst in table.items():
        lines.append(f"    {src.value} --> {dst.value}: {unit.value}")
    return "\n".join(lines)


_CLIENT_UNITS = {
    _PT.LOGIN7: U.LOGIN7,
    _PT.SSPI: U.SSPI,
    _PT.FEDAUTH_TOKEN: U.FEDAUTH,
    _PT.SQL_BATCH: U.REQUEST,
    _PT.RPC: U.REQUEST,
    _PT.ATTENTION: U.ATTENTION,
}
_KEEP = frozenset({U.PRELOGIN, U.LOGIN7})
_TLS_CARRYING = frozenset({PacketType.PRELOGIN, PacketType.TABULAR_RESULT})  # 7.x handshake


@dataclass(slots=True)
class _Message:
    """A TDS message being reassembled from its packets."""

    type: int
    unit: Unit
    offset: int
    frames: list[int]
    packets: int = 0
    length: int = 0
    payload: bytearray | None = None  # kept for PRELOGIN, LOGIN7 and the head of an RPC
    damaged: bool = False

    def add_frames(self, frames: tuple[int, ...]) -> None:
        for f in frames:
            if not self.frames or self.frames[-1] != f:
                self.frames.append(f)


@dataclass(slots=True)
class _Unread:
    """A unit whose body nobody reads (see ``TdsDirection.skip_unread``): its bytes are counted
    and the frames they came in noted as they arrive, never buffered or copied."""

    head: bytes  # the TDS packet header, or the TLS record header
    tls: bool
    total: int  # the unit's length, header included
    buffered: int  # bytes of it that were in the buffer when skipping began (already dropped)
    left: int  # bytes still to come
    offset: int
    frames: list[int]


class _Child(Generic[_T]):
    """A child dissector made on first use, then a plain instance attribute (what
    functools.cached_property does, without the lock it takes on Python 3.11)."""

    def __init__(self, make: Callable[[Any], _T]) -> None:
        self.make, self.name = make, make.__name__

    def __get__(self, owner: Any, cls: type | None = None) -> _T:
        if owner is None:  # looked up on the class
            return self  # type: ignore[return-value]
        child = owner.__dict__[self.name] = self.make(owner)
        return child


def _tls_payload(payload: bytes) -> bool:
    return len(payload) >= 3 and starts_tls(payload[0]) and payload[1] == 3


class TdsDirection:
    """One direction (client→server or server→client) of one TDS connection.

    Bulk data is most of a busy capture's bytes and tdslens reads none of it: the body of a TLS
    application-data record (opaque without a key log) and, after ``stop_reading_tokens``, the
    body of a response packet. With ``skip_unread`` (the default) such a body is passed over by
    its length as it arrives, never buffered, and the units that lie whole in a TCP chunk are
    sliced straight out of it (``_whole_units``); False buffers every byte and parses every
    unit from the buffer (the plain path, which tests compare against: the events are the same).
    """

    def __init__(
        self,
        from_client: bool,
        on_tls_record: RecordHook | None = None,
        skip_unread: bool = True,
    ) -> None:
        """``on_tls_record`` sees every TLS record of this direction (see ``TlsDissector``)."""
        self.from_client = from_client
        self.skip_unread = skip_unread
        self._read_tokens = True
        self._unread: _Unread | None = None
        self.phase = P.INITIAL
        self.buf = ReceiveBuffer(cap=HEADER_LEN + 0xFFFF)
        self._on_tls_record = on_tls_record
        self._table = CLIENT_TRANSITIONS if from_client else SERVER_TRANSITIONS
        self._msg: _Message | None = None
        self._desync = False
        self._skipped = 0  # bytes dropped while out of sync
        self._skip = 0  # bytes still to drop after a gap inside a known unit
        self._tls_resync = False  # the TLS child lost bytes inside TDS packets

    # The children are made when first needed: a client never parses tokens, a cleartext
    # session never sees TLS, and a busy capture starts tens of thousands of directions.

    @_Child
    def tls(self) -> TlsDissector:
        return TlsDissector(self.from_client, self._on_tls_record)

    @_Child
    def tokens(self) -> TokenStream:
        return TokenStream()

    # -- public API -------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, frame: int) -> list[Event]:
        out: list[Event] = []
        if self.phase is P.CLOSED or not data:
            return out
        unread = self._unread
        if unread is not None:  # the hot path of bulk data: count, note the frame, move on
            if frame != unread.frames[-1]:
                unread.frames.append(frame)
            if len(data) < unread.left:
                unread.left -= len(data)
                return out
            data = data[unread.left :]
            self._end_unread(out)
            if not data:
                return out
        if self._skip:
            k = min(self._skip, len(data))
            self._skip -= k
            self.buf.advance_stream(k)
            data = data[k:]
            if not data:
                return out
        if self.skip_unread and not self.buf.size and not self._desync:
            data = bytes(data)
            used = self._whole_units(data, frame, out)
            if used:
                self.buf.advance_stream(used)
                data = data[used:]
                if not data:
                    return out
        self.buf.add(data, frame)
        self._run(out)
        return out

    def gap(self, length: int, frame: int) -> list[Event]:
        """The capture lost ``length`` bytes. If they fall inside a unit whose header we hold,
        we stay in step (the unit is damaged); otherwise we lose sync and scan for a header."""
        unread, self._unread = self._unread, None
        if unread is not None:  # account for the bytes passed over, as if they were buffered
            self.buf.advance_stream(unread.total - unread.buffered - unread.left)
        out: list[Event] = [Gap(frames=(frame,), offset=self.buf.end_offset, length=length)]
        if length <= 0 or self.phase is P.CLOSED:
            return out
        buf = self.buf
        if unread is not None and length <= unread.left:  # still inside the unit: damaged
            self._skip = unread.left - length
            buf.advance_stream(length)
            self._damaged_unit(unread.head, tuple(unread.frames), unread.offset, out)
            return out
        if self._skip and length <= self._skip:  # still inside the unit a gap already damaged
            self._skip -= length
            buf.advance_stream(length)
            return out
        total = self._unit_total() if not self._desync and not self._skip else None
        if total is not None and len(buf) + length <= total:
            frames, offset = buf.frames(len(buf)), buf.offset
            head = buf.peek(HEADER_LEN)
            self._skip = total - len(buf) - length
            buf.advance_stream(length)
            self._damaged_unit(head, frames, offset, out)
            return out
        buf.advance_stream(length)
        self._skip = 0
        self._lose_sync(out, frames=(frame,), offset=buf.offset, report=False)
        return out

    def _damaged_unit(self, head: bytes, frames: tuple[int, ...], offset: int, out) -> None:
        """A gap ate the rest of the unit ``head`` begins: stay in step, the unit damaged."""
        if not starts_tls(head[0]):
            self._packet(HEADER.unpack(head), None, (), frames, offset, out)
        elif self.phase not in (P.TLS_FIRST, P.ENCRYPTED):
            self._enter(U.TLS_RAW, frames, offset, out)

    def hint_tds_version(self, version: int) -> None:
        """Tell the server direction the TDS version the client asked for in LOGIN7.

        A failed login has no LOGINACK, yet its DONE is 8 bytes before TDS 7.2 and 12 after;
        the connection layer sees both directions and can pass the LOGIN7 version here.
        A LOGINACK seen later still overrides it.
        """
        self.tokens.tds_version = version

    def stop_reading_tokens(self) -> None:
        """The login is answered: later responses are framed (packets, messages, their frames)
        but their tokens are not parsed. The connection layer calls this in both paths."""
        self._read_tokens = False
        self.tokens.abandon()  # a response begun in the same chunk: drop it, no false damage

    def eof(self) -> list[Event]:
        out: list[Event] = []
        if self.phase is P.CLOSED:
            return out
        buf = self.buf
        if self._desync and len(buf) and self._resync(out, final=True):
            self._run(out)  # the stream's last units, which nothing after them could confirm
        unread, self._unread = self._unread, None  # (never set while out of sync)
        cut: tuple[tuple[int, ...], int, bool, int] | None = None  # frames, offset, TLS?, bytes
        if unread is not None:
            cut = (tuple(unread.frames), unread.offset, unread.tls, unread.total - unread.left)
        elif len(buf) and not self._desync:
            cut = (buf.frames(len(buf)), buf.offset, starts_tls(buf.byte()), len(buf))
        if cut is not None:
            frames, offset, tls, seen = cut
            out.append(
                Malformed(
                    frames=frames,
                    offset=offset,
                    code=MalformedCode.TRUNCATED,
                    what="TLS record" if tls else "TDS packet",
                    detail=f"the stream ended {seen} bytes into a unit",
                )
            )
        buf.clear()
        self._abort_message(out, "the stream ended before the message's EOM packet")
        self.phase = P.CLOSED
        return out

    # -- the unit loop ----------------------------------------------------------------------

    def _unit_total(self) -> int | None:
        buf = self.buf
        if len(buf) >= HEADER_LEN and header_plausible(buf.peek(HEADER_LEN)):
            return buf.unpack(HEADER)[2]
        if len(buf) >= TLS_HEADER_LEN and tls_record_plausible(buf.peek(TLS_HEADER_LEN)):
            return TLS_HEADER_LEN + buf.unpack(TLS_HEADER)[2]
        return None

    def _whole_units(self, data: bytes, frame: int, out: list[Event]) -> int:
        """The units that lie whole in a chunk that starts at a unit boundary (the usual case:
        one TDS packet or TLS record per TCP segment, or several), sliced straight out of it
        rather than copied through the buffer. Returns the bytes used: the rest, and any unit
        needing more care (cut short, implausible, a body to pass over), goes the buffered
        way, which reads it exactly as it would have read the whole chunk."""
        base = self.buf.end_offset
        frames = (frame,)
        n = len(data)
        pos = 0
        while pos < n:
            if data[pos] in TLS_CONTENT_TYPES:  # tls_record_plausible, inline
                if n - pos < TLS_HEADER_LEN:
                    break
                ctype, version, length = TLS_HEADER.unpack_from(data, pos)
                if not (0x0300 <= version <= 0x0304 and 0 < length <= TLS_MAX_RECORD):
                    break
                end = pos + TLS_HEADER_LEN + length
                if end > n:
                    break
                if self._tls_body_unread(ctype):
                    self._unread_record(frames, base + pos, end - pos, out)
                else:
                    spans = ((end - pos, frame, base + pos),)
                    self._tls_raw(data[pos:end], spans, frames, base + pos, out)
                pos = end
                continue
            if n - pos < HEADER_LEN:
                break
            header = HEADER.unpack_from(data, pos)
            ptype, status, length, _spid, _pid, window = header
            end = pos + length
            if (  # header_plausible, inline
                ptype not in KNOWN_TYPES
                or status & ~STATUS_MASK
                or length < HEADER_LEN
                or window
                or end > n
            ):
                break
            body = pos + HEADER_LEN
            spans = ((end - body, frame, base + body),) if end > body else ()
            self._packet(header, data[body:end], spans, frames, base + pos, out)
            pos = end
        return pos

    def _run(self, out: list[Event]) -> None:
        buf = self.buf
        while buf.ready():
            if self._desync:
                if not self._resync(out):
                    return
                continue
            if starts_tls(buf.byte()):
                if len(buf) < TLS_HEADER_LEN:
                    buf.need = TLS_HEADER_LEN
                    return
                if not tls_record_plausible(buf.peek(TLS_HEADER_LEN)):
                    self._lose_sync(out, buf.frames(TLS_HEADER_LEN), buf.offset)
                    continue
                total = TLS_HEADER_LEN + buf.unpack(TLS_HEADER)[2]
                if self._tls_body_unread(buf.byte()):
                    if len(buf) < total:
                        self._begin_unread(True, TLS_HEADER_LEN, total)
                        return
                    frames, offset = buf.frames(total), buf.offset
                    buf.skip(total)
                    self._unread_record(frames, offset, total, out)
                    continue
                if len(buf) < total:
                    buf.need = total
                    return
                frames, offset, spans = buf.frames(total), buf.offset, buf.spans(total)
                self._tls_raw(buf.take(total), spans, frames, offset, out)
                continue
            if len(buf) < HEADER_LEN:
                buf.need = HEADER_LEN
                return
            head = buf.peek(HEADER_LEN)
            if not header_plausible(head):
                self._lose_sync(out, buf.frames(HEADER_LEN), buf.offset)
                continue
            total = HEADER.unpack(head)[2]
            if len(buf) < total:
                if self._response_body_unread(head):
                    self._begin_unread(False, HEADER_LEN, total)
                else:
                    buf.need = total
                return
            frames, offset = buf.frames(total), buf.offset
            buf.skip(HEADER_LEN)
            spans = buf.spans(total - HEADER_LEN)
            payload = buf.take(total - HEADER_LEN)
            self._packet(HEADER.unpack(head), payload, spans, frames, offset, out)

    # -- bodies nobody reads ----------------------------------------------------------------

    def _tls_body_unread(self, content_type: int) -> bool:
        """An application-data record's body is opaque unless a decryptor wants the record."""
        tls = self.tls
        return (
            self.skip_unread
            and content_type == _APPLICATION_DATA
            and tls.on_record is None
            and not tls.broken
            and not self._tls_resync
            and not tls.records.size
        )

    def _response_body_unread(self, head: bytes) -> bool:
        """A response packet after the login, in clear TDS (not TLS riding in it)."""
        buf = self.buf
        msg = self._msg
        return (
            self.skip_unread
            and not self._read_tokens
            and not self.from_client
            and self.phase is P.SESSION
            and head[0] == _PT.TABULAR_RESULT
            and (msg is None or msg.unit is U.RESPONSE)
            and len(buf) >= HEADER_LEN + 3
            and not _tls_payload(buf.peek(3, HEADER_LEN))
        )

    def _begin_unread(self, tls: bool, head_len: int, total: int) -> None:
        buf = self.buf
        have = len(buf)
        self._unread = _Unread(
            head=buf.peek(head_len),
            tls=tls,
            total=total,
            buffered=have,
            left=total - have,
            offset=buf.offset,
            frames=list(buf.frames(have)),
        )
        buf.clear()

    def _end_unread(self, out: list[Event]) -> None:
        """The last byte of the unit arrived: report it as the buffered path would have."""
        u, self._unread = self._unread, None
        assert u is not None
        self.buf.advance_stream(u.total - u.buffered)
        frames = tuple(u.frames)
        if u.tls:
            self._unread_record(frames, u.offset, u.total, out)
        else:
            self._packet(HEADER.unpack(u.head), b"", (), frames, u.offset, out)

    def _unread_record(self, frames: tuple[int, ...], offset: int, total: int, out) -> None:
        """What ``_tls_raw`` makes of an application-data record, without its bytes."""
        self._abort_message(out, "a TLS record arrived before the message's EOM packet")
        self._enter(U.TLS_RAW, frames, offset, out)
        out.append(
            EncryptedData(
                frames=frames, offset=offset, length=total - TLS_HEADER_LEN, carrier=_CARRIER.RAW
            )
        )

    def _lose_sync(
        self, out: list[Event], frames: tuple[int, ...], offset: int, report: bool = True
    ) -> None:
        if report:
            first = offset == 0 and self.phase is P.INITIAL
            out.append(
                Malformed(
                    frames=frames,
                    offset=offset,
                    code=MalformedCode.NOT_TDS if first else MalformedCode.LOST_SYNC,
                    what="stream",
                    detail="neither a TDS packet header nor a TLS record header here",
                )
            )
        self._abort_message(out, "lost sync inside the message")
        self._desync = True
        self._skipped = 0
        if report and len(self.buf):
            self.buf.skip(1)
            self._skipped = 1

    def _resync(self, out: list[Event], final: bool = False) -> bool:
        buf = self.buf
        with buf.view() as mv:
            i, found = find_resync(mv, final=final)
        self._skipped += i
        buf.skip(i)
        if not found:
            buf.need = len(buf) + 1
            return False
        out.append(Resync(frames=buf.frames(1), offset=buf.offset, skipped=self._skipped))
        self._desync = False
        self._skipped = 0
        self._tls_resync = True
        return True

    def _enter(self, unit: Unit, frames: tuple[int, ...], offset: int, out: list[Event]) -> None:
        nxt = self._table.get((self.phase, unit))
        if nxt is None:
            side = "client" if self.from_client else "server"
            out.append(
                ProtocolViolation(
                    frames=frames,
                    offset=offset,
                    state=self.phase.value,
                    unit=unit.value,
                    detail=f"a {side} does not send {unit.value} in phase {self.phase.value}",
                )
            )
            nxt = FALLBACK[unit]
            if unit is U.TLS_RAW and self.phase is P.TLS_FIRST:
                nxt = P.TLS_FIRST
        self.phase = nxt

    # -- raw TLS ----------------------------------------------------------------------------

    def _tls_raw(self, record: bytes, spans: Spans, frames, offset, out: list[Event]) -> None:
        self._abort_message(out, "a TLS record arrived before the message's EOM packet")
        self._enter(U.TLS_RAW, frames, offset, out)
        if self.tls.broken or self._tls_resync:
            self._restart_tls()
        out += self.tls.feed(record, spans, _CARRIER.RAW)

    def _restart_tls(self) -> None:
        """After damage the TLS child restarts at a record boundary, keeping its state."""
        old = self.tls
        self.tls = TlsDissector(self.from_client, old.on_record)
        self.tls.state = old.state
        self.tls.version = old.version
        self._tls_resync = False

    # -- TDS packets and messages -----------------------------------------------------------

    def _packet(
        self, header: tuple[int, ...], payload: bytes | None, spans: Spans, frames, offset, out
    ) -> None:
        """One TDS packet (``header``: its fields); ``payload`` None means a gap ate part of it."""
        ptype, status, length, spid, packet_id, window = header
        out.append(
            TdsPacket(
                frames=frames,
                offset=offset,
                type=ptype,
                status=status,
                length=length,
                spid=spid,
                packet_id=packet_id,
                window=window,
            )
        )
        msg = self._msg
        if msg is not None and msg.type != ptype:
            if ptype != _PT.ATTENTION:
                out.append(
                    ProtocolViolation(
                        frames=frames,
                        offset=offset,
                        state=self.phase.value,
                        unit=f"packet type 0x{ptype:02x}",
                        detail=f"message of type 0x{msg.type:02x} interrupted before its EOM",
                    )
                )
            self._abort_message(out, "interrupted by another message")
            msg = None
        if msg is None:
            unit = self._unit_for(ptype, b"" if payload is None else payload)
            self._enter(unit, frames, offset, out)
            msg = self._msg = _Message(ptype, unit, offset, list(frames))
            if payload is None:
                msg.damaged = True
            elif unit in _KEEP or ptype == _PT.RPC:
                msg.payload = bytearray()
        else:
            msg.add_frames(frames)
        msg.packets += 1
        msg.length += length - HEADER_LEN
        if payload is None:
            self._damage(msg)
        elif msg.unit is U.TLS_IN_TDS:
            if self._tls_resync or self.tls.broken:
                self._restart_tls()
            out += self.tls.feed(payload, spans, _CARRIER.TDS)
        elif msg.unit is U.RESPONSE:
            if self._read_tokens:
                out += self.tokens.feed(payload, spans)
        elif msg.payload is not None and not msg.damaged:
            limit = RPC_HEAD if msg.unit is U.REQUEST else KEEP_CAP
            room = limit - len(msg.payload)
            if len(payload) > room and msg.unit in _KEEP:
                out.append(
                    Malformed(
                        frames=frames,
                        offset=offset,
                        code=MalformedCode.TOO_LARGE,
                        what=msg.unit.value,
                        detail=f"message exceeds {KEEP_CAP} bytes",
                    )
                )
                msg.payload = None
                msg.damaged = True
            else:
                msg.payload += payload[: max(room, 0)]
        if status & _PS.EOM:
            self._msg = None
            if status & _PS.IGNORE:  # 2.2.3.1.2: the sender cancelled this message
                if msg.unit is U.RESPONSE:
                    self.tokens.abandon()
                    self.tokens.end_of_message()
                return
            self._finish(msg, out)

    def _unit_for(self, ptype: int, payload: bytes) -> Unit:
        if ptype in _TLS_CARRYING and _tls_payload(payload):
            return U.TLS_IN_TDS
        if self.from_client:
            if ptype == _PT.PRELOGIN:
                return U.PRELOGIN
            return _CLIENT_UNITS.get(ptype, U.OTHER)
        if ptype == _PT.PRELOGIN:
            return U.PRELOGIN
        if self.phase is P.INITIAL and is_prelogin_payload(payload):
            return U.PRELOGIN
        return U.RESPONSE

    def _damage(self, msg: _Message) -> None:
        msg.damaged = True
        msg.payload = None
        if msg.unit is U.RESPONSE:
            self.tokens.abandon()
        elif msg.unit is U.TLS_IN_TDS:
            self._tls_resync = True

    def _abort_message(self, out: list[Event], why: str) -> None:
        msg, self._msg = self._msg, None
        if msg is None:
            return
        if msg.unit is U.RESPONSE:
            self.tokens.abandon()
            self.tokens.end_of_message()
        if msg.unit is U.ATTENTION:
            out.append(Attention(frames=tuple(msg.frames), offset=msg.offset))
            return
        out.append(
            Malformed(
                frames=tuple(msg.frames),
                offset=msg.offset,
                code=MalformedCode.TRUNCATED,
                what=msg.unit.value,
                detail=why,
            )
        )

    def _finish(self, msg: _Message, out: list[Event]) -> None:
        frames, offset, unit = tuple(msg.frames), msg.offset, msg.unit
        if unit in _KEEP and (msg.damaged or msg.payload is None):
            out.append(
                Malformed(
                    frames=frames,
                    offset=offset,
                    code=MalformedCode.TRUNCATED,
                    what=unit.value,
                    detail="part of the message is missing from the capture",
                )
            )
            return
        if unit is U.PRELOGIN:
            assert msg.payload is not None
            pre = parse_prelogin(
                bytes(msg.payload), from_client=self.from_client, frames=frames, offset=offset
            )
            out.append(pre)
            # SQL Server 2000 (8.x) and older speak at most TDS 7.1: layouts follow.
            old_server = isinstance(pre, PreLogin) and pre.version and pre.version[0] <= 8
            if old_server and not self.from_client and self.tokens.tds_version is None:
                self.tokens.tds_version = 0x71000001
        elif unit is U.LOGIN7:
            assert msg.payload is not None
            out.append(parse_login7(bytes(msg.payload), frames=frames, offset=offset))
        elif unit is U.RESPONSE:
            out += self.tokens.end_of_message()
            out.append(
                EndOfResponse(frames=frames, offset=offset, length=msg.length, packets=msg.packets)
            )
        elif unit is U.REQUEST and msg.type == _PT.SQL_BATCH:
            out.append(
                SqlBatch(frames=frames, offset=offset, length=msg.length, packets=msg.packets)
            )
        elif unit is U.REQUEST:
            proc_id, proc_name = _rpc_target(bytes(msg.payload or b""))
            out.append(
                Rpc(
                    frames=frames,
                    offset=offset,
                    length=msg.length,
                    packets=msg.packets,
                    proc_id=proc_id,
                    proc_name=proc_name,
                )
            )
        elif unit is U.ATTENTION:
            out.append(Attention(frames=frames, offset=offset))
        elif unit is U.SSPI:
            out.append(Sspi(frames=frames, offset=offset, length=msg.length, from_client=True))
        elif unit is U.FEDAUTH:
            out.append(FedAuthToken(frames=frames, offset=offset, length=msg.length))
        elif unit is U.OTHER:
            out.append(
                TdsMessage(
                    frames=frames,
                    offset=offset,
                    type=msg.type,
                    length=msg.length,
                    packets=msg.packets,
                )
            )
        # TLS_IN_TDS: the TLS child already reported record by record.


def _rpc_target(head: bytes) -> tuple[int | None, str | None]:
    """Procedure of an RPC request (2.2.6.6): after optional ALL_HEADERS, a name or an id."""
    pos = 0
    if len(head) >= 4:
        total = struct.unpack_from("<I", head)[0]
        if 4 <= total <= len(head) and (total == 4 or len(head) >= 8):
            first = struct.unpack_from("<I", head, 4)[0] if total > 4 else 0
            if total == 4 or 0 < first <= total - 4:
                pos = total
    if len(head) < pos + 2:
        return None, None
    n = struct.unpack_from("<H", head, pos)[0]
    if n == 0xFFFF:
        if len(head) < pos + 4:
            return None, None
        return struct.unpack_from("<H", head, pos + 2)[0], None
    raw = head[pos + 2 : pos + 2 + 2 * n]
    if len(raw) < 2 * n:
        return None, None
    return None, raw.decode("utf-16-le", "replace")


# -- docs/dissectors.md: its phase diagrams are generated from the tables above ---------------

DOC_BEGIN = "<!-- BEGIN GENERATED: python -m tdslens.dissectors.session -->"
DOC_END = "<!-- END GENERATED -->"


def diagrams() -> str:
    """The generated part of docs/dissectors.md, between its markers."""
    client, server = mermaid(True), mermaid(False)
    return (
        f"### Client → server\n\n```mermaid\n{client}\n```\n\n"
        f"### Server → client\n\n```mermaid\n{server}\n```\n"
    )


if __name__ == "__main__":
    import pathlib

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "dissectors.md"
    text = doc.read_text()
    head, rest = text.split(DOC_BEGIN, 1)
    tail = rest.split(DOC_END, 1)[1]
    doc.write_text(f"{head}{DOC_BEGIN}\n{diagrams()}{DOC_END}{tail}")
    print(f"updated {doc}")
