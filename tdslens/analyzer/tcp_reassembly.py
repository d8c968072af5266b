"""One direction of a TCP connection: turns segments into in-order bytes, gaps and conflicts.

Why a class of its own: the rules for what counts as new data (retransmission, overlap,
out-of-order, keep-alive, zero-window probe, snap-length cut, lost segment) are the subtle part
of TCP analysis and deserve to be read and tested apart from connection bookkeeping.

The engine (`analyzer/tcp.py`) handles the common case inline for speed: a segment that starts
exactly at `nxt`, fully captured, with nothing buffered and no zero window. It then does what
`_deliver` does. Everything else comes here.

Sequence numbers are 32-bit and wrap; offsets are Python ints counted from 0 and never wrap.
`nxt` is the raw sequence number of the next byte expected and `off` its stream offset.
"""

from __future__ import annotations

import heapq

import numpy as np

from tdslens.analyzer.tcp_events import (
    Conflict,
    DirectionStats,
    Gap,
    Payload,
    QuietCount,
    TcpEvent,
    ZeroWindow,
)

MASK = 0xFFFFFFFF
HALF = 0x80000000

OOO_CAP = 1 << 20  # bytes held out of order per direction before declaring a gap
RECENT_LIMIT = 32 * 1024  # delivered bytes kept to compare retransmissions against
RECENT_KEEP = 16 * 1024  # what a trim keeps (the newest bytes)


class Direction:
    """Reassembly state of the bytes one side sends (and facts about them)."""

    __slots__ = (
        "acked",
        "buffer_cap_hit",
        "conflict_frames",
        "deliver",
        "fin_acked",
        "fin_frame",
        "fin_seq",
        "from_client",
        "gap_bytes",
        "gaps",
        "history",
        "isn",
        "keepalives",
        "letters",
        "midstream",
        "nxt",
        "off",
        "ooo",
        "ooo_bytes",
        "ooo_cap",
        "packets",
        "payload_bytes",
        "peer",
        "pending",
        "probe",
        "quiet",
        "recent",
        "retransmissions",
        "saw_pure_ack",
        "side",
        "slow",
        "slow_delivered",
        "slow_wire",
        "stream",
        "zw",
        "zw_episodes",
        "zw_first",
        "zw_probes",
    )

    def __init__(
        self,
        stream: int,
        from_client: bool,
        history: list[str],
        ooo_cap: int,
        deliver: bool = True,
    ) -> None:
        self.stream = stream
        self.from_client = from_client
        # Emit Payload events? False when no consumer subscribed to the stream: the bytes are
        # still tracked (offsets, retransmission compares), only the event is not built.
        self.deliver = deliver
        self.quiet: QuietCount | None = None  # counts what is not delivered (TcpEngine.quiet)
        self.side = "client" if from_client else "server"
        self.history = history  # shared with the connection: letters in order of first use
        self.letters: set[str] = set()
        self.peer: Direction = self  # set by the connection once both sides exist
        self.ooo_cap = ooo_cap
        self.isn = -1  # raw ISN when this side's SYN / SYN-ACK was seen
        self.nxt = -1  # raw seq of the next byte expected; -1 until known
        self.off = 0
        self.midstream = True
        self.recent = bytearray()  # delivered bytes ending at `off`, for conflict checks
        # Bytes the fast lane delivered, not yet copied into `recent`: (buffer, payload offsets,
        # lengths, lo, hi), oldest first in [lo:hi]. Copied only if still needed at the batch
        # end (most are acknowledged by then), or before `recent` is used.
        self.pending: tuple[memoryview, np.ndarray, np.ndarray, int, int] | None = None
        self.acked = -1  # the peer's latest raw ACK (for dropping `recent` once all is acked)
        self.ooo: list[tuple[int, int, int, bytes, int]] = []  # heap (off, frame, ts, data, wire)
        self.ooo_bytes = 0
        self.probe: tuple[int, int, bytes] | None = None  # held zero-window probe
        self.fin_seq = -1
        self.fin_frame: int | None = None
        self.fin_acked = False
        self.slow = False  # the engine's inline fast path must not be used (see refresh)
        self.packets = 0
        self.payload_bytes = 0  # delivered bytes, fast path included
        self.slow_wire = 0  # payload bytes of segments that took the slow path
        self.slow_delivered = 0  # bytes the slow path delivered
        self.retransmissions = 0
        self.keepalives = 0
        self.conflict_frames: list[int] = []
        self.gaps = 0
        self.gap_bytes = 0
        self.buffer_cap_hit = False
        self.saw_pure_ack = False
        self.zw = False  # this side currently advertises a zero window
        self.zw_first = 0
        self.zw_probes: list[int] = []
        self.zw_episodes: list[ZeroWindow] = []

    # --- facts --------------------------------------------------------------------------

    def mark(self, letter: str) -> None:
        """Add a history letter the first time this side does something."""
        if letter not in self.letters:
            self.letters.add(letter)
            self.history.append(letter if self.from_client else letter.lower())

    def syn(self, seq: int) -> None:
        """This side's SYN or SYN-ACK: the stream starts at seq + 1 (unless data came first)."""
        if self.nxt < 0:
            self.isn = seq
            self.nxt = (seq + 1) & MASK
            self.off = 0
            self.midstream = False

    def fin(self, seq: int, frame: int) -> None:
        """FIN at raw sequence number `seq` (after the segment's data)."""
        if self.fin_frame is None:
            self.fin_frame = frame
            self.fin_seq = seq
            self.mark("F")
            if self.nxt < 0:  # a bare FIN is the first we see of this side
                self.nxt = seq
                self.off = 0

    def window(self, zero: bool, frame: int) -> None:
        """Track zero-window episodes of this side's receive window."""
        if zero and not self.zw:
            self.zw = True
            self.zw_first = frame
            self.zw_probes = []
            self.mark("W")
            self.peer.refresh()
        elif not zero and self.zw:
            self.zw = False
            self.zw_episodes.append(
                ZeroWindow(self.side, self.zw_first, frame, tuple(self.zw_probes))
            )
            self.peer.refresh()

    def stats(self) -> DirectionStats:
        return DirectionStats(
            packets=self.packets,
            payload_bytes=self.payload_bytes,
            wire_payload_bytes=self.payload_bytes - self.slow_delivered + self.slow_wire,
            retransmissions=self.retransmissions,
            keepalives=self.keepalives,
            conflict_frames=tuple(self.conflict_frames),
            gaps=self.gaps,
            gap_bytes=self.gap_bytes,
            buffer_cap_hit=self.buffer_cap_hit,
            fin_frame=self.fin_frame,
            midstream=self.midstream,
        )

    def episodes(self) -> list[ZeroWindow]:
        """Zero-window episodes, including one still open at the end."""
        if self.zw:
            return [
                *self.zw_episodes,
                ZeroWindow(self.side, self.zw_first, None, tuple(self.zw_probes)),
            ]
        return self.zw_episodes

    # --- data ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute `slow`: out-of-order data waits, a probe is held, or the peer's window is
        zero. While it is False the engine delivers in-order segments itself."""
        self.slow = bool(self.ooo) or self.probe is not None or self.peer.zw

    def segment(
        self,
        seq: int,
        data: bytes | memoryview,
        wire_len: int,
        frame: int,
        ts: int,
        out: list[TcpEvent],
    ) -> None:
        """A segment carrying `wire_len` payload bytes at raw `seq`; `data` is what was captured."""
        self.slow_wire += wire_len
        self._segment(seq, data, wire_len, frame, ts, out)
        self.refresh()

    def _segment(
        self,
        seq: int,
        data: bytes | memoryview,
        wire_len: int,
        frame: int,
        ts: int,
        out: list[TcpEvent],
    ) -> None:
        if self.nxt < 0:  # first bytes of a direction whose SYN we did not see
            self.nxt = seq
            self.off = 0
        d = ((seq - self.nxt + HALF) & MASK) - HALF  # signed distance from the next byte expected
        if d < 0:
            if d == -1 and wire_len <= 1 and not self.ooo:
                # Keep-alive: one (or no) byte just below the window edge, never new data.
                self.keepalives += 1
                self.mark("K")
                return
            self.retransmissions += 1
            self.mark("T")
            self._compare(d, data, frame, out)
            if d + wire_len <= 0:
                return
            data = data[-d:]  # the part beyond what was delivered is new
            wire_len += d
            d = 0
        if d > 0:
            if self.probe is not None and d == 1:
                self._release_probe(out)
                d = 0
            else:
                self._hold(self.off + d, data, wire_len, frame, ts, out)
                return
        # d == 0: the segment continues the stream.
        if self.probe is not None:
            self.probe = None  # resent with this segment: the held copy was refused
        if self.peer.zw and wire_len == 1 and not self.ooo:
            # Zero-window probe: the receiver may refuse the byte, so hold it until we know.
            self.probe = (frame, ts, bytes(data))
            self.peer.zw_probes.append(frame)
            return
        self._deliver(data, wire_len, frame, ts, out)
        if self.ooo:
            self._drain(out)

    def ack_beyond(self, ack: int, frame: int, out: list[TcpEvent]) -> None:
        """The peer acknowledged up to raw `ack`, beyond `nxt`: a FIN, a probe, or lost bytes."""
        if self.nxt < 0:
            return  # nothing of this direction seen yet: nothing to compare with
        beyond = (ack - self.nxt) & MASK
        if self.fin_seq >= 0 and ack == (self.fin_seq + 1) & MASK:
            self.fin_acked = True
            beyond -= 1
        if beyond <= 0 or beyond >= HALF:
            return
        if self.probe is not None:
            self._release_probe(out)  # the receiver took the probe byte
            beyond -= 1
        self._fill_to(self.off + beyond, frame, "acked", out)
        self.refresh()

    def flush(self, frame: int, reason: str, out: list[TcpEvent]) -> None:
        """The connection ends: deliver what waits behind holes, declaring the holes as gaps."""
        self.probe = None  # never acknowledged: not data
        if self.ooo:
            last = max(off + wire for off, _, _, _, wire in self.ooo)
            self._fill_to(last, frame, reason, out)
        if self.fin_seq >= 0 and self.nxt >= 0:
            missing = (self.fin_seq - self.nxt) & MASK
            if 0 < missing < HALF:
                self._gap(missing, frame, reason, out)

    # --- internals ----------------------------------------------------------------------

    def _deliver(
        self, data: bytes | memoryview, wire_len: int, frame: int, ts: int, out: list[TcpEvent]
    ) -> None:
        n = len(data)
        if n:
            if not self.payload_bytes:
                self.mark("D")
            if self.deliver:
                out.append(Payload(self.stream, self.from_client, self.off, data, frame, ts))
            elif self.quiet is not None:
                self.quiet.add(self.from_client, frame, ts)
            self.payload_bytes += n
            self.slow_delivered += n
            if self.pending is not None:
                self.settle()
            self.recent += data
            if len(self.recent) > RECENT_LIMIT:
                self.trim_recent()
            self.off += n
            self.nxt = (self.nxt + n) & MASK
        if wire_len > n:  # the snap length cut the frame: the rest is lost to us
            self._gap(wire_len - n, frame, "snaplen", out)

    def keep_tail(
        self, mv: memoryview, offsets: np.ndarray, lengths: np.ndarray, lo: int, hi: int
    ) -> None:
        """The fast lane delivered these bytes (oldest first in [lo:hi]); copy them lazily."""
        if self.pending is not None:
            self.settle()
        self.pending = (mv, offsets, lengths, lo, hi)

    def settle(self) -> None:
        """Copy the pending fast-lane bytes into `recent`, as if delivered one by one and then
        trimmed once; only the bytes that survive the trim are copied."""
        assert self.pending is not None
        mv, offsets, lengths, lo, hi = self.pending
        self.pending = None
        offs, lens = offsets[lo:hi].tolist(), lengths[lo:hi].tolist()
        total = len(self.recent) + sum(lens)
        if total <= RECENT_LIMIT:
            self.recent += b"".join([mv[p : p + n] for p, n in zip(offs, lens, strict=True)])
            return
        # Trimmed: keep the newest RECENT_KEEP bytes, taking segments from the newest back.
        parts: list[memoryview | bytearray] = []
        need = RECENT_KEEP
        for p, n in zip(reversed(offs), reversed(lens), strict=True):
            if n >= need:
                parts.append(mv[p + n - need : p + n])
                need = 0
                break
            parts.append(mv[p : p + n])
            need -= n
        if need:
            parts.append(self.recent[len(self.recent) - need :])
        parts.reverse()
        self.recent = bytearray().join(parts)

    def trim_recent(self) -> None:
        """Keep the newest RECENT_KEEP bytes: retransmissions repeat recent, unacked data.
        (A copy, so the larger allocation is freed.)"""
        self.recent = self.recent[-RECENT_KEEP:]

    def all_acked(self) -> bool:
        """The peer has acknowledged every byte delivered (and our FIN, if sent)."""
        if self.acked < 0 or self.nxt < 0:
            return False
        d = (self.acked - self.nxt) & MASK
        return d == 0 or (d == 1 and self.fin_seq == self.nxt)

    def _gap(self, length: int, frame: int, reason: str, out: list[TcpEvent]) -> None:
        out.append(Gap(self.stream, self.from_client, self.off, length, frame, reason))
        self.gaps += 1
        self.gap_bytes += length
        self.off += length
        self.nxt = (self.nxt + length) & MASK
        self.recent.clear()
        self.pending = None
        self.mark("G")

    def _compare(self, d: int, data: bytes | memoryview, frame: int, out: list[TcpEvent]) -> None:
        """Compare the repeated part of a retransmission with the first copy."""
        n = min(len(data), -d)
        if self.pending is not None:
            self.settle()
        recent = self.recent
        if n <= 0 or -d > len(recent):
            return  # too old to check
        start = len(recent) + d
        if recent[start : start + n] != data[:n]:
            self.conflict_frames.append(frame)
            self.mark("C")
            out.append(Conflict(self.stream, self.from_client, self.off + d, n, frame))

    def _hold(
        self,
        off: int,
        data: bytes | memoryview,
        wire_len: int,
        frame: int,
        ts: int,
        out: list[TcpEvent],
    ) -> None:
        """Buffer a segment beyond a hole; past the cap, give up on the hole (declare a gap)."""
        while self.ooo_bytes + len(data) > self.ooo_cap:
            self.buffer_cap_hit = True
            first = self.ooo[0][0] if self.ooo else off
            self._fill_to(min(first, off), frame, "buffer", out)
            if self.off >= off:  # the hole closed up to this segment: handle it as in-order
                d = off - self.off
                if d + wire_len <= 0:
                    return
                if d < 0:
                    self._compare(d, data, frame, out)
                    data = data[-d:]
                    wire_len += d
                self._deliver(data, wire_len, frame, ts, out)
                self._drain(out)
                return
        heapq.heappush(self.ooo, (off, frame, ts, bytes(data), wire_len))
        self.ooo_bytes += len(data)

    def _drain(self, out: list[TcpEvent]) -> None:
        """Deliver buffered segments that the stream has now reached."""
        ooo = self.ooo
        while ooo and ooo[0][0] <= self.off:
            off, frame, ts, data, wire_len = heapq.heappop(ooo)
            self.ooo_bytes -= len(data)
            d = off - self.off
            if d < 0:
                self._compare(d, data, frame, out)
                if d + wire_len <= 0:
                    continue
                data = data[-d:]
                wire_len += d
            self._deliver(data, wire_len, frame, ts, out)

    def _fill_to(self, target: int, frame: int, reason: str, out: list[TcpEvent]) -> None:
        """Advance to offset `target`: buffered bytes where we have them, gaps where not."""
        while self.off < target:
            self._drain(out)
            if self.off >= target:
                break
            nxt_start = self.ooo[0][0] if self.ooo else target
            self._gap(min(nxt_start, target) - self.off, frame, reason, out)
        self._drain(out)

    def _release_probe(self, out: list[TcpEvent]) -> None:
        assert self.probe is not None
        frame, ts, data = self.probe
        self.probe = None
        self._deliver(data, 1, frame, ts, out)
