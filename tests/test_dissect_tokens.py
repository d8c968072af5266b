"""The server token stream, MS-TDS 2.2.7, fed through the TDS driver as real servers send it."""

from __future__ import annotations

import struct

import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.session import TdsDirection
from tdslens.dissectors.tokens import TokenStream


def response(*tokens: bytes, size: int = 4096) -> list[ev.Event]:
    """Server PRELOGIN answer, then one response message made of ``tokens``."""
    d = TdsDirection(False)
    data = tb.packet(0x04, tb.server_prelogin()) + tb.message(0x04, b"".join(tokens), size=size)
    out = d.feed(data, 1) + d.eof()
    return [e for e in out if not isinstance(e, ev.TdsPacket | ev.PreLogin | ev.EndOfResponse)]


def test_envchange_2_2_7_9_routing_type_20():
    (e, done) = response(
        tb.envchange_routing("cr3.westeurope1-a.worker.database.windows.net", 11021), tb.done()
    )
    assert isinstance(e, ev.EnvChangeRouting)
    assert e.protocol == 0 and e.port == 11021
    assert e.server == "cr3.westeurope1-a.worker.database.windows.net"
    assert isinstance(done, ev.Done)


def test_envchange_2_2_7_9_string_types():
    events = response(
        tb.envchange_string(1, "sales", "master"), tb.envchange_string(4, "8000", "4096")
    )
    assert [(e.type, e.new, e.old) for e in events] == [(1, "sales", "master"), (4, "8000", "4096")]


def test_envchange_2_2_7_9_binary_types_collation_and_reset_ack():
    collation = b"\xe3" + struct.pack("<H", 8) + b"\x07\x05" + bytes.fromhex("0904d00034") + b"\x00"
    reset = b"\xe3\x03\x00\x12\x00\x00"
    events = response(collation, reset)
    assert (events[0].type, events[0].new) == (7, "0904d00034")
    assert (events[1].type, events[1].new, events[1].old) == (18, "", "")


def test_envchange_2_2_7_9_promote_transaction_l_varbyte():
    body = b"\x0f" + struct.pack("<I", 3) + b"\x01\x02\x03" + b"\x00"
    (e,) = response(b"\xe3" + struct.pack("<H", len(body)) + body)
    assert (e.type, e.new) == (15, "010203")


def test_loginack_2_2_7_14():
    (e,) = response(tb.loginack(0x74000004, "Microsoft SQL Server"))
    assert isinstance(e, ev.LoginAck)
    assert e.tds_version == 0x74000004 and e.interface == 1
    assert e.prog_name == "Microsoft SQL Server" and e.prog_version == (16, 0, 0x1000)


def test_error_2_2_7_10_and_info_2_2_7_13():
    events = response(
        tb.server_message(0xAA, 18456, "Login failed for user 'x'.", state=1, severity=14),
        tb.server_message(0xAB, 5701, "Changed database context", severity=0),
        tb.done(status=0x02),
    )
    err, info, done = events
    assert isinstance(err, ev.Error) and err.number == 18456 and err.severity == 14
    assert err.server == "gw-01" and err.line == 1
    assert isinstance(info, ev.Info) and info.number == 5701
    assert done.error


def test_done_2_2_7_6_kinds_and_rowcount():
    events = response(
        tb.done(0x11, 0xC1, 7, token=0xFF), tb.done(0x01, 0, 0, token=0xFE), tb.done(0x20)
    )
    assert [e.kind for e in events] == [
        ev.DoneKind.DONEINPROC,
        ev.DoneKind.DONEPROC,
        ev.DoneKind.DONE,
    ]
    assert events[0].row_count == 7 and events[2].attention_ack


def test_done_2_2_7_6_is_8_bytes_before_tds_7_2():
    stream = TokenStream()
    out = stream.feed(tb.loginack(0x71000001), ((30, 1, 0),))
    out += stream.feed(b"\xfd" + struct.pack("<HHI", 0x10, 0xC1, 3) + tb.done()[:1], ((10, 2, 30),))
    assert out[-1].row_count == 3


def test_featureextack_2_2_7_11():
    (e,) = response(tb.featureextack([(0x0A, b"\x01"), (0x02, b""), (0x01, bytes(40))]))
    assert [(f.id, f.length) for f in e.features] == [(0x0A, 1), (0x02, 0), (0x01, 40)]
    assert e.features[0].data == b"\x01" and e.features[2].data == b""


def test_fedauthinfo_2_2_7_12():
    (e,) = response(tb.fedauthinfo("https://login.example/tenant", "https://database.windows.net/"))
    assert e.sts_url == "https://login.example/tenant"
    assert e.spn == "https://database.windows.net/"


def test_sspi_2_2_7_22_and_order_2_2_7_17():
    events = response(b"\xed\x04\x00abcd", b"\xa9\x04\x00\x01\x00\x02\x00")
    assert events[0] == ev.Sspi(frames=(1,), offset=events[0].offset, length=4, from_client=False)
    assert events[1].columns == (1, 2)


def test_colmetadata_2_2_7_4_row_2_2_7_19_nbcrow_2_2_7_15():
    events = response(
        tb.colmetadata_int_nvarchar(),
        tb.row(1, "ann"),
        tb.row(2, None),
        tb.nbcrow(3),
        tb.done(0x10, 0xC1, 3),
    )
    meta, rows, done = events
    assert [c.name for c in meta.columns] == ["id", "name"]
    assert [c.type for c in meta.columns] == [0x38, 0xE7]
    assert isinstance(rows, ev.Rows) and rows.count == 3
    assert done.row_count == 3


def test_returnstatus_2_2_7_18_and_returnvalue_2_2_7_19():
    rv = b"\xac" + struct.pack("<H", 1) + tb.b_varchar("@out") + b"\x01" + struct.pack("<IH", 0, 0)
    rv += b"\x26\x04" + b"\x04" + struct.pack("<i", 99)
    events = response(b"\x79" + struct.pack("<i", -6), rv)
    assert events[0].value == -6
    assert (events[1].name, events[1].type) == ("@out", 0x26)


def test_unknown_fixed_length_token_2_2_4_2_is_skipped():
    # 0x3C: bits 4-5 = 11 (fixed), bits 2-3 = 11 (8 bytes)
    (tok, done) = response(b"\x3c" + bytes(8), tb.done())
    assert (tok.token, tok.length) == (0x3C, 8) and isinstance(done, ev.Done)


def test_altmetadata_cannot_continue_until_next_message():
    d = TdsDirection(False)
    data = tb.packet(0x04, tb.server_prelogin())
    data += tb.packet(0x04, b"\x88\x01\x00" + bytes(20) + tb.done())
    data += tb.packet(0x04, tb.done(rows=5))
    out = d.feed(data, 1)
    cannot = [e for e in out if isinstance(e, ev.CannotContinue)]
    assert cannot and cannot[0].what == "ALTMETADATA"
    dones = [e for e in out if isinstance(e, ev.Done)]
    assert [x.row_count for x in dones] == [5]


def test_unknown_column_type_cannot_continue():
    meta = b"\x81\x01\x00" + struct.pack("<IH", 0, 0) + b"\x99" + tb.b_varchar("x")
    events = response(meta, tb.done())
    assert isinstance(events[0], ev.CannotContinue)


def test_token_cut_by_eom_is_truncated():
    events = response(tb.envchange_string(1, "sales")[:-4])
    assert events[0].code is ev.MalformedCode.TRUNCATED


def test_bad_inner_length_is_malformed():
    body = b"\x14\x40\x00" + b"\x00\x01\x02"  # routing value length 64 inside a 6-byte token
    events = response(b"\xe3" + struct.pack("<H", len(body)) + body, tb.done())
    assert events[0].code is ev.MalformedCode.BAD_LENGTH


def test_tokens_span_packets_and_report_stream_offsets():
    tokens = tb.envchange_routing("host.example", 11000) + tb.done()
    events = response(tokens, size=8 + 7)  # 7-byte packet payloads
    routing = events[0]
    assert routing.frames == (1,)
    assert routing.offset == 8 + len(tb.server_prelogin()) + 8  # after both headers


def test_failed_tds71_login_without_loginack_2_2_7_6():
    """No LOGINACK to learn the version from: the SQL 2000 PRELOGIN or a hint decides."""
    err = tb.server_message(0xAA, 18456, "Login failed", severity=14)
    done71 = b"\xfd" + struct.pack("<HHI", 0x02, 0, 0)
    old = tb.prelogin([(0x00, bytes([8, 0]) + struct.pack(">H", 2039) + b"\0\0"), (0x01, b"\x02")])
    d = TdsDirection(False)
    out = d.feed(tb.packet(0x04, old) + tb.packet(0x04, err + done71), 1) + d.eof()
    assert [type(e) for e in out if isinstance(e, ev.Done | ev.Malformed)] == [ev.Done]
    d = TdsDirection(False)
    d.hint_tds_version(0x71000001)  # a newer server, an old client: the connection layer knows
    out = d.feed(tb.packet(0x04, tb.server_prelogin()) + tb.packet(0x04, err + done71), 1)
    assert [e.error for e in out if isinstance(e, ev.Done)] == [True]
