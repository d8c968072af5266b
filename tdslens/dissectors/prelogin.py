"""PRELOGIN message payloads, both directions (MS-TDS 2.2.6.5).

The payload is an option table of 5-byte entries (token, offset, length; big-endian) closed by
0xFF, followed by the option data the offsets point at. The client sends it in a 0x12 packet;
the server answers with the same layout inside a 0x04 (tabular result) packet.

Options we decode (token: name, data):
  0x00 VERSION          UL_VERSION (major, minor, build BE) + US_SUBBUILD
  0x01 ENCRYPTION       BYTE: OFF 0, ON 1, NOT_SUP 2, REQ 3, | 0x80 CLIENT_CERT
  0x02 INSTOPT          NUL-terminated instance name (MBCS; we read it as latin-1)
  0x03 THREADID         ULONG (client only; servers send it empty)
  0x04 MARS             BYTE
  0x05 TRACEID          GUID connection id (16) + activity id (20)
  0x06 FEDAUTHREQUIRED  BYTE
  0x07 NONCEOPT         32 bytes
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from .events import Malformed, MalformedCode, PreLogin, PreLoginOption

OPTION = struct.Struct(">BHH")  # PL_OPTION_TOKEN, PL_OFFSET, PL_OPTION_LENGTH
VERSION = struct.Struct(">BBHH")  # major, minor, build, sub-build
TERMINATOR = 0xFF


class PreLoginToken(IntEnum):
    VERSION = 0x00
    ENCRYPTION = 0x01
    INSTOPT = 0x02
    THREADID = 0x03
    MARS = 0x04
    TRACEID = 0x05
    FEDAUTHREQUIRED = 0x06
    NONCEOPT = 0x07


class _Table(NamedTuple):
    """A validated option table: its entries, the first entry of each token as (token, start,
    stop) of its data, and the end of the furthest option data (the payload must reach it)."""

    options: tuple[PreLoginOption, ...]
    firsts: tuple[tuple[int, int, int], ...]
    end: int


# Option tables seen so far. A driver sends the same table on every connection (only the
# option data differs), so a table is walked and checked once; its PreLoginOptions are frozen,
# so sharing them is safe. Bounded for captures of many odd clients.
_TABLES: dict[bytes, _Table] = {}
TABLE_CACHE = 512
_VERSION, _ENCRYPTION, _INSTOPT, _THREADID, _MARS, _TRACEID, _FEDAUTH, _NONCE = range(8)


def parse_prelogin(
    payload: bytes, *, from_client: bool, frames: tuple[int, ...], offset: int
) -> PreLogin | Malformed:
    """Decode one PRELOGIN payload; a bad option table gives Malformed."""
    n = len(payload)
    pos = 0
    while pos < n and payload[pos] != TERMINATOR:  # where a known table would end
        pos += OPTION.size
    table = _TABLES.get(payload[:pos]) if pos < n else None
    if table is None or table.end > n:
        table = _read_table(payload, frames, offset)
        if isinstance(table, Malformed):
            return table
    values = {token: payload[start:stop] for token, start, stop in table.firsts}
    get = values.get
    data = get(_VERSION)
    version = VERSION.unpack_from(data) if data and len(data) >= VERSION.size else None
    data = get(_INSTOPT)
    instance = None if data is None else data.split(b"\0", 1)[0].decode("latin-1")
    data = get(_THREADID)
    thread_id = int.from_bytes(data[:4], "big") if data and len(data) >= 4 else None
    encryption, mars, fedauth = get(_ENCRYPTION), get(_MARS), get(_FEDAUTH)
    return PreLogin(
        frames=frames,
        offset=offset,
        from_client=from_client,
        version=version,
        encryption=encryption[0] if encryption else None,
        instance=instance,
        thread_id=thread_id,
        mars=bool(mars[0]) if mars else None,
        trace_id=get(_TRACEID) or None,
        fedauth_required=bool(fedauth[0]) if fedauth else None,
        nonce=get(_NONCE) or None,
        options=table.options,
    )


def _read_table(payload: bytes, frames: tuple[int, ...], offset: int) -> _Table | Malformed:
    """Walk and check the option table entry by entry (and remember it when it is good)."""
    n = len(payload)
    entries: list[tuple[int, int, int]] = []
    pos = 0
    while True:
        if pos >= n:
            return _bad(
                frames, offset, MalformedCode.TRUNCATED, "option table has no 0xFF terminator"
            )
        if payload[pos] == TERMINATOR:
            break
        if pos + OPTION.size > n:
            return _bad(
                frames, offset, MalformedCode.TRUNCATED, f"option entry at {pos} is cut short"
            )
        token, opt_pos, length = OPTION.unpack_from(payload, pos)
        if opt_pos + length > n:
            return _bad(
                frames,
                offset,
                MalformedCode.BAD_LENGTH,
                f"option 0x{token:02x} data [{opt_pos}, {opt_pos + length}) beyond "
                f"payload of {n} bytes",
            )
        entries.append((token, opt_pos, length))
        pos += OPTION.size
    firsts: dict[int, tuple[int, int, int]] = {}
    for token, opt_pos, length in entries:
        firsts.setdefault(token, (token, opt_pos, opt_pos + length))
    table = _Table(
        tuple(PreLoginOption(token=t, position=at, length=size) for t, at, size in entries),
        tuple(firsts.values()),
        max((at + size for _, at, size in entries), default=0),
    )
    if len(_TABLES) >= TABLE_CACHE:
        _TABLES.clear()
    _TABLES[payload[:pos]] = table
    return table


def _bad(frames: tuple[int, ...], offset: int, code: MalformedCode, detail: str) -> Malformed:
    return Malformed(frames=frames, offset=offset, code=code, what="PRELOGIN", detail=detail)


def is_prelogin_payload(payload: bytes) -> bool:
    """Cheap check used for the server's answer (type 0x04): an option table, not a token stream.

    A PRELOGIN option table starts with token 0x00 (VERSION) whose offset points just past
    the table; no TDS response token is 0x00.
    """
    return len(payload) >= OPTION.size and payload[0] == PreLoginToken.VERSION
