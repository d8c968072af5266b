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


def parse_prelogin(
    payload: bytes, *, from_client: bool, frames: tuple[int, ...], offset: int
) -> PreLogin | Malformed:
    """Decode one PRELOGIN payload; a bad option table gives Malformed."""

    def bad(code: MalformedCode, detail: str) -> Malformed:
        return Malformed(frames=frames, offset=offset, code=code, what="PRELOGIN", detail=detail)

    options: list[PreLoginOption] = []
    pos = 0
    while True:
        if pos >= len(payload):
            return bad(MalformedCode.TRUNCATED, "option table has no 0xFF terminator")
        if payload[pos] == TERMINATOR:
            break
        if pos + OPTION.size > len(payload):
            return bad(MalformedCode.TRUNCATED, f"option entry at {pos} is cut short")
        token, opt_pos, length = OPTION.unpack_from(payload, pos)
        if opt_pos + length > len(payload):
            return bad(
                MalformedCode.BAD_LENGTH,
                f"option 0x{token:02x} data [{opt_pos}, {opt_pos + length}) beyond "
                f"payload of {len(payload)} bytes",
            )
        options.append(PreLoginOption(token=token, position=opt_pos, length=length))
        pos += OPTION.size

    values: dict[int, bytes] = {}
    for opt in options:
        values.setdefault(opt.token, payload[opt.position : opt.position + opt.length])

    def byte_opt(token: int) -> int | None:
        data = values.get(token)
        return data[0] if data else None

    version = None
    if len(values.get(PreLoginToken.VERSION, b"")) >= VERSION.size:
        version = VERSION.unpack_from(values[PreLoginToken.VERSION])
    instance = None
    if PreLoginToken.INSTOPT in values:
        instance = values[PreLoginToken.INSTOPT].split(b"\0", 1)[0].decode("latin-1")
    thread_id = None
    if len(values.get(PreLoginToken.THREADID, b"")) >= 4:
        thread_id = struct.unpack_from(">I", values[PreLoginToken.THREADID])[0]
    mars = byte_opt(PreLoginToken.MARS)
    fedauth = byte_opt(PreLoginToken.FEDAUTHREQUIRED)
    return PreLogin(
        frames=frames,
        offset=offset,
        from_client=from_client,
        version=version,
        encryption=byte_opt(PreLoginToken.ENCRYPTION),
        instance=instance,
        thread_id=thread_id,
        mars=None if mars is None else bool(mars),
        trace_id=values.get(PreLoginToken.TRACEID) or None,
        fedauth_required=None if fedauth is None else bool(fedauth),
        nonce=values.get(PreLoginToken.NONCEOPT) or None,
        options=tuple(options),
    )


def is_prelogin_payload(payload: bytes) -> bool:
    """Cheap check used for the server's answer (type 0x04): an option table, not a token stream.

    A PRELOGIN option table starts with token 0x00 (VERSION) whose offset points just past
    the table; no TDS response token is 0x00.
    """
    return len(payload) >= OPTION.size and payload[0] == PreLoginToken.VERSION
