"""Differential tests: tdslens's TCP engine against tshark, the independent reference.

For every frame, tdslens's stream index must equal tshark's ``tcp.stream``; for every stream
without gaps, the reassembled bytes of each direction must equal tshark's
``-z follow,tcp,raw,N`` (run with ``tcp.reassemble_out_of_order:TRUE``).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_tcp_cases import CASES, Wire, columns_from_pcap, streams_bytes, summaries

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import Decoder
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import Gap, StreamStart, TcpEvent

OOO = ["-o", "tcp.reassemble_out_of_order:TRUE"]
FIELDS = ["-e", "frame.number", "-e", "tcp.stream"]


def tshark_streams(tshark: str, path: Path) -> list[tuple[int, int]]:
    """(frame.number, tcp.stream) for every frame with a tcp.stream, as tshark numbers them
    (ICMP errors quoting a TCP header included; a quote too short for a stream has none)."""
    out = subprocess.run(
        [tshark, "-r", str(path), *OOO, "-Y", "tcp", "-T", "fields", *FIELDS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        number, stream = line.split("\t")[:2]
        if stream:
            rows.append((int(number), int(stream.split(",")[0])))
    return rows


def tshark_follow(tshark: str, path: Path, streams: list[int]) -> dict[int, dict[str, bytes]]:
    """Per stream: bytes sent by each node, keyed by the node's "address:port" text."""
    args = [tshark, "-r", str(path), *OOO, "-q"]
    for n in streams:
        args += ["-z", f"follow,tcp,raw,{n}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result: dict[int, dict[str, bytes]] = {}
    stream = -1
    nodes: list[str] = []
    chunks: dict[str, bytearray] = {}
    for line in out.splitlines():
        if line.startswith("Follow:"):
            stream, nodes = -1, []
        elif line.startswith("Filter: tcp.stream eq "):
            stream = int(line.rsplit(" ", 1)[1])
            nodes, chunks = [], {}
            result[stream] = chunks  # type: ignore[assignment]
        elif line.startswith("Node "):
            node = line.split(": ", 1)[1]
            nodes.append(node)
            chunks[node] = bytearray()
        elif line.startswith("====") or not line.strip() or stream < 0 or len(nodes) < 2:
            continue
        elif line.startswith("\t"):
            chunks[nodes[1]] += bytes.fromhex(line.strip())
        else:
            chunks[nodes[0]] += bytes.fromhex(line.strip())
    return {k: {n: bytes(b) for n, b in v.items()} for k, v in result.items()}


def our_run(path: Path) -> tuple[list[tuple[int, int]], list[TcpEvent]]:
    """The product path: capture reader, decoder, engine; (frame, stream) of every row the
    engine numbered (TCP packets, and TCP headers quoted in ICMP errors)."""
    reader = open_capture(path)
    decoder = Decoder(path=str(path))
    engine = TcpEngine()
    frames: list[tuple[int, int]] = []
    events: list[TcpEvent] = []
    for batch in reader.batches():
        cols, _ = decoder.decode(batch)
        streams = np.full(len(cols), -1, dtype=np.int64)
        events += engine.feed(cols, streams)
        numbered = streams >= 0
        frames += zip(cols.number[numbered].tolist(), streams[numbered].tolist(), strict=True)
    events += engine.finish()
    return frames, events


def check_against_tshark(tshark: str, path: Path) -> list[TcpEvent]:
    frames, events = our_run(path)
    assert frames == tshark_streams(tshark, path)
    ours = streams_bytes(events)
    gapped = {(e.stream, e.from_client) for e in events if isinstance(e, Gap)}
    starts = {e.stream: e for e in events if isinstance(e, StreamStart)}
    theirs = tshark_follow(tshark, path, sorted(starts))
    compared = 0
    for stream, start in starts.items():
        follow = theirs[stream]
        for from_client, endpoint in ((True, start.client), (False, start.server)):
            if (stream, from_client) in gapped:
                continue
            assert ours.get((stream, from_client), b"") == follow.get(str(endpoint), b""), (
                stream,
                from_client,
            )
            compared += 1
    assert compared
    return events


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_case_matches_tshark(tshark: str, tmp_path: Path, name: str) -> None:
    check_against_tshark(tshark, CASES[name]().write(tmp_path / f"{name}.pcap"))


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("arkime_tds7_sql2000_session.pcap", "SF"),
        ("beats_sql2019_login_select_tls.pcap", "S1"),  # the capture stops before any FIN
        ("beats_sql2022_login_tls.pcap", "SF"),
    ],
)
def test_shared_capture_matches_tshark(
    tshark: str, shared_captures: Path, name: str, state: str
) -> None:
    events = check_against_tshark(tshark, shared_captures / name)
    (summary,) = summaries(events).values()
    assert summary.server.port == 1433 and summary.conn_state == state
    assert not summary.roles_guessed


def test_duplicate_frames_of_any_capture_are_not_data_twice(
    tshark: str, shared_captures: Path
) -> None:
    """The 'any' capture shows some frames twice; Wireshark takes the first copy only."""
    events = check_against_tshark(tshark, shared_captures / "beats_sql2022_login_tls.pcap")
    s = next(iter(summaries(events).values()))
    assert s.to_server.conflict_frames == () and s.to_client.conflict_frames == ()
    assert s.to_server.retransmissions + s.to_client.retransmissions > 0


@functools.cache  # (built once: the archived-pairs cases take seconds to craft)
def _reuse_rules() -> dict[str, Wire]:
    """Situations probing Wireshark's conversation rule (each checked in tshark 4.0.17)."""
    c, s = ("10.9.0.1", 40000), ("10.9.0.2", 1433)
    cases: dict[str, Wire] = {}

    def new(name: str) -> Wire:
        cases[name] = Wire()
        return cases[name]

    w = new("fin_then_same_isn")  # same ISN after FIN: same stream
    for _ in range(2):
        w.handshake(c, s, 100, 900)
        w.add(c, s, "FA", 101, 901)
        w.add(s, c, "FA", 901, 102)
        w.add(c, s, "A", 102, 902)
    w = new("syn_retransmitted_then_new_isn")
    w.add(c, s, "S", 100)
    w.add(c, s, "S", 100)
    w.add(c, s, "S", 200)
    w.add(c, s, "S", 200)
    w = new("midstream_then_syn_at_base")  # base = first seq - 1
    w.add(c, s, "PA", 5000, 77, b"x" * 10)
    w.add(c, s, "S", 4999)
    w.add(c, s, "S", 4000)
    w = new("peer_ack_sets_base")  # base of c = ack - 1 of s's first packet
    w.add(s, c, "PA", 5000, 77, b"x" * 10)
    w.add(c, s, "S", 76)
    w.add(c, s, "S", 1)
    w = new("synack_first")
    w.add(s, c, "SA", 900, 101)
    w.add(c, s, "S", 100)
    w.add(c, s, "S", 300)
    w.add(s, c, "SA", 5555, 301)
    w = new("rst_without_ack_sets_no_peer_base")
    w.add(s, c, "R", 0, 5)
    w.add(c, s, "S", 100)
    w = new("syn_with_other_flags")
    w.add(c, s, "S", 100)
    w.add(c, s, "SF", 200)
    w.add(c, s, "SR", 300)
    w.add(c, s, "SEC", 400)
    w = new("seq_zero_wraps")
    w.add(s, c, "A", 7, 0)
    w.add(c, s, "S", 0xFFFFFFFF)
    w.add(c, s, "S", 0)
    w = new("late_packet_after_release")
    w.handshake(c, s, 100, 900)
    w.add(c, s, "R", 101)
    w.add(c, s, "PA", 101, 901, b"late", gap_s=10.0)  # after the linger: same stream
    w.add(c, s, "S", 100, gap_s=1.0)  # same ISN: still the same stream
    w.add(c, s, "S", 101)  # new ISN: new stream
    w = new("synack_with_another_isn")  # moves its sender's base: same stream after it
    w.add(c, s, "S", 100)
    w.add(s, c, "SA", 900, 101)
    w.add(s, c, "SA", 950, 101)
    w.add(s, c, "S", 950)  # the moved base: same stream
    w.add(s, c, "S", 900)  # the old base: a new stream
    w.add(c, s, "S", 100)
    w = new("pair_record_revived")
    other = ("10.9.0.7", 40007)
    w.handshake(c, s, 100, 900)
    w.add(c, s, "R", 101)
    w.add(other, s, "S", 5, gap_s=5.0)  # the first connection is released meanwhile
    w.add(s, c, "A", 901, 101, gap_s=5.0)  # a stray packet: still Wireshark's stream 0
    w.add(c, s, "S", 100, gap_s=5.0)  # same ISN: stream 0 again
    w.add(other, s, "S", 5, gap_s=5.0)
    w.add(c, s, "S", 300)  # new ISN: a new stream
    for family, server, client in (("v4", s, "10.9.1.1"), ("v6", ("fd00::2", 1433), "fd00::1")):
        # More ended pairs than one PairArchive batch (2048): the reused pairs' records come
        # back from the archive's sorted columns, and one pair ends twice (its record replaced).
        w = new(f"pair_records_archived_{family}")
        for port in range(20000, 22100):
            w.add((client, port), server, "S", port)
            w.add(server, (client, port), "RA", 0, port + 1)
        w.add(server, (client, 20005), "A", 1, 20006, gap_s=10.0)  # stray: the old stream
        w.add((client, 20006), server, "S", 20006)  # the same ISN: the old stream
        w.add((client, 20007), server, "S", 7)  # another ISN: a new stream
        w.add(server, (client, 20007), "RA", 0, 8)
        if family == "v4":  # the revived pair ends again, early in a second merged batch
            for port in range(30000, 34000):
                w.add((client, port), server, "S", port)
                w.add(server, (client, port), "RA", 0, port + 1)
        w.add((client, 20007), server, "S", 7, gap_s=10.0)  # the replaced record's stream
        w.add((client, 20007), server, "S", 9)  # and its replaced base: a new stream
        w.add((client, 22099), server, "S", 22099)  # still pending when the archive merged
    return cases


@pytest.mark.parametrize("name", sorted(_reuse_rules()))
def test_stream_rule_matches_tshark(tshark: str, tmp_path: Path, name: str) -> None:
    path = _reuse_rules()[name].write(tmp_path / f"{name}.pcap")
    frames, _ = our_run(path)
    expected = tshark_streams(tshark, path)
    assert frames == expected
    # One packet per batch: released connections shrink to a record between batches, and a
    # later packet of the pair must still get Wireshark's number.
    cols = columns_from_pcap(path)
    engine = TcpEngine()
    per_packet = []
    for i in range(len(cols)):
        one = cols.take(slice(i, i + 1))
        streams = np.full(1, -1, dtype=np.int64)
        engine.feed(one, streams)
        if streams[0] >= 0:
            per_packet.append((int(one.number[0]), int(streams[0])))
    assert per_packet == expected


@pytest.mark.slow
def test_generated_fleet_capture_matches_tshark(tshark: str, tmp_path: Path) -> None:
    """20k packets of the benchmark generator: retransmissions, swapped segments, RSTs,
    unanswered SYNs, hundreds of streams: all frames and every gap-free direction agree."""
    generator = Path(__file__).resolve().parent.parent / "benchmarks" / "generate.py"
    if not generator.exists():
        pytest.skip("benchmarks/generate.py is absent")
    out = tmp_path / "fleet.pcap"
    subprocess.run(
        [sys.executable, str(generator), "--packets", "20000", "--seed", "3", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    events = check_against_tshark(tshark, out)
    assert len(summaries(events)) > 300
