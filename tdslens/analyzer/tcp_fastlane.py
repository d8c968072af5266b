"""The fast lane: connections whose batch is uneventful are handled with numpy, not per packet.

Why: most packets of a capture are uneventful: in-order data and pure ACKs of an established
connection. Handling each in Python costs ~2-3 µs; the budget is ~1 µs. So per batch, and per
connection (address pair), `plan` checks with whole-column operations whether *every* packet of
that connection in the batch is uneventful, given the connection's state before the batch:

- no SYN, FIN or RST; a non-zero window; the payload fully captured;
- the connection is open, both directions have a known next sequence number, nothing waits
  out of order, no zero-window probe is held, no zero window is open;
- each data segment starts exactly where its direction's previous bytes ended;
- no ACK acknowledges bytes beyond what its peer's direction has sent (that would be a gap);
- the history letters these packets would add (A, D) are already there.

Such connections ("fast groups") need only their `Payload` events (built in the engine's loop,
in frame order with everything else) and a few counters added at the end of the batch
(`apply`). Everything else takes the exact per-packet path. Both paths give the same events:
tests/test_tcp_fastlane.py runs each capture both ways and compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tdslens.analyzer.packet_columns import ACK
from tdslens.analyzer.tcp_reassembly import HALF, MASK, RECENT_LIMIT

if TYPE_CHECKING:
    from tdslens.analyzer.tcp import _Flow


@dataclass(slots=True)
class FastPlan:
    """Which rows of a batch the fast lane takes, and what they add up to."""

    kind: np.ndarray  # int8 per row: 0 slow, 1 fast, 2 slow and first after a fast prefix
    stream: np.ndarray  # int64 per row: tcp.stream of fast rows
    from_client: np.ndarray  # bool per row (fast rows)
    deliver: np.ndarray  # bool per group: the connection's payload has a subscriber
    offset: np.ndarray  # int64 per row: stream offset of a fast data row's first byte
    groups: list[int]  # groups with fast rows
    packets: list[int]  # per (group*2 + side_b): fast packets
    nbytes: list[int]  # per (group*2 + side_b): fast payload bytes
    last_row: list[int]  # per group: last fast row
    tails: dict[int, list[tuple[int, int]]]  # (group*2 + side_b) -> (offset, len) of last data
    last_ack: dict[int, int]  # (group*2 + side_b) -> the peer's last raw ACK among fast rows


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
) -> FastPlan | None:
    """Decide the fast rows of one batch (rows are the batch's TCP packets, in frame order).

    A connection's rows are fast from the start of the batch up to its first eventful row;
    that row and every later one take the per-packet path.
    """
    n_groups = len(flows)
    eventful = ((fl & 0x07) != 0) | (win == 0) | (pl != pw)
    side = g * 2 + (~sa)  # slot of the sending direction: 2*group for side a, +1 for side b
    usable = np.zeros(n_groups, dtype=bool)
    usable[g[~eventful]] = True  # connections with at least one candidate row

    # Per candidate connection: is its state uneventful? (one Python step per connection)
    nxt0 = np.zeros(2 * n_groups, dtype=np.int64)
    off0 = np.zeros(2 * n_groups, dtype=np.int64)
    need_d = np.zeros(2 * n_groups, dtype=bool)  # first data would add history letter D
    need_a = np.zeros(2 * n_groups, dtype=bool)  # first pure ACK would add A
    stream = np.zeros(n_groups, dtype=np.int64)
    a_client = np.zeros(n_groups, dtype=bool)
    deliver = np.zeros(n_groups, dtype=bool)
    for gi in np.flatnonzero(usable).tolist():
        flow = flows[gi]
        conn = flow.conn
        if conn is None or flow.unset or conn.closed_ts >= 0:
            usable[gi] = False
            continue
        da, db = conn.da, conn.db
        if da.slow or db.slow or da.nxt < 0 or db.nxt < 0:
            usable[gi] = False
            continue
        ka, kb = 2 * gi, 2 * gi + 1
        nxt0[ka], nxt0[kb] = da.nxt, db.nxt
        off0[ka], off0[kb] = da.off, db.off
        need_d[ka], need_d[kb] = not da.payload_bytes, not db.payload_bytes
        need_a[ka], need_a[kb] = not da.saw_pure_ack, not db.saw_pure_ack
        stream[gi] = conn.stream
        a_client[gi] = conn.a_is_client
        deliver[gi] = da.deliver
    idx = np.flatnonzero(usable[g])
    if len(idx) == 0:
        return None

    # Rows of candidate connections, grouped by connection, in frame order within each.
    order = idx[np.argsort(g[idx], kind="stable")]
    gs, sas, pls, slots = g[order], sa[order], pl[order], side[order]
    bytes_a = np.where(sas, pls, 0)
    bytes_b = np.where(sas, 0, pls)
    ca = np.cumsum(bytes_a) - bytes_a  # bytes side a sent before this row (batch-wide so far)
    cb = np.cumsum(bytes_b) - bytes_b
    first = np.ones(len(order), dtype=bool)
    first[1:] = gs[1:] != gs[:-1]
    starts = np.flatnonzero(first)
    segment = np.cumsum(first) - 1
    ca -= ca[starts][segment]  # ... within this connection only
    cb -= cb[starts][segment]
    next_a = nxt0[2 * gs] + ca  # where each direction stands just before this row
    next_b = nxt0[2 * gs + 1] + cb
    own = np.where(sas, next_a, next_b) & MASK
    other = np.where(sas, next_b, next_a) & MASK
    flo = fl[order]
    d = (ack[order] - other) & MASK
    fail = (
        eventful[order]
        | ((pls > 0) & ((seq[order] != own) | need_d[slots]))
        | ((flo & ACK) != 0) & (d != 0) & (d < HALF)
        | ((pls == 0) & ((flo & ACK) != 0) & need_a[slots])
    )
    failed = np.cumsum(fail)
    failed -= (failed[starts] - fail[starts])[segment]  # eventful rows so far in the connection
    keep = failed == 0
    if not keep.any():
        return None
    first_slow = ~keep & (failed == 1) & fail  # the row that ends a connection's fast prefix
    rows = order[keep]
    gk, sak, plk, slk = gs[keep], sas[keep], pls[keep], slots[keep]

    n = len(g)
    kind = np.zeros(n, dtype=np.int8)
    kind[rows] = 1
    kind[order[first_slow & keep[starts][segment]]] = 2
    row_stream = np.zeros(n, dtype=np.int64)
    row_stream[rows] = stream[gk]
    from_client = np.zeros(n, dtype=bool)
    from_client[rows] = sak == a_client[gk]
    offset = np.zeros(n, dtype=np.int64)
    offset[rows] = np.where(sak, off0[2 * gk] + ca[keep], off0[2 * gk + 1] + cb[keep])

    packets = np.bincount(slk, minlength=2 * n_groups)
    nbytes = np.bincount(slk, weights=plk, minlength=2 * n_groups).astype(np.int64)
    last_row = np.full(n_groups, -1, dtype=np.int64)
    last_of_group = np.ones(len(rows), dtype=bool)
    last_of_group[:-1] = gk[1:] != gk[:-1]
    last_row[gk[last_of_group]] = rows[last_of_group]

    # The newest bytes each direction delivered, to compare later retransmissions with.
    data = plk > 0
    tails: dict[int, list[tuple[int, int]]] = {}
    if data.any():
        drows, dslots, dlen = rows[data], slk[data], plk[data]
        rev = np.argsort(dslots[::-1], kind="stable")  # per slot, newest first
        r_rows, r_slots, r_len = drows[::-1][rev], dslots[::-1][rev], dlen[::-1][rev]
        after = np.cumsum(r_len) - r_len
        slot_first = np.ones(len(r_slots), dtype=bool)
        slot_first[1:] = r_slots[1:] != r_slots[:-1]
        after -= after[np.flatnonzero(slot_first)][np.cumsum(slot_first) - 1]
        wanted = after < RECENT_LIMIT
        for slot, r, ln in zip(
            r_slots[wanted].tolist(),
            po[r_rows[wanted]].tolist(),
            r_len[wanted].tolist(),
            strict=True,
        ):
            tails.setdefault(slot, []).append((r, ln))
    # The peer's last ACK for each direction (rows of the other side with ACK set).
    acking = (fl[rows] & ACK) != 0
    last_ack: dict[int, int] = {}
    if acking.any():
        target = (2 * gk + sak)[acking]  # the slot of the direction being acknowledged
        values = ack[rows][acking]
        by_target = np.argsort(target, kind="stable")
        t_sorted = target[by_target]
        last = np.ones(len(t_sorted), dtype=bool)
        last[:-1] = t_sorted[1:] != t_sorted[:-1]
        last_ack = dict(zip(t_sorted[last].tolist(), values[by_target][last].tolist(), strict=True))
    return FastPlan(
        kind=kind,
        stream=row_stream,
        from_client=from_client,
        deliver=deliver,
        offset=offset,
        groups=np.unique(gk).tolist(),
        packets=packets.tolist(),
        nbytes=nbytes.tolist(),
        last_row=last_row.tolist(),
        tails=tails,
        last_ack=last_ack,
    )


def apply(
    fp: FastPlan,
    gi: int,
    flows: list[_Flow],
    mv: memoryview,
    number: np.ndarray,
    ts_ns: np.ndarray,
) -> None:
    """Add what connection `gi`'s fast rows did to its state (once, before any later row)."""
    conn = flows[gi].conn
    assert conn is not None
    r = fp.last_row[gi]
    conn.last_frame = int(number[r])
    conn.last_ts = int(ts_ns[r])
    for slot, d in ((2 * gi, conn.da), (2 * gi + 1, conn.db)):
        d.packets += fp.packets[slot]
        n = fp.nbytes[slot]
        if n:
            d.payload_bytes += n
            d.off += n
            d.nxt = (d.nxt + n) & MASK
            tail = fp.tails.get(slot)
            if tail:
                d.recent += b"".join([mv[p : p + ln] for p, ln in reversed(tail)])
                if len(d.recent) > RECENT_LIMIT:
                    d.trim_recent()
        ack = fp.last_ack.get(slot)
        if ack is not None:
            d.acked = ack
