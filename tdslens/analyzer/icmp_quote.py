"""TCP headers quoted inside ICMP and ICMPv6 errors: finding them, and naming the errors.

Why: an ICMP error carries the start of the packet it is about, and Wireshark runs its TCP
dissector on that quoted header. The conversation lookup this makes gives the ICMP frame a
``tcp.stream`` (and, when no conversation matches, a new one, shifting every later index), so
the decoder hands such headers to the TCP engine as `QUOTED_TCP` rows. For support work they
are evidence too: a firewall that rejects the redirected leg with "administratively prohibited"
says so in one of these.

Which quotes Wireshark 4.0 dissects, as established with crafted captures (docs/tcp.md):

* ICMP types 3 (unreachable), 4 (source quench), 11 (time exceeded), 12 (parameter problem);
  not 5 (redirect: Wireshark reads its quote only up to the sequence number), never queries.
  ICMPv6 types 1 to 4, and the Redirected Header option of an ND Redirect (137).
* The quoted datagram: IPv4 (header length >= 20, not a fragment; an ICMPv4 message may also
  quote IPv6) or IPv6 (payload length not 0; extension headers walked, only an atomic fragment
  header passes); an ICMP error quoted inside an ICMP error is followed too.
* At least 16 bytes of the TCP header (ports to window) inside both the captured bytes and the
  quoted IP length, for a stream. Shorter quotes of at least 8 bytes (ports and sequence
  number, RFC 792's minimum) get no stream but still name the connection.

The RFC 4884 length field is ignored (Wireshark honours it only from 128 bytes on, which always
leaves the 16 bytes). Everything here is plain Python: ICMP errors are rare, and the decoder's
slow path calls `quoted_tcp` once per such frame.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from tdslens.analyzer.packet_columns import TCP
from tdslens.analyzer.tcp_events import IcmpError

ICMP, ICMPV6 = 1, 58
ICMP_ERRORS = frozenset({3, 4, 11, 12})
ICMPV6_ERRORS = frozenset({1, 2, 3, 4})
ND_REDIRECT = 137
ICMPV6_QUOTING = ICMPV6_ERRORS | {ND_REDIRECT}
NUMBERED_BYTES = 16  # TCP header bytes Wireshark reads before it looks the conversation up
MIN_BYTES = 8  # ports and sequence number: RFC 792's minimum quote
_IPV6_EXT = (0, 43, 60, 51, 44)
_MAX_NESTING = 4

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_Q2 = struct.Struct(">QQ").unpack_from


class QuotedTcp(NamedTuple):
    """Where a quoted TCP header is, and what quotes it. Offsets index the buffer given."""

    type: int  # of the frame's ICMP message (the outer one, if errors are nested)
    code: int
    family: int  # 4 or 6: that message's
    version: int  # 4 or 6: the quoted IP header's
    src_hi: int
    src_lo: int
    dst_hi: int
    dst_lo: int
    tcp_at: int
    tcp_bytes: int  # bytes of the TCP header readable (captured and within the quoted IP length)


def quoted_tcp(buf: bytes | memoryview, at: int, end: int, family: int) -> QuotedTcp | None:
    """The TCP header an ICMP (`family` 4) or ICMPv6 (6) message at buf[at:end] quotes, if
    Wireshark would dissect it and at least `MIN_BYTES` of it are there; else None. Type and
    code are this message's, also when the TCP header sits in an ICMP error it quotes."""
    if at + 8 > end:
        return None
    kind, code = buf[at], buf[at + 1]
    inner = _quote_start(buf, at, end, family)
    if inner is None:
        return None
    return _datagram(buf, inner[0], inner[1], family, (kind, code, family), 0)


def _quote_start(buf: bytes | memoryview, at: int, end: int, family: int) -> tuple[int, int] | None:
    """Where the datagram an ICMP error quotes starts and ends, if it is an error that quotes."""
    if at + 8 > end:
        return None
    kind = buf[at]
    if family == 4:
        return (at + 8, end) if kind in ICMP_ERRORS else None
    if kind in ICMPV6_ERRORS:
        return at + 8, end
    if kind != ND_REDIRECT:
        return None
    p = at + 40  # type, code, checksum, reserved, target, destination; then options
    while p + 8 <= end:
        length = buf[p + 1] * 8
        if length == 0:
            return None  # malformed: an option cannot be empty
        if buf[p] == 4:  # Redirected Header: 6 reserved bytes, then the packet
            return p + 8, min(end, p + length)
        p += length
    return None


def _datagram(
    buf: bytes | memoryview,
    p: int,
    end: int,
    family: int,
    outer: tuple[int, int, int],
    depth: int,
) -> QuotedTcp | None:
    """The quoted IP datagram at buf[p:end], quoted by an ICMP message of `family`."""
    if p >= end:
        return None
    version = buf[p] >> 4
    if version == 4 and family == 4:  # (Wireshark's ICMPv6 does not dissect quoted IPv4)
        if p + 20 > end:
            return None
        ihl = (buf[p] & 0x0F) * 4
        total = _U16(buf, p + 2)[0]
        if ihl < 20 or p + ihl > end or _U16(buf, p + 6)[0] & 0x3FFF:  # bogus, or a fragment
            return None
        limit = end if total == 0 else min(end, p + total)  # 0: as Wireshark, the bytes there
        proto, q = buf[p + 9], p + ihl
        src_hi, src_lo, dst_hi, dst_lo = 0, _U32(buf, p + 12)[0], 0, _U32(buf, p + 16)[0]
    elif version == 6:
        if p + 40 > end:
            return None
        plen = _U16(buf, p + 4)[0]
        if plen == 0:
            return None
        limit = min(end, p + 40 + plen)
        src_hi, src_lo = _Q2(buf, p + 8)
        dst_hi, dst_lo = _Q2(buf, p + 24)
        proto, q = buf[p + 6], p + 40
        while proto in _IPV6_EXT:
            if q + 8 > limit:
                return None
            if proto == 44:
                if _U16(buf, q + 2)[0] & 0xFFF9:  # not an atomic fragment
                    return None
                size = 8
            elif proto == 51:
                size = (buf[q + 1] + 2) * 4
            else:
                size = (buf[q + 1] + 1) * 8
            proto, q = buf[q], q + size
    else:
        return None
    kind, code, outer_family = outer
    if proto == TCP:
        if limit - q < MIN_BYTES:
            return None
        return QuotedTcp(
            kind, code, outer_family, version, src_hi, src_lo, dst_hi, dst_lo, q, limit - q
        )
    if proto in (ICMP, ICMPV6) and depth < _MAX_NESTING:  # an ICMP error about an ICMP error
        inner_family = 4 if proto == ICMP else 6
        inner = _quote_start(buf, q, limit, inner_family)
        if inner is not None:
            return _datagram(buf, inner[0], inner[1], inner_family, outer, depth + 1)
    return None


# Short names, after Wireshark's and the IANA registries' (code names for the common types).
_TYPES = {
    4: {3: "unreachable", 4: "source quench", 11: "time exceeded", 12: "parameter problem"},
    6: {1: "unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem",
        137: "redirect"},
}  # fmt: skip
_CODES = {
    (4, 3): ("network", "host", "protocol", "port", "fragmentation needed", "source route failed",
             "network unknown", "host unknown", "source host isolated",
             "network admin prohibited", "host admin prohibited", "network unreachable for TOS",
             "host unreachable for TOS", "admin prohibited", "host precedence violation",
             "precedence cutoff"),
    (4, 11): ("ttl", "fragment reassembly"),
    (4, 12): ("pointer", "missing option", "bad length"),
    (6, 1): ("no route", "admin prohibited", "beyond scope", "address", "port",
             "source policy", "reject route", "source routing header"),
    (6, 3): ("hop limit", "fragment reassembly"),
    (6, 4): ("header field", "next header", "option"),
}  # fmt: skip


def describe(family: int, kind: int, code: int) -> str:
    """E.g. "unreachable (admin prohibited)": the type's short name and, if it has names for
    its codes, the code's (else its number)."""
    name = _TYPES.get(family, {}).get(kind, f"type {kind}")
    codes = _CODES.get((family, kind))
    if codes is None:
        return name if code == 0 else f"{name} (code {code})"
    return f"{name} ({codes[code] if code < len(codes) else f'code {code}'})"


def error_name(e: IcmpError) -> str:
    """E.g. "ICMP unreachable (admin prohibited)"."""
    return f"{'ICMP' if e.family == 4 else 'ICMPv6'} {describe(e.family, e.type, e.code)}"


def error_text(e: IcmpError) -> str:
    """The error as evidence: "ICMP unreachable (admin prohibited) from 10.0.0.1 (frame 4)"."""
    return f"{error_name(e)} from {e.reporter} (frame {e.frame})"
