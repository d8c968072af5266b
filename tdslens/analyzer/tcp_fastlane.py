"""The fast lane: runs of uneventful packets are handled with numpy, not per packet.

Why: most packets of a capture are uneventful: in-order data and pure ACKs of an established
connection. Handling each in Python costs ~2-3 µs; the budget is well under 1 µs. Connections
are short (~55 packets) and most are born inside a batch, so a lane that only takes connections
already open at the batch start gains little. This one cuts each connection's rows in the batch
into **runs**: maximal sequences of consecutive rows of one address pair (in frame order) that
are structurally uneventful:

- no SYN, FIN or RST; a non-zero window; the payload fully captured;
- data segments of each side continue each other (each starts where the previous one of its
  side in the run ended), and no ACK acknowledges bytes beyond what the run's other side sent;
- not the first data (or the first pure ACK) of a side in the batch unless the side already
  had one before the batch (those add history letters, and letters keep their order).

A run does not depend on the connection's state except through a few numbers numpy computes
here (`base`: where each side's bytes must continue; `ack_ref`/`ack_max`: how far the acks
reach). The engine's loop meets each run at its first row, in frame order, after every earlier
row of the connection was handled, and `take` checks those numbers against the real state:
open, not closing, both next sequence numbers known and equal to `base`, nothing out of order
or held, no zero window, the history letters already there. If they hold, `take` adds the whole
run at once (packets, bytes, offsets, last ACK, the newest bytes for retransmission compares,
last frame); the run's rows are never visited, unless a subscriber wants their `Payload`. If
not, the run's rows go through the per-packet path like any other row. Both ways give the same
events: tests/test_tcp_fastlane.py and tests/test_fast_path.py run each capture both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tdslens.analyzer.packet_columns import ACK, FIN, SYN
from tdslens.analyzer.tcp_reassembly import HALF, MASK, RECENT_LIMIT

if TYPE_CHECKING:
    from tdslens.analyzer.tcp import _Conn, _Flow
    from tdslens.analyzer.tcp_reassembly import Direction

SLOW, IN_RUN, RUN_START = 0, 1, 2
_REACH = 1 << 29  # acks are compared as plain ints within this distance (far below HALF)
_CUT_ROUNDS = 4  # rounds of cutting runs at a failing row before giving up on the run


@dataclass(slots=True)
class RunPlan:
    """The runs of one batch. Per-side lists are indexed by ``2 * run + (0 side a, 1 side b)``."""

    kind: np.ndarray  # int8 per row: SLOW, IN_RUN or RUN_START
    run: np.ndarray  # int64 per row: run id, -1 for slow rows
    rel_off: list[int]  # per row: bytes its side sent earlier in its run
    order: np.ndarray  # rows sorted by (pair, frame): a run is order[lo[run]:hi[run]]
    lo: list[int]
    hi: list[int]
    base: list[int]  # per side: raw seq its first data must start at; -1: no data in the run
    ack_ref: list[int]  # per side: an ACK for it (minus the run's bytes before); -1: none
    ack_max: list[int]  # per side: how far beyond ack_ref the furthest such ACK reaches
    need_a: list[bool]  # per side: it sends a pure ACK in the run
    packets: list[int]  # per side
    nbytes: list[int]  # per side
    last_ack: list[int]  # per side: the last raw ACK for it in the run; -1: none
    # The newest bytes (up to RECENT_LIMIT) of each side: payload offsets and lengths, newest
    # first, side by side; a side's are [tail_lo[side]:tail_hi[side]].
    tail_offset: np.ndarray
    tail_len: np.ndarray
    tail_lo: list[int]
    tail_hi: list[int]
    last_row: list[int]  # per run


FastPlan = RunPlan  # the name earlier versions used


def plan(
    flows: list[_Flow],
    g: np.ndarray,
    sa: np.ndarray,
    seq: np.ndarray,
    ack: np.ndarray,
    fl: np.ndarray,
    win: np.ndarray,
    po: np.ndarray,
    pl: np.ndarray,
    pw: np.ndarray,
) -> RunPlan | None:
    """Cut one batch's rows (its TCP packets, in frame order) into runs; None if there are none."""
    n = len(g)
    cand = ((fl & 0x07) == 0) & (win != 0) & (pl == pw)
    if not cand.any():
        return None
    side = 2 * g + (~sa)  # slot of the sending side: 2*group for side a, +1 for side b
    has_ack = (fl & ACK) != 0
    data = pw > 0

    # History letters: the first data and first pure ACK of a side in the batch stay slow
    # unless the side already had them before the batch.
    had_d = np.zeros(2 * len(flows), dtype=bool)
    had_a = np.zeros(2 * len(flows), dtype=bool)
    for gi, flow in enumerate(flows):
        conn = flow.conn
        if conn is not None:
            had_d[2 * gi] = conn.da.payload_bytes > 0
            had_d[2 * gi + 1] = conn.db.payload_bytes > 0
            had_a[2 * gi] = conn.da.saw_pure_ack
            had_a[2 * gi + 1] = conn.db.saw_pure_ack
    pure_ack = ~data & ((fl & 0x17) == ACK)
    for rows_of_kind, had in ((np.flatnonzero(data), had_d), (np.flatnonzero(pure_ack), had_a)):
        if len(rows_of_kind):
            _, first = np.unique(side[rows_of_kind], return_index=True)
            first_rows = rows_of_kind[first]
            cand[first_rows[~had[side[first_rows]]]] = False

    # A data segment that does not continue its side's previous one (retransmission, reorder)
    # is slow; this local check leaves the rounds below (which need the whole run) little to cut.
    d_rows = np.flatnonzero(data)
    if len(d_rows) > 1:
        by_side = d_rows[np.argsort(side[d_rows], kind="stable")]
        prev, cur = by_side[:-1], by_side[1:]
        expect = (seq[prev] + pw[prev] + ((fl[prev] & SYN) != 0)) & MASK
        cand[cur[(side[cur] == side[prev]) & (seq[cur] != expect)]] = False

    order = np.argsort(g, kind="stable")
    # After a FIN the connection is closing (the ACK of the FIN, last segments): slow.
    fin = (fl[order] & FIN) != 0
    if fin.any():
        count = np.cumsum(fin)
        group_start = np.ones(n, dtype=bool)
        group_start[1:] = g[order][1:] != g[order][:-1]
        starts = np.flatnonzero(group_start)
        before = (count - fin)[starts][np.cumsum(group_start) - 1]
        cand[order[count - before > 0]] = False
    gs, sas, seqs, acks = g[order], sa[order], seq[order], ack[order]
    pls, datas, acking = pl[order], data[order], has_ack[order]
    rounds = 0
    while True:
        c = cand[order]
        start = c.copy()
        start[1:] &= ~c[:-1] | (gs[1:] != gs[:-1])
        run = np.cumsum(start) - 1
        run = np.where(c, run, -1)
        n_runs = int(start.sum())
        if n_runs == 0:
            return None
        idx = np.flatnonzero(c)  # positions (in `order`) of run rows
        r_run, r_sa = run[idx], sas[idx]
        r_slot = 2 * r_run + (~r_sa)  # the sending side's slot
        r_other = 2 * r_run + r_sa  # the other side's slot
        r_len = pls[idx]
        bytes_a = np.where(r_sa, r_len, 0)
        bytes_b = np.where(r_sa, 0, r_len)
        ca = np.cumsum(bytes_a) - bytes_a
        cb = np.cumsum(bytes_b) - bytes_b
        firsts = np.flatnonzero(start[idx])  # index into idx of each run's first row
        seg = np.cumsum(start[idx]) - 1
        ca -= ca[firsts][seg]
        cb -= cb[firsts][seg]
        own = np.where(r_sa, ca, cb)  # bytes this side sent earlier in the run
        other = np.where(r_sa, cb, ca)
        # Data continues the side's previous data: seq minus bytes before is the same value.
        r_data = datas[idx]
        rel_seq = (seqs[idx] - own) & MASK
        base = np.full(2 * n_runs, -1, dtype=np.int64)
        d_pos = np.flatnonzero(r_data)
        if len(d_pos):
            slots_d = r_slot[d_pos]
            uniq, first = np.unique(slots_d, return_index=True)
            base[uniq] = rel_seq[d_pos[first]]
        fail = r_data & (rel_seq != base[r_slot])
        # Acks: relative to the first ACK for that side in the run, within _REACH.
        r_ack = acking[idx]
        rel_ack = (acks[idx] - other) & MASK
        ack_ref = np.full(2 * n_runs, -1, dtype=np.int64)
        a_pos = np.flatnonzero(r_ack)
        s = np.zeros(len(idx), dtype=np.int64)
        if len(a_pos):
            slots_a = r_other[a_pos]
            uniq, first = np.unique(slots_a, return_index=True)
            ack_ref[uniq] = rel_ack[a_pos[first]]
            s[a_pos] = ((rel_ack[a_pos] - ack_ref[slots_a] + HALF) & MASK) - HALF
            fail[a_pos] |= np.abs(s[a_pos]) >= _REACH
        if not fail.any():
            break
        fail_pos = idx[fail]
        rounds += 1
        if rounds <= _CUT_ROUNDS:
            # Cut: the first failing row of each run becomes slow; the rows after it form a
            # new run (next round).
            _, first = np.unique(run[fail_pos], return_index=True)
            cand[order[fail_pos[first]]] = False
        else:  # many failures (e.g. every packet captured twice): the runs go slow
            cand[order[np.isin(run, np.unique(run[fail_pos]))]] = False

    ack_max = np.full(2 * n_runs, -(1 << 62), dtype=np.int64)
    if len(a_pos):
        np.maximum.at(ack_max, r_other[a_pos], s[a_pos])
    last_ack = np.full(2 * n_runs, -1, dtype=np.int64)
    if len(a_pos):
        newest = a_pos[::-1]
        uniq, first = np.unique(r_other[newest], return_index=True)
        last_ack[uniq] = acks[idx][newest[first]]
    need_a = np.zeros(2 * n_runs, dtype=bool)
    need_a[r_slot[~r_data & r_ack]] = True
    packets = np.bincount(r_slot, minlength=2 * n_runs)
    nbytes = np.bincount(r_slot, weights=r_len, minlength=2 * n_runs).astype(np.int64)

    rows = order[idx]
    kind = np.zeros(n, dtype=np.int8)
    kind[rows] = IN_RUN
    kind[rows[firsts]] = RUN_START
    run_of_row = np.full(n, -1, dtype=np.int64)
    run_of_row[rows] = r_run
    rel_off = np.zeros(n, dtype=np.int64)
    rel_off[rows] = own
    lo = idx[firsts]
    hi = np.empty(n_runs, dtype=np.int64)
    hi[:-1] = idx[firsts[1:] - 1] + 1
    hi[-1] = idx[-1] + 1
    last_row = order[hi - 1]

    # The newest bytes each side delivered in the run, to compare later retransmissions with.
    tail_offset = tail_len = np.zeros(0, dtype=np.int64)
    tail_lo = tail_hi = np.zeros(2 * n_runs, dtype=np.int64)
    if len(d_pos):
        d_rows, d_slots, d_len = rows[d_pos][::-1], r_slot[d_pos][::-1], r_len[d_pos][::-1]
        by = np.argsort(d_slots, kind="stable")  # per slot, newest first
        d_rows, d_slots, d_len = d_rows[by], d_slots[by], d_len[by]
        after = np.cumsum(d_len) - d_len
        slot_first = np.ones(len(d_slots), dtype=bool)
        slot_first[1:] = d_slots[1:] != d_slots[:-1]
        after -= after[np.flatnonzero(slot_first)][np.cumsum(slot_first) - 1]
        wanted = after < RECENT_LIMIT
        t_slots = d_slots[wanted]
        tail_offset, tail_len = po[d_rows[wanted]], d_len[wanted]
        all_slots = np.arange(2 * n_runs)
        tail_lo = np.searchsorted(t_slots, all_slots, side="left")
        tail_hi = np.searchsorted(t_slots, all_slots, side="right")
    return RunPlan(
        kind=kind,
        run=run_of_row,
        rel_off=rel_off.tolist(),
        order=order,
        lo=lo.tolist(),
        hi=hi.tolist(),
        base=base.tolist(),
        ack_ref=ack_ref.tolist(),
        ack_max=ack_max.tolist(),
        need_a=need_a.tolist(),
        packets=packets.tolist(),
        nbytes=nbytes.tolist(),
        last_ack=last_ack.tolist(),
        tail_offset=tail_offset,
        tail_len=tail_len,
        tail_lo=tail_lo.tolist(),
        tail_hi=tail_hi.tolist(),
        last_row=last_row.tolist(),
    )


def take(
    rp: RunPlan,
    run: int,
    conn: _Conn,
    mv: memoryview,
    number: list[int],
    ts_ns: list[int],
    pending: list[Direction],
) -> bool:
    """Add run `run` to `conn` at once if the connection's state allows it (see module
    docstring); False (and nothing changed) if its rows must take the per-packet path."""
    if conn.closed_ts >= 0:
        return False
    da, db = conn.da, conn.db
    if da.slow or db.slow or da.zw or db.zw or da.nxt < 0 or db.nxt < 0:
        return False
    k = 2 * run
    for slot, d in ((k, da), (k + 1, db)):
        base = rp.base[slot]
        if base >= 0 and (base != d.nxt or not d.payload_bytes):
            return False
        if rp.need_a[slot] and not d.saw_pure_ack:
            return False
        ref = rp.ack_ref[slot]
        if ref >= 0:
            c = ((ref - d.nxt + HALF) & MASK) - HALF
            if c <= -_REACH or c >= _REACH or c + rp.ack_max[slot] > 0:
                return False
    r = rp.last_row[run]
    conn.last_frame = number[r]
    conn.last_ts = ts_ns[r]
    for slot, d in ((k, da), (k + 1, db)):
        d.packets += rp.packets[slot]
        n = rp.nbytes[slot]
        if n:
            d.payload_bytes += n
            d.off += n
            d.nxt = (d.nxt + n) & MASK
            lo, hi = rp.tail_lo[slot], rp.tail_hi[slot]
            if hi > lo:
                if d.pending is None:
                    pending.append(d)
                d.keep_tail(mv, rp.tail_offset, rp.tail_len, lo, hi)
        ack = rp.last_ack[slot]
        if ack >= 0:
            d.acked = ack
    return True
