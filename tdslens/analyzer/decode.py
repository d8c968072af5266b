"""FrameBatch → PacketColumns: link layer, IPv4/IPv6 and the TCP/UDP header, for whole columns.

Two paths, one answer (tests/test_decode.py checks they agree on every crafted capture):

* **Fast path** (numpy on whole columns): Ethernet with up to two VLAN tags (802.1Q/802.1ad),
  Linux SLL/SLL2, raw IP, BSD NULL/LOOP; IPv4 without options and not fragmented; IPv6 with
  TCP/UDP right after the fixed header. That is nearly every frame of a real capture.
* **Slow path** (plain Python, one frame at a time, `_Slow`): whatever the fast path declines —
  IPv4 options, IPv6 extension headers, IPv4/IPv6 fragments (reassembled like Wireshark does,
  the packet belonging to the frame that completed it), TSO frames with IPv4 length 0, deeper
  VLAN stacks, headers cut short by the snap length (reported as problems), and ICMP/ICMPv6
  errors (rare; the fast path only spots them by type).

TCP and UDP packets come out, and TCP headers quoted inside ICMP/ICMPv6 errors (`QUOTED_TCP`
rows, see `icmp_quote.py`; Wireshark numbers them as TCP conversations). Frames of other
protocols, or of link types we do not decode (the reader reports those), are skipped silently.
Lengths follow the IP header: Ethernet padding is not payload; bytes cut by the snap length are
a gap (`payload_len < payload_wire_len`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from tdslens.analyzer.capture import byteviews
from tdslens.analyzer.frames import CaptureProblem, FrameBatch, LinkType
from tdslens.analyzer.icmp_quote import (
    ICMP,
    ICMP_ERRORS,
    ICMPV6,
    ICMPV6_QUOTING,
    NUMBERED_BYTES,
    quoted_tcp,
)
from tdslens.analyzer.packet_columns import (
    QUOTED_TCP,
    TCP,
    UDP,
    IcmpQuote,
    PacketColumns,
    address_text,
)

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
AF_INET = 2
AF_INET6 = (24, 28, 30)  # NetBSD/OpenBSD, FreeBSD/DragonFly, macOS
IPV6_EXT = (0, 43, 60, 51, 44)  # hop-by-hop, routing, destination options, AH, fragment
RAW_LINKS = (LinkType.RAW, LinkType.RAW_DLT_12, LinkType.RAW_DLT_14)
MAX_FRAGMENT_BYTES = 64 << 20  # pending fragments kept per decoder before the oldest are dropped

# Shifts and masks for fields cut out of 8-byte big-endian gathers.
_S16, _S28, _S32, _S48, _S56 = (np.uint64(k) for k in (16, 28, 32, 48, 56))
_M4, _M8, _M9, _M16, _M32 = (np.uint64((1 << k) - 1) for k in (4, 8, 9, 16, 32))
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_FRAG = np.uint64(0x3FFF)
_PORTS = np.uint64(0xFFFFFFFF00000000)
_ICMP_ERRORS = np.array(sorted(ICMP_ERRORS))
_ICMPV6_QUOTING = np.array(sorted(ICMPV6_QUOTING))

_COLUMNS = (
    ("number", np.int64),
    ("ts_ns", np.int64),
    ("ip_version", np.uint8),
    ("src_hi", np.uint64),
    ("src_lo", np.uint64),
    ("dst_hi", np.uint64),
    ("dst_lo", np.uint64),
    ("proto", np.uint8),
    ("sport", np.int32),
    ("dport", np.int32),
    ("seq", np.int64),
    ("ack", np.int64),
    ("flags", np.int32),
    ("window", np.int32),
    ("tcp_offset", np.int64),
    ("payload_offset", np.int64),
    ("payload_len", np.int64),
    ("payload_wire_len", np.int64),
)


def decode_batch(
    batch: FrameBatch, fast: bool = True, path: str = ""
) -> tuple[PacketColumns, list[CaptureProblem]]:
    """Decode one batch on its own: IP fragments are reassembled within the batch only.

    Reading a whole file, prefer one `Decoder(path)` for all its batches: it reassembles
    fragments that straddle batches and names the file in its problems. `fast=False` sends
    every frame through the slow path (for tests)."""
    decoder = Decoder(path=path, fast=fast)
    columns, problems = decoder.decode(batch)
    return columns, problems + decoder.finish()


@dataclass
class Decoder:
    """Decodes batches in order, keeping IP fragments across batch boundaries."""

    path: str = ""
    fast: bool = True
    _frags: dict[tuple, _Datagram] = field(default_factory=dict, init=False, repr=False)
    _frag_bytes: int = field(default=0, init=False, repr=False)

    def decode(self, batch: FrameBatch) -> tuple[PacketColumns, list[CaptureProblem]]:
        n = len(batch)
        data = batch.data
        if n == 0:
            return _empty(data), []
        cols: PacketColumns | None = None
        slow_rows = np.arange(n)
        if self.fast:
            cols, slow_rows = _fast(batch)
            if len(slow_rows) == 0:
                return cols, []
        slow = _Slow(self, batch)
        for i in slow_rows.tolist():
            slow.frame(i)
        if not slow.rows:
            return (cols if cols is not None else _empty(data)), slow.problems
        extra = _rows_to_columns(slow.rows, data)
        extra.icmp = slow.icmp
        merged = extra if cols is None else _merge(cols, extra)
        if slow.extra:
            merged.data = bytes(data) + bytes(slow.extra)
        return merged, slow.problems

    def finish(self) -> list[CaptureProblem]:
        """Problems for fragmented datagrams that never completed."""
        out = []
        for key, dg in self._frags.items():
            if dg.broken:
                continue
            frames = ", ".join(str(f) for f in dg.frames[:10])
            more = " ..." if len(dg.frames) > 10 else ""
            out.append(
                CaptureProblem(
                    self.path,
                    dg.frames[0],
                    f"IPv{key[0]} datagram id {key[-1]} is missing fragments; "
                    f"frames {frames}{more} were not reassembled",
                )
            )
        self._frags.clear()
        self._frag_bytes = 0
        return out


# -- fast path -------------------------------------------------------------------------------


def _fast(batch: FrameBatch) -> tuple[PacketColumns, np.ndarray]:
    """Vectorised decode; returns the columns it could fill and the rows for the slow path."""
    data = batch.data
    u8 = byteviews.view(data, "u1")
    be16 = byteviews.view(data, ">u2")
    be32 = byteviews.view(data, ">u4")
    g = byteviews.gather
    off, caplen, lt = batch.offset, batch.caplen, batch.linktype
    end = off + caplen
    n = len(off)
    l3 = np.zeros(n, dtype=np.int64)
    ver = np.zeros(n, dtype=np.int64)  # 4, 6 or 0 (not IP)
    slow = np.zeros(n, dtype=bool)

    def ethertype_to_version(rows: np.ndarray, et: np.ndarray) -> None:
        ver[rows] = np.where(et == ETH_IPV4, 4, np.where(et == ETH_IPV6, 6, 0))

    # One link type per batch is the rule (pcap files have one): no need to sort the column.
    single = n and lt[0] == lt[-1] and bool((lt == lt[0]).all())
    for linktype in [int(lt[0])] if single else np.unique(lt).tolist():
        rows = np.arange(n) if single else np.flatnonzero(lt == linktype)
        o = off[rows]
        if linktype == LinkType.ETHERNET:
            et = g(be16, o + 12)
            p = o + 14
            for _ in range(2):
                tag = np.isin(et, VLAN_TPIDS)
                if not tag.any():
                    break
                et = np.where(tag, g(be16, p + 2), et)
                p = np.where(tag, p + 4, p)
            slow[rows[np.isin(et, VLAN_TPIDS)]] = True
            ethertype_to_version(rows, et)
            l3[rows] = p
        elif linktype == LinkType.LINUX_SLL:
            ethertype_to_version(rows, g(be16, o + 14))
            l3[rows] = o + 16
        elif linktype == LinkType.LINUX_SLL2:
            ethertype_to_version(rows, g(be16, o))
            l3[rows] = o + 20
        elif linktype in RAW_LINKS:
            v = g(u8, o) >> 4
            ver[rows] = np.where((v == 4) | (v == 6), v, 0)
            l3[rows] = o
        elif linktype == LinkType.IPV4:
            ver[rows] = 4
            l3[rows] = o
        elif linktype == LinkType.IPV6:
            ver[rows] = 6
            l3[rows] = o
        elif linktype in (LinkType.NULL, LinkType.LOOP):
            fam = g(be32, o).astype(np.int64)
            if linktype == LinkType.NULL:  # host byte order of the writer: accept both
                swapped = g(byteviews.view(data, "<u4"), o).astype(np.int64)
                fam = np.where(fam & 0xFFFF0000 != 0, swapped, fam)
            ver[rows] = np.where(fam == AF_INET, 4, np.where(np.isin(fam, AF_INET6), 6, 0))
            l3[rows] = o + 4
        # other link types: not decoded (the reader reports them)

    # -- IPv4 -------------------------------------------------------------------------------
    # Two 8-byte gathers hold version/IHL, total length, flags/offset, protocol and source.
    be64 = byteviews.view(data, ">u8")
    i4 = np.flatnonzero(ver == 4)
    p4 = l3[i4]
    have4 = p4 + 20 <= end[i4]
    x0 = g(be64, p4)
    x1 = g(be64, p4 + 8)
    b0 = (x0 >> _S56).astype(np.int64)
    total4 = ((x0 >> _S32) & _M16).astype(np.int64)
    frag4 = x0 & _FRAG
    proto4 = ((x1 >> _S48) & _M8).astype(np.int64)
    transport4 = have4 & (b0 >> 4 == 4) & ((proto4 == TCP) | (proto4 == UDP))
    fast4 = transport4 & (b0 == 0x45) & (frag4 == 0) & (total4 >= 20)
    fast4 &= (p4 - off[i4]) + total4 <= batch.origlen[i4]
    slow[i4[transport4 & ~fast4]] = True
    # ICMP errors may quote a TCP header (icmp_quote.py): they, and ICMP fragments (which may
    # make one), take the slow path; other ICMP (echo, ...) is skipped as before.
    icmp4 = have4 & (proto4 == ICMP)  # (the slow path checks the version)
    if icmp4.any():
        k = np.flatnonzero(icmp4)
        at = p4[k] + (b0[k] & 0x0F) * 4
        error = (at < end[i4[k]]) & np.isin(g(u8, at), _ICMP_ERRORS)
        slow[i4[k[error | (frag4[k] != 0)]]] = True
    src4 = x1 & _M32
    if not fast4.all():
        i4, p4, proto4, total4, src4 = (x[fast4] for x in (i4, p4, proto4, total4, src4))

    # -- IPv6 -------------------------------------------------------------------------------
    i6 = np.flatnonzero(ver == 6)
    p6 = l3[i6]
    have6 = (p6 + 40 <= end[i6]) & (g(u8, p6) >> 4 == 6)
    nh6 = g(u8, p6 + 6).astype(np.int64)
    plen6 = g(be16, p6 + 4).astype(np.int64)
    direct6 = have6 & ((nh6 == TCP) | (nh6 == UDP))
    fast6 = direct6 & (plen6 > 0) & ((p6 - off[i6]) + 40 + plen6 <= batch.origlen[i6])
    slow[i6[(direct6 & ~fast6) | (have6 & np.isin(nh6, IPV6_EXT))]] = True
    icmp6 = have6 & (nh6 == ICMPV6)
    if icmp6.any():  # errors: see IPv4 above (fragments have an extension header: slow)
        k = np.flatnonzero(icmp6)
        at = p6[k] + 40
        slow[i6[k[(at < end[i6[k]]) & np.isin(g(u8, at), _ICMPV6_QUOTING)]]] = True
    if not fast6.all():
        i6, p6, nh6, plen6 = i6[fast6], p6[fast6], nh6[fast6], plen6[fast6]

    # -- transport ---------------------------------------------------------------------------
    idx = np.concatenate([i4, i6])
    version = np.concatenate([np.full(len(i4), 4, np.uint8), np.full(len(i6), 6, np.uint8)])
    proto = np.concatenate([proto4, nh6])
    src4_all = np.concatenate([src4, np.zeros(len(i6), np.uint64)])
    th = np.concatenate([p4 + 20, p6 + 40])
    ip_end = np.concatenate([p4 + total4, p6 + 40 + plen6])
    if len(i4) and len(i6):  # back into frame order
        order = np.argsort(idx, kind="stable")
        idx, version, proto, src4_all, th, ip_end = (
            x[order] for x in (idx, version, proto, src4_all, th, ip_end)
        )
    fend = end[idx]
    is_tcp = proto == TCP
    # Two 8-byte gathers hold the whole fixed TCP header (the first one the UDP ports).
    t0 = g(be64, th)
    t1 = g(be64, th + 8)
    hdr_len = np.where(is_tcp, ((t1 >> _S28) & _M4).astype(np.int64) * 4, 8)
    ok = (th + np.where(is_tcp, 20, 8) <= fend) & (hdr_len >= np.where(is_tcp, 20, 8))
    ok &= ip_end - th >= hdr_len
    slow[idx[~ok]] = True
    if not ok.all():
        idx, version, proto, th, ip_end, fend, is_tcp, hdr_len, t0, t1, src4_all = (
            x[ok]
            for x in (idx, version, proto, th, ip_end, fend, is_tcp, hdr_len, t0, t1, src4_all)
        )
    pay = th + hdr_len
    wire = ip_end - pay
    captured = np.clip(np.minimum(ip_end, fend) - pay, 0, None)

    m = len(idx)
    src_hi = np.zeros(m, np.uint64)
    dst_hi = np.zeros(m, np.uint64)
    src_lo = src4_all
    dst_lo = np.zeros(m, np.uint64)
    v4 = version == 4
    ip = l3[idx]
    dst_lo[v4] = g(be32, ip[v4] + 16)
    v6 = ~v4
    if v6.any():
        q = ip[v6]
        src_hi[v6], src_lo[v6] = g(be64, q + 8), g(be64, q + 16)
        dst_hi[v6], dst_lo[v6] = g(be64, q + 24), g(be64, q + 32)

    tcp_mask = np.where(is_tcp, _M64, np.uint64(0))
    t0 &= tcp_mask | _PORTS  # UDP rows keep only their ports
    t1 &= tcp_mask
    cols = PacketColumns(
        data=data,
        number=batch.number[idx],
        ts_ns=batch.ts_ns[idx],
        ip_version=version,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        proto=proto.astype(np.uint8),
        sport=(t0 >> _S48).astype(np.int32),
        dport=((t0 >> _S32) & _M16).astype(np.int32),
        seq=(t0 & _M32).astype(np.int64),
        ack=(t1 >> _S32).astype(np.int64),
        flags=((t1 >> _S16) & _M9).astype(np.int32),
        window=(t1 & _M16).astype(np.int32),
        tcp_offset=th,
        payload_offset=pay,
        payload_len=captured,
        payload_wire_len=wire,
    )
    return cols, np.flatnonzero(slow)


# -- slow path -------------------------------------------------------------------------------


@dataclass
class _Datagram:
    """Fragments of one IP datagram seen so far."""

    parts: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes
    total: int | None = None  # known once the last fragment arrived
    proto: int = -1  # from the first fragment (IPv6) or every fragment (IPv4)
    frames: list[int] = field(default_factory=list)
    broken: bool = False  # a fragment was cut by the snap length: cannot reassemble
    size: int = 0


_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U32LE = struct.Struct("<I").unpack_from
_Q2 = struct.Struct(">QQ").unpack_from


class _Slow:
    """Decodes single frames in plain Python; rows go to `rows`, reassembled bytes to `extra`."""

    def __init__(self, decoder: Decoder, batch: FrameBatch) -> None:
        self.decoder = decoder
        self.batch = batch
        self.buf = (
            memoryview(batch.data).cast("B") if not isinstance(batch.data, bytes) else batch.data
        )
        self.base = len(batch.data)  # offsets >= base point into `extra`
        self.extra = bytearray()
        self.rows: list[tuple] = []
        self.icmp: dict[int, IcmpQuote] = {}
        self.problems: list[CaptureProblem] = []

    def problem(self, frame: int, message: str) -> None:
        self.problems.append(CaptureProblem(self.decoder.path, frame, message))

    def frame(self, i: int) -> None:
        b = self.batch
        off, cap = int(b.offset[i]), int(b.caplen[i])
        end = off + cap
        number = int(b.number[i])
        link = self.link(int(b.linktype[i]), off, end)
        if link is None:
            return
        version, l3 = link
        # Bytes the frame had on the wire beyond the IP header start: bounds the IP length.
        wire_left = int(b.origlen[i]) - (l3 - off)
        if version == 4:
            self.ipv4(i, number, l3, end, wire_left)
        else:
            self.ipv6(i, number, l3, end, wire_left)

    def link(self, lt: int, off: int, end: int) -> tuple[int, int] | None:
        buf = self.buf
        if lt == LinkType.ETHERNET:
            p = off + 12
            while p + 2 <= end:
                et = _U16(buf, p)[0]
                if et in VLAN_TPIDS:
                    p += 4
                    continue
                return _by_ethertype(et, p + 2)
            return None
        if lt == LinkType.LINUX_SLL:
            return _by_ethertype(_U16(buf, off + 14)[0], off + 16) if off + 16 <= end else None
        if lt == LinkType.LINUX_SLL2:
            return _by_ethertype(_U16(buf, off)[0], off + 20) if off + 20 <= end else None
        if lt in RAW_LINKS:
            if off >= end:
                return None
            v = buf[off] >> 4
            return (v, off) if v in (4, 6) else None
        if lt == LinkType.IPV4:
            return 4, off
        if lt == LinkType.IPV6:
            return 6, off
        if lt in (LinkType.NULL, LinkType.LOOP):
            if off + 4 > end:
                return None
            fam = _U32(buf, off)[0]
            if lt == LinkType.NULL and fam & 0xFFFF0000:
                fam = _U32LE(buf, off)[0]
            if fam == AF_INET:
                return 4, off + 4
            if fam in AF_INET6:
                return 6, off + 4
        return None

    def ipv4(self, i: int, number: int, p: int, end: int, wire_left: int) -> None:
        buf = self.buf
        if p + 20 > end or buf[p] >> 4 != 4:
            return
        ihl = (buf[p] & 0x0F) * 4
        proto = buf[p + 9]
        if proto not in (TCP, UDP, ICMP) or ihl < 20:
            return
        if p + ihl > end:
            self.problem(number, "IPv4 header cut by the snap length")
            return
        total = _U16(buf, p + 2)[0]
        if total == 0:  # TCP segmentation offload: the length is the frame's (as Wireshark)
            total = wire_left
        if total > wire_left:  # as Wireshark: believe the frame, and say so
            self.problem(number, f"IPv4 total length {total} exceeds the frame ({wire_left} bytes)")
            total = wire_left
        if total < ihl:
            return  # malformed: the header does not fit the stated length
        src, dst = _U32(buf, p + 12)[0], _U32(buf, p + 16)[0]
        frag = _U16(buf, p + 6)[0]
        ip_end = p + total
        if frag & 0x3FFF:
            ident = _U16(buf, p + 4)[0]
            key = (4, src, dst, proto, ident)
            got = self.fragment(
                i,
                number,
                key,
                proto,
                (frag & 0x1FFF) * 8,
                bool(frag & 0x2000),
                p + ihl,
                ip_end,
                end,
            )
            if got is not None:
                start, stop, proto = got
                if proto == ICMP:
                    self.icmp_error(i, number, 4, 0, src, start, stop)
                else:
                    self.transport(i, number, 4, 0, src, 0, dst, proto, start, stop, stop)
            return
        if proto == ICMP:
            self.icmp_error(i, number, 4, 0, src, p + ihl, min(ip_end, end))
            return
        self.transport(i, number, 4, 0, src, 0, dst, proto, p + ihl, ip_end, min(ip_end, end))

    def ipv6(self, i: int, number: int, p: int, end: int, wire_left: int) -> None:
        buf = self.buf
        if p + 40 > end or buf[p] >> 4 != 6:
            return
        plen = _U16(buf, p + 4)[0]
        if plen == 0:
            if buf[p + 6] != 0:
                return  # no hop-by-hop header for a jumbo option: malformed (as Wireshark)
            plen = wire_left - 40  # jumbogram: the length is the frame's
        if 40 + plen > wire_left:
            self.problem(
                number, f"IPv6 payload length {plen} exceeds the frame ({wire_left - 40} bytes)"
            )
            plen = wire_left - 40
        src_hi, src_lo = _Q2(buf, p + 8)
        dst_hi, dst_lo = _Q2(buf, p + 24)
        ip_end = p + 40 + plen
        nh, q = buf[p + 6], p + 40
        while nh in IPV6_EXT:
            if q + 8 > min(end, ip_end):
                if nh != 44 and q + 8 > ip_end:
                    return  # malformed
                self.problem(number, "IPv6 extension header cut by the snap length")
                return
            if nh == 44:
                fo = _U16(buf, q + 2)[0]
                ident = _U32(buf, q + 4)[0]
                if fo & 0xFFF9 == 0:  # atomic fragment: offset 0, no more fragments
                    nh, q = buf[q], q + 8
                    continue
                key = (6, src_hi, src_lo, dst_hi, dst_lo, ident)
                first_nh = buf[q] if (fo & 0xFFF8) == 0 else -1
                got = self.fragment(
                    i, number, key, first_nh, fo & 0xFFF8, bool(fo & 1), q + 8, ip_end, end
                )
                if got is not None:
                    start, stop, proto = got
                    if proto in (TCP, UDP):
                        self.transport(
                            i, number, 6, src_hi, src_lo, dst_hi, dst_lo, proto, start, stop, stop
                        )
                    elif proto == ICMPV6:
                        self.icmp_error(i, number, 6, src_hi, src_lo, start, stop)
                return
            ext_len = (buf[q + 1] + 2) * 4 if nh == 51 else (buf[q + 1] + 1) * 8
            nh, q = buf[q], q + ext_len
        if nh == ICMPV6 and q <= ip_end:
            self.icmp_error(i, number, 6, src_hi, src_lo, q, min(ip_end, end))
            return
        if nh not in (TCP, UDP) or q > ip_end:
            return
        self.transport(
            i, number, 6, src_hi, src_lo, dst_hi, dst_lo, nh, q, ip_end, min(ip_end, end)
        )

    def fragment(
        self,
        i: int,
        number: int,
        key: tuple,
        proto: int,
        offset: int,
        more: bool,
        start: int,
        ip_end: int,
        end: int,
    ) -> tuple[int, int, int] | None:
        """Add one fragment; when the datagram is complete, return (start, end, proto) in extra."""
        dec = self.decoder
        dg = dec._frags.get(key)
        if dg is None:
            dg = dec._frags[key] = _Datagram()
        dg.frames.append(number)
        if proto >= 0:
            dg.proto = proto
        if dg.broken:
            return None
        if ip_end > end:
            dg.broken = True
            self.problem(
                number,
                "IP fragment cut by the snap length: datagram not reassembled "
                f"(fragments in frames {', '.join(map(str, dg.frames))})",
            )
            return None
        piece = bytes(self.buf[start:ip_end])
        dg.parts[offset] = piece
        dg.size += len(piece)
        dec._frag_bytes += len(piece)
        if not more:
            dg.total = offset + len(piece)
        if dec._frag_bytes > MAX_FRAGMENT_BYTES:
            self._evict()
        if dg.total is None or dg.proto < 0:
            return None
        whole = bytearray()
        for o in sorted(dg.parts):
            part = dg.parts[o]
            if o > len(whole):
                return None  # a hole: wait for the missing fragment
            if o + len(part) > len(whole):
                whole[o:] = part
        if len(whole) < dg.total:
            return None
        del dec._frags[key]
        dec._frag_bytes -= dg.size
        pos = self.base + len(self.extra)
        self.extra += whole[: dg.total]
        return pos, pos + dg.total, dg.proto

    def _evict(self) -> None:
        dec = self.decoder
        while dec._frag_bytes > MAX_FRAGMENT_BYTES // 2 and dec._frags:
            key = next(iter(dec._frags))
            dg = dec._frags.pop(key)
            dec._frag_bytes -= dg.size
            self.problem(
                dg.frames[0],
                "too many pending IP fragments: datagram dropped "
                f"(frames {', '.join(map(str, dg.frames[:10]))})",
            )

    def transport(
        self,
        i: int,
        number: int,
        version: int,
        src_hi: int,
        src_lo: int,
        dst_hi: int,
        dst_lo: int,
        proto: int,
        th: int,
        ip_end: int,
        end: int,
    ) -> None:
        buf = self.buf if th < self.base else self.extra
        at = th if th < self.base else th - self.base
        stop = end if th < self.base else end - self.base
        name = "TCP" if proto == TCP else "UDP"
        need = 20 if proto == TCP else 8
        if ip_end - th < need:
            return  # malformed: the IP payload cannot hold the header
        if at + need > stop:
            self.problem(number, f"{name} header cut by the snap length")
            return
        sport, dport = _U16(buf, at)[0], _U16(buf, at + 2)[0]
        if proto == TCP:
            hlen = (buf[at + 12] >> 4) * 4
            if hlen < 20 or ip_end - th < hlen:
                return  # malformed TCP header length
            seq, ack = _U32(buf, at + 4)[0], _U32(buf, at + 8)[0]
            flags = _U16(buf, at + 12)[0] & 0x1FF
            window = _U16(buf, at + 14)[0]
        else:
            hlen, seq, ack, flags, window = 8, 0, 0, 0, 0
        pay = th + hlen
        self.rows.append(
            (
                number,
                int(self.batch.ts_ns[i]),
                version,
                src_hi,
                src_lo,
                dst_hi,
                dst_lo,
                proto,
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                th,
                pay,
                max(0, end - pay),
                ip_end - pay,
            )
        )

    def icmp_error(
        self, i: int, number: int, family: int, src_hi: int, src_lo: int, at: int, end: int
    ) -> None:
        """An ICMP (`family` 4) or ICMPv6 (6) message at [at:end]: a `QUOTED_TCP` row if it is
        an error quoting a TCP header (icmp_quote.py), else nothing."""
        in_extra = at >= self.base
        buf = self.extra if in_extra else self.buf
        shift = self.base if in_extra else 0
        q = quoted_tcp(buf, at - shift, end - shift, family)
        if q is None:
            return
        t = q.tcp_at
        numbered = q.tcp_bytes >= NUMBERED_BYTES
        sport, dport = _U16(buf, t)[0], _U16(buf, t + 2)[0]
        seq = _U32(buf, t + 4)[0]
        ack, flags, window = 0, 0, 0
        if numbered:
            ack = _U32(buf, t + 8)[0]
            flags = _U16(buf, t + 12)[0] & 0x1FF
            window = _U16(buf, t + 14)[0]
        th = t + shift
        self.rows.append(
            (
                number, int(self.batch.ts_ns[i]), q.version, q.src_hi, q.src_lo, q.dst_hi,
                q.dst_lo, QUOTED_TCP, sport, dport, seq, ack, flags, window, th, th, 0, 0,
            )
        )  # fmt: skip
        reporter = address_text(family, src_hi, src_lo)
        self.icmp[number] = IcmpQuote(q.family, q.type, q.code, reporter, numbered)


def _by_ethertype(et: int, p: int) -> tuple[int, int] | None:
    if et == ETH_IPV4:
        return 4, p
    if et == ETH_IPV6:
        return 6, p
    return None


# -- assembling columns ----------------------------------------------------------------------


def _empty(data: bytes | memoryview) -> PacketColumns:
    return PacketColumns(data, *(np.zeros(0, dtype=t) for _, t in _COLUMNS))


def _rows_to_columns(rows: list[tuple], data: bytes | memoryview) -> PacketColumns:
    fields = list(zip(*rows, strict=True))
    arrays = [np.array(f, dtype=t) for f, (_, t) in zip(fields, _COLUMNS, strict=True)]
    return PacketColumns(data, *arrays)


def _merge(a: PacketColumns, b: PacketColumns) -> PacketColumns:
    """Rows of both, in frame order."""
    merged = {name: np.concatenate([getattr(a, name), getattr(b, name)]) for name, _ in _COLUMNS}
    order = np.argsort(merged["number"], kind="stable")
    icmp = {**a.icmp, **b.icmp}
    return PacketColumns(a.data, **{k: v[order] for k, v in merged.items()}, icmp=icmp)
