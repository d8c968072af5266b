"""DNS (RFC 1035 / 3596): names, compression, CNAME chains, NXDOMAIN, TCP framing."""

from __future__ import annotations

import struct

from tdslens.dissectors import events as ev
from tdslens.dissectors.dns import DnsTcpDirection, cname_chain, parse_dns


def name(n: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 30) -> bytes:
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def response(qname: str, answers: list[bytes], rcode: int = 0) -> bytes:
    head = struct.pack(">HHHHHH", 0x1234, 0x8180 | rcode, 1, len(answers), 0, 0)
    return head + name(qname) + struct.pack(">HH", 1, 1) + b"".join(answers)


def test_cname_chain_to_address_with_compression():
    q = "srv.database.windows.net"
    ptr_q = b"\xc0\x0c"  # the question name at offset 12
    target = name("cr3.westeurope1-a.control.database.windows.net")
    msg = response(q, [rr(ptr_q, 5, target)])
    target_at = len(msg) - len(target)
    msg = response(
        q,
        [rr(ptr_q, 5, target), rr(struct.pack(">H", 0xC000 | target_at), 1, bytes([20, 50, 1, 2]))],
    )
    parsed = parse_dns(msg, frames=(4,))
    assert isinstance(parsed, ev.DnsMessage) and parsed.response and parsed.rcode == 0
    assert parsed.questions == ((q, 1),)
    names, addrs = cname_chain(parsed, q)
    assert names[-1] == "cr3.westeurope1-a.control.database.windows.net"
    assert addrs == ("20.50.1.2",)


def test_aaaa_and_nxdomain():
    aaaa = parse_dns(response("h.example", [rr(b"\xc0\x0c", 28, bytes(15) + b"\x01")]), frames=(1,))
    assert aaaa.addresses() == ("::1",)
    nx = parse_dns(response("missing.example", [], rcode=3), frames=(2,))
    assert nx.rcode == 3 and nx.answers == ()


def test_compression_loop_is_malformed_not_a_hang():
    head = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    looped = head + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # a pointer to itself
    out = parse_dns(looped, frames=(1,))
    assert isinstance(out, ev.Malformed)


def test_truncated_header_and_absurd_counts():
    assert isinstance(parse_dns(b"\x00\x01", frames=(1,)), ev.Malformed)
    head = struct.pack(">HHHHHH", 1, 0x8180, 0xFFFF, 0xFFFF, 0, 0)
    assert isinstance(parse_dns(head, frames=(1,)), ev.Malformed)


def test_dns_over_tcp_length_framing():
    msg = response("a.example", [rr(b"\xc0\x0c", 1, bytes([10, 0, 0, 1]))])
    framed = struct.pack(">H", len(msg)) + msg
    d = DnsTcpDirection()
    out = []
    for i, b in enumerate(framed + framed):
        out += d.feed(bytes([b]), 100 + (i >= len(framed)))
    assert [m.addresses() for m in out] == [("10.0.0.1",), ("10.0.0.1",)]
    assert out[1].offset == len(framed)
    assert d.eof() == []
