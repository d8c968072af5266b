"""Crafted TCP situations, and what the engine must make of each.

`CASES` is also the input of the differential tests against tshark (test_tcp_tshark.py): every
case is written to a pcap there and compared frame by frame and byte by byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

scapy_all = pytest.importorskip("scapy.all")
Ether, IP, IPv6, TCP, Raw = (
    scapy_all.Ether,
    scapy_all.IP,
    scapy_all.IPv6,
    scapy_all.TCP,
    scapy_all.Raw,
)

from tdslens.analyzer.packet_columns import COLUMNS, PacketColumns  # noqa: E402
from tdslens.analyzer.tcp import TcpEngine  # noqa: E402
from tdslens.analyzer.tcp_events import (  # noqa: E402
    Conflict,
    ConnectionSummary,
    Gap,
    Payload,
    StreamEnd,
    StreamStart,
    TcpEvent,
)

CLIENT = ("10.0.0.1", 50000)
SERVER = ("10.0.0.2", 1433)


class Wire:
    """Builds a packet list with increasing timestamps (1 ms apart unless told)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start
        self.packets: list = []

    def add(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        flags: str,
        seq: int,
        ack: int = 0,
        data: bytes = b"",
        window: int = 8192,
        gap_s: float = 0.001,
        snap: int | None = None,
    ) -> None:
        ip = IPv6(src=src[0], dst=dst[0]) if ":" in src[0] else IP(src=src[0], dst=dst[0])
        pkt = (
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # (no MAC lookup: fast)
            / ip
            / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack, window=window)
        )
        if data:
            pkt = pkt / Raw(data)
        if snap is not None:
            raw = bytes(pkt)
            pkt = Ether(raw[:snap])
            pkt.wirelen = len(raw)
        self.t += gap_s
        pkt.time = self.t
        self.packets.append(pkt)

    def handshake(self, c=CLIENT, s=SERVER, isn_c: int = 1000, isn_s: int = 5000) -> None:
        self.add(c, s, "S", isn_c)
        self.add(s, c, "SA", isn_s, isn_c + 1)
        self.add(c, s, "A", isn_c + 1, isn_s + 1)

    def write(self, path: Path) -> Path:
        scapy_all.wrpcap(str(path), self.packets)
        return path


# --- the cases ------------------------------------------------------------------------------


def case_normal() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"hello server")
    w.add(SERVER, CLIENT, "PA", 5001, 1013, b"hello client, long answer")
    w.add(CLIENT, SERVER, "FA", 1013, 5026)
    w.add(SERVER, CLIENT, "FA", 5026, 1014)
    w.add(CLIENT, SERVER, "A", 1014, 5027)
    return w


def case_retransmission() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"AAAA")
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"AAAA", gap_s=0.2)  # exact copy
    w.add(CLIENT, SERVER, "PA", 1003, 5001, b"AABBBB")  # overlap, new tail
    w.add(SERVER, CLIENT, "A", 5001, 1009)
    return w


def case_conflict() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"ABCDEFGH")
    w.add(CLIENT, SERVER, "PA", 1005, 5001, b"XXXXIJKL")  # EFGH repeated as XXXX
    w.add(SERVER, CLIENT, "A", 5001, 1013)
    return w


def case_reorder() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"one-")
    w.add(CLIENT, SERVER, "PA", 1009, 5001, b"three")
    w.add(CLIENT, SERVER, "PA", 1005, 5001, b"two-")
    w.add(SERVER, CLIENT, "A", 5001, 1014)
    return w


def case_lost_segment() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"first")
    # 1006..1015 ("0123456789") never captured
    w.add(CLIENT, SERVER, "PA", 1016, 5001, b"third")
    w.add(SERVER, CLIENT, "A", 5001, 1021)
    w.add(SERVER, CLIENT, "PA", 5001, 1021, b"reply")
    return w


def case_midstream() -> Wire:
    w = Wire()
    w.add(SERVER, CLIENT, "PA", 9000, 300, b"result rows")
    w.add(CLIENT, SERVER, "PA", 300, 9011, b"next query")
    w.add(SERVER, CLIENT, "PA", 9011, 310, b"more rows")
    return w


def case_port_reuse() -> Wire:
    w = Wire()
    w.handshake(isn_c=1000)
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"first connection")
    w.add(CLIENT, SERVER, "FA", 1017, 5001)
    w.add(SERVER, CLIENT, "FA", 5001, 1018)
    w.add(CLIENT, SERVER, "A", 1018, 5002)
    w.handshake(isn_c=77000, isn_s=88000)  # same ports, new ISN: new stream
    w.add(CLIENT, SERVER, "PA", 77001, 88001, b"second connection")
    w.add(CLIENT, SERVER, "R", 77018)
    w.add(CLIENT, SERVER, "S", 77000)  # same ISN after RST: Wireshark keeps the stream
    return w


def case_keepalive() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"query")
    w.add(SERVER, CLIENT, "A", 5001, 1006)
    w.add(CLIENT, SERVER, "A", 1005, 5001, b"\x00", gap_s=30)  # keep-alive: 1 byte at seq-1
    w.add(SERVER, CLIENT, "A", 5001, 1006)
    w.add(CLIENT, SERVER, "A", 1005, 5001, gap_s=30)  # keep-alive without a byte
    w.add(CLIENT, SERVER, "PA", 1006, 5001, b"next")
    return w


def case_zero_window() -> Wire:
    w = Wire()
    w.handshake()
    w.add(SERVER, CLIENT, "PA", 5001, 1001, b"big result part 1")
    w.add(CLIENT, SERVER, "A", 1001, 5018, window=0)  # client buffer full
    w.add(SERVER, CLIENT, "A", 5018, 1001, b"b", gap_s=0.2)  # zero-window probe
    w.add(CLIENT, SERVER, "A", 1001, 5018, window=0)  # probe refused
    w.add(SERVER, CLIENT, "A", 5018, 1001, b"b", gap_s=0.4)  # probe again
    w.add(CLIENT, SERVER, "A", 1001, 5018, window=4096)  # window reopens, probe refused
    w.add(SERVER, CLIENT, "PA", 5018, 1001, b"big result part 2")
    w.add(CLIENT, SERVER, "A", 1001, 5035)
    return w


def case_zero_window_probe_taken() -> Wire:
    w = Wire()
    w.handshake()
    w.add(SERVER, CLIENT, "PA", 5001, 1001, b"part 1")
    w.add(CLIENT, SERVER, "A", 1001, 5007, window=0)
    w.add(SERVER, CLIENT, "A", 5007, 1001, b"p", gap_s=0.2)  # probe, accepted below
    w.add(CLIENT, SERVER, "A", 1001, 5008, window=4096)
    w.add(SERVER, CLIENT, "PA", 5008, 1001, b"art 2")
    return w


def case_snaplen() -> Wire:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"Q" * 100, snap=14 + 20 + 20 + 30)
    w.add(CLIENT, SERVER, "PA", 1101, 5001, b"tail")
    w.add(SERVER, CLIENT, "A", 5001, 1105)
    return w


def case_syn_unanswered() -> Wire:
    w = Wire()
    w.add(CLIENT, SERVER, "S", 1000)
    w.add(CLIENT, SERVER, "S", 1000, gap_s=1.0)
    w.add(CLIENT, SERVER, "S", 1000, gap_s=2.0)
    return w


def case_rejected() -> Wire:
    w = Wire()
    w.add(CLIENT, SERVER, "S", 1000)
    w.add(SERVER, CLIENT, "RA", 0, 1001)
    return w


def case_many_flows() -> Wire:
    w = Wire()
    n = 40
    clients = [(f"10.1.{i // 200}.{i % 200 + 1}", 40000 + i) for i in range(n)]
    for i, c in enumerate(clients):
        w.add(c, SERVER, "S", 100 * i, gap_s=0.0001)
    for i, c in enumerate(clients):
        w.add(SERVER, c, "SA", 7000 + i, 100 * i + 1, gap_s=0.0001)
    for i, c in enumerate(clients):
        w.add(c, SERVER, "PA", 100 * i + 1, 7001 + i, b"q%03d" % i, gap_s=0.0001)
    for i, c in reversed(list(enumerate(clients))):
        w.add(SERVER, c, "PA", 7001 + i, 100 * i + 5, b"answer %d" % i, gap_s=0.0001)
    return w


def case_ipv6() -> Wire:
    w = Wire()
    c, s = ("2001:db8::1", 50001), ("2001:db8::2", 1433)
    w.handshake(c, s)
    w.add(c, s, "PA", 1001, 5001, b"v6 query")
    w.add(s, c, "PA", 5001, 1009, b"v6 answer")
    return w


def case_seq_wrap() -> Wire:
    w = Wire()
    isn = 0xFFFFFFF0
    w.handshake(isn_c=isn)
    w.add(CLIENT, SERVER, "PA", isn + 1, 5001, b"0123456789abcdef")
    w.add(CLIENT, SERVER, "PA", (isn + 17) & 0xFFFFFFFF, 5001, b"after wrap")
    return w


def case_data_on_syn_and_fin() -> Wire:
    w = Wire()
    w.add(CLIENT, SERVER, "S", 1000, data=b"tfo")  # TCP Fast Open style
    w.add(SERVER, CLIENT, "SA", 5000, 1004)
    w.add(CLIENT, SERVER, "FA", 1004, 5001, b"bye")
    w.add(SERVER, CLIENT, "FA", 5001, 1008, b"ok")
    w.add(CLIENT, SERVER, "A", 1008, 5004)
    return w


def case_synack_first() -> Wire:
    w = Wire()
    w.add(SERVER, CLIENT, "SA", 5000, 1001)  # the SYN was not captured
    w.add(CLIENT, SERVER, "A", 1001, 5001)
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"hi")
    w.add(SERVER, CLIENT, "PA", 5001, 1003, b"hello")
    return w


CASES: dict[str, Callable[[], Wire]] = {
    name.removeprefix("case_"): fn
    for name, fn in list(globals().items())
    if name.startswith("case_")
}


# --- reading a written capture (stand-in until analyzer/decode lands) ------------------------


def columns_from_pcap(path: Path) -> PacketColumns:
    """Decode a classic Ethernet/SLL pcap of IPv4/IPv6 TCP into PacketColumns (tests only)."""
    raw = path.read_bytes()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", raw[20:24])[0]
    rows: dict[str, list[int]] = {k: [] for k in COLUMNS}
    pos, number = 24, 0
    while pos + 16 <= len(raw):
        sec, frac, caplen, _origlen = struct.unpack(endian + "IIII", raw[pos : pos + 16])
        start = pos + 16
        pos = start + caplen
        number += 1
        link = 14 if linktype == 1 else 16
        ethertype = struct.unpack(">H", raw[start + link - 2 : start + link])[0]
        ip = start + link
        if ethertype == 0x0800:
            ihl = (raw[ip] & 0x0F) * 4
            total = struct.unpack(">H", raw[ip + 2 : ip + 4])[0]
            proto = raw[ip + 9]
            src, dst = (
                int.from_bytes(raw[ip + 12 : ip + 16]),
                int.from_bytes(raw[ip + 16 : ip + 20]),
            )
            src_hi = dst_hi = 0
            src_lo, dst_lo = src, dst
            tcp_at, ip_payload, version = ip + ihl, total - ihl, 4
        elif ethertype == 0x86DD:
            proto = raw[ip + 6]
            ip_payload = struct.unpack(">H", raw[ip + 4 : ip + 6])[0]
            s = int.from_bytes(raw[ip + 8 : ip + 24])
            d = int.from_bytes(raw[ip + 24 : ip + 40])
            src_hi, src_lo, dst_hi, dst_lo = s >> 64, s & (2**64 - 1), d >> 64, d & (2**64 - 1)
            tcp_at, version = ip + 40, 6
        else:
            continue
        if proto != 6:
            continue
        sport, dport, seq, ack, off_flags, window = struct.unpack(
            ">HHIIHH", raw[tcp_at : tcp_at + 16]
        )
        hdr = (off_flags >> 12) * 4
        wire = ip_payload - hdr
        payload_at = tcp_at + hdr
        values = dict(
            number=number,
            ts_ns=sec * 10**9 + (frac if nano else frac * 1000),
            ip_version=version,
            src_hi=src_hi,
            src_lo=src_lo,
            dst_hi=dst_hi,
            dst_lo=dst_lo,
            proto=6,
            sport=sport,
            dport=dport,
            seq=seq,
            ack=ack,
            flags=off_flags & 0x1FF,
            window=window,
            tcp_offset=tcp_at,
            payload_offset=payload_at,
            payload_len=max(0, min(wire, start + caplen - payload_at)),
            payload_wire_len=wire,
        )
        for k, v in values.items():
            rows[k].append(v)
    dtypes = dict(
        ip_version=np.uint8,
        proto=np.uint8,
        src_hi=np.uint64,
        src_lo=np.uint64,
        dst_hi=np.uint64,
        dst_lo=np.uint64,
        sport=np.int32,
        dport=np.int32,
        flags=np.int32,
        window=np.int32,
    )
    arrays = {k: np.array(v, dtype=dtypes.get(k, np.int64)) for k, v in rows.items()}
    return PacketColumns(data=raw, **arrays)


def run_engine(path: Path, **kw: int) -> list[TcpEvent]:
    engine = TcpEngine(**kw)
    return [*engine.feed(columns_from_pcap(path)), *engine.finish()]


# --- helpers to read events ----------------------------------------------------------------


def streams_bytes(events: list[TcpEvent]) -> dict[tuple[int, bool], bytes]:
    """Reassembled bytes per (stream, from_client), checking offsets are contiguous."""
    out: dict[tuple[int, bool], bytearray] = {}
    for ev in events:
        if isinstance(ev, Payload | Gap):
            buf = out.setdefault((ev.stream, ev.from_client), bytearray())
            assert ev.offset == len(buf), (ev, len(buf))
            if isinstance(ev, Payload):
                buf += bytes(ev.data)
            else:
                buf += b"\0" * ev.length
    return {k: bytes(v) for k, v in out.items()}


def summaries(events: list[TcpEvent]) -> dict[int, ConnectionSummary]:
    return {ev.summary.stream: ev.summary for ev in events if isinstance(ev, StreamEnd)}


def events_for(name: str, tmp_path: Path, **kw: int) -> list[TcpEvent]:
    return run_engine(CASES[name]().write(tmp_path / f"{name}.pcap"), **kw)


# --- expectations --------------------------------------------------------------------------


def test_normal_handshake_data_and_close(tmp_path: Path) -> None:
    ev = events_for("normal", tmp_path)
    start = ev[0]
    assert isinstance(start, StreamStart) and start.saw_syn and not start.roles_guessed
    assert str(start.client) == "10.0.0.1:50000" and str(start.server) == "10.0.0.2:1433"
    data = streams_bytes(ev)
    assert data == {(0, True): b"hello server", (0, False): b"hello client, long answer"}
    s = summaries(ev)[0]
    assert s.conn_state == "SF"
    assert s.history == "ShADdFf"
    assert s.syn_frames == (1,) and s.synack_frame == 2
    assert s.handshake_rtt_ns == 1_000_000
    assert s.to_server.packets == 5 and s.to_client.packets == 3
    assert s.to_server.fin_frame == 6 and s.to_client.fin_frame == 7
    assert (s.first_frame, s.last_frame) == (1, 8)


def test_exact_and_overlapping_retransmission(tmp_path: Path) -> None:
    ev = events_for("retransmission", tmp_path)
    assert streams_bytes(ev)[(0, True)] == b"AAAABBBB"
    payload_frames = [e.frame for e in ev if isinstance(e, Payload)]
    assert payload_frames == [4, 6]
    s = summaries(ev)[0]
    assert s.to_server.retransmissions == 2 and s.to_server.conflict_frames == ()
    assert s.to_server.payload_bytes == 8 and s.to_server.wire_payload_bytes == 14


def test_conflicting_retransmission_first_copy_wins(tmp_path: Path) -> None:
    ev = events_for("conflict", tmp_path)
    assert streams_bytes(ev)[(0, True)] == b"ABCDEFGHIJKL"
    conflicts = [e for e in ev if isinstance(e, Conflict)]
    assert [(c.offset, c.length, c.frame) for c in conflicts] == [(4, 4, 5)]
    assert summaries(ev)[0].to_server.conflict_frames == (5,)


def test_reordered_segments_wait_for_the_hole(tmp_path: Path) -> None:
    ev = events_for("reorder", tmp_path)
    assert streams_bytes(ev)[(0, True)] == b"one-two-three"
    payload = [(e.offset, e.frame) for e in ev if isinstance(e, Payload)]
    assert payload == [(0, 4), (4, 6), (8, 5)]
    assert summaries(ev)[0].to_server.gaps == 0


def test_lost_segment_becomes_a_gap_when_acked(tmp_path: Path) -> None:
    ev = events_for("lost_segment", tmp_path)
    gaps = [e for e in ev if isinstance(e, Gap)]
    assert [(g.offset, g.length, g.frame, g.reason) for g in gaps] == [(5, 10, 6, "acked")]
    assert streams_bytes(ev)[(0, True)] == b"first" + b"\0" * 10 + b"third"
    s = summaries(ev)[0]
    assert s.to_server.gaps == 1 and s.to_server.gap_bytes == 10
    assert "G" in s.history


def test_midstream_start_guesses_roles(tmp_path: Path) -> None:
    ev = events_for("midstream", tmp_path)
    start = ev[0]
    assert isinstance(start, StreamStart) and not start.saw_syn and start.roles_guessed
    assert start.server.port == 1433
    assert streams_bytes(ev) == {(0, False): b"result rowsmore rows", (0, True): b"next query"}
    s = summaries(ev)[0]
    assert s.conn_state == "OTH" and s.to_client.midstream and s.to_server.midstream


def test_port_reuse_new_isn_is_a_new_stream(tmp_path: Path) -> None:
    ev = events_for("port_reuse", tmp_path)
    starts = [e for e in ev if isinstance(e, StreamStart)]
    assert [(s.stream, s.frame) for s in starts] == [(0, 1), (1, 8)]
    s = summaries(ev)
    assert s[0].conn_state == "SF" and s[0].last_frame == 7
    assert s[1].conn_state == "RSTO" and s[1].syn_frames == (8, 13)
    assert streams_bytes(ev)[(1, True)] == b"second connection"


def test_keepalive_is_not_data(tmp_path: Path) -> None:
    ev = events_for("keepalive", tmp_path)
    assert streams_bytes(ev)[(0, True)] == b"querynext"
    s = summaries(ev)[0]
    assert s.to_server.keepalives == 1 and s.to_server.retransmissions == 0


def test_zero_window_probe_refused_is_not_data(tmp_path: Path) -> None:
    ev = events_for("zero_window", tmp_path)
    assert streams_bytes(ev)[(0, False)] == b"big result part 1big result part 2"
    s = summaries(ev)[0]
    assert [(z.side, z.first_frame, z.reopen_frame, z.probe_frames) for z in s.zero_windows] == [
        ("client", 5, 9, (6, 8))
    ]
    assert "W" in s.history


def test_zero_window_probe_taken_is_data(tmp_path: Path) -> None:
    ev = events_for("zero_window_probe_taken", tmp_path)
    assert streams_bytes(ev)[(0, False)] == b"part 1part 2"


def test_snaplen_cut_payload_is_a_gap(tmp_path: Path) -> None:
    ev = events_for("snaplen", tmp_path)
    gaps = [e for e in ev if isinstance(e, Gap)]
    assert [(g.offset, g.length, g.frame, g.reason) for g in gaps] == [(30, 70, 4, "snaplen")]
    assert streams_bytes(ev)[(0, True)] == b"Q" * 30 + b"\0" * 70 + b"tail"


def test_unanswered_syns_are_s0_with_retransmissions(tmp_path: Path) -> None:
    s = summaries(events_for("syn_unanswered", tmp_path))
    assert list(s) == [0]
    assert s[0].conn_state == "S0" and s[0].syn_frames == (1, 2, 3)
    assert s[0].syn_ts_ns[2] - s[0].syn_ts_ns[0] == 3_000_000_000


def test_syn_answered_by_rst_is_rej(tmp_path: Path) -> None:
    s = summaries(events_for("rejected", tmp_path))[0]
    assert s.conn_state == "REJ" and s.rst_side == "server" and s.rst_frame == 2


def test_many_concurrent_flows(tmp_path: Path) -> None:
    ev = events_for("many_flows", tmp_path)
    s = summaries(ev)
    assert len(s) == 40
    data = streams_bytes(ev)
    for i in range(40):
        assert data[(i, True)] == b"q%03d" % i
        assert data[(i, False)] == b"answer %d" % i
        assert s[i].conn_state == "S1"


def test_out_of_order_cap_declares_gap(tmp_path: Path) -> None:
    w = Wire()
    w.handshake()
    for k in range(10):  # 1001..1100 lost; then 10 segments of 100 bytes beyond the hole
        w.add(CLIENT, SERVER, "PA", 1101 + 100 * k, 5001, bytes([65 + k]) * 100)
    ev = run_engine(w.write(tmp_path / "cap.pcap"), ooo_cap=450)
    s = summaries(ev)[0]
    assert s.to_server.buffer_cap_hit
    gaps = [e for e in ev if isinstance(e, Gap)]
    assert gaps[0].offset == 0 and gaps[0].length == 100 and gaps[0].reason == "buffer"
    data = streams_bytes(ev)[(0, True)]
    assert data[100:] == b"".join(bytes([65 + k]) * 100 for k in range(10))


def test_closed_connections_are_released(tmp_path: Path) -> None:
    w = Wire()
    for i in range(50):
        c = ("10.0.0.1", 40000 + i)
        w.handshake(c, SERVER)
        w.add(c, SERVER, "FA", 1001, 5001)
        w.add(SERVER, c, "FA", 5001, 1002)
        w.add(c, SERVER, "A", 1002, 5002, gap_s=1.0)
    engine = TcpEngine(linger_ns=500_000_000)
    cols = columns_from_pcap(w.write(tmp_path / "churn.pcap"))
    ev = engine.feed(cols)
    assert engine.open_connections <= 2
    assert len(summaries(ev)) >= 48
    # Fed in small batches, ended connections also shrink to a compact record per pair.
    engine = TcpEngine(linger_ns=500_000_000)
    for start in range(0, len(cols), 10):
        engine.feed(cols.take(slice(start, start + 10)))
        assert engine.open_connections <= 3
    live = len(engine._flows)
    ended = engine._ended.v4.records()  # compact records (tcp_pairs.PairArchive)
    assert live <= 3 and len(ended) >= 47 and live + len(ended) == 50
    assert sorted(stream for _, (stream, _, _) in ended) == list(range(len(ended)))


def test_hole_before_fin_is_a_gap_at_close(tmp_path: Path) -> None:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"abc")
    w.add(CLIENT, SERVER, "FA", 1010, 5001, b"xyz")  # 1004..1009 never captured, no ACK seen
    ev = run_engine(w.write(tmp_path / "finhole.pcap"))
    gaps = [(g.offset, g.length, g.reason) for g in ev if isinstance(g, Gap)]
    assert gaps == [(3, 6, "end")]
    assert streams_bytes(ev)[(0, True)] == b"abc" + b"\0" * 6 + b"xyz"
    assert summaries(ev)[0].conn_state == "S2"


def test_out_of_order_data_left_at_end_of_capture_is_delivered(tmp_path: Path) -> None:
    w = Wire()
    w.handshake()
    w.add(CLIENT, SERVER, "PA", 1001, 5001, b"one")
    w.add(CLIENT, SERVER, "PA", 1010, 5001, b"late")
    ev = run_engine(w.write(tmp_path / "tail.pcap"))
    assert streams_bytes(ev)[(0, True)] == b"one" + b"\0" * 6 + b"late"
    payload = [(e.offset, e.frame) for e in ev if isinstance(e, Payload)]
    assert payload == [(0, 4), (9, 5)]


def test_data_on_syn_and_fin(tmp_path: Path) -> None:
    ev = events_for("data_on_syn_and_fin", tmp_path)
    assert streams_bytes(ev) == {(0, True): b"tfobye", (0, False): b"ok"}
    assert summaries(ev)[0].conn_state == "SF"


def test_rst_from_client_after_handshake_is_rsto(tmp_path: Path) -> None:
    w = Wire()
    w.handshake()
    w.add(SERVER, CLIENT, "RA", 5001, 1001)
    s = summaries(run_engine(w.write(tmp_path / "rstr.pcap")))[0]
    assert s.conn_state == "RSTR" and s.rst_side == "server" and s.rst_frame == 4


def test_server_syn_ack_first_sets_roles(tmp_path: Path) -> None:
    ev = events_for("synack_first", tmp_path)
    start = ev[0]
    assert isinstance(start, StreamStart) and not start.roles_guessed and not start.saw_syn
    assert start.client.port == 50000
    s = summaries(ev)[0]
    assert s.conn_state == "S1" and s.to_server.midstream and not s.to_client.midstream


def test_unanswered_attempt_is_dropped_after_idle_time(tmp_path: Path) -> None:
    w = Wire()
    w.add(CLIENT, SERVER, "S", 1000)
    other = ("10.0.0.5", 40000)
    w.add(other, SERVER, "S", 1, gap_s=400.0)
    w.add(CLIENT, SERVER, "S", 1000, gap_s=1.0)  # very late retry: same stream, continued
    engine = TcpEngine()
    cols = columns_from_pcap(w.write(tmp_path / "idle.pcap"))
    events: list[TcpEvent] = []
    for i in range(len(cols)):
        events += engine.feed(cols.take(slice(i, i + 1)))
        if i == 1:
            assert engine.open_connections == 1  # the first attempt was summarised
    events += engine.finish()
    starts = [e for e in events if isinstance(e, StreamStart)]
    assert [(s.stream, s.continued) for s in starts] == [(0, False), (1, False), (0, True)]
    assert [e.summary.conn_state for e in events if isinstance(e, StreamEnd)] == ["S0"] * 3


def test_acknowledged_bytes_are_not_kept(tmp_path: Path) -> None:
    w = Wire()
    w.handshake()
    w.add(SERVER, CLIENT, "PA", 5001, 1001, b"x" * 1000)
    w.add(CLIENT, SERVER, "A", 1001, 6001)
    engine = TcpEngine()
    engine.feed(columns_from_pcap(w.write(tmp_path / "acked.pcap")))
    (conn,) = engine._open.values()
    assert len(conn.db.recent) == 0 and conn.db.payload_bytes == 1000
