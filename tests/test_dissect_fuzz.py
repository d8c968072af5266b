"""Fuzzing every dissector: mutated real messages and random bytes, any chunking, gaps.

Properties (mitmproxy's test_tls_fuzz shape, applied to a passive analyzer):
- no exception escapes ``feed``/``gap``/``eof`` or the message parsers;
- buffering stays bounded (each buffer under its cap, plus at most one incoming chunk);
- every call returns (no infinite loop: Hypothesis' deadline is off, the run time is the bound).
The unmarked tests run ~2,000 inputs each; ``-m fuzz`` runs 100,000.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import tds_bytes as tb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdslens.dissectors import events as ev
from tdslens.dissectors.dns import DnsTcpDirection, parse_dns
from tdslens.dissectors.login7 import parse_login7
from tdslens.dissectors.prelogin import parse_prelogin
from tdslens.dissectors.session import TdsDirection
from tdslens.dissectors.tls import TlsDissector
from tdslens.dissectors.tokens import TOKEN_CAP, TokenStream

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"


def _seeds() -> list[tuple[bool, bytes]]:
    seeds = [
        (True, tb.packet(0x12, tb.client_prelogin(0x01)) + tb.message(0x10, tb.login7(), size=70)),
        (
            True,
            tb.packet(0x12, tb.tls_record(22, tb.client_hello())) + tb.tls_record(23, bytes(40)),
        ),
        (True, tb.tls_record(22, tb.client_hello(alpn=["tds/8.0"]), version=0x0301)),
        (
            False,
            tb.packet(0x04, tb.server_prelogin())
            + tb.message(
                0x04,
                tb.loginack()
                + tb.envchange_routing("w.example", 11000)
                + tb.fedauthinfo("https://sts", "spn")
                + tb.featureextack([(1, b"ab")])
                + tb.colmetadata_int_nvarchar()
                + tb.row(1, "a")
                + tb.nbcrow(2)
                + tb.server_message(0xAA, 40613, "Database not available")
                + tb.done(),
                size=40,
            ),
        ),
    ]
    if SHARED.is_dir():
        for path in sorted(SHARED.glob("*.pcap")):
            for conn in tb.capture_streams(path):
                for side in (True, False):
                    data = b"".join(c.data for c in conn if c.from_client is side)
                    if data:
                        seeds.append((side, data))
    return seeds


SEEDS = _seeds()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
)


@st.composite
def inputs(draw):
    """A byte stream for one direction (mutated seed or random) and how to deliver it."""
    if draw(st.integers(0, 4)) == 0:
        from_client, data = draw(st.booleans()), draw(st.binary(max_size=600))
    else:
        from_client, seed = draw(st.sampled_from(SEEDS))
        data = bytearray(seed)
        for op, pos, arg in draw(st.lists(mutation, max_size=6)):
            if not data:
                break
            pos %= len(data)
            if op == "flip":
                data[pos] = arg
            elif op == "insert":
                data[pos:pos] = arg
            elif op == "delete":
                del data[pos : pos + arg]
            else:
                del data[pos:]
        data = bytes(data)
    cuts = sorted(draw(st.lists(st.integers(0, max(len(data), 1)), max_size=12)))
    gaps = draw(st.lists(st.integers(1, 3000), max_size=len(cuts)))
    return from_client, data, cuts, gaps


def _bounded(d: TdsDirection, chunk: int) -> None:
    assert len(d.buf) <= d.buf.cap + chunk
    assert len(d.tokens.buf) <= TOKEN_CAP + 0xFFFF
    assert len(d.tls.records) <= d.tls.records.cap + 0xFFFF
    assert len(d.tls.handshake) <= d.tls.handshake.cap + 0xFFFF + 5


def check_direction(case) -> None:
    from_client, data, cuts, gaps = case
    d = TdsDirection(from_client)
    prev = 0
    out: list[ev.Event] = []
    for i, cut in enumerate([*cuts, len(data)]):
        chunk = data[prev:cut]
        out += d.feed(chunk, i + 1)
        _bounded(d, len(chunk))
        if i < len(gaps) and gaps[i] % 7 == 0:
            out += d.gap(gaps[i], i + 1)
        prev = max(prev, cut)
    out += d.eof()
    for e in out:
        assert isinstance(e, ev.Event) and e.frames and e.offset >= 0, e
        repr(e)


def check_parsers(data: bytes) -> None:
    parse_prelogin(data, from_client=True, frames=(1,), offset=0)
    parse_login7(data, frames=(1,), offset=0)
    parse_dns(data, frames=(1,))
    TokenStream().feed(data, ((len(data), 1, 0),))
    TokenStream(0x71000001).feed(data, ((len(data), 1, 0),))
    for side in (True, False):
        TlsDissector(side).feed(data, ((len(data), 1, 0),), ev.TlsCarrier.RAW)
    dns = DnsTcpDirection()
    dns.feed(struct.pack(">H", len(data)) + data, 1)
    dns.feed(data, 2)
    dns.eof()


def _payloads():
    """Message payloads (without TDS headers) to mutate for the message parsers."""
    return st.sampled_from(
        [
            tb.client_prelogin(),
            tb.server_prelogin(),
            tb.login7(),
            tb.tls_record(22, tb.client_hello()),
            tb.tls_record(22, tb.server_hello(version=0x0304)),
            tb.loginack() + tb.envchange_routing("x", 1) + tb.done(),
            tb.colmetadata_int_nvarchar() + tb.row(5, "abc") + tb.nbcrow(1),
        ]
    )


@st.composite
def payload_inputs(draw):
    data = bytearray(draw(_payloads()))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


QUICK = settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
LONG = settings(
    max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@QUICK
@given(inputs())
def test_fuzz_direction_quick(case):
    check_direction(case)


@QUICK
@given(st.one_of(payload_inputs(), st.binary(max_size=300)))
def test_fuzz_parsers_quick(data):
    check_parsers(data)


@pytest.mark.fuzz
@LONG
@given(inputs())
def test_fuzz_direction_long(case):
    check_direction(case)


@pytest.mark.fuzz
@LONG
@given(st.one_of(payload_inputs(), st.binary(max_size=300)))
def test_fuzz_parsers_long(data):
    check_parsers(data)


def test_client_hello_cut_at_every_offset():
    """mitmproxy's property: a ClientHello cut anywhere never raises, whatever follows."""
    record = tb.tls_record(22, tb.client_hello(alpn=["tds/8.0"]))
    for cut in range(len(record)):
        for tail in (b"", b"\x00" * 7, b"\xff" * 3):
            data = record[:cut] + tail
            t = TlsDissector(True)
            t.feed(data, ((len(data), 1, 0),), ev.TlsCarrier.RAW)


def test_huge_token_is_bounded():
    """A ROW claiming a 2 GiB PLP value cannot make us buffer without limit."""
    meta = b"\x81\x01\x00" + struct.pack("<IH", 0, 1) + b"\xa5\xff\xff" + tb.b_varchar("blob")
    row = b"\xd1" + struct.pack("<QI", 1 << 31, 1 << 31)
    stream = TokenStream()
    out = stream.feed(meta + row, ((len(meta + row), 1, 0),))
    chunk = bytes(1 << 16)
    for i in range(300):
        out += stream.feed(chunk, ((len(chunk), 2 + i, 0),))
        assert len(stream.buf) <= TOKEN_CAP + len(chunk)
    assert any(isinstance(e, ev.Malformed) and e.code is ev.MalformedCode.TOO_LARGE for e in out)


@settings(max_examples=500, deadline=None, database=None)
@given(inputs())
def test_fuzz_chunking_never_changes_events(case):
    """Even on damaged input, where TCP cut the bytes must not change what we report."""
    from_client, data, cuts, _gaps = case
    whole = TdsDirection(from_client)
    expected = whole.feed(data, 1) + whole.eof()
    pieces = TdsDirection(from_client)
    got: list[ev.Event] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        got += pieces.feed(data[prev:cut], 1)
        prev = max(prev, cut)
    got += pieces.eof()
    assert got == expected
