"""LOGIN7 message payloads (MS-TDS 2.2.6.4).

A fixed part (lengths, versions, flags), then an offset/length table pointing at UTF-16LE strings
inside the same payload, then optional SSPI data and a FeatureExt block.

The password (and a change-password) is *never* read: only its length from the table is kept.
The obfuscated bytes are not copied out of the payload at all, so no event can leak them.
"""

from __future__ import annotations

import struct

from .events import Feature, Login7, Malformed, MalformedCode

# 2.2.6.4 fixed part, little-endian:
#   Length DWORD, TDSVersion DWORD, PacketSize DWORD, ClientProgVer DWORD, ClientPID DWORD,
#   ConnectionID DWORD, OptionFlags1 BYTE, OptionFlags2 BYTE, TypeFlags BYTE, OptionFlags3 BYTE,
#   ClientTimeZone LONG, ClientLCID DWORD
FIXED = struct.Struct("<IIIIIIBBBBiI")
# OffsetLength: nine (ib, cch) USHORT pairs, HostName .. Database, in this order.
PAIRS = struct.Struct("<18H")
PAIR_NAMES = (
    "hostname",
    "username",
    "password",
    "appname",
    "servername",
    "extension",  # ibExtension / cbExtension (OptionFlags3.fExtension), else unused
    "library",
    "language",
    "database",
)
CLIENT_ID_LEN = 6
TAIL_71 = struct.Struct("<HHHH")  # ibSSPI, cbSSPI, ibAtchDBFile, cchAtchDBFile
TAIL_72 = struct.Struct("<HHHHHHI")  # + ibChangePassword, cchChangePassword, cbSSPILong
MIN_LEN = FIXED.size + PAIRS.size + CLIENT_ID_LEN + TAIL_71.size  # 86 bytes: TDS 7.1 layout

OPTION3_EXTENSION = 0x10
FEATURE_TERMINATOR = 0xFF
FEATURE_FEDAUTH = 0x02
SMALL_FEATURE = 8  # feature data up to this size is kept (versions, flags); never FEDAUTH


def parse_login7(payload: bytes, *, frames: tuple[int, ...], offset: int) -> Login7 | Malformed:
    def bad(code: MalformedCode, detail: str) -> Malformed:
        return Malformed(frames=frames, offset=offset, code=code, what="LOGIN7", detail=detail)

    size = len(payload)
    if size < MIN_LEN:
        return bad(MalformedCode.TRUNCATED, f"{size} bytes, the fixed part needs {MIN_LEN}")
    (
        length,
        tds_version,
        packet_size,
        client_version,
        client_pid,
        connection_id,
        flags1,
        flags2,
        type_flags,
        flags3,
        timezone,
        lcid,
    ) = FIXED.unpack_from(payload)
    if length > size:
        return bad(MalformedCode.BAD_LENGTH, f"Length field {length} exceeds the {size} bytes sent")
    pos = FIXED.size
    raw = PAIRS.unpack_from(payload, pos)
    pairs = {name: (raw[2 * i], raw[2 * i + 1]) for i, name in enumerate(PAIR_NAMES)}
    pos += PAIRS.size
    client_id = payload[pos : pos + CLIENT_ID_LEN].hex(":")
    pos += CLIENT_ID_LEN
    change_pw_chars = 0
    sspi_long = 0
    # TDS 7.2 added ibChangePassword/cchChangePassword and cbSSPILong to the fixed part.
    if (tds_version >> 24) not in (0x70, 0x71) and length >= pos + TAIL_72.size:
        ib_sspi, cb_sspi, ib_attach, cch_attach, _ib_chg, change_pw_chars, sspi_long = (
            TAIL_72.unpack_from(payload, pos)
        )
    else:
        ib_sspi, cb_sspi, ib_attach, cch_attach = TAIL_71.unpack_from(payload, pos)

    def text(ib: int, cch: int, what: str) -> str | Malformed:
        if cch == 0:
            return ""
        if ib + 2 * cch > length:
            return bad(MalformedCode.BAD_LENGTH, f"{what} [{ib}, +{2 * cch}) beyond {length}")
        return payload[ib : ib + 2 * cch].decode("utf-16-le", "replace")

    strings: dict[str, str] = {}
    for name in (
        "hostname",
        "username",
        "appname",
        "servername",
        "library",
        "language",
        "database",
    ):
        value = text(*pairs[name], name)
        if isinstance(value, Malformed):
            return value
        strings[name] = value
    attach = text(ib_attach, cch_attach, "attach_db_file")
    if isinstance(attach, Malformed):
        return attach

    # The password is only *measured*: its bytes are checked to be in range, never copied.
    ib_pw, cch_pw = pairs["password"]
    if cch_pw and ib_pw + 2 * cch_pw > length:
        return bad(MalformedCode.BAD_LENGTH, f"password [{ib_pw}, +{2 * cch_pw}) beyond {length}")

    sspi_length = sspi_long if cb_sspi == 0xFFFF else cb_sspi
    if sspi_length and ib_sspi + min(sspi_length, 0xFFFF) > length:
        return bad(MalformedCode.BAD_LENGTH, f"SSPI data [{ib_sspi}, +{sspi_length}) beyond end")

    features: tuple[Feature, ...] = ()
    if flags3 & OPTION3_EXTENSION:
        ib_ext, cb_ext = pairs["extension"]
        if cb_ext < 4 or ib_ext + 4 > length:
            return bad(MalformedCode.BAD_LENGTH, "fExtension set but no extension offset")
        feature_pos = struct.unpack_from("<I", payload, ib_ext)[0]
        parsed = _features(payload[:length], feature_pos)
        if isinstance(parsed, str):
            return bad(MalformedCode.BAD_LENGTH, parsed)
        features = parsed

    return Login7(
        frames=frames,
        offset=offset,
        tds_version=tds_version,
        packet_size=packet_size,
        client_version=client_version,
        client_pid=client_pid,
        connection_id=connection_id,
        option_flags1=flags1,
        option_flags2=flags2,
        type_flags=type_flags,
        option_flags3=flags3,
        client_timezone=timezone,
        client_lcid=lcid,
        password_chars=cch_pw,
        client_id=client_id,
        sspi_length=sspi_length,
        attach_db_file=attach,
        change_password_chars=change_pw_chars,
        features=features,
        **strings,
    )


def _features(payload: bytes, pos: int) -> tuple[Feature, ...] | str:
    """FeatureExt (2.2.6.4): (FeatureId BYTE, FeatureDataLen DWORD, data)*, then 0xFF."""
    out: list[Feature] = []
    while True:
        if pos >= len(payload):
            return f"FeatureExt block has no 0xFF terminator (ended at {pos})"
        fid = payload[pos]
        if fid == FEATURE_TERMINATOR:
            return tuple(out)
        if pos + 5 > len(payload):
            return f"FeatureExt entry 0x{fid:02x} at {pos} is cut short"
        n = struct.unpack_from("<I", payload, pos + 1)[0]
        if pos + 5 + n > len(payload):
            return f"FeatureExt entry 0x{fid:02x} data ({n} bytes) beyond the message"
        keep = fid != FEATURE_FEDAUTH and n <= SMALL_FEATURE
        out.append(Feature(id=fid, length=n, data=payload[pos + 5 : pos + 5 + n] if keep else b""))
        pos += 5 + n


def tds_version_name(version: int) -> str:
    """Human name of a TDS version as sent in LOGIN7 (little-endian) or LOGINACK (big-endian)."""
    names = {
        0x70000000: "7.0",
        0x71000000: "7.1",
        0x71000001: "7.1 SP1",
        0x72090002: "7.2",
        0x730A0003: "7.3A",
        0x730B0003: "7.3B",
        0x74000004: "7.4",
        0x08000000: "8.0",
    }
    return names.get(version, f"0x{version:08x}")
