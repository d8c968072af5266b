"""`TcpEngine.quiet`: after it, a connection's payload is counted, not delivered, and exactly.

The TDS layer stops reading an established session and only counts its segments (frames, the
last frame, requests). The engine does that counting once told (`QuietCount` in `StreamEnd`),
on every path a segment can take: the per-packet loop, fast-lane runs, reassembly of segments
that waited out of order, and the regular-connection table the quiet connection may join. The
oracle is the plain per-packet engine's `Payload` events, fed through `QuietCount.add`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_fast_path import SAMPLE_CAPTURES, sample_columns
from test_tcp_cases import columns_from_pcap
from test_tcp_fastlane import _slices
from test_tcp_regular import _capture

from tdslens.analyzer import tcp_regular
from tdslens.analyzer.packet_columns import PacketColumns
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import Payload, QuietCount, StreamEnd

READ_FIRST = 3  # payloads a consumer reads before it quiets the connection


def _quiet_run(
    batches: list[PacketColumns], fast: bool, quiet: bool
) -> tuple[dict[int, list[tuple]], dict[int, int], dict[int, QuietCount | None]]:
    """Feed the batches; quiet each connection at its READ_FIRST-th payload (if `quiet`).
    Returns per stream: the payloads delivered (with their batch), the batch in which it was
    quieted, and the engine's count."""
    engine = TcpEngine(fast_lane=fast)
    got: dict[int, list[tuple]] = {}
    quieted: dict[int, int] = {}
    counts: dict[int, QuietCount | None] = {}
    for i, b in enumerate([*batches, None]):
        events = engine.feed(b) if b is not None else engine.finish()
        for ev in events:
            if isinstance(ev, Payload):
                seen = got.setdefault(ev.stream, [])
                seen.append((i, ev.from_client, ev.offset, bytes(ev.data), ev.frame, ev.ts_ns))
                if len(seen) == READ_FIRST and ev.stream not in quieted:
                    quieted[ev.stream] = i
                    if quiet:
                        engine.quiet(ev.stream)
            elif isinstance(ev, StreamEnd):
                counts[ev.summary.stream] = ev.quiet
    return got, quieted, counts


def _check(cols: PacketColumns, sizes: tuple[int, ...]) -> int:
    """Compare every batch size's quiet run with the plain engine; return segments counted."""
    counted = 0
    for size in sizes:
        batches = _slices(cols, size)
        ref, ref_quieted, _ = _quiet_run(batches, fast=False, quiet=False)
        got, quieted, counts = _quiet_run(batches, fast=True, quiet=True)
        assert quieted == ref_quieted, size
        for stream, payloads in ref.items():
            at = quieted.get(stream)
            if at is None:  # never quieted: everything delivered, nothing counted
                assert got.get(stream) == payloads and counts[stream] is None, (size, stream)
                continue
            # Delivered: everything up to the end of the batch it was quieted in.
            assert got[stream] == [p for p in payloads if p[0] <= at], (size, stream)
            want = QuietCount()
            for _batch, from_client, _off, _data, frame, ts in (p for p in payloads if p[0] > at):
                want.add(from_client, frame, ts)
            # (None: the connection had ended within that batch, before it was quieted.)
            assert (counts[stream] or QuietCount()) == want, (size, stream)
            counted += want.frames
    return counted


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quiet_counts_what_would_have_been_delivered(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long transfers with retransmissions, reorderings, conflicts, FIN and RST on every batch
    boundary; the quiet connections must also have joined the regular table."""
    table_rows = 0
    count_quiet = tcp_regular._count_quiet

    def spy(out: np.ndarray, hk: np.ndarray, *rest: np.ndarray) -> None:
        nonlocal table_rows
        table_rows += int((out[hk, tcp_regular.Q_FRAMES] >= 0).sum())
        count_quiet(out, hk, *rest)

    monkeypatch.setattr(tcp_regular, "_count_quiet", spy)
    cols = columns_from_pcap(_capture(seed).write(tmp_path / f"quiet{seed}.pcap"))
    assert _check(cols, (1, 2, 7, 29, 100, len(cols))) > 200
    assert table_rows > 100  # quiet connections did take the table path


@pytest.mark.parametrize("path", SAMPLE_CAPTURES, ids=lambda p: p.name)
def test_quiet_on_samples(path: Path) -> None:
    _check(sample_columns(path), (1, 5, 1 << 20))
