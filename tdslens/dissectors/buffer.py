"""One receive buffer for every dissector: bytes in arrival order, plus which frame each came from.

Why one class: every layer (TDS packets, the token stream inside them, TLS records, DNS over TCP)
has the same needs: append chunks, look at the next bytes without copying, consume a unit, know
which capture frames that unit's bytes came from, avoid re-parsing a byte-by-byte trickle, and
refuse to grow without bound on garbage.

Offsets are *stream* offsets: byte 0 is the first byte ever appended in this direction, so an
event's offset stays meaningful after the front of the buffer has been dropped.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable

DEFAULT_CAP = 1 << 20  # 1 MiB of incomplete unit is already far beyond any sane TDS header/token

Spans = tuple[tuple[int, int, int], ...]  # (length, frame, origin) runs, in order


class ReceiveBuffer:
    """A bytearray with a read position and a frame map.

    ``need`` is the "don't bother me before N bytes" mark: a parser that found a unit incomplete
    sets it to the size it needs, and ``ready()`` stays False until that many bytes are here.
    ``cap`` bounds what may be held; ``over_cap()`` tells the owner to emit Malformed and drop.

    Each appended run remembers its frame and its *origin*: the TCP stream offset of its first
    byte. A top-level buffer's origin is its own offset; a child buffer (the tokens inside TDS
    packets, the TLS records inside PRELOGIN) is fed spans with the origins of the bytes it got,
    so its events still report where they sit in the TCP stream.

    ``size`` is ``len(buffer)`` kept as a plain attribute: the parsers ask whether anything is
    held on every unit, and ``len()`` on a Python class is a method call.
    """

    __slots__ = ("_base", "_buf", "_pos", "_spans", "cap", "need", "size")

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self._buf = bytearray()
        self._pos = 0  # read position inside _buf
        self._base = 0  # local offset of _buf[0]
        self._spans: deque[tuple[int, int, int, int]] = deque()  # local start, end, frame, origin
        self.need = 0
        self.cap = cap
        self.size = 0  # unread bytes held

    # -- filling ----------------------------------------------------------------------------

    def add(
        self, data: bytes | bytearray | memoryview, frame: int, origin: int | None = None
    ) -> None:
        """Append bytes of ``frame``; ``origin`` is their stream offset (default: our own)."""
        if not data:
            return
        start = self._base + len(self._buf)
        self._buf += data
        end = self._base + len(self._buf)
        self.size = len(self._buf) - self._pos
        origin = start if origin is None else origin
        if self._spans:
            s0, e0, f0, o0 = self._spans[-1]
            if f0 == frame and o0 + (e0 - s0) == origin:
                self._spans[-1] = (s0, end, f0, o0)
                return
        self._spans.append((start, end, frame, origin))

    def add_spans(self, data: bytes, spans: Iterable[tuple[int, int, int]]) -> None:
        """Append ``data`` whose bytes came from ``spans`` (length, frame, origin) runs."""
        pos = 0
        for length, frame, origin in spans:
            self.add(data[pos : pos + length], frame, origin)
            pos += length
        if pos < len(data):  # defensive: an unattributed tail keeps the last frame
            last = self._spans[-1] if self._spans else (0, 0, 0, 0)
            self.add(data[pos:], last[2], last[3] + last[1] - last[0])

    # -- looking ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.size

    @property
    def offset(self) -> int:
        """Local offset of the next unread byte (bytes ever appended or skipped before it)."""
        return self._base + self._pos

    @property
    def end_offset(self) -> int:
        return self._base + len(self._buf)

    def origin(self, rel: int = 0) -> int:
        """Stream offset of the unread byte ``rel`` ahead (where it sat in the TCP stream)."""
        at = self.offset + rel
        for start, end, _frame, origin in self._spans:
            if start <= at < end:
                return origin + at - start
        if self._spans:  # past the end: continue the last run
            start, end, _frame, origin = self._spans[-1]
            return origin + at - start
        return at

    def ready(self) -> bool:
        """True when there are bytes and at least ``need`` of them."""
        n = len(self)
        return n > 0 and n >= self.need

    def over_cap(self) -> bool:
        return len(self) > self.cap

    def byte(self, rel: int = 0) -> int:
        return self._buf[self._pos + rel]

    def peek(self, n: int, rel: int = 0) -> bytes:
        start = self._pos + rel
        return bytes(self._buf[start : start + n])

    def unpack(self, st: struct.Struct, rel: int = 0) -> tuple:
        return st.unpack_from(self._buf, self._pos + rel)

    def view(self) -> memoryview:
        """A memoryview of the unread bytes. Use it in ``with`` and release before mutating."""
        return memoryview(self._buf)[self._pos :]

    def frames(self, n: int, rel: int = 0) -> tuple[int, ...]:
        """Frame numbers of the bytes [rel, rel+n) ahead of the read position, in order."""
        lo = self.offset + rel
        hi = lo + max(n, 1)
        out: list[int] = []
        for start, end, frame, _origin in self._spans:
            if start >= hi:
                break
            if end > lo and (not out or out[-1] != frame):
                out.append(frame)
        return tuple(out)

    def spans(self, n: int) -> Spans:
        """(length, frame, origin) runs covering the next n bytes."""
        lo = self.offset
        hi = lo + n
        out: list[tuple[int, int, int]] = []
        for start, end, frame, origin in self._spans:
            if start >= hi:
                break
            a, b = max(start, lo), min(end, hi)
            if b > a:
                out.append((b - a, frame, origin + a - start))
        return tuple(out)

    # -- consuming --------------------------------------------------------------------------

    def take(self, n: int) -> bytes:
        data = bytes(self._buf[self._pos : self._pos + n])
        self.skip(n)
        return data

    def take_all(self) -> tuple[bytes, Spans]:
        """Everything unread with its runs, for a parser that works on one chunk (see
        ``span_frames``); the buffer is left empty, ready for what that parser leaves over."""
        spans = self.spans(len(self))
        return self.take(len(self)), spans

    def skip(self, n: int) -> None:
        self._pos = min(self._pos + n, len(self._buf))
        self.need = 0
        self._trim()
        self.size = len(self._buf) - self._pos

    def clear(self) -> None:
        self.skip(len(self))

    def advance_stream(self, n: int) -> None:
        """Account for ``n`` bytes never appended (a capture gap, or bytes a parser read
        straight from its chunk); drops what is buffered."""
        self._base += len(self._buf) + n
        if self._buf:
            self._buf.clear()
            self._spans.clear()
        self._pos = 0
        self.need = 0
        self.size = 0

    def _trim(self) -> None:
        offset = self.offset
        while self._spans and self._spans[0][1] <= offset:
            self._spans.popleft()
        if self._pos and (self._pos >= len(self._buf) or self._pos > 65536):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0


# -- a chunk of bytes with its runs -------------------------------------------------------------
# A parser that has its input whole in one ``bytes`` (the usual case: a unit rarely straddles
# two chunks) slices units out of it by position and asks these for their frames and stream
# offsets, instead of copying each unit through a ReceiveBuffer. The answers are the buffer's.


def span_frames(spans: Spans, lo: int, hi: int) -> tuple[int, ...]:
    """Frame numbers of bytes [lo, hi) of a chunk whose runs are ``spans`` (as ``frames``)."""
    if len(spans) == 1 and lo < spans[0][0]:
        return (spans[0][1],)
    hi = max(hi, lo + 1)
    out: list[int] = []
    start = 0
    for length, frame, _origin in spans:
        if start >= hi:
            break
        start += length
        if start > lo and length and (not out or out[-1] != frame):
            out.append(frame)
    return tuple(out)


def span_origin(spans: Spans, at: int) -> int:
    """Stream offset of byte ``at`` of a chunk whose runs are ``spans`` (as ``origin``)."""
    start = 0
    for length, _frame, origin in spans:
        if at < start + length:
            return origin + at - start
        start += length
    if spans:  # past the end: continue the last run
        length, _frame, origin = spans[-1]
        return origin + at - start + length
    return at


def span_slice(spans: Spans, lo: int, hi: int) -> Spans:
    """The runs of bytes [lo, hi) of a chunk (as ``spans``)."""
    if len(spans) == 1:
        length, frame, origin = spans[0]
        hi = min(hi, length)
        return ((hi - lo, frame, origin + lo),) if hi > lo else ()
    out: list[tuple[int, int, int]] = []
    start = 0
    for length, frame, origin in spans:
        end = start + length
        if start >= hi:
            break
        a, b = max(start, lo), min(end, hi)
        if b > a:
            out.append((b - a, frame, origin + a - start))
        start = end
    return tuple(out)
