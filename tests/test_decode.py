"""Decoding crafted and real captures, checked frame by frame against tshark.

Every crafted capture is decoded twice, by the numpy fast path and by the per-frame slow path,
and both must give identical columns; both must also match tshark's view of each frame.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import craft
import icmp_cases
import numpy as np
import pytest
from craft import Rec
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Padding, Raw

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import Decoder, decode_batch
from tdslens.analyzer.packet_columns import QUOTED_TCP, SYN, PacketColumns, address_text

FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "tcp.seq_raw",
    "tcp.len",
    "udp.srcport",
]
COLUMN_NAMES = [
    "number", "ts_ns", "ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport",
    "dport", "seq", "ack", "flags", "window", "tcp_offset", "payload_offset", "payload_len",
    "payload_wire_len",
]  # fmt: skip


def decode_file(path: Path, fast: bool = True) -> tuple[list[PacketColumns], list, object]:
    reader = open_capture(path)
    decoder = Decoder(path=str(path), fast=fast)
    out, problems = [], []
    for batch in reader.batches():
        cols, probs = decoder.decode(batch)
        out.append(cols)
        problems += probs
    problems += decoder.finish()
    return out, problems, reader


def our_rows(path: Path, fast: bool = True) -> dict[int, tuple]:
    """frame -> (ts_ns, src, sport, seq or None, tcp.len or None, udp sport or None)."""
    rows = {}
    cols_list, _, _ = decode_file(path, fast)
    for c in cols_list:
        for i in range(len(c)):
            tcp = int(c.proto[i]) == 6
            src = address_text(int(c.ip_version[i]), int(c.src_hi[i]), int(c.src_lo[i]))
            rows[int(c.number[i])] = (
                int(c.ts_ns[i]),
                src,
                int(c.sport[i]) if tcp else None,
                int(c.seq[i]) if tcp else None,
                int(c.payload_wire_len[i]) if tcp else None,
                None if tcp else int(c.sport[i]),
            )
    return rows


def first(value: str) -> str:
    return value.split(",")[0]


def tshark_rows(tshark: str, path: Path) -> tuple[dict[int, tuple], dict[int, int]]:
    """(frame -> row like our_rows for TCP/UDP frames, frame -> ts_ns for every frame)."""
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows, times = {}, {}
    for line in out.splitlines():
        num, ts, ip4, ip6, tsport, seq, tlen, usport = (line.split("\t") + [""] * 8)[:8]
        number = int(num)
        ts_ns = int(Decimal(ts) * 1_000_000_000) if ts else 0  # SPB: no timestamp
        times[number] = ts_ns
        if not tsport and not usport:
            continue
        src = first(ip4) or first(ip6)
        rows[number] = (
            ts_ns,
            src,
            int(first(tsport)) if tsport else None,
            int(first(seq)) if tsport else None,
            int(first(tlen)) if tsport else None,
            None if tsport else int(first(usport)),
        )
    return rows, times


def assert_matches_tshark(tshark: str, path: Path) -> None:
    expected, times = tshark_rows(tshark, path)
    got = our_rows(path)
    assert got == expected
    reader = open_capture(path)
    numbers, stamps = [], []
    for b in reader.batches():
        numbers += b.number.tolist()
        stamps += b.ts_ns.tolist()
    assert reader.report.frames == max(times, default=0)
    assert dict(zip(numbers, stamps, strict=True)) == {n: times[n] for n in numbers}


def assert_fast_equals_slow(path: Path) -> None:
    fast, _, _ = decode_file(path, fast=True)
    slow, _, _ = decode_file(path, fast=False)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        for name in COLUMN_NAMES:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype, name
            assert np.array_equal(x, y), name
        for i in range(len(a)):  # the payload bytes themselves
            sa = slice(int(a.payload_offset[i]), int(a.payload_offset[i] + a.payload_len[i]))
            sb = slice(int(b.payload_offset[i]), int(b.payload_offset[i] + b.payload_len[i]))
            assert bytes(a.data[sa]) == bytes(b.data[sb])
        assert a.icmp == b.icmp


def tcp_packets() -> list:
    return [
        eth()
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=50000, dport=1433, seq=7)
        / Raw(b"\x12\x01\x00\x2f" + bytes(40)),
        eth() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=1433, dport=50000, seq=99),
        eth() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=5353, dport=53) / Raw(b"q" * 5),
    ]


def eth(**kw: object) -> Packet:
    """Ethernet with fixed addresses (scapy would otherwise try to resolve them on the host)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw)


def ip4(i: int = 0, payload: bytes = b"select 1") -> Packet:
    return (
        IP(src=f"192.0.2.{i + 1}", dst="198.51.100.7")
        / TCP(sport=40000 + i, dport=1433, seq=1000 * i + 1, flags="PA")
        / Raw(payload)
    )


def ip6(i: int = 0, payload: bytes = b"six") -> Packet:
    return (
        IPv6(src=f"2001:db8::{i + 1:x}", dst="2001:db8::ffff")
        / TCP(sport=41000 + i, dport=1433, seq=77 + i)
        / Raw(payload)
    )


def udp4(i: int = 0) -> Packet:
    return IP(src="192.0.2.200", dst="192.0.2.53") / UDP(sport=30000 + i, dport=53) / Raw(b"dns")


def sll2(proto: int, inner: Packet) -> bytes:
    """Linux cooked v2 header (20 bytes): protocol, reserved, ifindex, hatype, pkttype, addr."""
    return struct.pack(">HHIHBB8s", proto, 0, 3, 1, 0, 6, b"\x02" * 6) + bytes(inner)


def family(fmt: str, value: int, inner: Packet) -> bytes:
    return struct.pack(fmt, value) + bytes(inner)


# name -> function(path) writing one crafted capture
CASES: dict[str, Callable[[Path], Path]] = {}


def case(fn: Callable[[Path], Path]) -> Callable[[Path], Path]:
    CASES[fn.__name__] = fn
    return fn


@case
def ethernet_mixed(p: Path) -> Path:
    arp = eth() / ARP()
    padded = eth() / ip4(9, b"") / Padding(b"\0" * 6)  # Ethernet minimum size padding
    icmp = eth() / IP(src="192.0.2.9", dst="192.0.2.10") / ICMP()
    return craft.write_pcap(p, [*tcp_packets(), arp, padded, icmp, eth() / ip6(1)])


@case
def vlan_qinq(p: Path) -> Path:
    return craft.write_pcap(p, [
        eth() / Dot1Q(vlan=10) / ip4(1),
        eth(type=0x88A8) / Dot1AD(vlan=20) / Dot1Q(vlan=30) / ip4(2),
        eth() / Dot1Q(vlan=10) / ip6(3),
        eth(type=0x88A8) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / ip4(4),  # 3 tags
        eth() / Dot1Q(vlan=10) / udp4(5),
    ])  # fmt: skip


@case
def linux_sll(p: Path) -> Path:
    return craft.write_pcap(p, [
        CookedLinux(proto=0x0800) / ip4(1), CookedLinux(proto=0x86DD) / ip6(2),
        CookedLinux(proto=0x0806) / ARP(), CookedLinux(proto=0x0800) / udp4(3),
    ], linktype=113)  # fmt: skip


@case
def linux_sll2(p: Path) -> Path:
    return craft.write_pcap(p, [
        sll2(0x0800, ip4(1)), sll2(0x86DD, ip6(2)), sll2(0x0806, ARP()), sll2(0x0800, udp4(3)),
    ], linktype=276)  # fmt: skip


@case
def bsd_null(p: Path) -> Path:
    return craft.write_pcap(p, [
        family("<I", 2, ip4(1)), family("<I", 30, ip6(2)), family("<I", 24, ip6(3)),
        family("<I", 28, ip6(4)), family(">I", 2, ip4(5)), family(">I", 30, ip6(6)),
        family("<I", 7, ip4(7)),
    ], linktype=0)  # fmt: skip


@case
def openbsd_loop(p: Path) -> Path:
    return craft.write_pcap(p, [
        family(">I", 2, ip4(1)), family(">I", 24, ip6(2)), family(">I", 2, udp4(3))
    ], linktype=108)  # fmt: skip


@case
def raw_ip_101(p: Path) -> Path:
    return craft.write_pcap(p, [ip4(1), ip6(2), udp4(3)], linktype=101)


@case
def raw_ip_dlt12(p: Path) -> Path:
    return craft.write_pcap(p, [ip4(1), ip6(2)], linktype=12)


@case
def raw_ip_dlt14(p: Path) -> Path:
    return craft.write_pcap(p, [ip4(1), ip6(2)], linktype=14, big_endian=True)


@case
def linktype_ipv4(p: Path) -> Path:
    return craft.write_pcap(p, [ip4(1), udp4(2)], linktype=228)


@case
def linktype_ipv6(p: Path) -> Path:
    return craft.write_pcap(p, [ip6(1), ip6(2)], linktype=229, nanosecond=True)


@case
def ipv6_extension_headers(p: Path) -> Path:
    base = IPv6(src="2001:db8::1", dst="2001:db8::2")
    tcp = TCP(sport=1500, dport=1433, seq=5) / Raw(b"ext")
    return craft.write_pcap(p, [
        eth() / base / IPv6ExtHdrHopByHop() / tcp,
        eth() / base / IPv6ExtHdrDestOpt() / tcp,
        eth() / base / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=0) / tcp,
        eth() / base / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=9, dport=53),
        eth() / base / IPv6ExtHdrFragment(m=0, offset=0, id=5) / tcp,  # atomic fragment
    ])  # fmt: skip


@case
def ipv4_options(p: Path) -> Path:
    opt = IPOption_RR(routers=["0.0.0.0"] * 2)
    return craft.write_pcap(p, [
        eth() / IP(src="192.0.2.1", dst="192.0.2.2", options=[opt]) / TCP(sport=1, dport=1433)
        / Raw(b"opts"),
        eth() / IP(src="192.0.2.1", dst="192.0.2.2", options=[opt]) / UDP(sport=2, dport=53),
    ])  # fmt: skip


@case
def ipv4_fragments(p: Path) -> Path:
    big = (
        IP(src="192.0.2.1", dst="192.0.2.2", id=4242)
        / TCP(sport=1234, dport=1433, seq=9)
        / Raw(bytes(range(256)) * 12)
    )
    frags = fragment(big, fragsize=1000)
    udp = IP(src="192.0.2.3", dst="192.0.2.4", id=7) / UDP(sport=53, dport=999) / Raw(b"u" * 3000)
    ufr = fragment(udp, fragsize=1200)
    pk = [frags[1], ip4(1), ufr[0], frags[0], ufr[2], frags[3], frags[2], ufr[1]]
    return craft.write_pcap(p, [eth() / f for f in pk])


@case
def ipv6_fragments(p: Path) -> Path:
    big = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrFragment(id=99)
        / TCP(sport=1234, dport=1433, seq=11)
        / Raw(b"6" * 3000)
    )
    frags = fragment6(big, 1280)
    return craft.write_pcap(p, [eth() / f for f in [frags[2], frags[0], ip6(3), frags[1]]])


@case
def snaplen_truncated(p: Path) -> Path:
    pk = eth() / ip4(1, bytes(1400))
    return craft.write_pcap(p, [
        craft.truncated(pk, 96), craft.truncated(eth() / ip6(2, bytes(900)), 100),
        craft.truncated(eth() / udp4(3) / Raw(bytes(500)), 60), eth() / ip4(4),
        craft.truncated(pk, 54),  # headers exactly, no payload
    ], snaplen=96)  # fmt: skip


@case
def odd_ip_lengths(p: Path) -> Path:
    return craft.write_pcap(p, [
        eth() / IP(src="192.0.2.1", dst="192.0.2.2", len=0) / TCP(sport=1) / Raw(b"a" * 100),
        eth() / IP(src="192.0.2.1", dst="192.0.2.2", len=500) / TCP(sport=2) / Raw(b"b" * 99),
        eth() / IPv6(src="2001:db8::1", dst="2001:db8::2", plen=0) / TCP(sport=3) / Raw(b"c"),
        eth() / IPv6(src="2001:db8::1", dst="2001:db8::2", plen=900) / TCP(sport=4) / Raw(b"d"),
    ])  # fmt: skip


@case
def modified_pcap(p: Path) -> Path:
    return craft.write_pcap(p, [eth() / ip4(1), eth() / ip6(2)], modified=True)


@case
def pcapng_two_interfaces(p: Path) -> Path:
    ifaces = [craft.Iface(1, tsresol=9, name="eth0"), craft.Iface(113, tsresol=0x80 | 20)]
    recs = [
        Rec(eth() / ip4(1)), Rec(CookedLinux(proto=0x0800) / ip4(2), interface=1),
        Rec(eth() / ip6(3)), Rec(CookedLinux(proto=0x86DD) / ip6(4), interface=1),
    ]  # fmt: skip
    return craft.write_pcapng(p, recs, ifaces)


@case
def pcapng_sections_spb_pb(p: Path) -> Path:
    one = craft.Section(
        [
            Rec(eth() / ip4(1)),
            Rec(eth() / ip4(2), block="spb"),
            Rec(eth() / ip6(3), block="pb"),
        ],
        [craft.Iface(1, snaplen=200)],
        blocks=[(1, craft.secrets_block("<", 0x544C534B, b"CLIENT_RANDOM 00 11\n"))],
    )
    two = craft.Section(
        [Rec(ip4(4), interface=1), Rec(eth() / ip6(5)), Rec(ip6(6), interface=1)],
        [craft.Iface(1, tsresol=3), craft.Iface(101, tsresol=9)],
        big_endian=True,
    )
    three = craft.Section([Rec(eth() / ip4(7, bytes(300)), block="spb")], [craft.Iface(1, 100)])
    return craft.write_pcapng_sections(p, [one, two, three])


@case
def netmon_per_frame_media(p: Path) -> Path:
    media = [1, 9, 0xE000 | 1, 0xFFFE, 1, 0xE000 | 113]  # 0xFFFE: DNS cache metadata
    return craft.write_netmon(
        p,
        [eth() / ip4(1), udp4(2), eth() / ip6(3), b"meta", eth() / ip4(4),
         CookedLinux(proto=0x0800) / ip4(5)],
        minor=2,
        media_per_frame=media,
    )  # fmt: skip


@case
def netmon_table_out_of_order(p: Path) -> Path:
    """A record stored first but listed last, as some NetMon versions do with statistics."""
    pk = [eth() / ip4(1), eth() / ip4(2), eth() / ip6(3), eth() / udp4(4)]
    return craft.write_netmon(p, pk, minor=2, table_order=[1, 2, 3, 0])


@case
def netmon_2_0(p: Path) -> Path:
    return craft.write_netmon(p, [eth() / ip4(1), eth() / ip6(2), eth() / udp4(3)], minor=0)


@case
def netmon_2_3_truncated(p: Path) -> Path:
    return craft.write_netmon(
        p, [eth() / ip4(1), craft.truncated(eth() / ip4(2, bytes(500)), 80)], minor=3
    )


@case
def pcapng_numbered_non_packets(p: Path) -> Path:
    """Journal and custom blocks take frame numbers in Wireshark; statistics and names don't."""
    journal = craft.block("<", 9, b"__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=hi\n")
    custom = craft.block("<", 0xBAD, struct.pack("<I", 32473) + b"custom")
    custom_nocopy = craft.block("<", 0x40000BAD, struct.pack("<I", 32473) + b"custom")
    stats = craft.block("<", 5, struct.pack("<III", 0, 0, 0))
    names = craft.block("<", 4, struct.pack("<HH", 0, 0))
    blocks = [(1, journal), (2, custom), (2, custom_nocopy), (3, stats), (3, names)]
    return craft.write_pcapng(p, [eth() / ip4(i) for i in range(4)], blocks=blocks)


def test_fast_path_and_slow_path_agree_on_every_case(tmp_path):
    for name, make in CASES.items():
        assert_fast_equals_slow(make(tmp_path / f"{name}.cap"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_capture_matches_tshark(tmp_path, tshark, name):
    path = CASES[name](tmp_path / f"{name}.cap")
    assert_matches_tshark(tshark, path)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gzipped_capture_matches_tshark(tmp_path, tshark, name):
    path = craft.gzip_file(CASES[name](tmp_path / f"{name}.cap"), tmp_path / "z.bin")
    assert_matches_tshark(tshark, path)


def test_real_captures_match_tshark(shared_captures, tshark):
    files = sorted(shared_captures.glob("*.pcap*"))
    assert files
    for path in files:
        assert_matches_tshark(tshark, path)
        assert_fast_equals_slow(path)


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcap_variants_match_tshark(tmp_path, tshark, nanosecond, big_endian):
    path = craft.write_pcap(
        tmp_path / "a.pcap", tcp_packets(), nanosecond=nanosecond, big_endian=big_endian
    )
    assert_matches_tshark(tshark, path)
    assert_fast_equals_slow(path)


def test_decode_batch_keeps_tcp_and_udp(tmp_path):
    path = craft.write_pcap(tmp_path / "a.pcap", tcp_packets())
    batch = next(open_capture(path).batches())
    cols, problems = decode_batch(batch)
    assert problems == []
    assert cols.number.tolist() == [1, 2, 3]
    assert cols.proto.tolist() == [6, 6, 17]
    assert cols.payload_len.tolist() == [44, 0, 5]
    start = int(cols.payload_offset[0])
    assert bytes(cols.data[start : start + 4]) == b"\x12\x01\x00\x2f"


def test_snaplen_gap_is_visible(tmp_path):
    cols, _, _ = decode_file(CASES["snaplen_truncated"](tmp_path / "t.pcap"))
    c = cols[0]
    assert c.number.tolist() == [1, 2, 3, 4, 5]
    assert c.payload_len.tolist() == [96 - 54, 100 - 74, 60 - 42, 8, 0]
    assert c.payload_wire_len.tolist() == [1400, 900, 503, 8, 1400]


def test_fragments_are_reassembled_into_the_last_frame(tmp_path):
    cols, problems, _ = decode_file(CASES["ipv4_fragments"](tmp_path / "f.pcap"))
    c = cols[0]
    assert problems == []
    assert c.number.tolist() == [2, 7, 8]  # ip4(1), the TCP datagram, the UDP datagram
    assert c.payload_len.tolist() == [8, 3072, 3000]
    start = int(c.payload_offset[1])
    assert bytes(c.data[start : start + 3072]) == bytes(range(256)) * 12


def test_decoder_reassembles_fragments_across_batches(tmp_path):
    path = CASES["ipv4_fragments"](tmp_path / "f.pcap")
    decoder = Decoder(path=str(path))
    rows = []
    for batch in open_capture(path).batches(batch_size=2):
        cols, problems = decoder.decode(batch)
        assert problems == []
        rows += list(zip(cols.number.tolist(), cols.payload_len.tolist(), strict=True))
    assert decoder.finish() == []
    assert rows == [(2, 8), (7, 3072), (8, 3000)]


def test_incomplete_and_cut_fragments_are_problems(tmp_path):
    big = IP(src="192.0.2.1", dst="192.0.2.2", id=9) / UDP(sport=1, dport=2) / Raw(bytes(3000))
    frags = fragment(big, fragsize=1000)
    other = IP(src="192.0.2.5", dst="192.0.2.6", id=10) / UDP(sport=3, dport=4) / Raw(bytes(3000))
    ofr = fragment(other, fragsize=1000)
    path = craft.write_pcap(tmp_path / "f.pcap", [
        eth() / frags[0], eth() / frags[1],  # the last fragment never comes
        eth() / ofr[0], craft.truncated(eth() / ofr[1], 200), eth() / ofr[2],
    ])  # fmt: skip
    cols, problems, _ = decode_file(path)
    assert sum(len(c) for c in cols) == 0
    assert [p.frame for p in problems] == [4, 1]
    assert "snap length" in problems[0].message and "missing fragments" in problems[1].message
    assert str(path) in str(problems[1])


def write_many(path: Path, n: int) -> Path:
    """A plain struct-built pcap of n Ethernet/IPv4/TCP frames (scapy is far too slow)."""
    eth_hdr = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for i in range(n):
        plen = (0, 8, 100, 1400)[i % 4]
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40 + plen, i & 0xFFFF, 0x4000, 64, 6, 0,
                         bytes([10, 0, (i >> 8) & 255, i & 255]), b"\x0a\x00\x00\x01")  # fmt: skip
        tcp = struct.pack(">HHIIBBHHH", 40000 + i % 1000, 1433, i, 7, 0x50, 0x18, 512, 0, 0)
        frame = eth_hdr + ip + tcp + bytes(plen)
        out.append(
            struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


@pytest.mark.slow
def test_many_frames_across_batches_all_decode(tmp_path):
    """200k frames span several chunks and batches; every one becomes a row, in order.
    (Speed is measured by benchmarks/run.py against tshark, not asserted in a unit test.)"""
    n = 200_000
    path = write_many(tmp_path / "many.pcap", n)
    reader = open_capture(path)
    decoder = Decoder(path=str(path))
    numbers = [decoder.decode(b)[0].number for b in reader.batches()]
    assert len(numbers) > 1
    joined = np.concatenate(numbers)
    assert len(joined) == n
    assert (np.diff(joined) == 1).all() and joined[0] == 1


# -- TCP headers quoted in ICMP errors (icmp_cases.py; numbering: test_tcp_icmp.py) ---------


def test_icmp_cases_decode_alike_on_both_paths(tmp_path):
    for name, make in icmp_cases.CASES.items():
        path = make(tmp_path / f"{name}.pcap")
        assert_fast_equals_slow(path)
        assert our_quotes(path), name  # each case has quotes: both paths found them


ICMP_FIELDS = ["frame.number", "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code", "ip.src",
               "ipv6.src", "tcp.srcport", "tcp.dstport", "tcp.stream"]  # fmt: skip


def tshark_quotes(tshark: str, path: Path) -> dict[int, tuple]:
    """frame -> (sport, dport, family, type, code, reporter, has a tcp.stream) for every ICMP
    frame in which tshark dissects a quoted TCP header (the outer ICMP message's fields)."""
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for f in ICMP_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        num, t4, c4, t6, c6, ip4, ip6, sport, dport, stream = (line.split("\t") + [""] * 10)[:10]
        if not sport or not (t4 or t6):
            continue
        family, kind, code, reporter = (4, t4, c4, ip4) if t4 else (6, t6, c6, ip6)
        rows[int(num)] = (
            int(sport),
            int(dport),
            family,
            int(kind),
            int(code),
            reporter,
            stream != "",
        )
    return rows


def our_quotes(path: Path) -> dict[int, tuple]:
    out = {}
    for c in decode_file(path)[0]:
        for i in np.flatnonzero(c.proto == QUOTED_TCP).tolist():
            q = c.icmp[int(c.number[i])]
            out[int(c.number[i])] = (
                int(c.sport[i]), int(c.dport[i]), q.family, q.type, q.code, q.reporter, q.numbered
            )  # fmt: skip
    return out


@pytest.mark.parametrize("name", sorted(icmp_cases.CASES))
def test_icmp_quotes_match_tshark(tmp_path, tshark, name):
    """Every quote tshark numbers is a numbered row of ours with the same ports, ICMP type,
    code and reporter; every row of ours is a quote tshark dissects. (Quotes of fewer than 8
    TCP bytes, where tshark shows ports only, are ours to skip.)"""
    path = icmp_cases.CASES[name](tmp_path / f"{name}.pcap")
    theirs, ours = tshark_quotes(tshark, path), our_quotes(path)
    assert {f for f, q in ours.items() if q[-1]} == {f for f, q in theirs.items() if q[-1]}
    assert ours == {f: theirs[f] for f in ours}


def test_quoted_header_row(tmp_path):
    """The row of a quoted SYN: the quoted addresses and header, no payload, `tcp_offset` at
    the quoted header inside the ICMP frame."""
    path = icmp_cases.CASES["redirect_leg_rejected"](tmp_path / "x.pcap")
    (cols,), problems, _ = decode_file(path)
    assert problems == []
    (i, *_) = np.flatnonzero(cols.proto == QUOTED_TCP).tolist()
    assert int(cols.number[i]) == 10
    assert address_text(4, 0, int(cols.src_lo[i])) == icmp_cases.CLIENT
    assert address_text(4, 0, int(cols.dst_lo[i])) == icmp_cases.SERVER
    assert (int(cols.sport[i]), int(cols.dport[i])) == (50001, icmp_cases.WORKER_PORT)
    assert (int(cols.seq[i]), int(cols.flags[i]), int(cols.window[i])) == (7000, SYN, 8192)
    assert int(cols.payload_len[i]) == int(cols.payload_wire_len[i]) == 0
    at = int(cols.tcp_offset[i])
    assert bytes(cols.data[at : at + 4]) == struct.pack(">HH", 50001, icmp_cases.WORKER_PORT)
    q = cols.icmp[10]
    assert (q.family, q.type, q.code, q.reporter, q.numbered) == (
        4, 3, 13, icmp_cases.FIREWALL, True
    )  # fmt: skip
