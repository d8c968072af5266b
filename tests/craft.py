"""Writers for crafted capture files (pcap, pcapng, Network Monitor 2.x, gzip) for tests.

Test-only (scapy may build the packets; these writers take plain bytes too). Each writer takes
`Rec`ords, or bare packets that get evenly spaced timestamps, and writes exactly what it is told,
so tests can also craft damaged files:

    write_pcap(path, [Ether()/IP()/TCP()], linktype=1, nanosecond=True, big_endian=True)
    write_pcapng(path, [Rec(pkt, interface=1)], interfaces=[Iface(1), Iface(113, tsresol=9)])
    write_pcapng_sections(path, [Section(...), Section(..., big_endian=True)])
    write_netmon(path, [pkt, ...], media=1)
    gzip_file(path)  # -> path + ".gz"

Formats: draft-ietf-opsawg-pcap, draft-ietf-opsawg-pcapng (SHB, IDB, EPB, SPB, obsolete PB,
DSB), Network Monitor 2.x as described by Wireshark's wiretap/netmon.c comments.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_TS_NS = 1_700_000_000_123_456_789
STEP_NS = 1_000_001_001  # about a second, so every digit of the timestamp varies


@dataclass
class Rec:
    """One frame to write. `origlen` > len(data) makes a snap-length-truncated frame."""

    data: Any  # bytes or a scapy packet
    ts_ns: int | None = None
    origlen: int | None = None
    interface: int = 0  # pcapng interface id within the section
    block: str = "epb"  # pcapng: "epb", "spb" (simple) or "pb" (obsolete packet block)

    @property
    def raw(self) -> bytes:
        return bytes(self.data)


def records(packets: Iterable[Any], start_ns: int = BASE_TS_NS) -> list[Rec]:
    """Packets or Recs -> Recs with timestamps filled in."""
    out = []
    for i, p in enumerate(packets):
        r = p if isinstance(p, Rec) else Rec(p)
        if r.ts_ns is None:
            r = Rec(r.data, start_ns + i * STEP_NS, r.origlen, r.interface, r.block)
        out.append(r)
    return out


def truncated(packet: Any, caplen: int, **kw: Any) -> Rec:
    """A record holding only the first `caplen` bytes of `packet` (origlen stays the full size)."""
    raw = bytes(packet)
    return Rec(raw[:caplen], origlen=len(raw), **kw)


# -- pcap ------------------------------------------------------------------------------------


def write_pcap(
    path: str | Path,
    packets: Iterable[Any],
    linktype: int = 1,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
    modified: bool = False,
) -> Path:
    """Classic pcap; `modified` writes Kuznetzov's 24-byte record headers."""
    bo = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else (0xA1B2CD34 if modified else 0xA1B2C3D4)
    out = [struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for r in records(packets):
        raw = r.raw
        sec, ns = divmod(r.ts_ns, 1_000_000_000)
        frac = ns if nanosecond else ns // 1000
        origlen = r.origlen if r.origlen is not None else len(raw)
        out.append(struct.pack(bo + "IIII", sec, frac, len(raw), origlen))
        if modified:
            out.append(struct.pack(bo + "iHBB", 1, 0x0800, 0, 0))
        out.append(raw)
    path = Path(path)
    path.write_bytes(b"".join(out))
    return path


# -- pcapng ----------------------------------------------------------------------------------


@dataclass
class Iface:
    """A pcapng Interface Description Block. `tsresol` is the raw if_tsresol option byte:
    6 = microseconds (the default, then no option is written), 9 = ns, 0x80|k = 2**-k s."""

    linktype: int = 1
    snaplen: int = 0
    tsresol: int | None = None
    name: str = ""
    tsoffset: int = 0  # if_tsoffset, seconds


@dataclass
class Section:
    """One pcapng section: its interfaces, records and extra blocks, written in that order.

    `blocks` are (position, raw block bytes) inserted before record number `position`."""

    records: Sequence[Any]
    interfaces: Sequence[Iface] = (Iface(),)
    big_endian: bool = False
    blocks: list[tuple[int, bytes]] = field(default_factory=list)


def _options(bo: str, opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    out = b""
    for code, value in opts:
        out += struct.pack(bo + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack(bo + "HH", 0, 0)


def block(bo: str, btype: int, body: bytes) -> bytes:
    """A pcapng block with the given body (padded to 4 bytes)."""
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(bo + "II", btype, total) + body + struct.pack(bo + "I", total)


def secrets_block(bo: str, secrets_type: int, data: bytes) -> bytes:
    """Decryption Secrets Block (type 0x0A), e.g. 0x544c534b for a TLS key log."""
    return block(bo, 0x0000000A, struct.pack(bo + "II", secrets_type, len(data)) + data)


def _units(ts_ns: int, tsresol: int | None) -> int:
    if tsresol is None:
        tsresol = 6
    if tsresol & 0x80:
        k = tsresol & 0x7F
        return (ts_ns << k) // 1_000_000_000
    if tsresol >= 9:
        return ts_ns * 10 ** (tsresol - 9)
    return ts_ns // 10 ** (9 - tsresol)


def _section_bytes(sec: Section) -> bytes:
    bo = ">" if sec.big_endian else "<"
    shb = block(bo, 0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    out = [shb]
    for ifc in sec.interfaces:
        opts = []
        if ifc.name:
            opts.append((2, ifc.name.encode()))
        if ifc.tsresol is not None:
            opts.append((9, bytes([ifc.tsresol])))
        if ifc.tsoffset:
            opts.append((14, struct.pack(bo + "q", ifc.tsoffset)))
        body = struct.pack(bo + "HHI", ifc.linktype, 0, ifc.snaplen) + _options(bo, opts)
        out.append(block(bo, 1, body))
    extra = sorted(sec.blocks, key=lambda b: b[0])
    for i, r in enumerate(records(sec.records)):
        while extra and extra[0][0] <= i:
            out.append(extra.pop(0)[1])
        raw = r.raw
        origlen = r.origlen if r.origlen is not None else len(raw)
        if r.block == "spb":  # room for min(origlen, snaplen of interface 0) bytes
            snap = sec.interfaces[0].snaplen if sec.interfaces else 0
            raw = raw[:snap] if snap else raw
            out.append(block(bo, 3, struct.pack(bo + "I", origlen) + raw))
            continue
        ifc = sec.interfaces[r.interface] if r.interface < len(sec.interfaces) else Iface()
        units = _units(r.ts_ns - ifc.tsoffset * 1_000_000_000, ifc.tsresol)
        hi, lo = units >> 32, units & 0xFFFFFFFF
        if r.block == "pb":
            head = struct.pack(bo + "HHIIII", r.interface, 0, hi, lo, len(raw), origlen)
            out.append(block(bo, 2, head + raw))
        else:
            head = struct.pack(bo + "IIIII", r.interface, hi, lo, len(raw), origlen)
            out.append(block(bo, 6, head + raw))
    out.extend(b for _, b in extra)
    return b"".join(out)


def write_pcapng(
    path: str | Path,
    packets: Iterable[Any],
    interfaces: Sequence[Iface] = (Iface(),),
    big_endian: bool = False,
    blocks: list[tuple[int, bytes]] | None = None,
) -> Path:
    """One-section pcapng; `Rec.interface` picks the interface of each record."""
    return write_pcapng_sections(
        path, [Section(list(packets), interfaces, big_endian, list(blocks or []))]
    )


def write_pcapng_sections(path: str | Path, sections: Sequence[Section]) -> Path:
    """Several sections back to back (each resets the interfaces; byte order per section)."""
    path = Path(path)
    path.write_bytes(b"".join(_section_bytes(s) for s in sections))
    return path


# -- Network Monitor 2.x ---------------------------------------------------------------------

NETMON_MEDIA_ETHERNET = 1
NETMON_MEDIA_RAW_IP = 0xFFFE  # NetMon "raw IP" (e.g. VPN adapters)
NETMON_MEDIA_IPV4 = 0xFFFB
NETMON_MEDIA_IPV6 = 0xFFFC


def _filetime_header(ts_ns: int) -> bytes:
    """The 16-byte SYSTEMTIME of the capture start (UTC)."""
    import datetime as dt

    t = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, dt.UTC)
    ms = (ts_ns // 1_000_000) % 1000
    return struct.pack(
        "<8H", t.year, t.month, t.isoweekday() % 7, t.day, t.hour, t.minute, t.second, ms
    )


def write_netmon(
    path: str | Path,
    packets: Iterable[Any],
    media: int = NETMON_MEDIA_ETHERNET,
    minor: int = 2,
    media_per_frame: Sequence[int] | None = None,
    table_order: Sequence[int] | None = None,
) -> Path:
    """Network Monitor 2.x capture. From minor version 1 on, frames carry a trailer with the
    per-frame media type (`media_per_frame`, default `media`), as NetMon 3.x writes.
    `table_order` lists the records (as written) in frame-table order, i.e. frame order."""
    recs = records(packets)
    start_ns = (recs[0].ts_ns if recs else BASE_TS_NS) // 1_000_000 * 1_000_000
    header_size = 128
    frames = []
    offsets = []
    pos = header_size
    for i, r in enumerate(recs):
        raw = r.raw
        origlen = r.origlen if r.origlen is not None else len(raw)
        delta_us = (r.ts_ns - start_ns) // 1000
        body = struct.pack("<QII", delta_us, origlen, len(raw)) + raw
        m = media_per_frame[i] if media_per_frame else media
        if minor == 1:  # trailers: the frame's media type, then more with later versions
            body += struct.pack("<H", m)
        elif minor == 2:
            body += struct.pack("<HI", m, 0)  # + process info index
        elif minor >= 3:
            utc = r.ts_ns // 100 + 116444736000000000  # 100 ns units since 1601
            body += struct.pack("<HIQB", m, 0, utc, 0)  # + UTC time, time zone index
        offsets.append(pos)
        frames.append(body)
        pos += len(body)
    frame_table_offset = pos
    if table_order is not None:
        offsets = [offsets[i] for i in table_order]
    table = struct.pack(f"<{len(offsets)}I", *offsets)
    header = struct.pack(
        "<4sBBH16sII",
        b"GMBU",
        minor,
        2,
        media,
        _filetime_header(start_ns),
        frame_table_offset,
        len(table),
    )
    header += struct.pack("<8I", 0, 0, 0, 0, 0, 0, 0, 0)
    header = header.ljust(header_size, b"\0")
    path = Path(path)
    path.write_bytes(header + b"".join(frames) + table)
    return path


# -- gzip ------------------------------------------------------------------------------------


def gzip_file(path: str | Path, dest: str | Path | None = None) -> Path:
    """Gzip a capture (to `dest`, default path + '.gz'); the reader must detect it by magic."""
    path = Path(path)
    out = Path(dest) if dest is not None else path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out
