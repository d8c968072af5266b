"""The fast lane: runs of uneventful packets are handled with numpy, not per packet.

Why: most packets of a capture are uneventful: in-order data and pure ACKs of an established
connection. Handling each in Python costs ~2-3 µs; the budget is well under 1 µs. Connections
are short (~55 packets) and most are born inside a batch, so a lane that only takes connections
already open at the batch start gains little. This one cuts each connection's rows in the batch
into **runs**: maximal sequences of consecutive rows of one address pair (in frame order) that
are structurally uneventful:

- no SYN, FIN or RST, and no row after a FIN of the pair in the batch; a non-zero window; the
  payload fully captured;
- data segments of each side continue each other (each starts where the previous one of its
  side ended), and no ACK acknowledges bytes beyond what the run's other side sent.

A run does not depend on the connection's state except through a few numbers numpy computes
here (`base`: where each side's bytes must continue; `ack_ref`/`ack_max`: how far the acks
reach). The engine's loop meets each run at its first row, in frame order, after every earlier
row of the connection was handled, and `take` checks those numbers against the real state:
open, not closing, both next sequence numbers known and equal to `base`, nothing out of order
or held, no zero window. If they hold, `take` adds the whole run at once (packets, bytes,
offsets, last ACK, the newest bytes for retransmission compares, last frame, and the history
letters of a side's first data and first pure ACK, in the order the per-packet path would add
them); the run's rows are never visited, unless a subscriber wants their `Payload`. If not, the
run's rows go through the per-packet path like any other row. Both ways give the same events:
tests/test_tcp_fastlane.py and tests/test_fast_path.py run each capture both ways.

Everything here works on the rows sorted by (pair, frame) (`order`, which the engine's grouping
produces anyway), so a pair's rows, and a run's, are contiguous; per side, the rows of
successive runs then come in run order, which lets "first/last row of each run and side" be
found by comparing neighbours instead of sorting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tdslens.analyzer.packet_columns import ACK, FIN, SYN
from tdslens.analyzer.tcp_reassembly import HALF, MASK, RECENT_LIMIT

if TYPE_CHECKING:
    from tdslens.analyzer.tcp import _Conn
    from tdslens.analyzer.tcp_reassembly import Direction

SLOW, IN_RUN, RUN_START = 0, 1, 2
_REACH = 1 << 29  # acks are compared as plain ints within this distance (far below HALF)
_CUT_ROUNDS = 4  # rounds of cutting runs at a failing row before giving up on the run


@dataclass(slots=True)
class RunPlan:
    """The runs of one batch. "Positions" index `order`."""

    kind: np.ndarray  # int8 per row: SLOW, IN_RUN or RUN_START
    run: np.ndarray  # int64 per row: run id, -1 for slow rows
    rel_off: np.ndarray  # int64 per row: bytes its side sent earlier in its run
    order: np.ndarray  # rows sorted by (pair, frame): a run is order[lo[run]:hi[run]]
    lo: list[int]
    hi: list[int]
    last_frame: list[int]  # per run: frame number and time of its last row
    last_ts: list[int]
    # Per run, for side a and side b (``sides[run][0]``, ``[1]``), what `take` checks and adds,
    # in the order of SIDE_FIELDS. One list per side: `take` unpacks it in one step.
    sides: list[list[list[int]]]
    # The newest bytes (up to RECENT_LIMIT) of each side: payload offsets and lengths, oldest
    # first; a side's are [tail_lo:tail_hi].
    tail_offset: np.ndarray
    tail_len: np.ndarray


SIDE_FIELDS = (
    "base",  # raw seq the side's first data in the run must start at; -1: no data
    "ack_ref",  # an ACK for the side (minus the run's bytes before it); -1: none
    "ack_max",  # how far beyond ack_ref the furthest such ACK reaches
    "first_data",  # position of the side's first data row in the run; -1: none
    "first_ack",  # position of its first pure ACK in the run; -1: none
    "packets",
    "nbytes",
    "last_ack",  # the last raw ACK for the side in the run; -1: none
    "tail_lo",
    "tail_hi",
)


def group_starts(keys: np.ndarray) -> np.ndarray:
    """Indexes where a sorted (non-decreasing) `keys` takes a new value."""
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    return np.flatnonzero(new)


def group_ends(keys: np.ndarray) -> np.ndarray:
    """Indexes of the last element of each value of a sorted `keys`."""
    last = np.empty(len(keys), dtype=bool)
    last[-1:] = True
    np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return np.flatnonzero(last)


def plan(
    g: np.ndarray,
    sa: np.ndarray,
    order: np.ndarray,
    number: np.ndarray,
    ts_ns: np.ndarray,
    seq: np.ndarray,
    ack: np.ndarray,
    fl: np.ndarray,
    win: np.ndarray,
    po: np.ndarray,
    pl: np.ndarray,
    pw: np.ndarray,
    held: np.ndarray | None = None,
) -> RunPlan | None:
    """Cut one batch's rows (its TCP packets, in frame order) into runs; None if there are none.

    `g` is each row's pair, `sa` whether side "a" sent it, `order` the rows sorted by (pair,
    frame); `held` (bool per pair, optional) marks pairs whose rows must all go the per-packet
    way (an ICMP error quotes them in the batch: it may start a new stream mid-run)."""
    n = len(g)
    # Columns in `order`: a pair's rows are contiguous, in frame order.
    flo, pwo = fl[order], pw[order]
    cand = ((flo & 0x07) == 0) & (win[order] != 0) & (pl[order] == pwo)
    if held is not None:
        cand &= ~held[g[order]]
    if not cand.any():
        return None
    go, sao, seqo = g[order], sa[order], seq[order]
    new_pair = np.empty(n, dtype=bool)
    new_pair[0] = True
    np.not_equal(go[1:], go[:-1], out=new_pair[1:])
    data = pwo > 0

    # After a FIN the connection is closing (the ACK of the FIN, last segments): slow.
    fin = (flo & FIN) != 0
    if fin.any():
        pos = np.arange(n)
        last_fin = np.maximum.accumulate(np.where(fin, pos, -1))
        pair_start = np.maximum.accumulate(np.where(new_pair, pos, 0))
        cand &= last_fin < pair_start

    # A data segment that does not continue its side's previous one (retransmission, reorder)
    # is slow; this local check leaves the rounds below (which need the whole run) little to cut.
    for side in (sao, ~sao):
        d = np.flatnonzero(data & side)
        if len(d) > 1:
            prev, cur = d[:-1], d[1:]
            expect = (seqo[prev] + pwo[prev] + ((flo[prev] & SYN) != 0)) & MASK
            cand[cur[(go[cur] == go[prev]) & (seqo[cur] != expect)]] = False

    acko = ack[order]
    acking = (flo & ACK) != 0
    pure_ack = ~data & acking
    rounds = 0
    while True:
        start = cand.copy()
        start[1:] &= ~cand[:-1] | new_pair[1:]
        idx = np.flatnonzero(cand)  # positions of run rows
        if len(idx) == 0:
            return None
        is_first = start[idx]
        firsts = np.flatnonzero(is_first)  # index into idx of each run's first row
        r_run = np.cumsum(is_first) - 1
        n_runs = len(firsts)
        r_sa, r_len = sao[idx], pwo[idx]
        # Bytes each side sent earlier in the run.
        bytes_a = np.where(r_sa, r_len, 0)
        bytes_b = r_len - bytes_a
        ca = np.cumsum(bytes_a) - bytes_a
        cb = np.cumsum(bytes_b) - bytes_b
        run_first = firsts[r_run]
        ca -= ca[run_first]
        cb -= cb[run_first]
        own = np.where(r_sa, ca, cb)  # bytes this side sent earlier in the run
        # Data continues the side's previous data: seq minus bytes before is one value per side;
        # acks, relative to the first ACK for that side in the run, stay within _REACH.
        rel_seq = (seqo[idx] - own) & MASK
        rel_ack = (acko[idx] - (ca + cb - own)) & MASK
        r_data, r_acking = data[idx], acking[idx]
        base = np.full(2 * n_runs, -1, dtype=np.int64)
        ack_ref = np.full(2 * n_runs, -1, dtype=np.int64)
        s_ack = np.zeros(len(idx), dtype=np.int64)
        fail = np.zeros(len(idx), dtype=bool)
        sides = (np.flatnonzero(r_sa), np.flatnonzero(~r_sa))  # index into idx, per side
        for side, rows in enumerate(sides):
            slot = 2 * r_run[rows] + side  # non-decreasing
            d = r_data[rows]
            if d.any():
                dr, ds = rows[d], slot[d]
                f = group_starts(ds)
                base[ds[f]] = rel_seq[dr[f]]
                fail[dr] |= rel_seq[dr] != base[ds]
            a = r_acking[rows]
            if a.any():
                ar, other = rows[a], slot[a] ^ 1  # acks sent by this side are for the other
                f = group_starts(other)
                ack_ref[other[f]] = rel_ack[ar[f]]
                s = ((rel_ack[ar] - ack_ref[other] + HALF) & MASK) - HALF
                s_ack[ar] = s
                fail[ar] |= np.abs(s) >= _REACH
        if not fail.any():
            break
        fail_pos = np.flatnonzero(fail)
        rounds += 1
        if rounds <= _CUT_ROUNDS:
            # Cut: the first failing row of each run becomes slow; the rows after it form a
            # new run (next round).
            cand[idx[fail_pos[group_starts(r_run[fail_pos])]]] = False
        else:  # many failures (e.g. every packet captured twice): the runs go slow
            bad = np.zeros(n_runs, dtype=bool)
            bad[r_run[fail_pos]] = True
            cand[idx[bad[r_run]]] = False

    # Per side of each run: what `take` adds, and what it checks.
    slots = 2 * n_runs
    ack_max = np.full(slots, -(1 << 62), dtype=np.int64)
    last_ack = np.full(slots, -1, dtype=np.int64)
    first_data = np.full(slots, -1, dtype=np.int64)
    first_ack = np.full(slots, -1, dtype=np.int64)
    tail_lo = np.zeros(slots, dtype=np.int64)
    tail_hi = np.zeros(slots, dtype=np.int64)
    tail_offset: list[np.ndarray] = []
    tail_len: list[np.ndarray] = []
    n_tail = 0
    r_pure = pure_ack[idx]
    r_po = po[order[idx]]
    for side, rows in enumerate(sides):
        slot = 2 * r_run[rows] + side
        a = r_acking[rows]
        if a.any():
            ar, other = rows[a], slot[a] ^ 1
            f = group_starts(other)
            ack_max[other[f]] = np.maximum.reduceat(s_ack[ar], f)
            last = group_ends(other)
            last_ack[other[last]] = acko[idx[ar[last]]]
        p = r_pure[rows]
        if p.any():
            ps = slot[p]
            f = group_starts(ps)
            first_ack[ps[f]] = idx[rows[p][f]]
        d = r_data[rows]
        if d.any():
            dr, ds = rows[d], slot[d]
            f = group_starts(ds)
            first_data[ds[f]] = idx[dr[f]]
            # The newest bytes each side delivered in the run, to compare later
            # retransmissions with: per side, the rows whose later bytes are < RECENT_LIMIT.
            lens = r_len[dr]
            upto = np.cumsum(lens)
            seg_end = upto[group_ends(ds)]
            after = np.repeat(seg_end, np.diff(np.append(f, len(ds)))) - upto
            keep = np.flatnonzero(after < RECENT_LIMIT)
            ks = ds[keep]
            tail_offset.append(r_po[dr[keep]])
            tail_len.append(lens[keep])
            tail_lo[ks[group_starts(ks)]] = n_tail + group_starts(ks)
            tail_hi[ks[group_ends(ks)]] = n_tail + group_ends(ks) + 1
            n_tail += len(keep)
    r_slot = 2 * r_run + ~r_sa
    packets = np.bincount(r_slot, minlength=slots)
    nbytes = np.bincount(r_slot, weights=r_len, minlength=slots).astype(np.int64)

    rows_of_runs = order[idx]
    kind = np.zeros(n, dtype=np.int8)
    kind[rows_of_runs] = IN_RUN
    kind[rows_of_runs[firsts]] = RUN_START
    run_of_row = np.full(n, -1, dtype=np.int64)
    run_of_row[rows_of_runs] = r_run
    rel_off = np.zeros(n, dtype=np.int64)
    rel_off[rows_of_runs] = own
    lo = idx[firsts]
    hi = np.empty(n_runs, dtype=np.int64)
    hi[:-1] = idx[firsts[1:] - 1] + 1
    hi[-1] = idx[-1] + 1
    last_row = order[hi - 1]
    per_side = (base, ack_ref, ack_max, first_data, first_ack, packets, nbytes, last_ack)
    per_side += (tail_lo, tail_hi)
    empty = np.zeros(0, dtype=np.int64)
    return RunPlan(
        kind=kind,
        run=run_of_row,
        rel_off=rel_off,
        order=order,
        lo=lo.tolist(),
        hi=hi.tolist(),
        last_frame=number[last_row].tolist(),
        last_ts=ts_ns[last_row].tolist(),
        sides=np.stack(per_side, axis=1).reshape(n_runs, 2, len(SIDE_FIELDS)).tolist(),
        tail_offset=np.concatenate(tail_offset) if tail_offset else empty,
        tail_len=np.concatenate(tail_len) if tail_len else empty,
    )


def take(rp: RunPlan, run: int, conn: _Conn, mv: memoryview, pending: list[Direction]) -> bool:
    """Add run `run` to `conn` at once if the connection's state allows it (see module
    docstring); False (and nothing changed) if its rows must take the per-packet path."""
    if conn.closed_ts >= 0:
        return False
    da, db = conn.da, conn.db
    if da.slow or db.slow or da.zw or db.zw or da.nxt < 0 or db.nxt < 0:
        return False
    side_a, side_b = rp.sides[run]
    sides = ((da, side_a), (db, side_b))
    for d, side in sides:
        base, ref = side[0], side[1]
        if base >= 0 and base != d.nxt:
            return False
        if ref >= 0:
            c = ((ref - d.nxt + HALF) & MASK) - HALF
            if c <= -_REACH or c >= _REACH or c + side[2] > 0:
                return False
    # History letters of a side's first data and first pure ACK, in frame order.
    marks = []
    for d, side in sides:
        if side[3] >= 0 and not d.payload_bytes:
            marks.append((side[3], "D", d))
        if side[4] >= 0 and not d.saw_pure_ack:
            marks.append((side[4], "A", d))
            d.saw_pure_ack = True
    if marks:
        marks.sort()
        for _, letter, d in marks:
            d.mark(letter)
    conn.last_frame = rp.last_frame[run]
    conn.last_ts = rp.last_ts[run]
    for d, (_, _, _, _, _, packets, n, last_ack, tail_lo, tail_hi) in sides:
        d.packets += packets
        if n:
            d.payload_bytes += n
            d.off += n
            d.nxt = (d.nxt + n) & MASK
            if d.pending is None:
                pending.append(d)
            d.keep_tail(mv, rp.tail_offset, rp.tail_len, tail_lo, tail_hi)
        if last_ack >= 0:
            d.acked = last_ack
    return True
