"""The engine's shortcuts must not change one answer.

The reference is the plain per-packet path (fast lane off, one batch, every payload delivered).
Against it, the fast lane with payload subscriptions (none, or every other stream) in batches of
several sizes must give the same stream of every packet and, per stream, the same events except
the `Payload`s of streams nobody subscribed to: on every sample capture and every crafted case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tcp_cases import CASES, columns_from_pcap
from test_tcp_fastlane import _long_connections, _per_stream, _slices

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import Decoder
from tdslens.analyzer.packet_columns import PacketColumns
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import (
    Payload,
    PayloadFilter,
    StreamStart,
    TcpEvent,
    every_stream,
    no_stream,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "pcaps"


def _even(start: StreamStart) -> bool:
    return start.stream % 2 == 0


def _run(
    batches: list[PacketColumns], fast: bool, payloads: PayloadFilter
) -> tuple[list[TcpEvent], np.ndarray]:
    engine = TcpEngine(fast_lane=fast, payloads=payloads)
    events: list[TcpEvent] = []
    streams = []
    for b in batches:
        s = np.full(len(b), -1, dtype=np.int64)
        events += engine.feed(b, s)
        streams.append(s)
    events += engine.finish()
    return events, np.concatenate(streams) if streams else np.zeros(0, dtype=np.int64)


def _assert_same(cols: PacketColumns) -> None:
    ref_events, ref_streams = _run([cols], fast=False, payloads=every_stream)
    for payloads in (no_stream, _even):
        wanted = [
            ev
            for ev in ref_events
            if not isinstance(ev, Payload) or payloads(_start_of(ref_events, ev.stream))
        ]
        expected = _per_stream(wanted)
        for size in (1, 3, 16, 1000, 1 << 20):
            events, streams = _run(_slices(cols, size), fast=True, payloads=payloads)
            assert (streams == ref_streams).all(), (payloads.__name__, size)
            assert _per_stream(events) == expected, (payloads.__name__, size)


def _start_of(events: list[TcpEvent], stream: int) -> StreamStart:
    return next(ev for ev in events if isinstance(ev, StreamStart) and ev.stream == stream)


@pytest.mark.parametrize("name", sorted(CASES))
def test_subscriptions_and_fast_lane_on_cases(tmp_path: Path, name: str) -> None:
    _assert_same(columns_from_pcap(CASES[name]().write(tmp_path / f"{name}.pcap")))


def test_subscriptions_and_fast_lane_on_long_connections(tmp_path: Path) -> None:
    _assert_same(columns_from_pcap(_long_connections().write(tmp_path / "long.pcap")))


SAMPLE_CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))


def sample_columns(path: Path) -> PacketColumns:
    """A sample's packets as one batch of columns (samples are small: one reader chunk)."""
    decoder = Decoder(path=str(path))
    batches = [decoder.decode(b)[0] for b in open_capture(str(path)).batches()]
    assert len(batches) == 1
    return batches[0]


@pytest.mark.parametrize("path", SAMPLE_CAPTURES, ids=lambda p: p.name)
def test_subscriptions_and_fast_lane_on_samples(path: Path) -> None:
    _assert_same(sample_columns(path))
