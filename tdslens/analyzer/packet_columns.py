"""The TCP and UDP packets of a FrameBatch, decoded down to the transport header, as columns.

This is the contract between link/IP decoding (`analyzer/decode.py`) and the TCP engine
(`analyzer/tcp.py`). Addresses are two uint64 halves so that IPv4 and IPv6 share one column
layout and rows can be grouped with numpy: IPv4 is ``hi = 0, lo = address``; ``ip_version``
tells the two apart (so an IPv4-mapped IPv6 address is never confused with IPv4).

Besides real TCP and UDP packets, a row may be a TCP header quoted inside an ICMP or ICMPv6
error (``proto == QUOTED_TCP``): Wireshark runs its TCP conversation lookup on such a header and
gives the ICMP frame a ``tcp.stream``, so the engine needs them to number streams like it
(docs/tcp.md). Such a row describes the quoted header, never data of a connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TCP = 6
UDP = 17
# Not an IP protocol number: the row is a TCP header quoted inside an ICMP/ICMPv6 error.
QUOTED_TCP = 255

# TCP flag bits as they sit in the 9-bit flags field (RFC 9293 and RFC 3168).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100


@dataclass(frozen=True, slots=True)
class IcmpQuote:
    """The ICMP side of a `QUOTED_TCP` row (the row's columns hold the quoted TCP header).

    `numbered`: the quote holds at least the first 16 bytes of the TCP header (ports to
    window), which is what Wireshark needs to look the conversation up and give the frame a
    ``tcp.stream``; a shorter quote (8 to 15 bytes: ports and sequence number) still names the
    connection, but Wireshark gives it no stream, and its ack, flags and window are 0.
    """

    family: int  # 4: ICMP, 6: ICMPv6 (the message's; the quoted header may be either version)
    type: int
    code: int
    reporter: str  # source address of the ICMP message: a router, a firewall, or the peer
    numbered: bool


@dataclass(slots=True)
class PacketColumns:
    """One row per TCP or UDP packet (or quoted TCP header, see module docstring), frame order.

    ``payload_len`` counts the payload bytes present in ``data``; ``payload_wire_len`` is what the
    IP header says the payload was. They differ only when the snap length cut the frame, and the
    difference is a gap the layers above must see. ``tcp_offset`` points at the transport header
    in ``data`` so that rare work (TCP options of a SYN) can be done on demand. A `QUOTED_TCP`
    row has no payload (both lengths 0) and its ICMP facts in ``icmp``, keyed by frame number.
    """

    data: bytes | memoryview
    number: np.ndarray  # int64 frame number
    ts_ns: np.ndarray  # int64
    ip_version: np.ndarray  # uint8: 4 or 6
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray  # uint64
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray  # uint64
    proto: np.ndarray  # uint8: TCP, UDP or QUOTED_TCP
    sport: np.ndarray  # int32
    dport: np.ndarray  # int32
    seq: np.ndarray  # int64 (uint32 value), 0 for UDP
    ack: np.ndarray  # int64 (uint32 value), 0 for UDP
    flags: np.ndarray  # int32, TCP flag bits above, 0 for UDP
    window: np.ndarray  # int32, raw (unscaled) window, 0 for UDP
    tcp_offset: np.ndarray  # int64, start of the TCP/UDP header in data
    payload_offset: np.ndarray  # int64, start of the payload in data
    payload_len: np.ndarray  # int64, payload bytes captured
    payload_wire_len: np.ndarray  # int64, payload bytes on the wire
    icmp: dict[int, IcmpQuote] = field(default_factory=dict)  # frame -> its QUOTED_TCP facts

    def __len__(self) -> int:
        return len(self.number)

    def take(self, index: slice | np.ndarray) -> PacketColumns:
        """The rows at `index` (a slice or row numbers), sharing `data`."""
        part = {name: getattr(self, name)[index] for name in COLUMNS}
        icmp = self.icmp
        if icmp:
            numbers = set(part["number"].tolist())
            icmp = {k: v for k, v in icmp.items() if k in numbers}
        return PacketColumns(self.data, **part, icmp=dict(icmp))


# The array columns of PacketColumns, in their order.
COLUMNS = (
    "number", "ts_ns", "ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport",
    "dport", "seq", "ack", "flags", "window", "tcp_offset", "payload_offset", "payload_len",
    "payload_wire_len",
)  # fmt: skip


def address_text(version: int, hi: int, lo: int) -> str:
    """Printable form of an address held as two uint64 halves."""
    import ipaddress

    if version == 4:
        return str(ipaddress.IPv4Address(lo))
    return str(ipaddress.IPv6Address((hi << 64) | lo))
