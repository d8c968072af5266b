"""DNS messages (RFC 1035, AAAA from RFC 3596): what the client asked and what it was told.

Why DNS in a TDS tool: an Azure SQL redirect names a host (ENVCHANGE routing); whether the
client could resolve it, and to which address, is often the whole story of a failed second leg.

UDP carries one message per datagram (``parse_dns``); TCP prefixes each message with a 2-byte
length (``DnsTcpDirection``). Names may use compression pointers; we follow at most
``MAX_POINTERS`` of them and only backwards, so a crafted loop cannot hang us.
"""

from __future__ import annotations

import ipaddress
import struct
from enum import IntEnum

from .buffer import ReceiveBuffer
from .events import DnsAnswer, DnsMessage, Event, Malformed, MalformedCode

HEADER = struct.Struct(">HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
RR_FIXED = struct.Struct(">HHIH")  # type, class, ttl, rdlength
MAX_POINTERS = 32
MAX_NAME = 255
MAX_RECORDS = 512  # more than any real answer; stops a crafted count from costing time
TCP_LEN = struct.Struct(">H")


class RRType(IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    MX = 15
    TXT = 16
    AAAA = 28
    SRV = 33


class Rcode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


class _Bad(Exception):
    pass


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """Read a possibly compressed name at ``pos``; return it and the position after it."""
    labels: list[str] = []
    end = -1  # position after the name in the original place (before the first pointer)
    jumps = 0
    size = 0
    while True:
        if pos >= len(data):
            raise _Bad("name runs past the message")
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise _Bad("compression pointer cut short")
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > MAX_POINTERS or target >= pos:
                raise _Bad("compression pointer loops or points forward")
            pos = target
            continue
        if n & 0xC0:
            raise _Bad(f"label type 0x{n & 0xC0:02x} is not supported")
        label = data[pos + 1 : pos + 1 + n]
        if len(label) < n:
            raise _Bad("label runs past the message")
        size += n + 1
        if size > MAX_NAME:
            raise _Bad("name longer than 255 bytes")
        labels.append(label.decode("ascii", "replace"))
        pos += 1 + n
    return ".".join(labels), end if end >= 0 else pos


def parse_dns(data: bytes, *, frames: tuple[int, ...], offset: int = 0) -> DnsMessage | Malformed:
    """One DNS message (a UDP payload, or a TCP message without its length prefix)."""
    try:
        if len(data) < HEADER.size:
            raise _Bad(f"{len(data)} bytes, the header needs {HEADER.size}")
        ident, flags, qd, an, _ns, _ar = HEADER.unpack_from(data)
        if qd + an > MAX_RECORDS:
            raise _Bad(f"{qd} questions and {an} answers is beyond any real message")
        pos = HEADER.size
        questions: list[tuple[str, int]] = []
        for _ in range(qd):
            name, pos = _name(data, pos)
            if pos + 4 > len(data):
                raise _Bad("question cut short")
            qtype = struct.unpack_from(">H", data, pos)[0]
            pos += 4
            questions.append((name, qtype))
        answers: list[DnsAnswer] = []
        for _ in range(an):
            name, pos = _name(data, pos)
            if pos + RR_FIXED.size > len(data):
                raise _Bad("answer record cut short")
            rtype, _cls, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
            pos += RR_FIXED.size
            rdata = data[pos : pos + rdlen]
            if len(rdata) < rdlen:
                raise _Bad("answer data runs past the message")
            if rtype == RRType.A and rdlen == 4:
                value = str(ipaddress.IPv4Address(rdata))
            elif rtype == RRType.AAAA and rdlen == 16:
                value = str(ipaddress.IPv6Address(rdata))
            elif rtype in (RRType.CNAME, RRType.NS, RRType.PTR):
                value = _name(data, pos)[0]
            else:
                value = rdata.hex()
            pos += rdlen
            answers.append(DnsAnswer(name=name, type=rtype, ttl=ttl, value=value))
    except _Bad as e:
        return Malformed(
            frames=frames, offset=offset, code=MalformedCode.BAD_LENGTH, what="DNS", detail=str(e)
        )
    return DnsMessage(
        frames=frames,
        offset=offset,
        id=ident,
        response=bool(flags & 0x8000),
        rcode=flags & 0x000F,
        questions=tuple(questions),
        answers=tuple(answers),
    )


def cname_chain(msg: DnsMessage, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Follow CNAMEs from ``name``; return (names visited, final addresses)."""
    seen = [name.lower().rstrip(".")]
    by_name: dict[str, list[DnsAnswer]] = {}
    for a in msg.answers:
        by_name.setdefault(a.name.lower().rstrip("."), []).append(a)
    for _ in range(MAX_POINTERS):
        recs = by_name.get(seen[-1], [])
        cname = next((a.value for a in recs if a.type == RRType.CNAME), None)
        if cname is None or cname.lower() in seen:
            break
        seen.append(cname.lower().rstrip("."))
    addrs = tuple(a.value for a in by_name.get(seen[-1], []) if a.type in (RRType.A, RRType.AAAA))
    return tuple(seen), addrs


class DnsTcpDirection:
    """DNS over TCP: 2-byte length-prefixed messages in one direction's byte stream."""

    def __init__(self) -> None:
        self.buf = ReceiveBuffer(cap=0xFFFF + TCP_LEN.size)
        self.lost = False  # after a gap: framing cannot be recovered

    def feed(self, data: bytes, frame: int) -> list[Event]:
        if self.lost:
            return []
        self.buf.add(data, frame)
        out: list[Event] = []
        buf = self.buf
        while buf.ready():
            if len(buf) < 2:
                buf.need = 2
                break
            n = buf.unpack(TCP_LEN)[0]
            if len(buf) < 2 + n:
                buf.need = 2 + n
                break
            frames, offset = buf.frames(2 + n), buf.offset
            out.append(parse_dns(buf.take(2 + n)[2:], frames=frames, offset=offset))
        return out

    def gap(self, length: int, frame: int) -> list[Event]:
        """Framing is lost for good after a gap (no way to find a length prefix again)."""
        self.buf.advance_stream(length)
        self.lost = True
        return [
            Malformed(
                frames=(frame,), offset=self.buf.offset, code=MalformedCode.LOST_SYNC, what="DNS",
                detail=f"{length} bytes missing; DNS over TCP cannot resynchronise",
            )
        ]  # fmt: skip

    def eof(self) -> list[Event]:
        if len(self.buf):
            return [
                Malformed(
                    frames=self.buf.frames(len(self.buf)), offset=self.buf.offset,
                    code=MalformedCode.TRUNCATED, what="DNS", detail="stream ended mid-message",
                )
            ]  # fmt: skip
        return []
