"""h11-style feed tests: whole, one byte at a time, and split at every offset give equal events.

TCP delivers a direction's bytes in arbitrary pieces; a dissector that depends on where the
pieces were cut is wrong. Frames are held constant here so the events must be *identical*.
"""

from __future__ import annotations

import struct

import pytest
import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.dns import DnsTcpDirection
from tdslens.dissectors.session import TdsDirection


def client_login_only() -> bytes:
    data = tb.packet(0x12, tb.client_prelogin(0x00))
    data += tb.message(0x12, tb.tls_record(22, tb.client_hello(tls13=False)), size=50)
    data += tb.packet(
        0x12, tb.tls_record(22, tb.handshake(16, bytes(33))) + tb.tls_record(20, b"\x01")
    )
    data += tb.tls_record(23, bytes(120))
    data += tb.packet(0x01, b"\x00" * 30)
    data += tb.packet(0x03, struct.pack("<IIHQI", 22, 18, 2, 0, 1) + b"\xff\xff\x0a\x00\x00\x00")
    data += tb.packet(0x06, b"")
    return data


def client_login7_clear() -> bytes:
    return tb.packet(0x12, tb.client_prelogin(0x02)) + tb.message(0x10, tb.login7(), size=40)


def server_response() -> bytes:
    tokens = (
        tb.envchange_string(1, "sales", "master")
        + tb.server_message(0xAB, 5701, "Changed database context")
        + tb.loginack()
        + tb.featureextack([(0x0A, b"\x01")])
        + tb.envchange_routing("cr1.worker.example.net", 11003)
        + tb.done()
    )
    rows = (
        tb.colmetadata_int_nvarchar() + tb.row(1, "x" * 40) + tb.nbcrow(2) + tb.done(0x10, 0xC1, 2)
    )
    return (
        tb.packet(0x04, tb.server_prelogin(0x00))
        + tb.message(0x12, tb.tls_record(22, tb.server_hello() + tb.handshake(14, b"")), size=30)
        + tb.message(0x04, tokens, size=33)
        + tb.message(0x04, rows, size=20)
    )


def tds8_client() -> bytes:
    hello = tb.tls_record(22, tb.client_hello(alpn=["tds/8.0"]), version=0x0301)
    return hello + tb.tls_record(20, b"\x01") + tb.tls_record(23, bytes(64))


def damaged_server() -> bytes:
    return tb.packet(0x04, tb.server_prelogin()) + b"\x77" * 13 + tb.packet(0x04, tb.done()) * 2


CASES = {
    "client_login_only": (True, client_login_only()),
    "client_login7_clear": (True, client_login7_clear()),
    "server_response": (False, server_response()),
    "tds8_client": (True, tds8_client()),
    "damaged_server": (False, damaged_server()),
}


def drive(from_client: bool, pieces: list[bytes]) -> list[ev.Event]:
    d = TdsDirection(from_client)
    out: list[ev.Event] = []
    for p in pieces:
        out += d.feed(p, 1)
    return out + d.eof()


@pytest.mark.parametrize("case", sorted(CASES))
def test_whole_bytewise_and_every_split_agree(case):
    from_client, data = CASES[case]
    whole = drive(from_client, [data])
    assert whole  # something was recognised
    assert drive(from_client, [data[i : i + 1] for i in range(len(data))]) == whole
    for cut in range(1, len(data)):
        assert drive(from_client, [data[:cut], data[cut:]]) == whole, f"split at {cut}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_trailing_junk_does_not_change_earlier_events(case):
    from_client, data = CASES[case]
    before = TdsDirection(from_client).feed(data, 1)
    after = TdsDirection(from_client).feed(data + b"\x03\x00\xff junk", 1)
    assert after[: len(before)] == before


def test_frames_follow_the_pieces():
    """The first frame of every event is the frame holding the event's first byte."""
    from_client, data = CASES["server_response"]
    d = TdsDirection(from_client)
    out = []
    for i in range(0, len(data), 25):
        out += d.feed(data[i : i + 25], 1000 + i // 25)
    assert out
    for e in out:
        assert e.frames[0] == 1000 + e.offset // 25, e


def test_offsets_are_stream_positions():
    from_client, data = CASES["server_response"]
    for e in drive(from_client, [data]):
        if isinstance(e, ev.EnvChangeRouting):
            assert data[e.offset] == 0xE3 and data[e.offset + 3] == 20
        if isinstance(e, ev.TdsPacket):
            assert data[e.offset] == e.type


def test_dns_tcp_split_everywhere():
    msg = bytes.fromhex("12348180000100010000000001610000010001c00c000100010000001e00040a000001")
    framed = struct.pack(">H", len(msg)) + msg
    d = DnsTcpDirection()
    whole = d.feed(framed * 2, 1)
    for cut in range(1, 2 * len(framed)):
        d = DnsTcpDirection()
        assert d.feed((framed * 2)[:cut], 1) + d.feed((framed * 2)[cut:], 1) == whole
