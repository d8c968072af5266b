"""A tiny authoritative DNS responder for the lab's made-up ``*.database.windows.net`` names.

It answers A queries from a fixed table, NODATA for other types of known names, NXDOMAIN for the
rest, and logs every query so the expected files know which lookups happened and what they got.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time
from collections.abc import Callable
from typing import Any

QTYPE_NAMES = {1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 33: "SRV", 65: "HTTPS"}


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    labels = []
    while True:
        n = msg[pos]
        if n == 0:
            return ".".join(labels), pos + 1
        if n & 0xC0:  # queries do not compress, but be safe
            raise ValueError("compressed name in question")
        labels.append(msg[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


class DnsResponder(asyncio.DatagramProtocol):
    """UDP DNS server answering from ``records`` (lower-case name -> IPv4 address)."""

    def __init__(self, records: dict[str, str], log: Callable[[dict[str, Any]], None]) -> None:
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply, entry = self.answer(data)
        except (ValueError, IndexError, struct.error) as exc:
            self.log({"event": "dns_bad_query", "client": list(addr), "error": str(exc)})
            return
        if self.transport is None:
            return
        self.transport.sendto(reply, addr)
        sock = self.transport.get_extra_info("sockname")
        entry.update(client=[addr[0], addr[1]], server=[sock[0], sock[1]], time=time.time())
        self.log(entry)

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        qid, _flags, qdcount = struct.unpack_from(">HHH", data)
        if qdcount != 1:
            raise ValueError(f"{qdcount} questions")
        name, pos = _read_name(data, 12)
        qtype, qclass = struct.unpack_from(">HH", data, pos)
        question = data[12 : pos + 4]
        key = name.lower().rstrip(".")
        address = self.records.get(key)
        answers = b""
        if address is None:
            rcode, result = 3, "NXDOMAIN"
        elif qtype == 1:
            rcode, result = 0, address
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4)
            answers += ipaddress.IPv4Address(address).packed
        else:
            rcode, result = 0, "NODATA"
        # QR, AA, RD copied, RA; rcode
        flags = 0x8000 | 0x0400 | (_flags & 0x0100) | 0x0080 | rcode
        header = struct.pack(">HHHHHH", qid, flags, 1, 1 if answers else 0, 0, 0)
        entry = {
            "event": "dns_query",
            "id": qid,
            "name": name,
            "qtype": QTYPE_NAMES.get(qtype, str(qtype)),
            "qclass": qclass,
            "rcode": "NXDOMAIN" if rcode == 3 else "NOERROR",
            "answer": result if rcode == 0 and answers else None,
        }
        return header + question + answers, entry
