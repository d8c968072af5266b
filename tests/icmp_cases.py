"""Crafted captures with ICMP/ICMPv6 errors that quote TCP headers (tests only).

Each case is a situation probed in tshark 4.0.17 (docs/tcp.md): `CASES` maps a name to a
function writing the capture. tests/test_tcp_icmp.py compares every frame's tcp.stream with
tshark's, tests/test_decode.py the decoded quotes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import craft
from craft import Rec
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_Redirect,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptRedirectedHdr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import CookedLinux, Dot1Q, Ether
from scapy.packet import Packet, Raw

CLIENT, CLIENT2, SERVER, FIREWALL = "10.1.0.1", "10.1.0.3", "10.2.0.2", "10.1.0.254"
CLIENT6, SERVER6, ROUTER6 = "2001:db8::1", "2001:db8::2", "2001:db8::fe"
GATEWAY_PORT, WORKER_PORT = 1433, 11042
START_NS = 1_700_000_000_000_000_000

Address = tuple[str, int]


def eth(**kw: object) -> Packet:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw)


def ip(src: str, dst: str, **kw: object) -> Packet:
    return IPv6(src=src, dst=dst, **kw) if ":" in src else IP(src=src, dst=dst, **kw)


def segment(
    src: Address, dst: Address, flags: str, seq: int, ack: int = 0, data: bytes = b""
) -> Packet:
    """An IP packet carrying one TCP segment."""
    pkt = ip(src[0], dst[0]) / TCP(
        sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack, window=8192
    )
    return pkt / Raw(data) if data else pkt


def quote(packet: Packet, tcp_bytes: int | None = None) -> bytes:
    """What an ICMP error quotes of `packet`: all of it, or its IP header and `tcp_bytes`."""
    raw = bytes(packet)
    if tcp_bytes is None:
        return raw
    return raw[: (40 if raw[0] >> 4 == 6 else (raw[0] & 0x0F) * 4) + tcp_bytes]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp(reporter: str, to: str, quoted: bytes, kind: int = 3, code: int = 13) -> Packet:
    """An ICMPv4 message (type `kind`) from `reporter` quoting `quoted`, built by hand so any
    type carries the quote."""
    body = struct.pack(">BBHI", kind, code, 0, 0) + quoted
    body = body[:2] + struct.pack(">H", _checksum(body)) + body[4:]
    return IP(src=reporter, dst=to, proto=1) / Raw(body)


class Capture:
    """Frames with timestamps 1 ms apart unless told; written as pcap."""

    def __init__(self, linktype: int = 1) -> None:
        self.linktype = linktype
        self.ts = START_NS
        self.recs: list[Rec] = []

    def add(self, packet: Packet | bytes, gap_s: float = 0.001, link: bool = True) -> None:
        """Append a frame; `link` wraps an IP packet in Ethernet (linktype 1)."""
        self.ts += int(gap_s * 1e9)
        frame = eth() / packet if link and self.linktype == 1 else packet
        self.recs.append(Rec(frame, ts_ns=self.ts))

    def tcp(self, src: Address, dst: Address, flags: str, seq: int, ack: int = 0,
            data: bytes = b"", gap_s: float = 0.001) -> Packet:  # fmt: skip
        pkt = segment(src, dst, flags, seq, ack, data)
        self.add(pkt, gap_s)
        return pkt

    def handshake(self, c: Address, s: Address, isn_c: int, isn_s: int) -> None:
        self.tcp(c, s, "S", isn_c)
        self.tcp(s, c, "SA", isn_s, isn_c + 1)
        self.tcp(c, s, "A", isn_c + 1, isn_s + 1)

    def session(self, c: Address, s: Address, isn_c: int = 100, isn_s: int = 900) -> None:
        """A whole well-behaved connection: handshake, a request, an answer, FINs."""
        self.handshake(c, s, isn_c, isn_s)
        self.tcp(c, s, "PA", isn_c + 1, isn_s + 1, b"\x12\x01\x00\x08\x00\x00\x01\x00")
        self.tcp(s, c, "PA", isn_s + 1, isn_c + 9, b"\x04\x01\x00\x08\x00\x00\x01\x00")
        self.tcp(c, s, "FA", isn_c + 9, isn_s + 9)
        self.tcp(s, c, "FA", isn_s + 9, isn_c + 10)
        self.tcp(c, s, "A", isn_c + 10, isn_s + 10)

    def write(self, path: Path) -> Path:
        return craft.write_pcap(path, self.recs, linktype=self.linktype)


CASES: dict[str, Callable[[Path], Path]] = {}


def case(fn: Callable[[Capture], None], linktype: int = 1) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        cap = Capture(linktype)
        fn(cap)
        return cap.write(path)

    CASES[fn.__name__] = write
    return write


c, c2, s = (CLIENT, 50000), (CLIENT2, 50000), (SERVER, WORKER_PORT)
gw = (SERVER, GATEWAY_PORT)


@case
def redirect_leg_rejected(cap: Capture) -> None:
    """The domain case: the worker leg's SYNs are rejected by a firewall, full quotes."""
    cap.session(c, gw)
    for _ in range(3):
        syn = cap.tcp((CLIENT, 50001), s, "S", 7000, gap_s=0.2)
        cap.add(icmp(FIREWALL, CLIENT, quote(syn)))
    cap.session(c2, gw, 300, 800)  # a later stream: its index must not shift


@case
def redirect_leg_rejected_8_bytes(cap: Capture) -> None:
    """RFC 792 routers quote 8 TCP bytes: no tcp.stream for the ICMP frames."""
    cap.session(c, gw)
    syn = cap.tcp((CLIENT, 50001), s, "S", 7000)
    cap.add(icmp(FIREWALL, CLIENT, quote(syn, 8), code=10))
    cap.add(icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 50002), s, "S", 1), 8)))  # no conn
    cap.session(c2, gw, 300, 800)


@case
def quote_without_conversation(cap: Capture) -> None:
    """A quote no conversation matches gets a new stream; a SYN with its ISN joins it, as does
    one with another ISN (quotes set no base sequence number), then a new ISN starts another."""
    cap.session(c2, gw)
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, s, "S", 1000))))
    cap.tcp(c, s, "S", 1000)
    cap.tcp(c, s, "S", 2000)
    cap.add(icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 50010), s, "S", 1000))))
    cap.tcp((CLIENT, 50010), s, "S", 3000)  # other ISN than quoted: still the quote's stream
    cap.tcp((CLIENT, 50010), s, "S", 3000)
    cap.add(icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 50011), s, "PA", 10, 5, b"data"))))
    cap.add(icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 50011), s, "S", 99))))  # same stream
    cap.add(icmp(FIREWALL, SERVER, quote(segment(s, (CLIENT, 50011), "SA", 5, 100))))
    cap.tcp((CLIENT, 50011), s, "S", 4000)
    cap.session((CLIENT, 50012), gw)


@case
def quote_lengths(cap: Capture) -> None:
    """Quotes of 0 to 20 TCP bytes, bounded by the capture and by the quoted IP length."""
    for i, n in enumerate((0, 4, 7, 8, 12, 15, 16, 19, 20)):
        cap.add(icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 40000 + i), s, "S", 1), n)))
    for i, length in enumerate((35, 36, 0)):  # 15 and 16 TCP bytes by the IP length; 0: TSO
        raw = bytearray(quote(segment((CLIENT, 40100 + i), s, "S", 1)))
        raw[2:4] = struct.pack(">H", length)
        cap.add(icmp(FIREWALL, CLIENT, bytes(raw)))
    full = eth() / icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 40200), s, "S", 1)))
    cap.recs.append(craft.truncated(full, 14 + 20 + 8 + 20 + 12, ts_ns=cap.ts + 1))  # snap
    cap.ts += 1
    cap.session(c2, gw)


@case
def quoted_syn_with_new_isn(cap: Capture) -> None:
    """A quoted pure SYN whose ISN differs from its sender's known base starts a new stream, as
    a real one would; the real retransmission of the old SYN then joins the new stream."""
    cap.tcp(c, s, "S", 1000)
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, s, "S", 3000))))
    cap.tcp(c, s, "S", 1000)
    cap.session(c2, gw)


@case
def port_reuse_after_close(cap: Capture) -> None:
    """After FIN and after RST: a quoted SYN with a new ISN starts a stream, with the old ISN it
    stays in the old one."""
    cap.session(c, gw, 100, 900)
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, gw, "S", 100))))  # same ISN: old stream
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, gw, "S", 7000))))  # new ISN: new stream
    cap.tcp(c, gw, "S", 7000)
    cap.tcp(c2, s, "S", 1000)
    cap.tcp(s, c2, "RA", 0, 1001)
    cap.add(icmp(FIREWALL, CLIENT2, quote(segment(c2, s, "S", 8000))))
    cap.tcp(c2, s, "S", 8000)
    cap.tcp(c2, s, "S", 9000)
    cap.session((CLIENT, 50020), gw)


@case
def quoted_server_packets(cap: Capture) -> None:
    """Errors sent to the server about its packets; a SYN-ACK (quoted or real) with another ISN
    moves its sender's base, so a later SYN from that side with that ISN stays in the stream."""
    cap.tcp(c, s, "S", 1000)
    cap.tcp(s, c, "SA", 5000, 1001)
    cap.add(icmp(FIREWALL, SERVER, quote(segment(s, c, "SA", 5000, 1001)), kind=11, code=0))
    cap.add(icmp(FIREWALL, SERVER, quote(segment(s, c, "SA", 6000, 1001))))
    cap.add(icmp(FIREWALL, SERVER, quote(segment(s, c, "S", 6000))))  # base 6000: same stream
    cap.tcp(s, c, "S", 6000)
    cap.add(icmp(FIREWALL, SERVER, quote(segment(s, c, "S", 6500))))  # new stream
    cap.tcp(c2, s, "S", 1)
    cap.tcp(s, c2, "SA", 50, 2)
    cap.tcp(s, c2, "SA", 60, 2)  # real: base 60 now
    cap.tcp(s, c2, "S", 60)  # same stream
    cap.tcp(s, c2, "S", 70)  # new stream
    cap.session((CLIENT, 50030), gw)


@case
def icmp_types(cap: Capture) -> None:
    """Which ICMPv4 types quote: 3, 4, 11, 12; not redirect (5), echo, timestamp."""
    for i, (kind, code) in enumerate(
        ((3, 13), (3, 3), (3, 4), (4, 0), (5, 1), (11, 0), (11, 1), (12, 0), (0, 0), (8, 0),
         (13, 0), (3, 9), (3, 10))
    ):  # fmt: skip
        quoted = quote(segment((CLIENT, 41000 + i), s, "S", 1000))
        cap.add(icmp(FIREWALL, CLIENT, quoted, kind, code))
    cap.add(IP(src=CLIENT, dst=FIREWALL) / ICMP(type=8) / Raw(quote(segment(c, s, "S", 1))))
    cap.add(IP(src=FIREWALL, dst=CLIENT) / ICMP(type=0) / Raw(quote(segment(c, s, "S", 2))))
    cap.session(c2, gw)


@case
def icmpv6_errors(cap: Capture) -> None:
    """ICMPv6 types 1 to 4 and the ND Redirect's redirected header quote; echo does not."""
    c6, s6 = (CLIENT6, 50000), (SERVER6, WORKER_PORT)
    syn = cap.tcp(c6, s6, "S", 1000)
    cap.add(IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6DestUnreach(code=1) / Raw(quote(syn)))
    cap.add(IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6DestUnreach(code=1) / Raw(quote(syn, 8)))
    for i, layer in enumerate(
        (ICMPv6DestUnreach(code=4), ICMPv6PacketTooBig(mtu=1280), ICMPv6TimeExceeded(),
         ICMPv6ParamProblem(), ICMPv6EchoRequest())
    ):  # fmt: skip
        quoted = quote(segment((CLIENT6, 42000 + i), s6, "S", 1000))
        cap.add(IPv6(src=ROUTER6, dst=CLIENT6) / layer / Raw(quoted))
    redirected = ICMPv6NDOptRedirectedHdr(pkt=quote(segment((CLIENT6, 42010), s6, "S", 1)))
    cap.add(
        IPv6(src=ROUTER6, dst=CLIENT6)
        / ICMPv6ND_Redirect(tgt="2001:db8::9", dst=SERVER6)
        / ICMPv6NDOptDstLLAddr()
        / redirected
    )
    ext = IPv6(src=ROUTER6, dst=CLIENT6) / IPv6ExtHdrDestOpt() / ICMPv6DestUnreach(code=1)
    cap.add(ext / Raw(quote(segment((CLIENT6, 42011), s6, "S", 1))))  # outer extension header
    cap.session((CLIENT6, 43000), (SERVER6, GATEWAY_PORT))


@case
def encapsulations(cap: Capture) -> None:
    """ICMP errors behind one and two VLAN tags."""
    one = icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 44000), s, "S", 1)))
    two = icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 44001), s, "S", 1)))
    cap.add(eth() / Dot1Q(vlan=5) / one, link=False)
    cap.add(eth() / Dot1Q(vlan=5) / Dot1Q(vlan=6) / two, link=False)
    cap.session(c2, gw)


def _linux_cooked(cap: Capture) -> None:
    """ICMP and ICMPv6 errors on Linux cooked capture (SLL)."""
    q4 = icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 45000), s, "S", 1)))
    q6 = (
        IPv6(src=ROUTER6, dst=CLIENT6)
        / ICMPv6DestUnreach(code=1)
        / Raw(quote(segment((CLIENT6, 45001), (SERVER6, WORKER_PORT), "S", 1)))
    )
    cap.add(CookedLinux(proto=0x0800) / q4)
    cap.add(CookedLinux(proto=0x86DD) / q6)
    cap.add(CookedLinux(proto=0x0800) / segment(c2, gw, "S", 5))


_linux_cooked.__name__ = "linux_cooked"
case(_linux_cooked, linktype=113)


@case
def not_tcp(cap: Capture) -> None:
    """Errors quoting UDP (a DNS query) or an unknown protocol never touch TCP numbering."""
    dns = IP(src=CLIENT, dst=SERVER) / UDP(sport=53000, dport=53) / Raw(b"\x12\x34" + bytes(10))
    cap.add(icmp(FIREWALL, CLIENT, bytes(dns), code=3))
    cap.add(icmp(FIREWALL, CLIENT, bytes(IP(src=CLIENT, dst=SERVER, proto=47) / Raw(bytes(20)))))
    cap.add(icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 46000), s, "S", 1))))
    cap.session(c2, gw)


@case
def odd_quoted_datagrams(cap: Capture) -> None:
    """Quoted IPv4 options, fragments, bogus header length, IPv6 inside ICMPv4, nested errors,
    quoted IPv6 extension headers and fragments, IPv6 payload length 0."""
    rr = IPOption_RR(routers=["0.0.0.0"])
    tcp = TCP(dport=WORKER_PORT, flags="S", seq=1)
    quoted4 = [
        IP(src=CLIENT, dst=SERVER, options=[rr]) / TCP(sport=47000, dport=WORKER_PORT, flags="S"),
        IP(src=CLIENT, dst=SERVER, flags="MF") / TCP(sport=47001, dport=WORKER_PORT, flags="S"),
        IP(src=CLIENT, dst=SERVER, frag=10, proto=6) / Raw(bytes(tcp)),
        IP(src=CLIENT, dst=SERVER, flags="DF") / TCP(sport=47003, dport=WORKER_PORT, flags="S"),
        IPv6(src=CLIENT6, dst=SERVER6) / TCP(sport=47004, dport=WORKER_PORT, flags="S"),
    ]
    for packet in quoted4:
        cap.add(icmp(FIREWALL, CLIENT, bytes(packet)))
    bogus = bytearray(quote(segment((CLIENT, 47005), s, "S", 1)))
    bogus[0] = 0x44  # header length 16
    cap.add(icmp(FIREWALL, CLIENT, bytes(bogus)))
    dataofs = IP(src=CLIENT, dst=SERVER) / TCP(sport=47006, dport=WORKER_PORT, dataofs=2)
    cap.add(icmp(FIREWALL, CLIENT, bytes(dataofs)))  # bogus TCP header length: still numbered
    inner = icmp(FIREWALL, CLIENT, quote(segment((CLIENT, 47007), s, "S", 1)))
    cap.add(icmp(FIREWALL, CLIENT, bytes(inner)))  # an error about an error
    s6 = (SERVER6, WORKER_PORT)
    quoted6 = [
        IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrDestOpt() / TCP(sport=48000, dport=s6[1]),
        IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(m=0, offset=0, id=1)
        / TCP(sport=48001, dport=s6[1]),
        IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(m=1, offset=0, id=2)
        / TCP(sport=48002, dport=s6[1]),
        IPv6(src=CLIENT6, dst=SERVER6, plen=0) / TCP(sport=48003, dport=s6[1]),
        IP(src=CLIENT, dst=SERVER) / TCP(sport=48004, dport=s6[1]),  # ICMPv6 quoting IPv4
    ]  # fmt: skip
    for packet in quoted6:
        cap.add(IPv6(src=ROUTER6, dst=CLIENT6) / ICMPv6DestUnreach(code=1) / Raw(bytes(packet)))
    cap.session(c2, gw)


@case
def fragmented_error(cap: Capture) -> None:
    """An ICMP error too big for one frame: Wireshark dissects it in the last fragment."""
    quoted = quote(segment((CLIENT, 49300), s, "PA", 1, 2, b"y" * 1400))
    big = icmp(FIREWALL, CLIENT, quoted)
    big[IP].id = 77
    for part in fragment(big, fragsize=600):
        cap.add(part)
    cap.session(c2, gw)


@case
def quoted_data_is_not_data(cap: Capture) -> None:
    """Errors quoting data segments, sent and unsent: follow,tcp,raw and the byte counts see
    only the real segments."""
    cap.handshake(c, s, 1000, 5000)
    sent = cap.tcp(c, s, "PA", 1001, 5001, b"hello")
    cap.add(icmp(FIREWALL, CLIENT, quote(sent), kind=11, code=0))
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, s, "PA", 1006, 5001, b"QUOTED")), code=4))
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, s, "FA", 1006, 5001))))
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, s, "RA", 1006, 5001))))
    cap.tcp(c, s, "PA", 1006, 5001, b"world")
    cap.tcp(s, c, "PA", 5001, 1011, b"answer")
    cap.tcp(c, s, "FA", 1011, 5007)
    cap.tcp(s, c, "FA", 5007, 1012)
    cap.tcp(c, s, "A", 1012, 5008)
    cap.session(c2, gw)


@case
def late_error_after_close(cap: Capture) -> None:
    """An error arriving after its connection was summarised keeps the stream (continued)."""
    cap.session(c, gw)
    cap.add(icmp(FIREWALL, CLIENT, quote(segment(c, gw, "A", 110, 910))), gap_s=30.0)
    cap.session(c2, gw)


@case
def many_connections_with_errors(cap: Capture) -> None:
    """Well-behaved connections (the engine keeps them as table rows when no payload is read)
    with errors quoting them mid-connection, one a SYN with a new ISN in the middle of an
    established connection (Wireshark starts a new stream there)."""
    for i in range(12):
        cli = (CLIENT, 51000 + i)
        cap.handshake(cli, gw, 100 + i, 900 + i)
        cap.tcp(cli, gw, "PA", 101 + i, 901 + i, b"\x12\x01\x00\x08\x00\x00\x01\x00")
        if i % 3 == 0:
            cap.add(icmp(FIREWALL, CLIENT, quote(segment(cli, gw, "A", 101 + i, 901 + i)), 4, 0))
        if i == 7:
            cap.add(icmp(FIREWALL, CLIENT, quote(segment(cli, gw, "S", 5555))))
        cap.tcp(gw, cli, "PA", 901 + i, 109 + i, b"\x04\x01\x00\x08\x00\x00\x01\x00")
        cap.tcp(cli, gw, "A", 109 + i, 909 + i)
    for i in range(12):
        cli = (CLIENT, 51000 + i)
        cap.tcp(cli, gw, "FA", 109 + i, 909 + i)
        cap.tcp(gw, cli, "FA", 909 + i, 110 + i)
        cap.tcp(cli, gw, "A", 110 + i, 910 + i)
