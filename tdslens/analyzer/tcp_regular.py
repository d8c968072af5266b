"""Regular connections: TCP connections kept as rows of a table, not as objects.

Why: with the fast lane taking most packets, what the engine still spent was Python per
connection: two `Direction` objects and a `_Conn`, the handshake and closing packets one by one,
one `take` per batch the connection appears in, the retransmission-compare bytes, the summary.
On the 2M-packet benchmark (~54 packets per connection) that was ~2 µs per packet, most of
the engine. Yet nearly every connection does the same few things. So when no consumer reads
its payload (`tdslens streams`: the engine's filter is `no_stream`; `tdslens analyze`: once the
TDS layer has read the login and called `TcpEngine.quiet`), a connection that behaves
regularly lives as one row of a numpy table, and all its packets in a batch are handled at
once, for all such connections together. A quiet connection's delivered segments are counted
in the table (`Q_*` columns, `_count_quiet`) as `QuietCount.add` would count them.

**Regular** packets: after the handshake, every segment continues its side's bytes, fully
captured, with a non-zero window; ACKs never acknowledge more than the other side sent (its FIN
counts one); each side sends at most one FIN, after its data; no RST, no SYN; nothing after
the connection closed (both FINs acknowledged). A connection becomes regular

- at its SYN (only when no consumer reads payload at all): the client's pure SYN on an
  address pair with no open connection, starting a new tcp.stream (Wireshark's rule, see
  `tcp.py`), then one SYN-ACK that acknowledges it;
- or at the end of a batch, as an ordinary `_Conn` whose state the table can carry: open,
  answered, nothing out of order or held, no zero window, both sides' next sequence numbers
  known (`TcpEngine._demote`; the object is kept, only the numbers above move to the table).

How, per batch (`RegularTable.step`): numpy decides for every address pair whether its rows in
the batch are regular for its connection, checking each row against the table's numbers. If
so, their effect (packets, bytes, next sequence numbers, last ACKs, the SYN-ACK, FINs, history
letters, last frame, the newest bytes for retransmission compares) is written into the table at
once; the engine's loop visits only the SYN, to number the stream and emit `StreamStart` in
frame order, and the row where the connection closes, to start its linger in frame order. If
not, the connection becomes an ordinary `_Conn` again before any row of the batch is handled
(`TcpEngine._materialize`), with the state the per-packet path would have given it, and the
batch's rows take the ordinary path. A connection that was regular from its SYN gets its
summary from the table when it ends; one that was demoted, from its object brought up to date.

tests/test_fast_path.py runs every sample and crafted case through this path (subscription to
no payload, batches of 1, 3, 16, 1000 and all rows) and through the plain per-packet path, and
requires the same events per stream; the tshark differential tests run `tdslens streams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tdslens.analyzer.packet_columns import ACK, FIN, RST, SYN
from tdslens.analyzer.tcp_events import ConnectionSummary, DirectionStats, Endpoint, conn_state
from tdslens.analyzer.tcp_fastlane import group_ends, group_starts
from tdslens.analyzer.tcp_reassembly import HALF, MASK, RECENT_KEEP, RECENT_LIMIT

if TYPE_CHECKING:
    from tdslens.analyzer.tcp import _Conn, _Flow

# Columns of the table, per connection ...
STREAM, CLIENT_A, PHASE = range(3)  # PHASE: 0 SYN seen, 1 established (SYN-ACK, or demoted)
FIRST_FRAME, FIRST_TS, LAST_FRAME, LAST_TS = range(3, 7)
SYNACK_FRAME, SYNACK_TS, CLOSED_TS = range(7, 10)
# ... and per side, at CLIENT + field or SERVER + field (-1: none):
ISN, NXT, ACKED, PACKETS, BYTES, FIN_SEQ, FIN_FRAME, FIN_ACKED = range(8)
# History letters: -1 not yet; -2 before the connection became regular (it is in the object's
# history); else 2 * frame of first use, + 1 for A and D (after a FIN of the same packet).
KEY_A, KEY_D, KEY_F = range(8, 11)
HAS_RECENT = 11  # 1 if the side holds retransmission-compare bytes (Regular.recent)
# The newest bytes the side sent, still in the batch buffer they came in (not copied yet):
# batch number, and [lo:hi] in that batch's segment list (RegularTable.segments).
TAIL_BATCH, TAIL_LO, TAIL_HI = range(12, 15)
# Retransmissions of bytes already delivered (identical to the first copy, or too old to
# compare): how many, their payload bytes, and the history letter T.
RETRANS, SLOW_WIRE, KEY_T = range(15, 18)
CLIENT, SERVER = 10, 28
# Payload of a quiet connection (TcpEngine.quiet, tcp_events.QuietCount), counted here while
# it is regular: -1 in Q_FRAMES when it is not counted; sides are 1 client, 0 server, -1 none.
Q_FRAMES, Q_LAST_FRAME, Q_LAST_TS, Q_FIRST_SIDE, Q_LAST_SIDE, Q_REQUESTS = range(46, 52)
N_COLUMNS = 52


class Regular:
    """Handle of a regular connection: where its row is, and what is not a number."""

    __slots__ = ("client", "conn", "done", "flow", "recent", "server", "slot", "stream", "table")

    def __init__(self, table: RegularTable, slot: int, flow: _Flow) -> None:
        self.table = table
        self.slot = slot
        self.flow = flow
        self.stream = -1  # numbered when the loop meets the SYN
        self.client: Endpoint | None = None
        self.server: Endpoint | None = None
        self.conn: _Conn | None = None  # the ordinary connection it was, if demoted
        # client's, server's newest delivered bytes (see Direction.recent)
        self.recent = [bytearray(), bytearray()]
        self.done = False

    # What the engine's connection bookkeeping reads and writes (`_close`, `_settle`).
    @property
    def closed_ts(self) -> int:
        return int(self.table.state[self.slot, CLOSED_TS])

    @closed_ts.setter
    def closed_ts(self, ts: int) -> None:
        self.table.state[self.slot, CLOSED_TS] = ts

    @property
    def last_ts(self) -> int:
        return int(self.table.state[self.slot, LAST_TS])

    def answered(self) -> bool:
        """Established (so it is no longer an unanswered attempt)."""
        return bool(self.table.state[self.slot, PHASE] >= 1)

    def values(self) -> list[int]:
        return self.table.state[self.slot].tolist()  # type: ignore[no-any-return]


@dataclass(slots=True)
class RegularBatch:
    """What `step` decided for one batch."""

    rows: np.ndarray  # bool per row: handled here (the loop skips it)
    # (row, handle, frame, ts, client is side a, client ISN): SYNs the loop must number
    starts: list[tuple[int, Regular, int, int, bool, int]]
    closes: list[tuple[int, Regular, int]]  # (row, handle, ts): where connections close
    fallback: list[Regular]  # no longer regular: to become ordinary connections first
    pairs: np.ndarray  # the pairs with rows handled here ...
    handles: list[Regular]  # ... and their connections
    regular: np.ndarray  # the pairs whose connection stays regular (not in fallback)


_PAIR_SPAN = 1 << 34  # more than any distance in sequence space: keeps pairs apart in a max


def _first_per_pair(mask: np.ndarray, g: np.ndarray, n_pairs: int, none: int) -> np.ndarray:
    """Per pair, the first position where `mask` holds (`g`: pair of each position, sorted)."""
    at = np.full(n_pairs, none)
    hit = np.flatnonzero(mask)
    first = hit[group_starts(g[hit])]
    at[g[first]] = first
    return at


class RegularTable:
    """The table of regular connections and the per-batch step.

    Retransmission-compare bytes (`Regular.recent`, what `Direction.recent` is for ordinary
    connections) are copied out of a batch's buffer only when needed: most are acknowledged
    during the next batch and then dropped, so the table keeps the previous batch's buffer
    and copies, at the end of a step, only the bytes still unacknowledged after a whole
    further batch (`_retire`)."""

    def __init__(self, new_connections: bool = True) -> None:
        """``new_connections``: take connections at their SYN (only when no consumer reads
        payload: the loop must deliver a connection's first bytes); else only demoted ones."""
        self.new_connections = new_connections
        self.state = np.full((64, N_COLUMNS), -1, dtype=np.int64)
        self.handles: list[Regular | None] = [None] * 64
        self.free: list[int] = list(range(63, -1, -1))
        self.batch = 0
        # batch number -> (buffer, payload offsets, lengths) of the segments tails point to
        self.segments: dict[int, tuple[memoryview, np.ndarray, np.ndarray]] = {}

    def allocate(self, k: int) -> list[int]:
        while len(self.free) < k:
            old = len(self.state)
            grown = np.full((2 * old, N_COLUMNS), -1, dtype=np.int64)
            grown[:old] = self.state
            self.state = grown
            self.handles += [None] * old
            self.free[:0] = range(2 * old - 1, old - 1, -1)
        slots = self.free[len(self.free) - k :]
        del self.free[len(self.free) - k :]
        return slots[::-1]

    def release(self, handle: Regular) -> None:
        self.state[handle.slot] = -1
        self.handles[handle.slot] = None
        self.free.append(handle.slot)
        handle.done = True

    def _fold(self, items: list[tuple[Regular, int]], rows: np.ndarray) -> None:
        """Copy pending tails (still in a batch buffer) into `recent` bytes: for each item
        (handle, side) with its table row in `rows`. One join copies all the segments that
        survive the trim (see _append)."""
        if not items:
            return
        parts: list[memoryview] = []
        sizes: list[tuple[int, bool]] = []
        for (h, side), row in zip(items, rows.tolist(), strict=True):
            mv, offsets, lengths = self.segments[row[side + TAIL_BATCH]]
            lo, hi = row[side + TAIL_LO], row[side + TAIL_HI]
            lens = lengths[lo:hi].tolist()
            size = sum(lens)
            trim = len(h.recent[side == SERVER]) + size > RECENT_LIMIT
            if trim:  # only the newest RECENT_KEEP bytes are kept: skip older segments
                skip = 0
                while size - lens[skip] >= RECENT_KEEP:
                    size -= lens[skip]
                    skip += 1
                lo, lens = lo + skip, lens[skip:]
            parts += [mv[p : p + n] for p, n in zip(offsets[lo:hi].tolist(), lens, strict=True)]
            sizes.append((size, trim))
        blob = memoryview(b"".join(parts))
        at = 0
        for (h, side), (size, trim) in zip(items, sizes, strict=True):
            s = side == SERVER
            h.recent[s] = _append(h.recent[s], blob, at, at + size, trim)
            at += size

    def settle(self, handle: Regular) -> None:
        """Copy the connection's pending tails now (it is leaving the table)."""
        row = self.state[handle.slot]
        for side in (CLIENT, SERVER):
            if row[side + TAIL_BATCH] >= 0:
                self._fold([(handle, side)], row[None, :])
                row[side + TAIL_BATCH] = -1

    def _retire(self) -> None:
        """End of a step: tails still pending from earlier batches are copied, and only the
        current batch's buffer is kept."""
        state = self.state
        for side in (CLIENT, SERVER):
            col = state[:, side + TAIL_BATCH]
            slots = np.flatnonzero((col >= 0) & (col != self.batch))
            self._fold([(self.handles[slot], side) for slot in slots.tolist()], state[slots])  # type: ignore[misc]
            state[slots, side + HAS_RECENT] = 1
            state[slots, side + TAIL_BATCH] = -1
        for batch in [b for b in self.segments if b != self.batch]:
            del self.segments[batch]

    def _same_bytes(
        self,
        r: int,
        g: np.ndarray,
        order: np.ndarray,
        client: np.ndarray,
        rel: np.ndarray,
        delivered: np.ndarray,
        sent: np.ndarray,
        po: np.ndarray,
        pwo: np.ndarray,
        mv: memoryview,
        slots: np.ndarray,
    ) -> bool:
        """Does the retransmission at position `r` repeat its first copy (or is the first copy
        too old for any compare)? Its bytes are looked up backwards from the end of what the
        side delivered: the batch's earlier segments of the side (`sent`), the pending tail of
        the previous batch, then the connection's `recent` bytes."""
        p, is_client = g[r], client[r]
        back = int(delivered[r] - rel[r])  # the copy starts this many bytes before the end
        n = int(pwo[r])
        pieces: list[bytes | memoryview] = []
        have = 0
        j = r - 1
        while j >= 0 and g[j] == p and have < back:  # the batch's segments, newest first
            if sent[j] and client[j] == is_client:
                at = int(po[order[j]])
                pieces.append(mv[at : at + int(pwo[j])])
                have += int(pwo[j])
            j -= 1
        slot = int(slots[p])
        if have < back and slot >= 0:
            h = self.handles[slot]
            side = CLIENT if is_client else SERVER
            row = self.state[slot]
            if row[side + TAIL_BATCH] >= 0:
                mv_t, offsets, lengths = self.segments[int(row[side + TAIL_BATCH])]
                for i in range(int(row[side + TAIL_HI]) - 1, int(row[side + TAIL_LO]) - 1, -1):
                    if have >= back:
                        break
                    at, size = int(offsets[i]), int(lengths[i])
                    pieces.append(mv_t[at : at + size])
                    have += size
            if have < back:
                pieces.append(h.recent[side == SERVER])  # type: ignore[union-attr]
                have += len(h.recent[side == SERVER])  # type: ignore[union-attr]
        if have < back:
            return True  # too old to compare, as the per-packet path would find too
        copy = b"".join(reversed(pieces))
        first = copy[len(copy) - back : len(copy) - back + n]
        at = int(po[order[r]])
        return first == mv[at : at + n]

    def step(
        self,
        flows: list[_Flow],
        order: np.ndarray,
        sa: np.ndarray,
        number: np.ndarray,
        ts_ns: np.ndarray,
        seq: np.ndarray,
        ack: np.ndarray,
        fl: np.ndarray,
        win: np.ndarray,
        po: np.ndarray,
        pl: np.ndarray,
        pw: np.ndarray,
        go: np.ndarray,
        mv: memoryview,
        held: np.ndarray | None = None,
    ) -> RegularBatch | None:
        """Handle the batch's rows of regular connections (see module docstring). Row arrays
        are in frame order; `order` sorts them by (pair, frame) and `go` is each sorted row's
        pair (pairs are numbered 0.. in that order). `held` (bool per pair, optional): pairs an
        ICMP error quotes in the batch, whose rows must take the ordinary way in frame order
        with it (a quoted SYN may start a new stream): none becomes regular, a regular one
        falls back. None if no pair qualifies."""
        self.batch += 1
        n, n_pairs = len(order), len(flows)
        first = group_starts(go)  # each pair's first position
        slots = np.array(
            [f.conn.slot if f.conn.__class__ is Regular else -1 for f in flows],  # type: ignore[union-attr]
            dtype=np.int64,
        )
        live = slots >= 0
        # A new regular connection: the pair's first row is a pure SYN starting a new stream.
        first_rows = order[first]
        maybe = np.flatnonzero(~live & ((fl[first_rows] & 0x17) == SYN) & (pw[first_rows] == 0))
        if held is not None:
            maybe = maybe[~held[maybe]]
        if not self.new_connections:
            maybe = maybe[:0]
        new = np.zeros(n_pairs, dtype=bool)
        for p, side_a, s in zip(
            maybe.tolist(), sa[first_rows[maybe]].tolist(), seq[first_rows[maybe]].tolist(),
            strict=True,
        ):  # fmt: skip
            f = flows[p]
            if f.conn is None:
                base = f.base_a if side_a else f.base_b
                new[p] = f.stream < 0 or (base >= 0 and s != base)
        cand = live | new
        if not cand.any():
            self._retire()
            return None

        # Per pair: the connection's numbers at the batch start (a new one: from its SYN).
        st = self.state[np.maximum(slots, 0)]
        st[~live] = -1
        f_new = first_rows[new]
        st[new, CLIENT_A] = sa[f_new]
        st[new, PHASE] = 0
        st[new, FIRST_FRAME] = number[f_new]
        st[new, FIRST_TS] = ts_ns[f_new]
        st[new, CLIENT + ISN] = seq[f_new]
        st[new, CLIENT + NXT] = (seq[f_new] + 1) & MASK
        for side in (CLIENT, SERVER):
            for column in (PACKETS, BYTES, FIN_ACKED, HAS_RECENT, RETRANS, SLOW_WIRE):
                st[new, side + column] = 0
        established = st[:, PHASE] >= 1
        closed = st[:, CLOSED_TS] >= 0

        # Rows, sorted by (pair, frame), with their pair's numbers.
        g = go
        rows_c = cand[g]
        pos = np.arange(n)
        sao, flo, seqo, acko, pwo = sa[order], fl[order], seq[order], ack[order], pw[order]
        client = sao == (st[g, CLIENT_A] == 1)
        is_syn = new[g] & (pos == first[g])
        # The SYN-ACK: the server's first row, acknowledging the client's SYN.
        first_srv = _first_per_pair(rows_c & ~client, g, n_pairs, n)
        is_synack = (
            ~established[g]
            & (pos == first_srv[g])
            & ((flo & 0x17) == SYN | ACK)
            & (pwo == 0)
            & (acko == ((st[g, CLIENT + ISN] + 1) & MASK))
        )
        hs = np.where(established, -1, n)  # rows after this position are established
        hs[g[is_synack]] = pos[is_synack]
        est = rows_c & (pos > hs[g])
        bad = rows_c & ~is_syn & ~is_synack & ~est  # before the handshake completed
        bad |= rows_c & closed[g]
        bad |= est & (((flo & (SYN | RST)) != 0) | (win[order] == 0) | (pl[order] != pwo))
        if held is not None:  # from their first row on: the whole batch the ordinary way
            bad |= rows_c & held[g] & (pos == first[g])

        # Each side's bytes delivered before each row: a segment either continues them, or
        # (no FIN) repeats bytes already delivered, a retransmission (not a keep-alive).
        st[g[is_synack], SERVER + ISN] = seqo[is_synack]
        st[g[is_synack], SERVER + NXT] = (seqo[is_synack] + 1) & MASK
        fin = est & ((flo & FIN) != 0)
        data = est & (pwo > 0)
        uses_seq = data | fin
        rel = np.empty(n, dtype=np.int64)  # seq relative to the side's next byte at batch start
        before = {}
        for side, mask in ((CLIENT, client), (SERVER, ~client)):
            rel[mask] = ((seqo[mask] - st[g[mask], side + NXT] + HALF) & MASK) - HALF
            end = np.where(data & mask, np.maximum(rel + pwo, 0), 0) + g * _PAIR_SPAN  # max so far
            upto = np.maximum.accumulate(end) - g * _PAIR_SPAN
            b = np.empty(n, dtype=np.int64)
            b[1:] = upto[:-1]
            b[first] = 0
            before[side] = b
        delivered = np.where(client, before[CLIENT], before[SERVER])
        in_order = uses_seq & (rel == delivered)
        retrans = (
            data
            & ~fin
            & (rel + pwo <= delivered)
            & ~((rel == delivered - 1) & (pwo <= 1))  # a keep-alive
        )
        bad |= uses_seq & ~in_order & ~retrans
        nxt_c = (st[g, CLIENT + NXT] + before[CLIENT]) & MASK  # where each side's bytes go on
        nxt_s = (st[g, SERVER + NXT] + before[SERVER]) & MASK
        # FINs: one per side, after its data.
        fin_at = []
        for side, mask in ((CLIENT, client), (SERVER, ~client)):
            at = _first_per_pair(fin & mask, g, n_pairs, n)
            bad |= fin & mask & (st[g, side + FIN_SEQ] >= 0)
            bad |= uses_seq & mask & (pos > at[g])
            fin_at.append(at)
        # ACKs: never beyond what the other side sent; exactly one beyond acknowledges its FIN.
        acking = est & ((flo & ACK) != 0)
        d = (acko - np.where(client, nxt_s, nxt_c)) & MASK
        fin_before = np.where(
            client,
            (st[g, SERVER + FIN_SEQ] >= 0) | (fin_at[1][g] < pos),
            (st[g, CLIENT + FIN_SEQ] >= 0) | (fin_at[0][g] < pos),
        )
        of_fin = acking & (d == 1) & fin_before
        bad |= acking & (d != 0) & (d < HALF) & ~of_fin
        # Where each FIN is first acknowledged (-1: before the batch), and where the
        # connection closes: at the later of the two. Nothing may follow.
        acked_at = []
        for side, mask in ((CLIENT, ~client), (SERVER, client)):  # acks of that side's FIN
            at = _first_per_pair(of_fin & mask, g, n_pairs, n)
            acked_at.append(np.where(st[:, side + FIN_ACKED] == 1, -1, at))
        close_at = np.maximum(acked_at[0], acked_at[1])
        closing = cand & ~closed & (close_at >= 0) & (close_at < n)
        bad |= rows_c & closing[g] & (pos > close_at[g])

        # A retransmission whose bytes differ from the first copy is a conflict: not regular.
        # Usually the first copy is one earlier segment of the batch: found by a search over
        # the side's segments (ordered by pair, then position in the stream).
        sent = data & in_order
        key = g * _PAIR_SPAN + rel + (_PAIR_SPAN >> 1)
        for mask in (client, ~client):
            again = np.flatnonzero(retrans & ~bad & mask)
            if not len(again):
                continue
            firsts = np.flatnonzero(sent & mask)
            at = np.searchsorted(key[firsts], key[again], side="right") - 1
            j = firsts[np.maximum(at, 0)] if len(firsts) else again
            whole = (at >= 0) & (g[j] == g[again]) & (rel[j] + pwo[j] >= rel[again] + pwo[again])
            for r, one, jj, n_r in zip(
                again.tolist(), whole.tolist(), j.tolist(), pwo[again].tolist(), strict=True
            ):
                if one:
                    a = int(po[order[r]])
                    b = int(po[order[jj]]) + int(rel[r] - rel[jj])
                    same = mv[a : a + n_r] == mv[b : b + n_r]
                else:
                    same = self._same_bytes(
                        r, g, order, client, rel, delivered, sent, po, pwo, mv, slots
                    )
                if not same:
                    bad[r] = True

        # A connection with an irregular row: its rows before that row are still handled here
        # (each check above looks only at earlier rows); it becomes an ordinary connection for
        # the rest (fallback). Not for a new one (its SYN must be numbered first) or one that
        # closes before (the close is the loop's): those go the ordinary way as a whole.
        cut = _first_per_pair(bad, g, n_pairs, n)
        bad_pair = cut < n
        partial = live & bad_pair & ~closing & (cut > first)
        ok = (cand & ~bad_pair) | partial
        handles = self.handles
        fallback = [handles[s] for s in slots[live & bad_pair].tolist()]
        if not ok.any():
            self._retire()
            rows = np.zeros(n, dtype=bool)
            none = np.zeros(0, dtype=np.int64)
            return RegularBatch(rows, [], [], fallback, none, [], none)  # type: ignore[arg-type]

        # The batch's effect on the connections that stay (or become) regular.
        okr = ok[g] & (pos < cut[g])
        k = np.flatnonzero(ok)
        new_k = k[new[k]]
        fresh = self.allocate(len(new_k))
        for p, slot in zip(new_k.tolist(), fresh, strict=True):
            flows[p].conn = handles[slot] = Regular(self, slot, flows[p])  # type: ignore[assignment]
        slots[new_k] = fresh
        slot_k = slots[k]
        out = st[k]
        # Everything below works on the handled rows, in (pair, frame) order; `hk` is each
        # one's index in k, so per-connection sums and firsts/lasts need no search.
        handled = np.flatnonzero(okr)
        index_in_k = np.full(n_pairs, -1)
        index_in_k[k] = np.arange(len(k))
        hk = index_in_k[g[handled]]
        h_first, h_last = group_starts(hk), group_ends(hk)
        h_order = order[handled]
        h_num = number[h_order]
        h_pw, h_fl, h_ack = pwo[handled], flo[handled], acko[handled]
        h_client, h_est = client[handled], est[handled]
        h_retrans, h_in_order = retrans[handled], in_order[handled]
        h_acking = (h_fl & ACK) != 0
        out[:, LAST_FRAME] = h_num[h_last]
        out[:, LAST_TS] = ts_ns[h_order[h_last]]
        sa_pos = np.flatnonzero(is_synack[handled])
        out[hk[sa_pos], PHASE] = 1
        out[hk[sa_pos], SYNACK_FRAME] = h_num[sa_pos]
        out[hk[sa_pos], SYNACK_TS] = ts_ns[h_order[sa_pos]]
        cut_k = cut[k]
        tails = []  # per side: (side, index in k per group, group bounds, offsets, lengths)
        acked_all = {}
        for side, m, fin_pos, ack_pos in (
            (CLIENT, h_client, fin_at[0], acked_at[0]),
            (SERVER, ~h_client, fin_at[1], acked_at[1]),
        ):
            out[:, side + PACKETS] += np.add.reduceat(m.astype(np.int64), h_first)
            sent = np.add.reduceat(np.where(m & h_in_order, h_pw, 0), h_first)
            out[:, side + BYTES] += sent
            again = m & h_retrans
            out[:, side + RETRANS] += np.add.reduceat(again.astype(np.int64), h_first)
            out[:, side + SLOW_WIRE] += np.add.reduceat(np.where(again, h_pw, 0), h_first)
            known = out[:, side + NXT] >= 0
            out[known, side + NXT] = (out[known, side + NXT] + sent[known]) & MASK
            # The other side's rows with ACK set (the SYN-ACK too) acknowledge this side.
            a = np.flatnonzero(~m & h_acking)
            if len(a):
                a = a[group_ends(hk[a])]
                out[hk[a], side + ACKED] = h_ack[a]
            fp = fin_pos[k]
            has_fin = fp < cut_k
            out[has_fin, side + FIN_SEQ] = (seqo[fp[has_fin]] + pwo[fp[has_fin]]) & MASK
            out[has_fin, side + FIN_FRAME] = number[order[fp[has_fin]]]
            out[has_fin, side + KEY_F] = 2 * out[has_fin, side + FIN_FRAME]
            ap = ack_pos[k]
            out[(ap >= 0) & (ap < cut_k), side + FIN_ACKED] = 1
            # History letters: the side's first pure ACK, data and retransmission, if new.
            sends = m & h_in_order & (h_pw > 0)
            for key, rows_of in (
                (KEY_A, m & h_est & (h_pw == 0) & ((h_fl & 0x17) == ACK)),
                (KEY_D, sends),
                (KEY_T, again),
            ):
                r = np.flatnonzero(rows_of)
                if len(r):
                    r = r[group_starts(hk[r])]
                    i = hk[r]
                    unset = out[i, side + key] == -1
                    out[i[unset], side + key] = 2 * h_num[r[unset]] + 1
            # Everything this side sent is acknowledged (Direction.all_acked).
            dist = (out[:, side + ACKED] - out[:, side + NXT]) & MASK
            acked_all[side] = (
                (out[:, side + ACKED] >= 0)
                & (out[:, side + NXT] >= 0)
                & ((dist == 0) | ((dist == 1) & (out[:, side + FIN_SEQ] == out[:, side + NXT])))
            )
            # The newest bytes the side sent in the batch (up to RECENT_LIMIT), kept for
            # retransmission compares as the fast lane keeps them (see Direction.settle).
            dr = np.flatnonzero(sends)
            if len(dr):
                lens = h_pw[dr]
                upto = np.cumsum(lens)
                group_start = group_starts(hk[dr])
                sizes = np.diff(np.append(group_start, len(dr)))
                total = np.repeat(upto[group_ends(hk[dr])], sizes)
                keep = total - upto < RECENT_LIMIT
                dr, lens = dr[keep], lens[keep]
                group_start = group_starts(hk[dr])
                at = hk[dr[group_start]]
                tails.append((side, at, np.append(group_start, len(dr)), po[h_order[dr]], lens))
        _count_quiet(out, hk, h_client, h_in_order & (h_pw > 0), h_num, ts_ns[h_order])
        # Retransmission-compare bytes: dropped once everything sent is acknowledged (as the
        # engine does per batch); otherwise the batch's newest bytes become the side's pending
        # tail (an earlier one, from the previous batch, is copied first: see _retire).
        for side in (CLIENT, SERVER):
            acked = acked_all[side]
            for slot in slot_k[acked & (out[:, side + HAS_RECENT] == 1)].tolist():
                handles[slot].recent[side == SERVER] = bytearray()  # type: ignore[union-attr]
            out[acked, side + HAS_RECENT] = 0
            out[acked, side + TAIL_BATCH] = -1
        seg_offsets, seg_lengths, n_seg = [], [], 0
        for side, at, bounds, offsets, lens in tails:
            pending = ~acked_all[side][at]
            at, lo, hi = at[pending], bounds[:-1][pending] + n_seg, bounds[1:][pending] + n_seg
            earlier = at[out[at, side + TAIL_BATCH] >= 0]
            self._fold([(handles[slot], side) for slot in slot_k[earlier].tolist()], out[earlier])  # type: ignore[misc]
            out[earlier, side + HAS_RECENT] = 1
            out[at, side + TAIL_BATCH] = self.batch
            out[at, side + TAIL_LO] = lo
            out[at, side + TAIL_HI] = hi
            seg_offsets.append(offsets)
            seg_lengths.append(lens)
            n_seg += len(offsets)
        self.state[slot_k] = out
        if seg_offsets:
            offsets, lengths = np.concatenate(seg_offsets), np.concatenate(seg_lengths)
            self.segments[self.batch] = (mv, offsets, lengths)
        self._retire()

        new_rows = order[first[new_k]]
        starts = [
            (row, handles[slot], frame, ts, client_a == 1, isn)
            for row, slot, frame, ts, client_a, isn in zip(
                new_rows.tolist(), fresh, number[new_rows].tolist(), ts_ns[new_rows].tolist(),
                st[new_k, CLIENT_A].tolist(), st[new_k, CLIENT + ISN].tolist(), strict=True,
            )
        ]  # fmt: skip
        c = k[closing[k]]
        close_rows = order[close_at[c]]
        closes = [
            (row, handles[slot], ts)
            for row, slot, ts in zip(
                close_rows.tolist(), slots[c].tolist(), ts_ns[close_rows].tolist(), strict=True
            )
        ]
        rows = np.zeros(n, dtype=bool)
        rows[order[okr]] = True
        ok_handles = [handles[slot] for slot in slot_k.tolist()]
        regular = k[~bad_pair[k]]
        return RegularBatch(rows, starts, closes, fallback, k, ok_handles, regular)  # type: ignore[arg-type]

    def demote(self, conn: _Conn, flow: _Flow) -> Regular:
        """Take over an ordinary connection (see module docstring; the caller checked it is
        open, answered, in order, with both next sequence numbers known)."""
        slot = self.allocate(1)[0]
        h = self.handles[slot] = Regular(self, slot, flow)
        h.conn = conn
        h.stream = conn.stream
        h.client, h.server = conn.client, conn.server
        row = self.state[slot]
        row[STREAM] = conn.stream
        row[CLIENT_A] = conn.a_is_client
        row[PHASE] = 1
        row[FIRST_FRAME], row[FIRST_TS] = conn.first_frame, conn.first_ts
        row[LAST_FRAME], row[LAST_TS] = conn.last_frame, conn.last_ts
        row[SYNACK_FRAME] = conn.synack_frame if conn.synack_frame is not None else -1
        row[SYNACK_TS] = conn.synack_ts if conn.synack_ts is not None else -1
        client, server = (conn.da, conn.db) if conn.a_is_client else (conn.db, conn.da)
        for d, side in ((client, CLIENT), (server, SERVER)):
            row[side + ISN], row[side + NXT], row[side + ACKED] = d.isn, d.nxt, d.acked
            row[side + PACKETS], row[side + BYTES] = d.packets, d.payload_bytes
            row[side + FIN_SEQ], row[side + FIN_ACKED] = d.fin_seq, d.fin_acked
            row[side + FIN_FRAME] = d.fin_frame if d.fin_frame is not None else -1
            row[side + KEY_A] = -2 if d.saw_pure_ack else -1
            row[side + KEY_D] = -2 if d.payload_bytes else -1
            row[side + KEY_F] = -2 if d.fin_frame is not None else -1
            row[side + HAS_RECENT] = 1 if d.recent else 0
            row[side + RETRANS], row[side + SLOW_WIRE] = d.retransmissions, d.slow_wire
            row[side + KEY_T] = -2 if "T" in d.letters else -1
            h.recent[side == SERVER] = d.recent  # (the object is parked meanwhile)
        q = conn.quiet
        if q is not None:
            row[Q_FRAMES], row[Q_LAST_FRAME], row[Q_LAST_TS] = q.frames, q.last_frame, q.last_ts_ns
            row[Q_FIRST_SIDE], row[Q_LAST_SIDE] = (
                _side(q.first_from_client),
                _side(q.last_from_client),
            )
            row[Q_REQUESTS] = q.requests
        flow.conn = h  # type: ignore[assignment]
        return h

    def update(self, h: Regular, ending: bool = False) -> _Conn:
        """A demoted connection's object, brought up to date with its row (`ending`: it ends
        now, its retransmission-compare bytes are not needed)."""
        conn = h.conn
        assert conn is not None
        if not ending:
            self.settle(h)
        v = h.values()
        conn.last_frame, conn.last_ts = v[LAST_FRAME], v[LAST_TS]
        conn.closed_ts = v[CLOSED_TS]
        client, server = (conn.da, conn.db) if conn.a_is_client else (conn.db, conn.da)
        marks = []
        for d, side in ((client, CLIENT), (server, SERVER)):
            d.nxt, d.acked, d.packets = v[side + NXT], v[side + ACKED], v[side + PACKETS]
            d.payload_bytes = v[side + BYTES]
            d.off = d.payload_bytes + d.gap_bytes  # offsets count delivered bytes and gaps
            d.fin_seq, d.fin_acked = v[side + FIN_SEQ], v[side + FIN_ACKED] == 1
            d.fin_frame = v[side + FIN_FRAME] if v[side + FIN_FRAME] >= 0 else None
            d.saw_pure_ack = v[side + KEY_A] != -1
            d.retransmissions, d.slow_wire = v[side + RETRANS], v[side + SLOW_WIRE]
            if not ending:
                d.recent = h.recent[side == SERVER]
            for key, letter in ((KEY_A, "A"), (KEY_D, "D"), (KEY_F, "F"), (KEY_T, "T")):
                if v[side + key] >= 0:
                    marks.append((v[side + key], letter, d))
        marks.sort(key=lambda m: m[0])
        for _, letter, d in marks:
            d.mark(letter)
        q = conn.quiet
        if q is not None:
            q.frames, q.last_frame, q.last_ts_ns = v[Q_FRAMES], v[Q_LAST_FRAME], v[Q_LAST_TS]
            q.first_from_client = _from_client(v[Q_FIRST_SIDE])
            q.last_from_client = _from_client(v[Q_LAST_SIDE])
            q.requests = v[Q_REQUESTS]
        return conn


def _side(from_client: bool | None) -> int:
    return -1 if from_client is None else int(from_client)


def _from_client(side: int) -> bool | None:
    return None if side < 0 else side == 1


def _count_quiet(
    out: np.ndarray,
    hk: np.ndarray,
    client: np.ndarray,
    data: np.ndarray,
    frame: np.ndarray,
    ts: np.ndarray,
) -> None:
    """Count the delivered segments (`data`) of the handled rows into the quiet columns of the
    connections that count (Q_FRAMES >= 0), as `QuietCount.add` would one by one. Rows are in
    (connection, frame) order; `hk` is each row's connection (its row in `out`)."""
    r = np.flatnonzero(data)
    r = r[out[hk[r], Q_FRAMES] >= 0]
    if not len(r):
        return
    conn = hk[r]
    side = client[r].astype(np.int64)
    starts, ends = group_starts(conn), group_ends(conn)
    first_of = conn[starts]
    # A request: a client segment right after a server one of the same connection, or the
    # connection's first segment here after a server segment counted before.
    prev = np.empty_like(side)
    prev[1:] = side[:-1]
    prev[starts] = out[first_of, Q_LAST_SIDE]
    turn = (side == 1) & (prev == 0)
    np.add.at(out[:, Q_REQUESTS], conn[turn], 1)
    unset = out[first_of, Q_FIRST_SIDE] < 0
    out[first_of[unset], Q_FIRST_SIDE] = side[starts][unset]
    np.add.at(out[:, Q_FRAMES], conn, 1)
    last_of = conn[ends]
    out[last_of, Q_LAST_FRAME] = frame[r[ends]]
    out[last_of, Q_LAST_TS] = ts[r[ends]]
    out[last_of, Q_LAST_SIDE] = side[ends]


def _append(old: bytearray, blob: memoryview, start: int, stop: int, trim: bool) -> bytearray:
    """`old` + blob[start:stop], or (`trim`: old and the whole tail exceed RECENT_LIMIT) only
    the newest RECENT_KEEP bytes of it: what Direction.settle keeps. Extends `old` in place
    when it is not trimmed."""
    size = stop - start
    if not trim:
        old += blob[start:stop]
        return old
    if size >= RECENT_KEEP:
        return bytearray(blob[stop - RECENT_KEEP : stop])
    kept = old[len(old) - (RECENT_KEEP - size) :]  # a copy: the larger buffer is freed
    kept += blob[start:stop]
    return kept


# (column, letter) of the history letters the table records, client's then server's.
_LETTERS = [
    (side + key, case(letter))
    for side, case in ((CLIENT, str.upper), (SERVER, str.lower))
    for key, letter in ((KEY_A, "A"), (KEY_D, "D"), (KEY_F, "F"), (KEY_T, "T"))
]


def history(values: list[int]) -> list[str]:
    """History letters of a connection regular since its SYN, in the order first seen."""
    keyed = [(2 * values[FIRST_FRAME], "S")]
    if values[SYNACK_FRAME] >= 0:
        keyed.append((2 * values[SYNACK_FRAME], "h"))
    keyed += [(values[column], letter) for column, letter in _LETTERS if values[column] >= 0]
    keyed.sort()
    return [letter for _, letter in keyed]


def summary(handle: Regular, v: list[int]) -> ConnectionSummary:
    """The summary of a connection regular since its SYN, as the per-packet path would have
    built it (`v`: its row)."""
    synack = v[SYNACK_FRAME] >= 0
    stats = []
    for side in (CLIENT, SERVER):
        fin = v[side + FIN_FRAME]
        stats.append(
            DirectionStats(
                v[side + PACKETS],
                v[side + BYTES],
                v[side + BYTES] + v[side + SLOW_WIRE],
                v[side + RETRANS],
                0,
                (),
                0,
                0,
                False,
                fin if fin >= 0 else None,
                side == SERVER and not synack,  # a side is mid-stream until its SYN is seen
            )
        )
    return ConnectionSummary(
        handle.stream,
        handle.client,  # type: ignore[arg-type]
        handle.server,  # type: ignore[arg-type]
        False,
        False,
        v[FIRST_FRAME],
        v[LAST_FRAME],
        v[FIRST_TS],
        v[LAST_TS],
        (v[FIRST_FRAME],),
        (v[FIRST_TS],),
        v[SYNACK_FRAME] if synack else None,
        v[SYNACK_TS] if synack else None,
        v[SYNACK_TS] - v[FIRST_TS] if synack else None,
        None,
        None,
        None,
        (),
        stats[0],
        stats[1],
        conn_state(True, synack, v[CLIENT + FIN_FRAME] >= 0, v[SERVER + FIN_FRAME] >= 0, None),
        "".join(history(v)),
    )
