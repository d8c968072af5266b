"""Units sliced out of their chunk, and what is remembered between connections (issue 9).

The dissectors parse the units that lie whole in the chunk they were given and ask
``span_frames``/``span_origin``/``span_slice`` where each came from; only a unit cut at the
chunk's end waits in a ReceiveBuffer. Those helpers must answer exactly as the buffer would.
PRELOGIN option tables and short length-prefixed tokens are remembered across connections by
their bytes; a remembered one must give what parsing it again would.
"""

from __future__ import annotations

import random
import struct

import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.buffer import ReceiveBuffer, span_frames, span_origin, span_slice
from tdslens.dissectors.prelogin import parse_prelogin
from tdslens.dissectors.tokens import TokenStream


def _runs(rnd: random.Random) -> tuple[tuple[int, int, int], ...]:
    """A few (length, frame, origin) runs: frames repeat, origins jump or continue."""
    out = []
    origin = rnd.randint(0, 50)
    for _ in range(rnd.randint(1, 5)):
        length = rnd.randint(1, 9)
        origin += rnd.choice([0, 0, 3])
        out.append((length, rnd.choice([1, 2, 3]), origin))
        origin += length
    return tuple(out)


def test_span_helpers_answer_as_the_buffer_does():
    rnd = random.Random(1)
    for _ in range(300):
        runs = _runs(rnd)
        data = bytes(range(sum(length for length, _, _ in runs)))
        buf = ReceiveBuffer()
        buf.add(b"xyz", 99, 1000)  # bytes before the chunk, already consumed
        buf.skip(3)
        buf.add_spans(data, runs)
        spans = buf.spans(len(buf))
        for lo in range(len(data) + 1):
            assert span_origin(runs, lo) == buf.origin(lo)
            for hi in range(lo, len(data) + 1):
                assert span_frames(runs, lo, hi) == buf.frames(hi - lo, rel=lo)
                part = ReceiveBuffer()
                part.add_spans(data[lo:hi], span_slice(runs, lo, hi))
                whole = ReceiveBuffer()
                whole.add_spans(data, spans)
                whole.skip(lo)
                assert part.spans(len(part)) == whole.spans(hi - lo)


def test_take_all_empties_the_buffer_with_its_runs():
    buf = ReceiveBuffer()
    buf.add(b"abc", 1, 10)
    buf.add(b"def", 2, 20)
    buf.skip(1)
    data, spans = buf.take_all()
    assert (data, spans) == (b"bcdef", ((2, 1, 11), (3, 2, 20)))
    assert len(buf) == buf.size == 0


def test_prelogin_known_table_still_checks_the_payload_reaches_its_data():
    good = tb.client_prelogin()
    first = parse_prelogin(good, from_client=True, frames=(1,), offset=0)
    assert isinstance(first, ev.PreLogin)
    again = parse_prelogin(good, from_client=True, frames=(1,), offset=0)
    assert again == first and again.options is first.options  # the table was remembered
    short = good[:-3]  # same option table, the last option's data cut
    bad = parse_prelogin(short, from_client=True, frames=(1,), offset=0)
    assert isinstance(bad, ev.Malformed) and bad.code is ev.MalformedCode.BAD_LENGTH


def _response_71() -> bytes:
    """A TDS 7.1 login response: its DONE has a 4-byte row count (8 bytes, not 12)."""
    done_71 = b"\xfd" + struct.pack("<HHI", 0, 0, 0)
    return tb.envchange_string(1, "sales", "master") + tb.loginack(0x71000001) + done_71


def test_remembered_loginack_still_sets_the_token_layouts():
    """A LOGINACK parsed once before must still set the TDS version its stream reads by."""
    data = _response_71()
    first = TokenStream()
    events = first.feed(data, ((len(data), 1, 0),))
    second = TokenStream()
    assert second.feed(data, ((len(data), 1, 0),)) == events
    assert second.tds_version == first.tds_version == 0x71000001
    assert [type(e) for e in events] == [ev.EnvChange, ev.LoginAck, ev.Done]  # DONE in step
