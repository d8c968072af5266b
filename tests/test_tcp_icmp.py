"""TCP headers quoted inside ICMP/ICMPv6 errors: tcp.stream like tshark, and the facts kept.

Wireshark numbers a quoted TCP header as a conversation (a new stream when none matches), so
every case of icmp_cases.py is compared with tshark frame by frame, ICMP frames included, and
byte by byte (`-z follow,tcp,raw`: quoted bytes are never data); then run through every way the
engine can take it (payload or not, fast lane or not, any batch size). The facts: each error is
recorded on the connection it quotes and changes nothing else of it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scapy.all")

import icmp_cases
from icmp_cases import CASES, CLIENT, FIREWALL, WORKER_PORT
from test_tcp_tshark import check_against_tshark, tshark_streams

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import Decoder
from tdslens.analyzer.packet_columns import ACK, QUOTED_TCP, SYN, PacketColumns
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import (
    ConnectionSummary,
    IcmpError,
    Payload,
    StreamEnd,
    StreamStart,
    TcpEvent,
    every_stream,
    no_stream,
)


def decoded(path: Path) -> PacketColumns:
    """The whole (small) capture as one batch of columns."""
    batches = list(open_capture(path).batches())
    assert len(batches) == 1
    cols, _ = Decoder(path=str(path)).decode(batches[0])
    return cols


def run(
    cols: PacketColumns, size: int | None = None, **engine: object
) -> tuple[list[tuple[int, int]], list[TcpEvent]]:
    """(frame, stream) of every numbered row, and the events, feeding `size` rows at a time."""
    eng = TcpEngine(**engine)  # type: ignore[arg-type]
    size = size or len(cols)
    frames: list[tuple[int, int]] = []
    events: list[TcpEvent] = []
    for start in range(0, len(cols), size):
        part = cols.take(slice(start, start + size))
        streams = np.full(len(part), -1, dtype=np.int64)
        events += eng.feed(part, streams)
        numbered = streams >= 0
        frames += zip(part.number[numbered].tolist(), streams[numbered].tolist(), strict=True)
    events += eng.finish()
    return frames, events


def ends(events: list[TcpEvent]) -> list[ConnectionSummary]:
    return [e.summary for e in events if isinstance(e, StreamEnd)]


def errors(events: list[TcpEvent]) -> list[tuple[int, IcmpError]]:
    """(stream, error) of every error recorded, in frame order."""
    found = [(s.stream, e) for s in ends(events) for e in s.icmp_errors]
    return sorted(found, key=lambda x: x[1].frame)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_tshark(tshark: str, tmp_path: Path, name: str) -> None:
    check_against_tshark(tshark, CASES[name](tmp_path / f"{name}.pcap"))


MODES = {
    "payload": dict(payloads=every_stream),
    "no payload (regular table)": dict(payloads=no_stream),
    "per packet": dict(fast_lane=False),
    "per packet, no payload": dict(fast_lane=False, payloads=no_stream),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_same_in_every_engine_mode(tshark: str, tmp_path: Path, name: str) -> None:
    path = CASES[name](tmp_path / f"{name}.pcap")
    expected = tshark_streams(tshark, path)
    cols = decoded(path)
    recorded = None
    for mode, kw in MODES.items():
        for size in (None, 1, 3):
            frames, events = run(cols, size, **kw)
            assert frames == expected, (mode, size)
            # Which connection summary holds a late error depends on batching (as for late
            # packets); which stream and frame it names does not.
            got = [(stream, e) for stream, e in errors(events)]
            assert recorded is None or got == recorded, (mode, size)
            recorded = got


def test_rejected_worker_leg_records_the_errors(tmp_path: Path) -> None:
    """The firewall's answers are on the worker leg's summary; nothing else of it changes."""
    cols = decoded(CASES["redirect_leg_rejected"](tmp_path / "x.pcap"))
    _, events = run(cols)
    leg = {s.stream: s for s in ends(events)}[1]
    assert leg.server.port == WORKER_PORT and not leg.roles_guessed
    assert leg.conn_state == "S0" and leg.history == "S"
    assert leg.syn_frames == (9, 11, 13) and leg.last_frame == 13
    assert leg.to_server.packets == 3 and leg.to_client.packets == 0
    assert [e.frame for e in leg.icmp_errors] == [10, 12, 14]
    first = leg.icmp_errors[0]
    assert (first.family, first.type, first.code) == (4, 3, 13)
    assert first.reporter == FIREWALL and first.from_client and first.quoted_flags == SYN
    assert first.ts_ns == int(cols.ts_ns[cols.number == 10][0])


@pytest.mark.parametrize(
    "name", ["redirect_leg_rejected", "redirect_leg_rejected_8_bytes", "quoted_data_is_not_data"]
)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_errors_change_nothing_but_the_error_list(tmp_path: Path, name: str, mode: str) -> None:
    """Run once with the quoted rows and once without them (same frame numbers): the events
    must be the same, but for the errors recorded."""
    cols = decoded(CASES[name](tmp_path / f"{name}.pcap"))
    without = cols.take(np.flatnonzero(cols.proto != QUOTED_TCP))
    assert len(without) < len(cols)
    _, with_events = run(cols, **MODES[mode])
    _, plain_events = run(without, **MODES[mode])
    assert any(s.icmp_errors for s in ends(with_events))
    stripped = [
        StreamEnd(replace(e.summary, icmp_errors=())) if isinstance(e, StreamEnd) else e
        for e in with_events
    ]
    assert _comparable(stripped) == _comparable(plain_events)


def _comparable(events: list[TcpEvent]) -> list[object]:
    """Events with payload bytes as bytes (memoryviews compare by buffer)."""
    return [e._replace(data=bytes(e.data)) if isinstance(e, Payload) else e for e in events]


def test_quoted_data_is_never_delivered(tmp_path: Path) -> None:
    cols = decoded(CASES["quoted_data_is_not_data"](tmp_path / "x.pcap"))
    _, events = run(cols)
    sent = b"".join(
        bytes(e.data) for e in events if isinstance(e, Payload) and e.from_client and e.stream == 0
    )
    assert sent == b"helloworld"
    conn = ends(events)[0]
    assert conn.to_server.payload_bytes == 10 and conn.to_server.retransmissions == 0
    assert conn.conn_state == "SF" and conn.rst_side is None
    assert [e.quoted_flags for e in conn.icmp_errors] == [0x18, 0x18, 0x11, 0x14]


def test_short_quote_is_recorded_without_a_stream(tmp_path: Path) -> None:
    """8 TCP bytes: no tcp.stream for the frame, no flags, but the connection records it; a
    short quote about no open connection is dropped."""
    cols = decoded(CASES["redirect_leg_rejected_8_bytes"](tmp_path / "x.pcap"))
    frames, events = run(cols)
    numbered = {frame for frame, _ in frames}
    quoted = cols.number[cols.proto == QUOTED_TCP].tolist()
    assert quoted == [10, 11] and not numbered & set(quoted)
    assert [(stream, e.frame, e.code, e.quoted_flags) for stream, e in errors(events)] == [
        (1, 10, 10, None)
    ]
    assert len(ends(events)) == 3  # no stream was made for either


def test_error_alone_makes_a_connection_of_its_own(tmp_path: Path) -> None:
    """A quote no conversation matches: a connection with no packets, roles from the quoted
    SYN, its frame range the error's, OTH."""
    cols = decoded(CASES["icmp_types"](tmp_path / "x.pcap"))
    _, events = run(cols)
    starts = [e for e in events if isinstance(e, StreamStart)]
    first = ends(events)[0]
    assert starts[0].frame == 1 and not starts[0].saw_syn and not starts[0].roles_guessed
    assert str(first.client) == f"{CLIENT}:41000" and first.server.port == WORKER_PORT
    assert first.packets == 0 and first.conn_state == "OTH" and first.history == ""
    assert (first.first_frame, first.last_frame) == (1, 1)
    assert [(e.type, e.code) for e in first.icmp_errors] == [(3, 13)]


def test_quoted_syn_ack_is_from_the_server(tmp_path: Path) -> None:
    cols = decoded(CASES["quoted_server_packets"](tmp_path / "x.pcap"))
    _, events = run(cols)
    first = {s.stream: s for s in ends(events)}[0]
    assert [(e.frame, e.from_client, e.quoted_flags) for e in first.icmp_errors] == [
        (3, False, SYN | ACK),
        (4, False, SYN | ACK),
        (5, False, SYN),
    ]
    assert first.to_client.packets == 2  # the SYN-ACK and the server's SYN; no quote counted


def test_cases_module_builds_every_case(tmp_path: Path) -> None:
    """Without tshark: every case writes a readable capture whose quotes decode."""
    for name, make in CASES.items():
        cols = decoded(make(tmp_path / f"{name}.pcap"))
        quoted = cols.number[cols.proto == QUOTED_TCP].tolist()
        assert quoted and sorted(cols.icmp) == quoted, name
    assert icmp_cases.WORKER_PORT == WORKER_PORT
