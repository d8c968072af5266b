"""The TDS packet layer (MS-TDS 2.2.3), PRELOGIN (2.2.6.5) and the per-direction driver."""

from __future__ import annotations

import struct

import pytest
import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.buffer import ReceiveBuffer
from tdslens.dissectors.prelogin import parse_prelogin
from tdslens.dissectors.session import (
    CLIENT_TRANSITIONS,
    FALLBACK,
    SERVER_TRANSITIONS,
    Phase,
    TdsDirection,
    Unit,
)
from tdslens.dissectors.tds import (
    find_resync,
    header_plausible,
    looks_like_tds,
    looks_like_tds8,
    parse_header,
)


def run(from_client: bool, data: bytes, frame: int = 1) -> list[ev.Event]:
    d = TdsDirection(from_client)
    return d.feed(data, frame) + d.eof()


def of(events, cls):
    return [e for e in events if type(e) is cls]


# -- ReceiveBuffer ------------------------------------------------------------------------------


def test_buffer_frames_follow_byte_ranges():
    b = ReceiveBuffer()
    b.add(b"abc", 7)
    b.add(b"de", 8)
    b.add(b"f", 8)
    assert b.frames(3) == (7,)
    assert b.frames(4) == (7, 8)
    assert b.frames(2, rel=3) == (8,)
    b.skip(3)
    assert b.frames(3) == (8,)
    assert b.offset == 3 and b.origin() == 3
    assert b.spans(3) == ((3, 8, 3),)


def test_buffer_child_keeps_stream_origins():
    child = ReceiveBuffer()
    child.add_spans(b"xxxx", ((2, 5, 100), (2, 6, 208)))
    child.skip(3)
    assert child.origin() == 209
    assert child.frames(1) == (6,)


def test_buffer_need_mark_blocks_trickle():
    b = ReceiveBuffer()
    b.add(b"\x12", 1)
    b.need = 8
    assert not b.ready()
    b.add(b"\x01" * 7, 2)
    assert b.ready()


# -- 2.2.3.1 packet header ---------------------------------------------------------------------


def test_header_2_2_3_1_fields_big_endian():
    hdr = parse_header(bytes.fromhex("0409012c00340100"))
    assert (hdr.type, hdr.status, hdr.length, hdr.spid, hdr.packet_id, hdr.window) == (
        4,
        9,
        300,
        52,
        1,
        0,
    )


def test_header_2_2_3_1_plausibility():
    assert header_plausible(tb.packet(0x12, b"x"))
    assert not header_plausible(b"\x05\x01\x00\x10\x00\x00\x01\x00")  # type 5 does not exist
    assert not header_plausible(b"\x12\x40\x00\x10\x00\x00\x01\x00")  # unknown status bit
    assert not header_plausible(b"\x12\x01\x00\x04\x00\x00\x01\x00")  # shorter than a header


def test_packet_2_2_3_1_2_status_eom_and_resetconnection():
    events = run(True, tb.packet(0x01, b"\x00" * 4, status=0x09))
    pkt = of(events, ev.TdsPacket)[0]
    assert pkt.eom and pkt.reset_connection


def test_looks_like_tds_prelogin_on_any_port():
    assert looks_like_tds(tb.packet(0x12, tb.client_prelogin()))
    assert looks_like_tds(tb.packet(0x12, tb.client_prelogin())[:20])  # a cut sample still reads
    assert not looks_like_tds(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not looks_like_tds(tb.packet(0x01, b"select 1"))
    assert not looks_like_tds(b"\x16\x03\x01\x00\x50" + bytes(80))


def test_looks_like_tds8_alpn():
    hello = tb.tls_record(22, tb.client_hello(alpn=["tds/8.0"]), version=0x0301)
    assert looks_like_tds8(hello)
    assert not looks_like_tds8(tb.tls_record(22, tb.client_hello(alpn=["h2"])))
    assert not looks_like_tds(hello)


def test_find_resync_needs_a_second_header_when_it_can():
    good = tb.packet(0x04, b"\xfd" + bytes(12)) + tb.packet(0x04, b"\xfd" + bytes(12))
    junk = b"\x99\x04\x01\x00\x30\x00" + b"\x55" * 5  # a fake header whose successor is junk
    assert find_resync(junk + good) == (len(junk), True)
    assert find_resync(junk + good[:20]) == (len(junk), False)  # cannot tell yet: wait


# -- message reassembly ----------------------------------------------------------------------


def test_message_2_2_3_1_reassembled_across_packets_keeps_frames():
    payload = tb.login7()
    data = tb.message(0x10, payload, size=64)
    d = TdsDirection(True)
    out = []
    half = len(data) // 2
    out += d.feed(data[:half], 10)
    out += d.feed(data[half:], 11)
    login = of(out, ev.Login7)[0]
    assert login.frames == (10, 11)
    assert len(of(out, ev.TdsPacket)) == -(-len(payload) // 56)


def test_sql_batch_and_rpc_are_summarised_not_dumped():
    batch = struct.pack("<IIHQI", 22, 18, 2, 0, 1) + "select secret".encode("utf-16-le")
    rpc = struct.pack("<IIHQI", 22, 18, 2, 0, 1) + struct.pack("<HH", 0xFFFF, 10) + b"\x00\x00"
    events = run(True, tb.packet(0x01, batch) + tb.packet(0x03, rpc))
    sql = of(events, ev.SqlBatch)[0]
    assert sql.length == len(batch) and "secret" not in repr(events)
    assert of(events, ev.Rpc)[0].proc_id == 10


def test_attention_2_2_1_7():
    events = run(True, tb.packet(0x06, b""))
    assert len(of(events, ev.Attention)) == 1


def test_interrupted_message_is_a_violation():
    events = run(True, tb.packet(0x01, b"abcd", status=0) + tb.packet(0x03, b"\xff\xff\x0a\x00"))
    assert of(events, ev.ProtocolViolation)
    assert of(events, ev.Malformed)[0].code is ev.MalformedCode.TRUNCATED


def test_ignore_bit_2_2_3_1_2_drops_the_message():
    events = run(True, tb.packet(0x01, b"abcd", status=0) + tb.packet(0x01, b"", status=0x03))
    assert not of(events, ev.SqlBatch)


# -- PRELOGIN 2.2.6.5 ------------------------------------------------------------------------


def test_prelogin_2_2_6_5_client_options():
    p = parse_prelogin(tb.client_prelogin(0x01), from_client=True, frames=(1,), offset=0)
    assert isinstance(p, ev.PreLogin)
    assert p.version == (16, 0, 1000, 0)
    assert p.encryption == ev.Encryption.ON
    assert p.instance == ""
    assert p.thread_id == 4242
    assert p.mars is False
    assert p.trace_id == bytes(range(36))
    assert p.fedauth_required is True
    assert [o.token for o in p.options] == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("value", [0x00, 0x01, 0x02, 0x03, 0x80, 0x81, 0x83])
def test_prelogin_2_2_6_5_encryption_values(value):
    p = parse_prelogin(tb.server_prelogin(value), from_client=False, frames=(1,), offset=0)
    assert p.encryption == ev.Encryption(value)


def test_prelogin_2_2_6_5_nonce():
    payload = tb.prelogin([(0x00, bytes(6)), (0x01, b"\x00"), (0x07, b"\x42" * 32)])
    p = parse_prelogin(payload, from_client=True, frames=(1,), offset=0)
    assert p.nonce == b"\x42" * 32


def test_prelogin_2_2_6_5_bad_offset_and_missing_terminator():
    bad = struct.pack(">BHH", 0, 6, 200) + b"\xff"
    p = parse_prelogin(bad, from_client=True, frames=(3,), offset=8)
    assert isinstance(p, ev.Malformed) and p.code is ev.MalformedCode.BAD_LENGTH
    p = parse_prelogin(struct.pack(">BHH", 0, 5, 0), from_client=True, frames=(3,), offset=8)
    assert isinstance(p, ev.Malformed) and p.code is ev.MalformedCode.TRUNCATED


def test_prelogin_2_2_6_5_server_answer_in_tabular_result_packet():
    events = run(False, tb.packet(0x04, tb.server_prelogin(0x02)))
    p = of(events, ev.PreLogin)[0]
    assert not p.from_client and p.encryption == ev.Encryption.NOT_SUP


# -- the driver's state table ----------------------------------------------------------------


def test_state_tables_reach_session_and_every_unit_has_a_fallback():
    assert set(FALLBACK) == set(Unit)
    for table in (CLIENT_TRANSITIONS, SERVER_TRANSITIONS):
        assert Phase.SESSION in table.values()
        assert all(phase is not Phase.CLOSED for phase in table.values())


def test_login7_before_prelogin_is_legal_but_sql_batch_first_is_not():
    assert not of(run(True, tb.packet(0x10, tb.login7())), ev.ProtocolViolation)
    violations = of(run(True, tb.packet(0x01, b"x" * 10)), ev.ProtocolViolation)
    assert violations and violations[0].state == "initial"


def test_prelogin_twice_is_a_violation():
    data = tb.packet(0x12, tb.client_prelogin()) * 2
    assert len(of(run(True, data), ev.ProtocolViolation)) == 1


def test_not_tds_at_start():
    events = run(True, b"GET / HTTP/1.1\r\n\r\n")
    assert of(events, ev.Malformed)[0].code is ev.MalformedCode.NOT_TDS


# -- gaps and resync ---------------------------------------------------------------------------


def test_gap_inside_a_packet_keeps_sync():
    first = tb.packet(0x04, tb.server_prelogin())
    resp = tb.packet(0x04, tb.envchange_string(1, "db") + tb.done())
    second = tb.packet(0x04, tb.done())
    d = TdsDirection(False)
    out = d.feed(first, 1) + d.feed(resp[:10], 2) + d.gap(5, 3) + d.feed(resp[15:] + second, 4)
    assert of(out, ev.Gap)[0].length == 5
    assert not of(out, ev.Resync)
    assert len(of(out, ev.Done)) == 1  # the damaged message is skipped, the next one parsed
    assert of(out, ev.Done)[0].frames == (4,)


def test_gap_across_headers_resyncs():
    first = tb.packet(0x04, tb.server_prelogin())
    resp = tb.packet(0x04, tb.done()) * 3
    d = TdsDirection(False)
    out = d.feed(first, 1) + d.gap(30, 2) + d.feed(resp[30:], 3)
    assert not of(out, ev.Resync)  # one header after the gap: not yet enough evidence
    out = d.eof()
    assert of(out, ev.Resync)[0].skipped == 12  # but at the end of the stream it is
    assert len(of(out, ev.Done)) == 1
    d = TdsDirection(False)
    out = d.feed(first, 1) + d.gap(30, 2) + d.feed(resp[30:] + resp, 3)
    assert of(out, ev.Resync)[0].offset == 43 + 30 + 12
    assert len(of(out, ev.Done)) == 4  # the last packet of the first copy, then three


def test_eof_inside_a_packet_is_truncated():
    out = run(False, tb.packet(0x04, tb.done())[:-3])
    assert of(out, ev.Malformed)[0].code is ev.MalformedCode.TRUNCATED


def test_docs_diagram_is_generated_from_the_tables():
    from pathlib import Path

    from tdslens.dissectors.session import DOC_BEGIN, DOC_END, diagrams

    doc = (Path(__file__).resolve().parent.parent / "docs" / "dissectors.md").read_text()
    generated = doc.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0]
    assert generated == "\n" + diagrams(), "run: python -m tdslens.dissectors.session"


def test_two_gaps_inside_one_packet_keep_sync():
    resp = tb.packet(0x04, tb.envchange_string(1, "somedatabase") + tb.done())
    d = TdsDirection(False)
    out = d.feed(tb.packet(0x04, tb.server_prelogin()), 1)
    out += d.feed(resp[:10], 2) + d.gap(4, 3) + d.feed(resp[14:20], 4) + d.gap(3, 5)
    out += d.feed(resp[23:] + tb.packet(0x04, tb.done(rows=9)), 6)
    assert not of(out, ev.Resync) and not of(out, ev.ProtocolViolation)
    assert [x.row_count for x in of(out, ev.Done)] == [9]


def test_gap_inside_tls_in_prelogin_restarts_the_tls_child():
    d = TdsDirection(True)
    hello = tb.packet(0x12, tb.tls_record(22, tb.client_hello()))
    out = d.feed(tb.packet(0x12, tb.client_prelogin(0x01)) + hello[:30], 1)
    out += d.gap(20, 2) + d.feed(hello[50:], 3)
    out += d.feed(tb.packet(0x12, tb.tls_record(20, b"\x01")), 4)
    assert of(out, ev.ChangeCipherSpec)  # the next record is read again
    assert not of(out, ev.ClientHello)  # the damaged one is not invented


def test_sspi_and_fedauth_client_messages_2_2_6_8_and_2_2_6_3():
    d = TdsDirection(True)
    out = d.feed(tb.packet(0x10, tb.login7()) + tb.packet(0x11, b"N" * 40), 1)
    out += d.feed(tb.packet(0x08, b"\x10\x00\x00\x00" + b"t" * 16), 2)
    assert of(out, ev.Sspi)[0].length == 40 and of(out, ev.Sspi)[0].from_client
    assert of(out, ev.FedAuthToken)[0].length == 20
    assert "tttt" not in repr(out)
