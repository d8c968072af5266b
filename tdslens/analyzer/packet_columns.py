"""The TCP and UDP packets of a FrameBatch, decoded down to the transport header, as columns.

This is the contract between link/IP decoding (`analyzer/decode.py`) and the TCP engine
(`analyzer/tcp.py`). Addresses are two uint64 halves so that IPv4 and IPv6 share one column
layout and rows can be grouped with numpy: IPv4 is ``hi = 0, lo = address``; ``ip_version``
tells the two apart (so an IPv4-mapped IPv6 address is never confused with IPv4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TCP = 6
UDP = 17

# TCP flag bits as they sit in the 9-bit flags field (RFC 9293 and RFC 3168).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100


@dataclass(slots=True)
class PacketColumns:
    """One row per TCP or UDP packet, in frame order.

    ``payload_len`` counts the payload bytes present in ``data``; ``payload_wire_len`` is what the
    IP header says the payload was. They differ only when the snap length cut the frame, and the
    difference is a gap the layers above must see. ``tcp_offset`` points at the transport header
    in ``data`` so that rare work (TCP options of a SYN) can be done on demand.
    """

    data: bytes | memoryview
    number: np.ndarray  # int64 frame number
    ts_ns: np.ndarray  # int64
    ip_version: np.ndarray  # uint8: 4 or 6
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray  # uint64
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray  # uint64
    proto: np.ndarray  # uint8: TCP or UDP
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

    def __len__(self) -> int:
        return len(self.number)


def address_text(version: int, hi: int, lo: int) -> str:
    """Printable form of an address held as two uint64 halves."""
    import ipaddress

    if version == 4:
        return str(ipaddress.IPv4Address(lo))
    return str(ipaddress.IPv6Address((hi << 64) | lo))
