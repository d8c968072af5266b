"""Decoding crafted and real captures, checked frame by frame against tshark.

Every crafted capture is decoded twice, by the numpy fast path and by the per-frame slow path,
and both must give identical columns; both must also match tshark's view of each frame.
"""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import craft
import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import Decoder, decode_batch
from tdslens.analyzer.packet_columns import PacketColumns, address_text

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
        ts_ns = int(Decimal(ts) * 1_000_000_000)
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


def tcp_packets() -> list:
    return [
        Ether()
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=50000, dport=1433, seq=7)
        / Raw(b"\x12\x01\x00\x2f" + bytes(40)),
        Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=1433, dport=50000, seq=99),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=5353, dport=53) / Raw(b"q" * 5),
    ]


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
