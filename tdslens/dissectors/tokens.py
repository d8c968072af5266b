"""The token stream of server responses (MS-TDS 2.2.7), parsed incrementally.

A response message (packet type 0x04) is a sequence of tokens: one type byte, then a body whose
size follows from the token (2.2.4.2): fixed length, a USHORT/ULONG length prefix, or — for
COLMETADATA, ROW and NBCROW — the column types announced earlier. Tokens may span packets and TCP
segments, so ``TokenStream`` keeps a ReceiveBuffer and parses only complete tokens.

What we cannot follow (ALTMETADATA, DATACLASSIFICATION, encrypted columns, unknown types in
COLMETADATA, a variable-count token we do not know) gives one ``CannotContinue`` event and the
rest of that message is skipped: no guessing. Row *values* are skipped by length, never kept.
"""

from __future__ import annotations

import struct
from codecs import utf_16_le_decode as _utf16  # bytes.decode's codec, without its lookup
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, NoReturn

from .buffer import ReceiveBuffer, Spans, span_frames, span_origin, span_slice
from .events import (
    CannotContinue,
    ColMetadata,
    Column,
    Done,
    DoneKind,
    EnvChange,
    EnvChangeRouting,
    EnvChangeType,
    Error,
    Event,
    Feature,
    FeatureExtAck,
    FedAuthInfo,
    Info,
    LoginAck,
    Malformed,
    MalformedCode,
    Order,
    ReturnStatus,
    ReturnValue,
    Rows,
    Sspi,
    Token,
    members,
)

TOKEN_CAP = 16 << 20  # one token (a row with big PLP values) may be large; beyond this we give up


class TokenType(IntEnum):
    """Token types, MS-TDS 2.2.7."""

    OFFSET = 0x78
    RETURNSTATUS = 0x79
    COLMETADATA = 0x81
    ALTMETADATA = 0x88
    DATACLASSIFICATION = 0xA3
    TABNAME = 0xA4
    COLINFO = 0xA5
    ORDER = 0xA9
    ERROR = 0xAA
    INFO = 0xAB
    RETURNVALUE = 0xAC
    LOGINACK = 0xAD
    FEATUREEXTACK = 0xAE
    ROW = 0xD1
    NBCROW = 0xD2
    ALTROW = 0xD3
    ENVCHANGE = 0xE3
    SESSIONSTATE = 0xE4
    SSPI = 0xED
    FEDAUTHINFO = 0xEE
    DONE = 0xFD
    DONEPROC = 0xFE
    DONEINPROC = 0xFF


_T, _ENV = members(TokenType), members(EnvChangeType)  # faster lookups (events.members)
_DONE_KINDS = {int(kind): kind for kind in DoneKind}
# Length-prefixed tokens already parsed (bytes → (event class, fields)). A server answers every
# login with the same few (database, language, packet size, LOGINACK, its informational
# messages), so a token seen before is not parsed again. The fields are shared: never modified.
_SEEN: dict[bytes, tuple[type, dict[str, Any]]] = {}
SEEN_CACHE = 1024
SEEN_TOKEN_MAX = 512  # bytes; larger ones (SSPI blobs) are rare and not worth keeping
_ROW_TOKEN, _NBCROW_TOKEN = int(TokenType.ROW), int(TokenType.NBCROW)  # plain ints: fast compare
USHORT_LEN = frozenset({0xA4, 0xA5, 0xA9, 0xAA, 0xAB, 0xAD, 0xE3, 0xED})
ULONG_LEN = frozenset({0xE4, 0xEE})
NOT_FOLLOWABLE = {
    0x88: "ALTMETADATA (COMPUTE BY results) is not decoded",
    0xD3: "ALTROW (COMPUTE BY results) is not decoded",
    0xA3: "DATACLASSIFICATION is not decoded",
}
FEATURE_COLUMNENCRYPTION = 0x04
FEATURE_TERMINATOR = 0xFF
FEDAUTHINFO_STSURL = 0x01
FEDAUTHINFO_SPN = 0x02


def tds_at_least_72(version: int | None) -> bool:
    """TDS 7.2 widened DONE row counts and COLMETADATA user types. None: assume modern."""
    return version is None or (version >> 24) not in (0x70, 0x71)


# ---------------------------------------------------------------------------------------------
# A bounded reader over a memoryview. Running out of bytes is either "need more" (the token is
# not complete yet) or, inside a length-prefixed token, a malformed length.


class _Short(Exception):
    def __init__(self, needed: int) -> None:
        self.needed = needed


class _Bad(Exception):
    def __init__(self, detail: str, code: MalformedCode = MalformedCode.BAD_LENGTH) -> None:
        self.detail = detail
        self.code = code


class _Cannot(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


class _Cur:
    """A cursor over bytes [p, end) of ``d``. Each read checks its own bounds inline, not
    through a helper call: a login response's tokens take ~60 reads."""

    __slots__ = ("bounded", "d", "end", "p")

    def __init__(self, d: bytes, p: int = 0, end: int | None = None, bounded=False):
        self.d = d
        self.p = p
        self.end = len(d) if end is None else end
        self.bounded = bounded

    def need(self, n: int) -> None:
        if self.p + n > self.end:
            self._out(n)

    def _out(self, n: int) -> NoReturn:
        if self.bounded:
            raise _Bad(f"field of {n} bytes at {self.p} runs past its token end {self.end}")
        raise _Short(self.p + n)

    def sub(self, n: int) -> _Cur:
        """A cursor over the next n bytes (whose presence the caller checked); advances self."""
        p = self.p
        if p + n > self.end:
            self._out(n)
        self.p = p + n
        return _Cur(self.d, p, p + n, bounded=True)

    def left(self) -> int:
        return self.end - self.p

    def u8(self) -> int:
        p = self.p
        if p >= self.end:
            self._out(1)
        self.p = p + 1
        return self.d[p]

    def _st(self, st: struct.Struct) -> Any:
        p = self.p
        if p + st.size > self.end:
            self._out(st.size)
        self.p = p + st.size
        return st.unpack_from(self.d, p)[0]

    def u16(self) -> int:
        p = self.p
        if p + 2 > self.end:
            self._out(2)
        self.p = p + 2
        return self.d[p] | self.d[p + 1] << 8

    def u32(self) -> int:
        return self._st(_U32)

    def i32(self) -> int:
        return self._st(_I32)

    def u64(self) -> int:
        return self._st(_U64)

    def raw(self, n: int) -> bytes:
        p = self.p
        if p + n > self.end:
            self._out(n)
        self.p = p + n
        return bytes(self.d[p : p + n])

    def skip(self, n: int) -> None:
        if self.p + n > self.end:
            self._out(n)
        self.p += n

    def text(self, chars: int) -> str:
        n = 2 * chars
        p = self.p
        if p + n > self.end:
            self._out(n)
        self.p = p + n
        return _utf16(self.d[p : p + n], "replace", True)[0]

    def b_varchar(self) -> str:
        return self.text(self.u8())

    def us_varchar(self) -> str:
        return self.text(self.u16())


# ---------------------------------------------------------------------------------------------
# TYPE_INFO (2.2.5.6): how long each column's value is on the wire.


class ValueKind(Enum):
    FIXED = "fixed"  # size bytes, no prefix
    BYTELEN = "bytelen"  # 1-byte length prefix (0 = NULL for nullable types)
    USHORTLEN = "ushortlen"  # 2-byte length, 0xFFFF = NULL
    LONGLEN = "longlen"  # 4-byte length (SQL_VARIANT)
    TEXTPTR = "textptr"  # TEXT/NTEXT/IMAGE: textptr, timestamp, 4-byte length
    PLP = "plp"  # partially length-prefixed: 8-byte total, chunks, 0 terminator


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type: int
    kind: ValueKind
    size: int  # fixed size, or the declared maximum


FIXED_TYPES = {
    0x1F: 0,  # NULLTYPE
    0x30: 1,  # INT1
    0x32: 1,  # BIT
    0x34: 2,  # INT2
    0x38: 4,  # INT4
    0x3A: 4,  # DATETIM4
    0x3B: 4,  # FLT4
    0x3C: 8,  # MONEY
    0x3D: 8,  # DATETIME
    0x3E: 8,  # FLT8
    0x7A: 4,  # MONEY4
    0x7F: 8,  # INT8
}
BYTELEN_PLAIN = frozenset({0x24, 0x26, 0x68, 0x6D, 0x6E, 0x6F, 0x2F, 0x27, 0x2D, 0x25})
BYTELEN_DECIMAL = frozenset({0x37, 0x3F, 0x6A, 0x6C})  # + precision, scale
BYTELEN_SCALE = frozenset({0x29, 0x2A, 0x2B})  # TIMEN, DATETIME2N, DATETIMEOFFSETN: scale only
DATEN = 0x28
USHORT_BINARY = frozenset({0xA5, 0xAD})  # BIGVARBINARY, BIGBINARY
USHORT_CHAR = frozenset({0xA7, 0xAF, 0xE7, 0xEF})  # BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR
TEXT_TYPES = {0x22: False, 0x23: True, 0x63: True}  # IMAGE, TEXT, NTEXT -> has collation
SSVARIANT = 0x62
XML = 0xF1
UDT = 0xF0
COLLATION_LEN = 5


def read_type_info(c: _Cur, v72: bool) -> TypeInfo:
    t = c.u8()
    if t in FIXED_TYPES:
        return TypeInfo(t, ValueKind.FIXED, FIXED_TYPES[t])
    if t in BYTELEN_PLAIN:
        return TypeInfo(t, ValueKind.BYTELEN, c.u8())
    if t in BYTELEN_DECIMAL:
        size = c.u8()
        c.skip(2)
        return TypeInfo(t, ValueKind.BYTELEN, size)
    if t in BYTELEN_SCALE:
        c.skip(1)
        return TypeInfo(t, ValueKind.BYTELEN, 0)
    if t == DATEN:
        return TypeInfo(t, ValueKind.BYTELEN, 3)
    if t in USHORT_BINARY or t in USHORT_CHAR:
        size = c.u16()
        if t in USHORT_CHAR:
            c.skip(COLLATION_LEN)
        plp = v72 and size == 0xFFFF
        return TypeInfo(t, ValueKind.PLP if plp else ValueKind.USHORTLEN, size)
    if t in TEXT_TYPES:
        size = c.u32()
        if TEXT_TYPES[t]:
            c.skip(COLLATION_LEN)
        return TypeInfo(t, ValueKind.TEXTPTR, size)
    if t == SSVARIANT:
        return TypeInfo(t, ValueKind.LONGLEN, c.u32())
    if t == XML:
        if c.u8():
            c.b_varchar()
            c.b_varchar()
            c.us_varchar()
        return TypeInfo(t, ValueKind.PLP, 0)
    if t == UDT:
        size = c.u16()
        c.b_varchar()
        c.b_varchar()
        c.b_varchar()
        c.us_varchar()
        return TypeInfo(t, ValueKind.PLP, size)
    raise _Cannot(f"column type 0x{t:02x} is not decoded; its value length is unknown")


def skip_value(c: _Cur, ti: TypeInfo) -> None:
    kind = ti.kind
    if kind is ValueKind.FIXED:
        c.skip(ti.size)
    elif kind is ValueKind.BYTELEN:
        c.skip(c.u8())
    elif kind is ValueKind.USHORTLEN:
        n = c.u16()
        if n != 0xFFFF:
            c.skip(n)
    elif kind is ValueKind.LONGLEN:
        c.skip(c.u32())
    elif kind is ValueKind.TEXTPTR:
        n = c.u8()
        if n:
            c.skip(n + 8)
            c.skip(c.u32())
    else:  # PLP
        total = c.u64()
        if total == 0xFFFFFFFFFFFFFFFF:
            return
        while True:
            chunk = c.u32()
            if chunk == 0:
                return
            c.skip(chunk)


# ---------------------------------------------------------------------------------------------


class TokenState(Enum):
    READY = "ready"  # at a token boundary
    SKIPPING = "skipping"  # lost the thread: ignore bytes until the message ends

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs in Python


_TS = members(TokenState)  # plain attributes: faster lookups (events.members)

# The whole state machine of a token stream: losing the thread (a token we cannot follow, a
# bad length, a token over the cap, a capture gap) skips to the end of the message, and the
# next message starts clean. Nothing else changes the state.
TOKEN_TRANSITIONS: dict[tuple[TokenState, str], TokenState] = {
    (TokenState.READY, "lost"): TokenState.SKIPPING,
    (TokenState.SKIPPING, "lost"): TokenState.SKIPPING,
    (TokenState.READY, "eom"): TokenState.READY,
    (TokenState.SKIPPING, "eom"): TokenState.READY,
}


@dataclass(frozen=True, slots=True)
class _Col:
    name: str
    info: TypeInfo
    user_type: int
    flags: int


class TokenStream:
    """Incremental parser for the tokens of one direction's response messages.

    ``feed(payload, spans)`` takes packet payload bytes with their (length, frame) runs;
    ``end_of_message()`` is called at EOM (a token cut there is TRUNCATED). Version-dependent
    layouts follow the LOGINACK seen in this stream (or ``tds_version`` given up front).
    """

    def __init__(self, tds_version: int | None = None) -> None:
        self.buf = ReceiveBuffer(cap=TOKEN_CAP)
        self.tds_version = tds_version
        self.column_encryption = False
        self.state = _TS.READY
        self._cols: list[_Col] | None = None
        self._infos: list[TypeInfo] = []  # the columns' TypeInfo, for skipping rows fast
        self._rows = 0
        self._row_len = 0
        self._row_frames: list[int] = []
        self._row_offset = 0

    # -- driver API -------------------------------------------------------------------------

    def feed(self, data: bytes, spans: Spans) -> list[Event]:
        """Add one packet's payload; ``spans`` carry its frames and TCP stream offsets.

        Tokens are parsed straight from the payload; only a token cut at its end waits in
        ``buf``, and is parsed again whole once the bytes it needs have arrived."""
        if self.state is _TS.SKIPPING or not data:
            return []
        buf = self.buf
        if buf.size or len(data) > buf.cap:
            buf.add_spans(data, spans)
            if buf.over_cap():
                return self._too_large()
            if not buf.ready():
                return []
            data, spans = buf.take_all()
        return self._parse(bytes(data), spans)

    def _too_large(self) -> list[Event]:
        buf = self.buf
        out = self._flush_rows()
        out.append(
            Malformed(
                frames=buf.frames(len(buf)),
                offset=buf.origin(),
                code=MalformedCode.TOO_LARGE,
                what=self._name(buf.byte()),
                detail=f"a token needs {max(buf.need, len(buf))} bytes, over the {buf.cap} cap",
            )
        )
        self.abandon()
        return out

    def end_of_message(self) -> list[Event]:
        out = self._flush_rows()
        if self.state is _TS.READY and len(self.buf):
            out.append(
                Malformed(
                    frames=self.buf.frames(len(self.buf)),
                    offset=self.buf.origin(),
                    code=MalformedCode.TRUNCATED,
                    what=self._name(self.buf.byte()),
                    detail=f"message ended inside the token ({len(self.buf)} bytes present)",
                )
            )
        self.buf.clear()
        self.state = TOKEN_TRANSITIONS[(self.state, "eom")]
        self._cols = None
        return out

    def abandon(self) -> None:
        """A gap hit this message: drop what we hold and skip to its end."""
        self.buf.clear()
        self._rows = self._row_len = 0
        self._row_frames = []
        self.state = TOKEN_TRANSITIONS[(self.state, "lost")]

    # -- parsing ----------------------------------------------------------------------------

    @staticmethod
    def _name(tok: int) -> str:
        try:
            return TokenType(tok).name
        except ValueError:
            return f"token 0x{tok:02x}"

    def _parse(self, data: bytes, spans: Spans) -> list[Event]:
        """Parse every complete token in ``data`` (whose bytes came from ``spans``); keep the
        rest in ``buf``.

        Rows are the bulk of a result set, so consecutive ROW/NBCROW tokens become one Rows
        event and their frames are looked up once per contiguous run, not once per row.
        """
        parsed: list[tuple[int, int, Any]] = []
        failure: _Bad | _Cannot | None = None
        need = 0
        c = _Cur(data)
        while c.p < c.end:
            start = c.p
            try:
                tok = data[start]
                if tok in (_ROW_TOKEN, _NBCROW_TOKEN):  # the hot path
                    c.p += 1
                    self._row(c, tok == _NBCROW_TOKEN)
                    result = _ROW
                else:
                    result = self._token(c)
            except _Short as short:
                need, c.p = short.needed, start
                break
            except (_Bad, _Cannot) as e:
                failure, c.p = e, start
                break
            parsed.append((start, c.p, result))
        used = c.p
        out: list[Event] = []
        run_start = -1  # start of the current run of rows in this batch
        run_end = 0
        for start, end, result in parsed:
            if result is _ROW:
                if run_start < 0:
                    run_start = start
                    if not self._rows:
                        self._row_offset = span_origin(spans, start)
                run_end = end
                self._rows += 1
                self._row_len += end - start
                continue
            if run_start >= 0:
                self._add_row_frames(span_frames(spans, run_start, run_end))
                run_start = -1
            if self._rows:
                out += self._flush_rows()
            if result is not None:
                cls, fields = result
                if len(spans) == 1:  # one run (one frame), the usual case
                    frames, offset = (spans[0][1],), spans[0][2] + start
                else:
                    frames, offset = span_frames(spans, start, end), span_origin(spans, start)
                out.append(cls(frames=frames, offset=offset, **fields))
        if run_start >= 0:
            self._add_row_frames(span_frames(spans, run_start, run_end))
        if failure is not None:
            out += self._flush_rows()
            tok = data[used]
            frames, offset = span_frames(spans, used, used + 1), span_origin(spans, used)
            if isinstance(failure, _Cannot):
                out.append(
                    CannotContinue(
                        frames=frames, offset=offset, what=self._name(tok), detail=failure.detail
                    )
                )
            else:
                out.append(
                    Malformed(
                        frames=frames,
                        offset=offset,
                        code=failure.code,
                        what=self._name(tok),
                        detail=failure.detail,
                    )
                )
            self.abandon()
            return out
        if used < len(data):
            buf = self.buf
            buf.add_spans(data[used:], span_slice(spans, used, len(data)))
            if need:
                buf.need = need - used
                if buf.need > buf.cap:  # hopeless: do not buffer up to the cap first
                    out += self._too_large()
        return out

    def _add_row_frames(self, frames: tuple[int, ...]) -> None:
        for f in frames:
            if not self._row_frames or self._row_frames[-1] != f:
                self._row_frames.append(f)

    def _flush_rows(self) -> list[Event]:
        if not self._rows:
            return []
        ev = Rows(
            frames=tuple(self._row_frames),
            offset=self._row_offset,
            count=self._rows,
            length=self._row_len,
        )
        self._rows = self._row_len = 0
        self._row_frames = []
        return [ev]

    def _token(self, c: _Cur) -> Any:
        start = c.p
        tok = c.u8()
        v72 = tds_at_least_72(self.tds_version)
        if tok in (_T.ROW, _T.NBCROW):
            self._row(c, nbc=tok == _T.NBCROW)
            return _ROW
        if tok == _T.COLMETADATA:
            return self._colmetadata(c, v72)
        if tok in (_T.DONE, _T.DONEPROC, _T.DONEINPROC):
            s = c.sub(12 if v72 else 8)
            status, cur_cmd = s.u16(), s.u16()
            rows = s.u64() if v72 else s.u32()
            return Done, {
                "kind": _DONE_KINDS[tok],
                "status": status,
                "cur_cmd": cur_cmd,
                "row_count": rows,
            }
        if tok == _T.RETURNSTATUS:
            return ReturnStatus, {"value": c.i32()}
        if tok == _T.FEATUREEXTACK:
            return self._featureextack(c)
        if tok == _T.RETURNVALUE:
            return self._returnvalue(c, v72)
        if tok in NOT_FOLLOWABLE:
            raise _Cannot(NOT_FOLLOWABLE[tok])
        if tok in USHORT_LEN:
            s = c.sub(c.u16())
            whole = c.d[start : c.p]
            seen = _SEEN.get(whole)
            if seen is None:
                seen = self._ushort_token(tok, s, v72)
                if len(whole) <= SEEN_TOKEN_MAX:
                    if len(_SEEN) >= SEEN_CACHE:
                        _SEEN.clear()
                    _SEEN[whole] = seen
            elif tok == _T.LOGINACK:
                self.tds_version = seen[1]["tds_version"]  # what parsing it would have set
            return seen
        if tok in ULONG_LEN:
            n = c.u32()
            if n > TOKEN_CAP:
                raise _Bad(f"length {n} is beyond any sane token")
            s = c.sub(n)
            if tok == _T.FEDAUTHINFO:
                return self._fedauthinfo(s)
            return Token, {"token": tok, "length": n}
        return self._unknown(tok, c)

    def _unknown(self, tok: int, c: _Cur) -> Any:
        """Length rules of 2.2.4.2 by the token's bits 4-5, for tokens we do not know."""
        cls = tok & 0x30
        if cls == 0x30:  # fixed length: 1, 2, 4 or 8 bytes by bits 2-3
            n = 1 << ((tok >> 2) & 0x03)
            c.skip(n)
            return Token, {"token": tok, "length": n}
        if cls == 0x10:  # zero length
            return Token, {"token": tok, "length": 0}
        if cls == 0x20:  # variable length, USHORT prefix
            n = c.u16()
            c.skip(n)
            return Token, {"token": tok, "length": n}
        raise _Cannot(f"unknown variable-count token 0x{tok:02x}: its length cannot be known")

    def _ushort_token(self, tok: int, s: _Cur, v72: bool) -> Any:
        if tok == _T.LOGINACK:
            interface = s.u8()
            version = struct.unpack(">I", s.raw(4))[0]
            name = s.b_varchar()
            major, minor, hi, lo = s.raw(4)
            self.tds_version = version
            return LoginAck, {
                "interface": interface,
                "tds_version": version,
                "prog_name": name.rstrip("\0"),
                "prog_version": (major, minor, (hi << 8) | lo),
            }
        if tok in (_T.ERROR, _T.INFO):
            number, state, severity = s.i32(), s.u8(), s.u8()
            message, server, procedure = s.us_varchar(), s.b_varchar(), s.b_varchar()
            line = s.i32() if s.left() >= 4 else s.u16()
            cls = Error if tok == _T.ERROR else Info
            return cls, {
                "number": number,
                "state": state,
                "severity": severity,
                "message": message,
                "server": server,
                "procedure": procedure,
                "line": line,
            }
        if tok == _T.ENVCHANGE:
            return self._envchange(s)
        if tok == _T.SSPI:
            return Sspi, {"length": s.left(), "from_client": False}
        if tok == _T.ORDER:
            if s.left() % 2:
                raise _Bad(f"ORDER length {s.left()} is odd")
            return Order, {"columns": tuple(s.u16() for _ in range(s.left() // 2))}
        return Token, {"token": tok, "length": s.left()}

    def _envchange(self, s: _Cur) -> Any:
        """2.2.7.9: string types are B_VARCHAR, binary ones B_VARBYTE; 15 and 20 are special."""
        etype = s.u8()
        if etype == _ENV.ROUTING:
            value = s.sub(s.u16())
            protocol, port, server = value.u8(), value.u16(), value.us_varchar()
            if s.left() >= 2:
                s.u16()  # old value: always 0x0000
            return EnvChangeRouting, {"protocol": protocol, "port": port, "server": server}
        if etype in (1, 2, 3, 4, 5, 6, 13, 19):
            new, old = s.b_varchar(), s.b_varchar() if s.left() else ""
        elif etype == _ENV.PROMOTE_TRANSACTION:
            new, old = s.raw(s.u32()).hex(), ""
            if s.left():
                s.u8()
        else:
            new = s.raw(s.u8()).hex()
            old = s.raw(s.u8()).hex() if s.left() else ""
        return EnvChange, {"type": etype, "new": new, "old": old}

    def _featureextack(self, c: _Cur) -> Any:
        features: list[Feature] = []
        while True:
            fid = c.u8()
            if fid == FEATURE_TERMINATOR:
                break
            n = c.u32()
            if n > TOKEN_CAP:
                raise _Bad(f"feature 0x{fid:02x} data length {n} is beyond any sane ack")
            data = c.raw(n)
            if fid == FEATURE_COLUMNENCRYPTION:
                self.column_encryption = True
            features.append(Feature(id=fid, length=n, data=data if n <= 16 else b""))
        return FeatureExtAck, {"features": tuple(features)}

    def _fedauthinfo(self, s: _Cur) -> Any:
        """2.2.7.12: a count, then (id, length, offset) entries; offsets count from the count."""
        base = s.p
        count = s.u32()
        found: dict[int, str] = {}
        for _ in range(count):
            fid, length, off = s.u8(), s.u32(), s.u32()
            if base + off + length > s.end:
                raise _Bad(f"FEDAUTHINFO option {fid} points beyond the token")
            raw = bytes(s.d[base + off : base + off + length])
            found.setdefault(fid, raw.decode("utf-16-le", "replace"))
        return FedAuthInfo, {
            "sts_url": found.get(FEDAUTHINFO_STSURL),
            "spn": found.get(FEDAUTHINFO_SPN),
        }

    def _colmetadata(self, c: _Cur, v72: bool) -> Any:
        count = c.u16()
        if count == 0xFFFF:  # NoMetaData (2.2.7.4)
            self._cols, self._infos = [], []
            return ColMetadata, {"columns": ()}
        if self.column_encryption:
            raise _Cannot("column encryption was negotiated: CEK table not decoded")
        cols: list[_Col] = []
        for _ in range(count):
            user_type = c.u32() if v72 else c.u16()
            flags = c.u16()
            info = read_type_info(c, v72)
            if info.kind is ValueKind.TEXTPTR:
                if v72:
                    for _ in range(c.u8()):
                        c.us_varchar()
                else:
                    c.us_varchar()
            if flags & 0x0800:
                raise _Cannot("encrypted column (CryptoMetadata) is not decoded")
            cols.append(_Col(c.b_varchar(), info, user_type, flags))
        self._cols = cols
        self._infos = [col.info for col in cols]
        return ColMetadata, {
            "columns": tuple(
                Column(
                    name=col.name,
                    type=col.info.type,
                    user_type=col.user_type,
                    flags=col.flags,
                    max_length=col.info.size,
                )
                for col in cols
            )
        }

    def _row(self, c: _Cur, nbc: bool) -> None:
        """Skip one ROW/NBCROW by the column types (2.2.7.19, 2.2.7.15); values are not kept."""
        cols = self._cols
        if cols is None:
            raise _Cannot("ROW without a preceding COLMETADATA in this message")
        infos = self._infos
        if nbc:
            bitmap = c.raw((len(infos) + 7) // 8)
            infos = [ti for i, ti in enumerate(infos) if not bitmap[i >> 3] & (1 << (i & 7))]
        d, p, end = c.d, c.p, c.end
        fixed, bytelen, ushortlen = ValueKind.FIXED, ValueKind.BYTELEN, ValueKind.USHORTLEN
        for ti in infos:  # the common kinds inline (rows are the hot path), the rest by helper
            kind = ti.kind
            if kind is fixed:
                p += ti.size
            elif kind is bytelen:
                if p >= end:
                    raise _Short(p + 1)
                p += 1 + d[p]
            elif kind is ushortlen:
                if p + 2 > end:
                    raise _Short(p + 2)
                n = d[p] | d[p + 1] << 8
                p += 2 if n == 0xFFFF else 2 + n
            else:
                if p > end:
                    raise _Short(p)
                c.p = p
                skip_value(c, ti)
                p = c.p
        if p > end:
            raise _Short(p)
        c.p = p

    def _returnvalue(self, c: _Cur, v72: bool) -> Any:
        ordinal = c.u16()
        name = c.b_varchar()
        c.u8()  # status
        if v72:
            c.u32()
        else:
            c.u16()
        flags = c.u16()
        info = read_type_info(c, v72)
        if flags & 0x0800:
            raise _Cannot("encrypted RETURNVALUE is not decoded")
        skip_value(c, info)
        return ReturnValue, {"ordinal": ordinal, "name": name, "type": info.type}


_ROW = object()
