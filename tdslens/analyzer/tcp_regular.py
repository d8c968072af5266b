"""Regular connections: whole TCP connections kept as rows of a table, not as objects.

Why: with the fast lane taking most packets, what the engine still spends is Python per
connection: two `Direction` objects and a `_Conn`, the handshake and closing packets one by one,
one `take` per batch the connection appears in, the retransmission-compare bytes, the summary.
On the 2M-packet benchmark (~54 packets per connection) that was ~2 µs per packet, most of
the engine. Yet nearly every connection of a capture does the same few things. So when no
consumer reads payload (`tdslens streams`: the engine's filter is `no_stream`), a connection
that behaves regularly lives as one row of a numpy table, and all its packets in a batch are
handled at once, for all such connections together.

**Regular** means: it starts with the client's pure SYN on an address pair with no open
connection, and that SYN starts a new tcp.stream (Wireshark's rule, see `tcp.py`); the one
SYN-ACK acknowledges it; after that every segment continues its side's bytes, fully captured,
with a non-zero window; ACKs never acknowledge more than the other side sent (its FIN counts
one); each side sends at most one FIN, after its data; no RST; nothing after the connection
closed (both FINs acknowledged). Retransmissions, reordering, SYN retries, zero windows, gaps,
resets, keep-alives: anything else is not regular.

How, per batch (`RegularTable.step`): numpy decides for every address pair whether its rows
in the batch keep (or make) its connection regular, checking each row against the table's
numbers (next sequence numbers, FINs). If so, their effect (packets, bytes, next sequence
numbers, last ACKs, the SYN-ACK, FINs, history letters, last frame, the newest bytes for
retransmission compares) is written into the table at once. The engine's loop then visits only
the SYN, to number the stream and emit `StreamStart` in frame order, and the row where the
connection closes, to start its linger in frame order. If not, a regular connection becomes an
ordinary `_Conn` before any row of the batch is handled (`TcpEngine._materialize`), with the
state the per-packet path would have given it, and the batch's rows take the ordinary path.
Its summary is built from the table when it ends.

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
from tdslens.analyzer.tcp_reassembly import HALF, MASK, RECENT_KEEP, RECENT_LIMIT

if TYPE_CHECKING:
    from tdslens.analyzer.tcp import _Flow

# Columns of the table, per connection ...
STREAM, CLIENT_A, FIRST_FRAME, FIRST_TS, LAST_FRAME, LAST_TS = range(6)
SYNACK_FRAME, SYNACK_TS, CLOSED_TS = range(6, 9)
# ... and per side, at CLIENT + field or SERVER + field (-1: not yet / none):
ISN, NXT, ACKED, PACKETS, BYTES, FIN_SEQ, FIN_FRAME, FIN_ACKED = range(8)
KEY_A, KEY_D, KEY_F = range(8, 11)  # history letters: 2 * frame (+1 for A and D), see _history
HAS_RECENT = 11  # 1 if the side holds retransmission-compare bytes (Regular.recent)
CLIENT, SERVER = 9, 21
N_COLUMNS = 33
_SIDE_COLUMNS = 12


class Regular:
    """Handle of a regular connection: where its row is, and what is not a number."""

    __slots__ = ("client", "done", "flow", "recent", "server", "slot", "stream", "table")

    def __init__(self, table: RegularTable, slot: int, flow: _Flow) -> None:
        self.table = table
        self.slot = slot
        self.flow = flow
        self.stream = -1  # numbered when the loop meets the SYN
        self.client: Endpoint | None = None
        self.server: Endpoint | None = None
        self.recent = [b"", b""]  # client's, server's newest delivered bytes (see Direction)
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
        """A SYN-ACK was seen (so it is no longer an unanswered attempt)."""
        return bool(self.table.state[self.slot, SYNACK_FRAME] >= 0)

    def values(self) -> list[int]:
        return self.table.state[self.slot].tolist()  # type: ignore[no-any-return]


@dataclass(slots=True)
class RegularBatch:
    """What `step` decided for one batch."""

    rows: np.ndarray  # bool per row: handled here (the loop skips it)
    starts: list[tuple[int, Regular]]  # (row, handle): SYNs the loop must number
    closes: list[tuple[int, Regular, int]]  # (row, handle, ts): where connections close
    fallback: list[Regular]  # no longer regular: to become ordinary connections first
    pair_handle: list[Regular | None]  # per pair: its regular connection after the batch


def _starts(keys: np.ndarray) -> np.ndarray:
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    return np.flatnonzero(new)


def _ends(keys: np.ndarray) -> np.ndarray:
    last = np.empty(len(keys), dtype=bool)
    last[-1:] = True
    np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return np.flatnonzero(last)


class RegularTable:
    """The table of regular connections and the per-batch step."""

    def __init__(self) -> None:
        self.state = np.full((64, N_COLUMNS), -1, dtype=np.int64)
        self.free: list[int] = list(range(63, -1, -1))

    def _allocate(self, k: int) -> np.ndarray:
        while len(self.free) < k:
            old = len(self.state)
            grown = np.full((2 * old, N_COLUMNS), -1, dtype=np.int64)
            grown[:old] = self.state
            self.state = grown
            self.free[:0] = range(2 * old - 1, old - 1, -1)
        slots = self.free[-k:] if k else []
        del self.free[len(self.free) - k :]
        return np.array(slots[::-1], dtype=np.int64)

    def release(self, handle: Regular) -> None:
        self.state[handle.slot] = -1
        self.free.append(handle.slot)

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
    ) -> RegularBatch | None:
        """Handle the batch's rows of regular connections (see module docstring). Row arrays
        are in frame order; `order` sorts them by (pair, frame) and `go` is each sorted row's
        pair (pairs are numbered 0.. in that order). None if no pair qualifies."""
        n, n_pairs = len(order), len(flows)
        first = _starts(go)  # each pair's first position
        handles: list[Regular | None] = [
            f.conn if f.conn.__class__ is Regular else None  # type: ignore[misc]
            for f in flows
        ]
        live = np.array([h is not None for h in handles], dtype=bool)
        # A new regular connection: the pair's first row is a pure SYN starting a new stream.
        first_rows = order[first]
        maybe = np.flatnonzero(~live & ((fl[first_rows] & 0x17) == SYN) & (pw[first_rows] == 0))
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
            return None

        # Per pair: the connection's numbers at the batch start (a new one: from its SYN).
        slots = np.array([h.slot if h is not None else 0 for h in handles], dtype=np.int64)
        st = self.state[slots]
        st[~live] = -1
        st[new, CLIENT_A] = sa[first_rows[new]]
        st[new, CLIENT + ISN] = seq[first_rows[new]]
        st[new, CLIENT + NXT] = (seq[first_rows[new]] + 1) & MASK
        for side in (CLIENT, SERVER):
            st[new, side + PACKETS] = 0
            st[new, side + BYTES] = 0
            st[new, side + FIN_ACKED] = 0
            st[new, side + HAS_RECENT] = 0
        established = st[:, SYNACK_FRAME] >= 0
        closed = st[:, CLOSED_TS] >= 0

        # Rows, sorted by (pair, frame), with their pair's numbers.
        g = go
        rows_c = cand[g]
        pos = np.arange(n)
        sao, flo, seqo, acko = sa[order], fl[order], seq[order], ack[order]
        pwo = pw[order]
        client = sao == (st[g, CLIENT_A] == 1)
        is_syn = new[g] & (pos == first[g])
        # The SYN-ACK: the server's first row, acknowledging the client's SYN.
        srv = np.flatnonzero(rows_c & ~client)
        first_srv = np.full(n_pairs, n)
        first_srv[g[srv[_starts(g[srv])]]] = srv[_starts(g[srv])]
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

        # Each side's bytes before each row; segments must continue them.
        st[g[is_synack], SERVER + ISN] = seqo[is_synack]
        st[g[is_synack], SERVER + NXT] = (seqo[is_synack] + 1) & MASK
        by_c = np.where(est & client, pwo, 0)
        by_s = np.where(est & ~client, pwo, 0)
        before_c = np.cumsum(by_c) - by_c
        before_s = np.cumsum(by_s) - by_s
        before_c -= before_c[first][g]
        before_s -= before_s[first][g]
        nxt_c = (st[g, CLIENT + NXT] + before_c) & MASK  # where each side's bytes go on
        nxt_s = (st[g, SERVER + NXT] + before_s) & MASK
        fin = est & ((flo & FIN) != 0)
        uses_seq = est & ((pwo > 0) | fin)
        bad |= uses_seq & (seqo != np.where(client, nxt_c, nxt_s))
        # FINs: one per side, after its data.
        fin_at = []
        for side, mask in ((CLIENT, client), (SERVER, ~client)):
            f = np.flatnonzero(fin & mask)
            at = np.full(n_pairs, n)
            at[g[f[_starts(g[f])]]] = f[_starts(g[f])]
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
            a = np.flatnonzero(of_fin & mask)
            at = np.full(n_pairs, n)
            at[g[a[_starts(g[a])]]] = a[_starts(g[a])]
            acked_at.append(np.where(st[:, side + FIN_ACKED] == 1, -1, at))
        close_at = np.maximum(acked_at[0], acked_at[1])
        closing = cand & ~closed & (close_at >= 0) & (close_at < n)
        bad |= rows_c & closing[g] & (pos > close_at[g])

        bad_pair = np.zeros(n_pairs, dtype=bool)
        bad_pair[g[bad]] = True
        ok = cand & ~bad_pair
        fallback = [handles[p] for p in np.flatnonzero(live & bad_pair).tolist()]
        if not ok.any():
            rows = np.zeros(n, dtype=bool)
            return RegularBatch(rows, [], [], fallback, [None] * n_pairs)  # type: ignore[misc]

        # The batch's effect on the connections that stay (or become) regular.
        okr = ok[g]
        k = np.flatnonzero(ok)
        new_k = k[new[k]]
        fresh = self._allocate(len(new_k))
        for p, slot in zip(new_k.tolist(), fresh.tolist(), strict=True):
            h = handles[p] = Regular(self, slot, flows[p])
            flows[p].conn = h  # type: ignore[assignment]
        slot_k = np.array([handles[p].slot for p in k.tolist()], dtype=np.int64)  # type: ignore[union-attr]
        out = st[k]
        f_new = first_rows[new_k]
        is_new = new[k]
        out[is_new, FIRST_FRAME] = number[f_new]
        out[is_new, FIRST_TS] = ts_ns[f_new]
        numo = number[order]
        last = _ends(g)[k]  # each pair's last position
        out[:, LAST_FRAME] = numo[last]
        out[:, LAST_TS] = ts_ns[order[last]]
        sa_pos = np.flatnonzero(is_synack & okr)
        sa_pair = np.searchsorted(k, g[sa_pos])
        out[sa_pair, SYNACK_FRAME] = numo[sa_pos]
        out[sa_pair, SYNACK_TS] = ts_ns[order[sa_pos]]
        mv_rows = np.flatnonzero(okr)
        pair_of = np.searchsorted(k, g[mv_rows])  # index into k, per handled row
        tails = []  # per side: (side, pair index in k per group, group bounds, offsets, lengths)
        acked_all = {}
        for side, mask, fin_pos, ack_pos in (
            (CLIENT, client, fin_at[0], acked_at[0]),
            (SERVER, ~client, fin_at[1], acked_at[1]),
        ):
            m = mask[mv_rows]
            out[:, side + PACKETS] += np.bincount(pair_of[m], minlength=len(k))
            sent = np.bincount(pair_of[m], weights=pwo[mv_rows[m]], minlength=len(k))
            sent = sent.astype(np.int64)
            out[:, side + BYTES] += sent
            known = out[:, side + NXT] >= 0
            out[known, side + NXT] = (out[known, side + NXT] + sent[known]) & MASK
            # The other side's rows with ACK set (the SYN-ACK too) acknowledge this side.
            a = mv_rows[~m & ((flo[mv_rows] & ACK) != 0)]
            if len(a):
                last_a = a[_ends(g[a])]
                out[np.searchsorted(k, g[last_a]), side + ACKED] = acko[last_a]
            fp = fin_pos[k]
            has_fin = fp < n
            out[has_fin, side + FIN_SEQ] = (seqo[fp[has_fin]] + pwo[fp[has_fin]]) & MASK
            out[has_fin, side + FIN_FRAME] = numo[fp[has_fin]]
            out[has_fin, side + KEY_F] = 2 * numo[fp[has_fin]]
            ap = ack_pos[k]
            out[(ap >= 0) & (ap < n), side + FIN_ACKED] = 1
            # History letters: the side's first pure ACK and first data, if new.
            for key, rows_of in (
                (KEY_A, est & okr & mask & (pwo == 0) & ((flo & 0x17) == ACK)),
                (KEY_D, est & okr & mask & (pwo > 0)),
            ):
                r = np.flatnonzero(rows_of)
                if len(r):
                    r = r[_starts(g[r])]
                    i = np.searchsorted(k, g[r])
                    unset = out[i, side + key] < 0
                    out[i[unset], side + key] = 2 * numo[r[unset]] + 1
            # Everything this side sent is acknowledged (Direction.all_acked).
            dist = (out[:, side + ACKED] - out[:, side + NXT]) & MASK
            acked_all[side] = (
                (out[:, side + ACKED] >= 0)
                & (out[:, side + NXT] >= 0)
                & ((dist == 0) | ((dist == 1) & (out[:, side + FIN_SEQ] == out[:, side + NXT])))
            )
            # The newest bytes the side sent in the batch (up to RECENT_LIMIT), kept for
            # retransmission compares as the fast lane keeps them (see Direction.settle).
            dr = mv_rows[m & (pwo[mv_rows] > 0)]
            if len(dr):
                lens = pwo[dr]
                upto = np.cumsum(lens)
                group_start = _starts(g[dr])
                total = np.repeat(upto[_ends(g[dr])], np.diff(np.append(group_start, len(dr))))
                keep = total - upto < RECENT_LIMIT
                dr, lens = dr[keep], lens[keep]
                group_start = _starts(g[dr])
                at = np.searchsorted(k, g[dr[group_start]])
                tails.append((side, at, np.append(group_start, len(dr)), po[order[dr]], lens))
        # Retransmission-compare bytes: dropped once everything sent is acknowledged (as the
        # engine does per batch), otherwise the old ones plus the batch's newest.
        for side in (CLIENT, SERVER):
            drop = acked_all[side] & (out[:, side + HAS_RECENT] == 1)
            for i in np.flatnonzero(drop).tolist():
                handles[k[i]].recent[side == SERVER] = b""  # type: ignore[union-attr]
            out[acked_all[side], side + HAS_RECENT] = 0
        for side, at, bounds, offsets, lens in tails:
            s = side == SERVER
            acked = acked_all[side]
            offsets_l, lens_l = offsets.tolist(), lens.tolist()
            for i, lo, hi in zip(
                at.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True
            ):
                if acked[i]:
                    continue
                h = handles[k[i]]
                h.recent[s] = _keep(h.recent[s], mv, offsets_l[lo:hi], lens_l[lo:hi])  # type: ignore[union-attr]
                out[i, side + HAS_RECENT] = 1
        self.state[slot_k] = out

        starts = [(int(order[first[p]]), handles[p]) for p in new_k.tolist()]
        c = k[closing[k]]
        closes = [
            (int(order[close_at[p]]), handles[p], int(ts_ns[order[close_at[p]]]))
            for p in c.tolist()
        ]
        rows = np.zeros(n, dtype=bool)
        rows[order[okr]] = True
        pair_handle = [handles[p] if ok[p] else None for p in range(n_pairs)]
        return RegularBatch(rows, starts, closes, fallback, pair_handle)  # type: ignore[arg-type]


def _keep(old: bytes, mv: memoryview, offsets: list[int], lengths: list[int]) -> bytes:
    """`old` plus these segments of `mv`; past RECENT_LIMIT bytes, only the newest
    RECENT_KEEP (what Direction.settle keeps)."""
    if len(old) + sum(lengths) <= RECENT_LIMIT:
        return b"".join([old, *[mv[p : p + n] for p, n in zip(offsets, lengths, strict=True)]])
    parts: list[memoryview | bytes] = []
    need = RECENT_KEEP
    for p, n in zip(reversed(offsets), reversed(lengths), strict=True):
        if n >= need:
            parts.append(mv[p + n - need : p + n])
            need = 0
            break
        parts.append(mv[p : p + n])
        need -= n
    if need:
        parts.append(old[len(old) - need :])
    parts.reverse()
    return b"".join(parts)


def history(values: list[int]) -> list[str]:
    """History letters of a regular connection in the order they were first seen."""
    keyed = [(2 * values[FIRST_FRAME], "S")]
    if values[SYNACK_FRAME] >= 0:
        keyed.append((2 * values[SYNACK_FRAME], "h"))
    for side, case in ((CLIENT, str.upper), (SERVER, str.lower)):
        for key, letter in ((KEY_A, "A"), (KEY_D, "D"), (KEY_F, "F")):
            if values[side + key] >= 0:
                keyed.append((values[side + key], case(letter)))
    keyed.sort()
    return [letter for _, letter in keyed]


def summary(handle: Regular) -> ConnectionSummary:
    """The connection's summary, as the per-packet path would have built it."""
    v = handle.values()
    synack = v[SYNACK_FRAME] >= 0
    stats = []
    for side in (CLIENT, SERVER):
        fin = v[side + FIN_FRAME]
        stats.append(
            DirectionStats(
                v[side + PACKETS],
                v[side + BYTES],
                v[side + BYTES],
                0,
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
