"""The fast lane (numpy, per batch) must give exactly the events of the per-packet path.

Each capture is fed in batches of several sizes with the fast lane on, and compared stream by
stream with one batch and the fast lane off. Small batches make connections exist at a batch
start, which is when the fast lane applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tcp_cases import CASES, Wire, columns_from_pcap

from tdslens.analyzer import tcp_fastlane
from tdslens.analyzer.packet_columns import PacketColumns
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import Payload, StreamEnd, TcpEvent


def _slices(cols: PacketColumns, size: int) -> list[PacketColumns]:
    return [cols.take(slice(s, s + size)) for s in range(0, len(cols), size)]


def _run(batches: list[PacketColumns], fast: bool) -> tuple[list[TcpEvent], np.ndarray]:
    engine = TcpEngine(fast_lane=fast)
    events: list[TcpEvent] = []
    streams = []
    for b in batches:
        s = np.full(len(b), -1, dtype=np.int64)
        events += engine.feed(b, s)
        streams.append(s)
    events += engine.finish()
    return events, np.concatenate(streams)


def _per_stream(events: list[TcpEvent]) -> dict[int, list[object]]:
    """Events per stream, Payload data as bytes (end-of-batch timing may reorder streams)."""
    out: dict[int, list[object]] = {}
    for ev in events:
        if isinstance(ev, StreamEnd):
            out.setdefault(ev.summary.stream, []).append(ev.summary)
        elif isinstance(ev, Payload):
            out.setdefault(ev.stream, []).append(
                (ev.from_client, ev.offset, bytes(ev.data), ev.frame, ev.ts_ns)
            )
        else:
            out.setdefault(ev.stream, []).append(ev)
    return out


def _assert_same(cols: PacketColumns) -> None:
    ref_events, ref_streams = _run([cols], fast=False)
    for size in (1, 2, 3, 5, 16, 1000):
        events, streams = _run(_slices(cols, size), fast=True)
        assert (streams == ref_streams).all(), size
        assert _per_stream(events) == _per_stream(ref_events), size


def _long_connections() -> Wire:
    """Two connections exchanging many segments, with a loss, a retransmission and a reorder."""
    w = Wire()
    c1, c2, s = ("10.0.0.1", 50000), ("10.0.0.3", 50001), ("10.0.0.2", 1433)
    w.handshake(c1, s, 1000, 5000)
    w.handshake(c2, s, 9000, 7000)
    seq1, seq2, srv1, srv2 = 1001, 9001, 5001, 7001
    for i in range(30):
        w.add(c1, s, "PA", seq1, srv1, b"q%02d" % i)
        w.add(c2, s, "PA", seq2, srv2, b"Q%02d!" % i)
        seq1, seq2 = seq1 + 3, seq2 + 4
        w.add(s, c1, "PA", srv1, seq1, b"r" * 50)
        srv1 += 50
        if i == 10:  # a retransmission with different bytes
            w.add(s, c1, "PA", srv1 - 50, seq1, b"x" * 50)
        if i == 20:  # the server's answer to c2 is lost, then a later one arrives
            srv2 += 40
        w.add(s, c2, "PA", srv2, seq2, b"R" * 40)
        srv2 += 40
        w.add(c1, s, "A", seq1, srv1)
        w.add(c2, s, "A", seq2, srv2)
    w.add(c1, s, "FA", seq1, srv1)
    w.add(s, c1, "FA", srv1, seq1 + 1)
    w.add(c1, s, "A", seq1 + 1, srv1 + 1)
    return w


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_lane_matches_per_packet_path_on_cases(tmp_path: Path, name: str) -> None:
    _assert_same(columns_from_pcap(CASES[name]().write(tmp_path / f"{name}.pcap")))


def test_fast_lane_matches_on_long_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_rows = []
    plan = tcp_fastlane.plan

    def counting_plan(*args: object) -> tcp_fastlane.FastPlan | None:
        result = plan(*args)  # type: ignore[arg-type]
        fast_rows.append(0 if result is None else int((result.kind == 1).sum()))
        return result

    monkeypatch.setattr(tcp_fastlane, "plan", counting_plan)
    cols = columns_from_pcap(_long_connections().write(tmp_path / "long.pcap"))
    _assert_same(cols)
    assert sum(fast_rows) > len(cols)  # the fast lane did take rows (over all batch sizes)


def test_fast_lane_matches_on_shared_captures(shared_captures: Path) -> None:
    for path in sorted(shared_captures.glob("*.pcap")):
        _assert_same(columns_from_pcap(path))
