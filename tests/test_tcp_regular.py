"""Regular connections (tcp_regular): the table must change no answer.

test_fast_path.py already runs every crafted case and sample through the table (the
`no_stream` subscription). This file adds connections made to cross the table's seams: long
transfers whose retransmissions (of one and of several segments, at a batch start, of bytes
from an earlier batch, with different bytes), reorderings, FINs and RSTs fall on every batch
boundary; port reuse after a close; and checks that the table did take rows, gave some back
and took them again (so the test exercises what it claims to).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_fast_path import _run
from test_tcp_cases import Wire, columns_from_pcap
from test_tcp_fastlane import _per_stream, _slices

from tdslens.analyzer import tcp_regular
from tdslens.analyzer.tcp_events import Payload, every_stream, no_stream
from tdslens.analyzer.tcp_reassembly import RECENT_KEEP, RECENT_LIMIT

SERVER = ("10.0.0.2", 1433)


def _transfer(w: Wire, c: tuple[str, int], isn_c: int, isn_s: int, rng: random.Random) -> None:
    """Handshake, requests and multi-segment answers with retransmissions, reorderings and a
    conflicting retransmission now and then, then a close (FIN, or RST)."""
    s = SERVER
    w.handshake(c, s, isn_c, isn_s)
    seq_c, seq_s = isn_c + 1, isn_s + 1
    for i in range(12):
        req = b"Q%03d" % i + bytes(rng.randrange(256) for _ in range(rng.randrange(20, 200)))
        w.add(c, s, "PA", seq_c, seq_s, req)
        seq_c += len(req)
        segments = []
        for _ in range(rng.randrange(1, 8)):
            body = bytes(rng.randrange(256) for _ in range(rng.choice([1460, 1460, 700, 90])))
            segments.append((seq_s, body))
            seq_s += len(body)
        order = list(range(len(segments)))
        if len(order) > 2 and rng.random() < 0.2:  # two adjacent segments swapped
            k = rng.randrange(len(order) - 1)
            order[k], order[k + 1] = order[k + 1], order[k]
        for k in order:
            w.add(s, c, "A", segments[k][0], seq_c, segments[k][1])
        roll = rng.random()
        if roll < 0.3:  # the last one or two segments again, identical (a timeout)
            for at, body in segments[-rng.randrange(1, 3) :]:
                w.add(s, c, "A", at, seq_c, body, gap_s=0.2)
        elif roll < 0.35:  # the last segment again, with other bytes
            at, body = segments[-1]
            w.add(s, c, "A", at, seq_c, bytes(len(body)), gap_s=0.2)
        w.add(c, s, "A", seq_c, seq_s)
    if rng.random() < 0.2:
        w.add(c, s, "RA", seq_c, seq_s)
        return
    w.add(c, s, "FA", seq_c, seq_s)
    w.add(s, c, "FA", seq_s, seq_c + 1)
    w.add(c, s, "A", seq_c + 1, seq_s + 1)


def _capture(seed: int) -> Wire:
    rng = random.Random(seed)
    w = Wire()
    for k in range(6):
        _transfer(w, (f"10.0.1.{k + 1}", 40000 + k), 1000 * (k + 1), 900000 * (k + 1), rng)
    # The first pair again after its close, with a new ISN: a new stream (port reuse).
    _transfer(w, ("10.0.1.1", 40000), 777777, 123456, rng)
    return w


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_regular_table_changes_no_answer(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cols = columns_from_pcap(_capture(seed).write(tmp_path / f"regular{seed}.pcap"))
    ref_events, ref_streams = _run([cols], fast=False, payloads=every_stream)
    expected = _per_stream([ev for ev in ref_events if not isinstance(ev, Payload)])
    seen = {"rows": 0, "fallback": 0}
    step = tcp_regular.RegularTable.step

    def counting_step(self: tcp_regular.RegularTable, *args: object) -> object:
        result = step(self, *args)  # type: ignore[arg-type]
        if result is not None:
            seen["rows"] += int(result.rows.sum())
            seen["fallback"] += len(result.fallback)
        return result

    monkeypatch.setattr(tcp_regular.RegularTable, "step", counting_step)
    for size in (1, 2, 7, 29, 100, len(cols)):
        events, streams = _run(_slices(cols, size), fast=True, payloads=no_stream)
        assert (streams == ref_streams).all(), size
        assert _per_stream(events) == expected, size
    assert seen["rows"] > len(cols)  # the table took rows (over all batch sizes) ...
    assert seen["fallback"] > 0  # ... and gave connections back to the object path


def test_regular_connection_summary_matches_objects(tmp_path: Path) -> None:
    """One clean connection: all its rows go through the table, summary as the objects'."""
    w = Wire()
    _transfer(w, ("10.0.9.9", 45000), 1, 2, random.Random(99))
    cols = columns_from_pcap(w.write(tmp_path / "one.pcap"))
    ref, _ = _run([cols], fast=False, payloads=every_stream)
    got, _ = _run([cols], fast=True, payloads=no_stream)
    assert _per_stream(got) == _per_stream([ev for ev in ref if not isinstance(ev, Payload)])


def test_kept_compare_bytes_are_what_settle_keeps() -> None:
    """`_append` (the table's trim of retransmission-compare bytes, which may skip the older
    segments of a tail) keeps exactly what Direction.settle keeps: old + tail, or its newest
    RECENT_KEEP bytes once past RECENT_LIMIT."""
    rng = random.Random(5)
    for _ in range(3000):
        old = bytes(rng.randrange(256) for _ in range(rng.choice([0, 100, 5000, 20000, 32768])))
        segments = [bytes([rng.randrange(256)]) * rng.randint(1, 3000) for _ in range(30)]
        segments = segments[: rng.randint(1, 30)]
        joined = old + b"".join(segments)
        want = joined if len(joined) <= RECENT_LIMIT else joined[-RECENT_KEEP:]
        lengths = [len(x) for x in segments]
        size, skip = sum(lengths), 0
        trim = len(old) + size > RECENT_LIMIT
        if trim:
            while size - lengths[skip] >= RECENT_KEEP:
                size -= lengths[skip]
                skip += 1
        blob = memoryview(b"".join(segments[skip:]))
        assert tcp_regular._append(bytearray(old), blob, 0, len(blob), trim) == want
