"""The TCP engine: PacketColumns in, connection events out (see `tcp_events.py`).

Three jobs, in one pass over the packets in frame order:

1. **Stream numbering identical to Wireshark's ``tcp.stream``.** Wireshark keeps one current
   conversation per address/port pair. A pure SYN (SYN without ACK) starts a new conversation
   when its sender's *base sequence number* on the current conversation is known and differs
   from the SYN's sequence number; otherwise (a retransmitted SYN, or a new SYN that reuses the
   ISN even after FIN/RST) it stays in the same stream. A SYN-ACK whose sequence number differs
   from its sender's known base moves that base (same stream). A side's base is set by its
   first packet (seq for a SYN, seq - 1 otherwise), or earlier by the peer's first packet with
   ACK set (ack - 1). TCP headers quoted inside ICMP/ICMPv6 errors (`QUOTED_TCP` rows) take
   part in the lookup like packets, starting a stream when none matches, but set no base and
   are never data (`_quoted`). Found by probing tshark 4.0.17 with crafted captures
   (docs/tcp.md); tests/test_tcp_tshark.py and tests/test_tcp_icmp.py keep checking every
   frame of those probes, the crafted cases and real captures.
2. **Reassembly** per direction (`tcp_reassembly.Direction`): in-order bytes with the frame they
   came from, gaps where the capture lacks bytes, conflicting retransmissions flagged.
3. **Bookkeeping**: one `ConnectionSummary` per connection, emitted in `StreamEnd`.

Memory follows open connections. A connection that closed (both FINs acknowledged, or a RST)
lingers `linger_ns` of capture time for stray packets, then is summarised and dropped. Its
address pair keeps a small record (stream index, base sequence numbers: `tcp_pairs`) so that
the stream numbering stays right if the pair is used again.

Speed: the per-packet loop is plain Python over lists made from numpy columns, with the common
cases (pure ACK, in-order data) inline and everything rare in methods. Grouping packets by
address pair happens per batch with numpy, so dictionaries are touched once per pair per batch.
Runs of uneventful packets (most of a capture) are added at once when the loop meets their
first row (`tcp_fastlane`), and `Payload` events are built only for connections a consumer
subscribed to (`payloads`), and only until the consumer has read enough (`quiet`: from then
on the engine counts the segments, and the connection may join the regular table of
`tcp_regular`); both paths give identical events (tests/test_tcp_fastlane.py,
tests/test_fast_path.py, tests/test_tcp_quiet.py). docs/performance.md has the measurements.

Unanswered attempts idle for `idle_ns` are summarised and dropped too (a later packet of the
pair continues the same stream index, with `continued` set). Established connections are never
timed out.
"""

from __future__ import annotations

import gc
import heapq
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from tdslens.analyzer import tcp_fastlane, tcp_regular
from tdslens.analyzer.packet_columns import (
    ACK,
    FIN,
    QUOTED_TCP,
    RST,
    SYN,
    TCP,
    IcmpQuote,
    PacketColumns,
    address_text,
)
from tdslens.analyzer.tcp_events import (
    ConnectionSummary,
    Endpoint,
    IcmpError,
    Payload,
    PayloadFilter,
    QuietCount,
    StreamEnd,
    StreamStart,
    TcpEvent,
    conn_state,
    every_stream,
    no_stream,
)
from tdslens.analyzer.tcp_pairs import PairArchive, Record
from tdslens.analyzer.tcp_reassembly import HALF, MASK, OOO_CAP, RECENT_LIMIT, Direction
from tdslens.analyzer.tcp_regular import Regular, RegularTable

LINGER_NS = 2_000_000_000  # capture time a closed connection waits for stray packets
# Capture time after which a connection attempt nobody answered (no SYN-ACK, no data) is
# summarised and dropped; SYN retries give up well before (Linux ~127 s, Windows ~21 s).
IDLE_NS = 300_000_000_000

# Ports that say "this side is the server" when no SYN tells us (lower rank wins).
_SQL_PORTS = {1433, 2433, 1434}


def _server_rank(port: int) -> tuple[int, int]:
    if port in _SQL_PORTS:
        return (0, port)
    if 11000 <= port <= 11999 or 14000 <= port <= 14999:  # Azure SQL redirect ranges
        return (1, port)
    if port < 1024:
        return (2, port)
    return (3, port)


# An address pair: for IPv4 one int, (a_addr << 16 | a_port) << 48 | (b_addr << 16 | b_port);
# otherwise (version, a_hi, a_lo, a_port, b_hi, b_lo, b_port).
FlowKey = int | tuple[int, ...]
_V6_KEY = struct.Struct(">BQQHQQH")  # an IPv6 FlowKey as archive key bytes


class _EndedPairs:
    """Every pair whose connection ended: its record (stream, bases) in a `PairArchive`,
    one for IPv4 keys (12 bytes) and one for the others."""

    def __init__(self) -> None:
        self.v4 = PairArchive(12)
        self.other = PairArchive(_V6_KEY.size)

    def put(self, flow: _Flow) -> None:
        archive, key = self._locate(flow.key)
        archive.put(key, (flow.stream, flow.base_a, flow.base_b))

    def get(self, key: FlowKey) -> Record | None:
        archive, packed = self._locate(key)
        return archive.get(packed)

    def _locate(self, key: FlowKey) -> tuple[PairArchive, bytes]:
        """The archive for the key and the key as its bytes."""
        if isinstance(key, int):
            return self.v4, key.to_bytes(12, "big")
        return self.other, _V6_KEY.pack(*key)


def _flow(
    flows_map: dict[FlowKey, _Flow],
    ended: _EndedPairs,
    key: FlowKey,
    version: int,
    a: tuple[int, int, int],
    b: tuple[int, int, int],
) -> _Flow:
    """The pair's flow state: live, revived from its ended record, or new."""
    found = flows_map.get(key)
    if found is not None:
        return found
    flow = flows_map[key] = _Flow(key, version, a, b, ended.get(key))
    return flow


class _Flow:
    """One address/port pair ever seen: its current connection and Wireshark's base seqs.

    Side "a" is the lexically smaller (address, port) of the pair; it never changes.
    """

    __slots__ = ("a", "b", "base_a", "base_b", "conn", "key", "stream", "unset", "version")

    def __init__(
        self,
        key: FlowKey,
        version: int,
        a: tuple[int, int, int],
        b: tuple[int, int, int],
        record: Record | None = None,
    ) -> None:
        self.key = key
        self.version = version
        self.a = a  # (hi, lo, port)
        self.b = b
        self.base_a = -1
        self.base_b = -1
        self.unset = True  # a base is still unknown
        self.conn: _Conn | None = None
        self.stream = -1
        if record is not None:  # the pair was used before: see TcpEngine._compact
            self.stream, self.base_a, self.base_b = record
            self.unset = self.base_a < 0 or self.base_b < 0

    def endpoint(self, side_a: bool, names: dict[tuple[int, int, int], str]) -> Endpoint:
        """The side's endpoint; `names` caches address texts (formatting one costs ~5 µs)."""
        hi, lo, port = self.a if side_a else self.b
        key = (self.version, hi, lo)
        name = names.get(key)
        if name is None:
            if len(names) > 100_000:
                names.clear()
            name = names[key] = address_text(self.version, hi, lo)
        return Endpoint(name, port)


class _Quote(NamedTuple):
    """A TCP header quoted in an ICMP error, as the engine meets it in a batch."""

    row: int  # in the batch's columns
    pos: int  # TCP rows of the batch before it: where the loop meets it
    key: FlowKey
    version: int
    a: tuple[int, int, int]
    b: tuple[int, int, int]
    sa: bool  # the quoted packet was sent by side "a"
    num: int
    ts: int
    seq: int
    ack: int
    flags: int
    icmp: IcmpQuote


def _quotes(cols: PacketColumns, rows: np.ndarray) -> list[_Quote]:
    """The batch's quoted headers, in frame order, with their address pairs keyed as `_group`
    keys them (`rows`: the batch's TCP rows)."""
    at = np.flatnonzero(cols.proto == QUOTED_TCP)
    pos = np.searchsorted(rows, at).tolist()
    fields = (
        cols.ip_version, cols.src_hi, cols.src_lo, cols.sport, cols.dst_hi, cols.dst_lo,
        cols.dport, cols.number, cols.ts_ns, cols.seq, cols.ack, cols.flags,
    )  # fmt: skip
    out = []
    for k, row in enumerate(at.tolist()):
        v, shi, slo, sp, dhi, dlo, dp, num, ts, seq, ack, fl = (int(f[row]) for f in fields)
        src, dst = (shi, slo, sp), (dhi, dlo, dp)
        sa = src <= dst
        a, b = (src, dst) if sa else (dst, src)
        key: FlowKey = ((a[1] << 16 | a[2]) << 48) | (b[1] << 16 | b[2]) if v == 4 else (v, *a, *b)
        out.append(_Quote(row, pos[k], key, v, a, b, sa, num, ts, seq, ack, fl, cols.icmp[num]))
    return out


class _Conn:
    """State of one open connection (one tcp.stream)."""

    __slots__ = (
        "a_is_client",
        "client",
        "closed_ts",
        "continued",
        "da",
        "db",
        "done",
        "first_frame",
        "first_ts",
        "flow",
        "guessed",
        "history",
        "last_frame",
        "last_ts",
        "quiet",
        "rst_frame",
        "rst_side",
        "rst_ts",
        "rtt",
        "server",
        "stream",
        "syn_frames",
        "syn_ts",
        "synack_frame",
        "synack_ts",
    )

    def __init__(
        self,
        stream: int,
        flow: _Flow,
        a_is_client: bool,
        guessed: bool,
        frame: int,
        ts: int,
        ooo_cap: int,
        continued: bool,
        names: dict[tuple[int, int, int], str],
    ) -> None:
        self.stream = stream
        self.flow = flow
        self.a_is_client = a_is_client
        self.guessed = guessed
        self.continued = continued
        self.client = flow.endpoint(a_is_client, names)
        self.server = flow.endpoint(not a_is_client, names)
        self.history: list[str] = []
        self.da = Direction(stream, a_is_client, self.history, ooo_cap)  # bytes a sends
        self.db = Direction(stream, not a_is_client, self.history, ooo_cap)
        self.da.peer = self.db
        self.db.peer = self.da
        self.first_frame = self.last_frame = frame
        self.first_ts = self.last_ts = ts
        self.syn_frames: list[int] = []
        self.syn_ts: list[int] = []
        self.synack_frame: int | None = None
        self.synack_ts: int | None = None
        self.rtt: int | None = None
        self.rst_side: str | None = None
        self.rst_frame: int | None = None
        self.rst_ts: int | None = None
        self.closed_ts = -1  # capture time it closed; -1 while open
        self.done = False
        self.quiet: QuietCount | None = None  # set by TcpEngine.quiet

    def answered(self) -> bool:
        """A SYN-ACK or payload was seen (so it is no longer an unanswered attempt)."""
        return self.synack_frame is not None or bool(self.da.payload_bytes or self.db.payload_bytes)

    def summary(self) -> ConnectionSummary:
        to_server, to_client = (self.da, self.db) if self.a_is_client else (self.db, self.da)
        zero = sorted([*to_server.episodes(), *to_client.episodes()], key=lambda z: z.first_frame)
        syn = bool(self.syn_frames)
        return ConnectionSummary(
            stream=self.stream,
            client=self.client,
            server=self.server,
            roles_guessed=self.guessed,
            continued=self.continued,
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            first_ts_ns=self.first_ts,
            last_ts_ns=self.last_ts,
            syn_frames=tuple(self.syn_frames),
            syn_ts_ns=tuple(self.syn_ts),
            synack_frame=self.synack_frame,
            synack_ts_ns=self.synack_ts,
            handshake_rtt_ns=self.rtt,
            rst_side=self.rst_side,
            rst_frame=self.rst_frame,
            rst_ts_ns=self.rst_ts,
            zero_windows=tuple(zero),
            to_server=to_server.stats(),
            to_client=to_client.stats(),
            conn_state=conn_state(
                syn,
                self.synack_frame is not None,
                to_server.fin_frame is not None,
                to_client.fin_frame is not None,
                self.rst_side,
            ),
            history="".join(self.history),
        )


def _pairs(h: np.ndarray, key_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows by address pair: (pair index per row, first row of each pair, rows sorted by
    (pair, frame)). `h` is a 64-bit hash of the pair, `key_cols` the pair itself (one row per
    packet), checked so that a hash collision never merges two pairs.

    One sort does it: the row number goes into the low bits of the hash, so the sorted values
    are grouped by (most of) the hash and, within a pair, in frame order; they are unique, and
    sorting values is several times faster than `np.unique(..., return_inverse=True)`."""
    n = len(h)
    bits = max(n - 1, 1).bit_length()
    low = np.uint64((1 << bits) - 1)
    packed = np.sort((h & ~low) | np.arange(n, dtype=np.uint64))
    order = (packed & low).astype(np.intp)
    same = np.empty(n, dtype=bool)
    same[:1] = False
    np.equal(packed[1:] >> np.uint64(bits), packed[:-1] >> np.uint64(bits), out=same[1:])
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(~same) - 1
    first = order[~same]
    if not np.array_equal(key_cols[first][inverse], key_cols):  # a hash collision
        order = np.lexsort(key_cols.T[::-1]).astype(np.intp)  # stable: frame order kept
        k = key_cols[order]
        same[1:] = (k[1:] == k[:-1]).all(axis=1)
        inverse[order] = np.cumsum(~same) - 1
        first = order[~same]
    return inverse, first, order


class TcpEngine:
    """Feed it `PacketColumns` batches in frame order; it returns `TcpEvent` lists.

    Call `finish()` at the end of the capture to flush every open connection.
    """

    def __init__(
        self,
        ooo_cap: int = OOO_CAP,
        linger_ns: int = LINGER_NS,
        fast_lane: bool = True,
        idle_ns: int = IDLE_NS,
        payloads: PayloadFilter = every_stream,
    ) -> None:
        self.ooo_cap = ooo_cap
        self.payloads = payloads  # which connections get Payload events (see PayloadFilter)
        self.fast_lane = fast_lane  # False: every packet takes the exact per-packet path
        self.idle_ns = idle_ns
        self.linger_ns = linger_ns
        # Every address pair seen: live state here, or a record (stream, base_a, base_b) in
        # _ended once its connection ended, kept so that a reuse of the pair is numbered like
        # Wireshark.
        self._flows: dict[FlowKey, _Flow] = {}
        self._ended = _EndedPairs()
        self._released: list[_Flow] = []
        self._open: dict[int, _Conn] = {}  # stream -> connection, in stream order
        # Connections with no SYN-ACK and no payload yet (a subset of _open, same order): the
        # ones `_sweep` may end when idle.
        self._attempts: dict[int, _Conn] = {}
        self._closing: deque[_Conn] = deque()
        self._streams = 0
        self._names: dict[tuple[int, int, int], str] = {}
        self._pending: list[Direction] = []  # directions holding fast-lane bytes of the batch
        self._icmp: dict[int, list[IcmpError]] = {}  # stream -> ICMP errors quoting it so far
        # Regular connections as table rows (tcp_regular): from their SYN when no consumer
        # reads payload; else once the consumer has read enough of them (`quiet`).
        self._regular = RegularTable(payloads is no_stream) if fast_lane else None

    @property
    def streams(self) -> int:
        """How many tcp.stream indices were handed out so far."""
        return self._streams

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def quiet(self, stream: int) -> None:
        """The consumer has read enough of this connection: from the next batch on, count its
        payload (`QuietCount`, handed over in `StreamEnd`) instead of delivering it. Being
        quiet, the connection can join the regular table and leave the per-packet path."""
        conn = self._open.get(stream)
        if conn.__class__ is not _Conn or conn.quiet is not None:  # type: ignore[union-attr]
            return  # ended, or a regular connection (those never deliver payload)
        assert isinstance(conn, _Conn)
        conn.quiet = conn.da.quiet = conn.db.quiet = QuietCount()
        conn.da.deliver = conn.db.deliver = False

    # --- per batch -----------------------------------------------------------------------

    def feed(self, cols: PacketColumns, streams: np.ndarray | None = None) -> list[TcpEvent]:
        """Process one batch; events come back in the order they happened.

        If `streams` is given (an int64 array as long as the batch), it receives each row's
        tcp.stream index: every TCP row's, and a `QUOTED_TCP` row's when Wireshark gives the
        ICMP frame one (other rows are left alone).

        The cyclic garbage collector is paused meanwhile: the batch allocates one event per
        data segment, and the collections this triggers rescan every open connection, which
        cost a third of the time. The engine frees its own cycles when a connection ends.
        """
        enabled = gc.isenabled()
        if enabled:
            gc.disable()
        try:
            return self._feed(cols, streams)
        finally:
            if enabled:
                gc.enable()

    def _feed(self, cols: PacketColumns, streams: np.ndarray | None) -> list[TcpEvent]:
        out: list[TcpEvent] = []
        if len(cols) == 0:
            return out
        rows = np.flatnonzero(cols.proto == TCP)
        quotes = _quotes(cols, rows) if cols.icmp else []
        if len(rows) == 0:
            if quotes:
                self._only_quotes(quotes, streams, out)
            return out
        everything = len(rows) == len(cols)
        sel = slice(None) if everything else rows
        group, src_is_a, flows, order = self._group(cols, sel)
        # Pairs an ICMP error quotes in the batch take the per-packet way, in frame order with
        # the quote (rare; a quoted SYN may start a new stream between two of their rows).
        held = None
        if quotes:
            index = {flow.key: p for p, flow in enumerate(flows)}
            held = np.zeros(len(flows), dtype=bool)
            held[[index[q.key] for q in quotes if q.key in index]] = True
        mv = memoryview(cols.data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        number, ts_ns = cols.number[sel], cols.ts_ns[sel]
        seq, ack, flags = cols.seq[sel], cols.ack[sel], cols.flags[sel]
        window = cols.window[sel]
        p_off, p_len, p_wire = (
            cols.payload_offset[sel],
            cols.payload_len[sel],
            cols.payload_wire_len[sel],
        )
        n = len(group)
        group_all = group
        # Regular connections (tcp_regular): their rows are handled at once, here; the loop
        # below only numbers their streams (at the SYN) and starts their linger (at the close).
        extra: list[tuple] = []  # rows the loop visits beside `visit`, a heap: see below
        regular = None
        rowid = None  # batch row of each row left to the loop (None: all of them)
        if self._regular is not None:
            regular = self._regular.step(
                flows, order, src_is_a, number, ts_ns, seq, ack, flags, window, p_off, p_len,
                p_wire, group[order], mv, held,
            )  # fmt: skip
        if regular is not None:
            for h in regular.fallback:
                self._materialize(h)
            extra = [(start[0], 1, start) for start in regular.starts]
            extra += [(row, 0, h, ts) for row, h, ts in regular.closes]
            heapq.heapify(extra)
            if regular.rows.any():
                left = ~regular.rows
                rowid = np.flatnonzero(left)
                group, src_is_a, number, ts_ns = (
                    x[rowid] for x in (group, src_is_a, number, ts_ns)
                )
                seq, ack, flags, window = (x[rowid] for x in (seq, ack, flags, window))
                p_off, p_len, p_wire = (x[rowid] for x in (p_off, p_len, p_wire))
                order = (np.cumsum(left) - 1)[order[left[order]]]
                n = len(rowid)
        if quotes:  # met just before the TCP row after them: (pos - 0.5, 2, index)
            extra += [(q.pos - 0.5, 2, k) for k, q in enumerate(quotes)]
            heapq.heapify(extra)
        rp = None
        if self.fast_lane and n:
            rp = tcp_fastlane.plan(
                group, src_is_a, order, number, ts_ns, seq, ack, flags, window, p_off, p_len,
                p_wire, held,
            )  # fmt: skip
        # The loop visits rows in frame order: slow rows and the first row of each run up
        # front; a run's other rows join (heap `extra`) only if `take` refuses the run, or for
        # their Payload when the connection has a subscriber. Python ints are made only for
        # the rows visited (most rows are in runs and never are).
        if rp is None:
            visit = np.arange(n)
            run_of_row = np.full(n, -1, dtype=np.int64)
        else:
            visit = np.flatnonzero(rp.kind != tcp_fastlane.IN_RUN)
            run_of_row = rp.run
        row_of = rowid if rowid is not None else np.arange(n)
        columns = (row_of, run_of_row, group, src_is_a, number, ts_ns, seq, ack, flags)
        columns += (window, p_off, p_len, p_wire)

        def values(at: np.ndarray, slow: bool = False) -> list[list[int]]:
            """Per row at `at`: [batch row, run (-1: per-packet path), pair, sent by side a,
            frame, ts, seq, ack, flags, window, payload offset, captured length, wire length]."""
            table = np.stack([c[at] for c in columns], axis=1)
            if slow:
                table[:, 1] = -1
            return table.tolist()

        vals = values(visit)
        append = out.append
        new_tuple = tuple.__new__  # Payload is a NamedTuple: skip its Python-level __new__
        new_conn = self._new_conn
        control = self._control
        take = tcp_fastlane.take
        pending = self._pending
        keep = streams is not None
        kept_rows: list[int] = []
        kept_streams: list[int] = []
        quoted_rows: list[int] = []  # rows of the batch's columns (not of its TCP rows)
        quoted_streams: list[int] = []
        taken: dict[int, int] = {}  # run -> stream
        # `extra` holds (batch row, 0, connection, ts): a regular connection closes at this
        # row; or (batch row, 1, x): x is a regular connection's SYN (number the stream), the
        # Payload of a taken run's row, or a row of a refused run (its values); or (batch row
        # - 0.5, 2, k): quotes[k], a TCP header quoted in an ICMP error.
        vi, n_visit = 0, len(vals)
        while True:
            if extra and (vi >= n_visit or extra[0][0] < vals[vi][0]):
                entry = heapq.heappop(extra)
                item = entry[2]
                if entry[1] == 0:
                    if item.closed_ts < 0:
                        self._close(item, entry[3], out)
                    continue
                if entry[1] == 2:
                    q = quotes[item]
                    stream = self._quoted(q, out)
                    if keep and stream >= 0:
                        quoted_rows.append(q.row)
                        quoted_streams.append(stream)
                    continue
                if item.__class__ is Payload:  # a row of a taken run whose bytes are read
                    append(item)
                    continue
                if item.__class__ is tuple:  # (row, handle, frame, ts, client_a, isn)
                    self._start_regular(*item[1:], out)
                    continue
                r = item
            elif vi < n_visit:
                r = vals[vi]
                vi += 1
            else:
                break
            i, run, g, sa, num, ts, seq, a, fl, win, po, pl, pw = r  # type: ignore[misc]
            if run >= 0:
                # The first row of a run: take the whole run, or send its rows the slow way.
                assert rp is not None
                flow = flows[g]
                conn = flow.conn
                if conn is not None and not flow.unset:
                    off_a, off_b = conn.da.off, conn.db.off
                    if take(rp, run, conn, mv, pending):
                        taken[run] = conn.stream
                        if conn.quiet is not None:
                            self._count_run(
                                rp, run, conn, src_is_a, number, ts_ns, p_wire
                            )  # fmt: skip
                        elif conn.da.deliver:
                            for ev_row, ev in self._run_payloads(
                                rp, run, conn, off_a, off_b, mv, src_is_a, number, ts_ns, p_off,
                                p_len, p_wire,
                            ):  # fmt: skip
                                ev_row = int(row_of[ev_row])
                                if ev_row == i:
                                    append(ev)
                                else:
                                    heapq.heappush(extra, (ev_row, 1, ev))
                        continue
                for rest in values(rp.order[rp.lo[run] + 1 : rp.hi[run]], slow=True):
                    heapq.heappush(extra, (rest[0], 1, rest))
            flow = flows[g]
            # 1. Which tcp.stream (Wireshark's rule, see module docstring).
            if flow.unset or fl & SYN:
                conn = new_conn(flow, sa, num, ts, seq, a, fl, append)
            else:
                conn = flow.conn
                if conn is None:
                    conn = new_conn(flow, sa, num, ts, seq, a, fl, append)
            conn.last_frame = num
            conn.last_ts = ts
            if keep:
                kept_rows.append(i)
                kept_streams.append(conn.stream)
            if sa:
                snd = conn.da
                rcv = conn.db
            else:
                snd = conn.db
                rcv = conn.da
            snd.packets += 1
            # 2. Control flags, acknowledgements, window.
            if fl & 0x07:
                control(conn, snd, num, ts, seq, fl, pw, out)
            if fl & ACK:
                rcv.acked = a
                d = (a - rcv.nxt) & MASK
                if d and d < HALF:  # beyond what we saw: FIN, probe or lost bytes (or nxt unknown)
                    rcv.ack_beyond(a, num, out)
                    if rcv.fin_acked and snd.fin_acked and conn.closed_ts < 0:
                        self._close(conn, ts, out)
            if win == 0:
                if not fl & 0x07:
                    snd.window(True, num)
            elif snd.zw:
                snd.window(False, num)
            # 3. Payload.
            if pw:
                if fl & SYN:
                    seq = (seq + 1) & MASK
                if seq == snd.nxt and pl == pw and not snd.slow:
                    data = mv[po : po + pl]
                    if not snd.payload_bytes:
                        snd.mark("D")
                    snd.payload_bytes += pl
                    if snd.deliver:
                        append(
                            new_tuple(
                                Payload, (snd.stream, snd.from_client, snd.off, data, num, ts)
                            )
                        )
                    elif snd.quiet is not None:
                        snd.quiet.add(snd.from_client, num, ts)
                    snd.off += pl
                    snd.nxt = (seq + pl) & MASK
                    if snd.pending is not None:
                        snd.settle()
                    recent = snd.recent
                    recent += data
                    if len(recent) > RECENT_LIMIT:
                        snd.trim_recent()
                else:
                    snd.segment(seq, mv[po : po + pl], pw, num, ts, out)
            elif not snd.saw_pure_ack and fl & 0x17 == ACK:
                snd.saw_pure_ack = True
                snd.mark("A")
        if keep:
            assert streams is not None
            streams[rows[kept_rows]] = kept_streams
            if taken:
                assert rp is not None
                run_stream = np.full(len(rp.lo), -1, dtype=np.int64)
                run_stream[list(taken)] = list(taken.values())
                in_run = np.flatnonzero(rp.run >= 0)
                s = run_stream[rp.run[in_run]]
                ok = s >= 0
                streams[rows[row_of[in_run[ok]]]] = s[ok]
            if regular is not None and regular.rows.any():
                pair_stream = np.full(len(flows), -1, dtype=np.int64)
                pair_stream[regular.pairs] = [h.stream for h in regular.handles]
                at = np.flatnonzero(regular.rows)
                streams[rows[at]] = pair_stream[group_all[at]]
            if quoted_rows:
                streams[quoted_rows] = quoted_streams
        if rp is not None:  # fast-lane bytes refer to this batch's buffer: copy or drop them
            for d in pending:
                if d.pending is not None:
                    if d.all_acked():
                        d.pending = None
                        d.recent = bytearray()
                    else:
                        d.settle()
            pending.clear()
        now = int(cols.ts_ns[rows[-1]])
        if self._closing:
            self._settle(now, out)
        if regular is not None and len(regular.regular):  # (the table looked after its own)
            others = np.ones(len(flows), dtype=bool)
            others[regular.regular] = False
            flows = [flows[p] for p in np.flatnonzero(others).tolist()]
        self._sweep(flows, now, out)
        if self._released:
            self._compact()
        return out

    @staticmethod
    def _run_payloads(
        rp: tcp_fastlane.RunPlan,
        run: int,
        conn: _Conn,
        off_a: int,
        off_b: int,
        mv: memoryview,
        src_is_a: np.ndarray,
        number: np.ndarray,
        ts_ns: np.ndarray,
        p_off: np.ndarray,
        p_len: np.ndarray,
        p_wire: np.ndarray,
    ) -> list[tuple[int, Payload]]:
        """The `Payload` of each data row of a taken run, with its row (for a subscriber)."""
        at = rp.order[rp.lo[run] : rp.hi[run]]
        at = at[p_wire[at] > 0]
        stream, a_client = conn.stream, conn.a_is_client
        new_tuple = tuple.__new__
        offs = (off_b, off_a)  # by "sent by side a"
        return [
            (
                row,
                new_tuple(
                    Payload, (stream, sa == a_client, offs[sa] + rel, mv[po : po + pl], num, ts)
                ),
            )
            for row, sa, rel, po, pl, num, ts in zip(
                at.tolist(),
                src_is_a[at].tolist(),
                rp.rel_off[at].tolist(),
                p_off[at].tolist(),
                p_len[at].tolist(),
                number[at].tolist(),
                ts_ns[at].tolist(),
                strict=True,
            )
        ]

    @staticmethod
    def _count_run(
        rp: tcp_fastlane.RunPlan,
        run: int,
        conn: _Conn,
        src_is_a: np.ndarray,
        number: np.ndarray,
        ts_ns: np.ndarray,
        p_wire: np.ndarray,
    ) -> None:
        """Count the data rows of a taken run of a quiet connection (see `quiet`)."""
        at = rp.order[rp.lo[run] : rp.hi[run]]
        at = at[p_wire[at] > 0]
        if not len(at):
            return
        q = conn.quiet
        assert q is not None
        from_client = src_is_a[at] == conn.a_is_client
        turns = int(np.count_nonzero(from_client[1:] & ~from_client[:-1]))
        first = bool(from_client[0])
        if q.last_from_client is None:
            q.first_from_client = first
        elif first and not q.last_from_client:
            turns += 1
        q.requests += turns
        q.frames += len(at)
        q.last_frame, q.last_ts_ns = int(number[at[-1]]), int(ts_ns[at[-1]])
        q.last_from_client = bool(from_client[-1])

    def _sweep(self, flows: list[_Flow], now: int, out: list[TcpEvent]) -> None:
        """Per batch: drop the retransmission-compare bytes of directions whose bytes are all
        acknowledged (an idle pooled connection then holds almost nothing), and end
        never-answered attempts idle for `idle_ns`. Only the batch's connections can have
        changed, so only they are looked at; attempts are kept apart (`_attempts`)."""
        if self._attempts:
            stale = now - self.idle_ns
            for conn in list(self._attempts.values()):
                if conn.answered():
                    del self._attempts[conn.stream]  # no longer an attempt
                elif conn.last_ts < stale:
                    self._end(conn, "end", out)
        for flow in flows:
            conn = flow.conn
            if conn.__class__ is _Conn:  # (regular connections: done in RegularTable.step)
                for d in (conn.da, conn.db):  # type: ignore[union-attr]
                    if d.recent and d.all_acked():
                        d.recent = bytearray()
                if self._regular is not None and _regular_again(conn, flow):  # type: ignore[arg-type]
                    self._open[conn.stream] = self._regular.demote(conn, flow)  # type: ignore[union-attr]

    def _compact(self) -> None:
        """Move pairs whose connection ended to their compact record (after the batch, when
        no row still refers to their state object)."""
        flows_map = self._flows
        for flow in self._released:
            if flow.conn is None and flows_map.get(flow.key) is flow:
                self._ended.put(flow)
                del flows_map[flow.key]
        self._released.clear()

    def finish(self) -> list[TcpEvent]:
        """The capture ended: flush and summarise every connection still held."""
        out: list[TcpEvent] = []
        for conn in list(self._open.values()):
            self._end(conn, "close" if conn.closed_ts >= 0 else "end", out)
        self._closing.clear()
        return out

    def run(self, batches: Iterable[PacketColumns]) -> Iterable[TcpEvent]:
        """Convenience: all events of a sequence of batches, then the final flush."""
        for cols in batches:
            yield from self.feed(cols)
        yield from self.finish()

    # --- grouping ------------------------------------------------------------------------

    def _group(
        self, cols: PacketColumns, rows: slice | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[_Flow], np.ndarray]:
        """Per row: index of its address pair in the returned flow list, and whether the
        sender is side "a"; and the rows sorted by (pair, frame), which the fast lane works on.
        Sorting 64-bit hashes is cheap; the exact columns are then checked so a hash collision
        can never merge two pairs."""
        if (cols.ip_version[rows] == 4).all():
            return self._group_ipv4(cols, rows)
        ver = cols.ip_version[rows].astype(np.uint64)
        shi, slo, sport = cols.src_hi[rows], cols.src_lo[rows], cols.sport[rows].astype(np.uint64)
        dhi, dlo, dport = cols.dst_hi[rows], cols.dst_lo[rows], cols.dport[rows].astype(np.uint64)
        src_is_a = (shi < dhi) | ((shi == dhi) & ((slo < dlo) | ((slo == dlo) & (sport <= dport))))
        a_hi = np.where(src_is_a, shi, dhi)
        a_lo = np.where(src_is_a, slo, dlo)
        a_pt = np.where(src_is_a, sport, dport)
        b_hi = np.where(src_is_a, dhi, shi)
        b_lo = np.where(src_is_a, dlo, slo)
        b_pt = np.where(src_is_a, dport, sport)
        ports = (a_pt << np.uint64(20)) | (b_pt << np.uint64(3)) | ver
        with np.errstate(over="ignore"):
            h = (
                a_lo * np.uint64(0x9E3779B97F4A7C15)
                ^ b_lo * np.uint64(0xC2B2AE3D27D4EB4F)
                ^ a_hi * np.uint64(0x165667B19E3779F9)
                ^ b_hi * np.uint64(0xD6E8FEB86659FD93)
                ^ ports * np.uint64(0xFF51AFD7ED558CCD)
            )
        key_cols = np.stack([ver, a_hi, a_lo, a_pt, b_hi, b_lo, b_pt], axis=1)
        inverse, first, order = _pairs(h, key_cols)
        flows_map = self._flows
        flows: list[_Flow] = []
        for v, ahi, alo, apt, bhi, blo, bpt in key_cols[first].tolist():
            key: FlowKey
            if v == 4:  # the same key as _group_ipv4 gives
                key = ((alo << 16 | apt) << 48) | (blo << 16 | bpt)
            else:
                key = (v, ahi, alo, apt, bhi, blo, bpt)
            flows.append(_flow(flows_map, self._ended, key, v, (ahi, alo, apt), (bhi, blo, bpt)))
        return inverse, src_is_a, flows, order

    def _group_ipv4(
        self, cols: PacketColumns, rows: slice | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[_Flow], np.ndarray]:
        """`_group` for all-IPv4 batches (the common case): an endpoint is address << 16 |
        port, one uint64, so side "a" is simply the smaller one."""
        src = (cols.src_lo[rows] << np.uint64(16)) | cols.sport[rows].astype(np.uint64)
        dst = (cols.dst_lo[rows] << np.uint64(16)) | cols.dport[rows].astype(np.uint64)
        src_is_a = src <= dst
        a = np.minimum(src, dst)
        b = np.maximum(src, dst)
        with np.errstate(over="ignore"):
            h = a * np.uint64(0x9E3779B97F4A7C15) ^ b * np.uint64(0xC2B2AE3D27D4EB4F)
        inverse, first, order = _pairs(h, np.stack([a, b], axis=1))
        flows_map = self._flows
        ended = self._ended
        flows: list[_Flow] = []
        for ea, eb in zip(a[first].tolist(), b[first].tolist(), strict=True):
            key = ea << 48 | eb
            found = flows_map.get(key)
            if found is None:
                found = _flow(
                    flows_map, ended, key, 4, (0, ea >> 16, ea & 0xFFFF), (0, eb >> 16, eb & 0xFFFF)
                )
            flows.append(found)
        return inverse, src_is_a, flows, order

    # --- connection lifecycle ------------------------------------------------------------

    def _new_conn(
        self,
        flow: _Flow,
        sa: bool,
        num: int,
        ts: int,
        seq: int,
        ack: int,
        fl: int,
        append: Callable[[TcpEvent], None],
        quoted: bool = False,
    ) -> _Conn:
        """Apply Wireshark's conversation rule; start a connection when it says so. A header
        quoted in an ICMP error (`quoted`) takes part in the rule, but sets no base: Wireshark
        runs no sequence analysis on error packets."""
        pure_syn = fl & 0x12 == SYN
        base = flow.base_a if sa else flow.base_b
        fresh = flow.stream < 0
        if base >= 0 and seq != base:
            if pure_syn:  # a new conversation on a used pair
                fresh = True
                flow.base_a = flow.base_b = base = -1
            elif fl & 0x12 == 0x12:  # a SYN-ACK with another ISN moves its sender's base
                if sa:
                    flow.base_a = seq
                else:
                    flow.base_b = seq
        if not quoted:
            if base < 0:
                base = seq if fl & SYN else (seq - 1) & MASK
                if sa:
                    flow.base_a = base
                else:
                    flow.base_b = base
            if fl & ACK:
                if sa and flow.base_b < 0:
                    flow.base_b = (ack - 1) & MASK
                elif not sa and flow.base_a < 0:
                    flow.base_a = (ack - 1) & MASK
        flow.unset = flow.base_a < 0 or flow.base_b < 0
        conn = flow.conn
        if conn is not None and not fresh:
            return conn
        if conn is not None:  # superseded by a new conversation on the same pair
            out: list[TcpEvent] = []
            self._end(conn, "close", out)
            for ev in out:
                append(ev)
        continued = not fresh
        if fresh:
            flow.stream = self._streams
            self._streams += 1
        # Roles: the SYN sender is the client, the SYN-ACK sender the server, else guess.
        if pure_syn:
            a_is_client, guessed = bool(sa), False
        elif fl & 0x12 == 0x12:
            a_is_client, guessed = not sa, False
        else:
            a_is_client, guessed = _server_rank(flow.b[2]) < _server_rank(flow.a[2]), True
        conn = _Conn(
            flow.stream, flow, a_is_client, guessed, num, ts, self.ooo_cap, continued, self._names
        )
        flow.conn = conn
        self._open[conn.stream] = conn
        self._attempts[conn.stream] = conn
        start = StreamStart(
            conn.stream, conn.client, conn.server, num, ts, pure_syn and not quoted, guessed,
            continued,
        )  # fmt: skip
        if not self.payloads(start):
            conn.da.deliver = conn.db.deliver = False
        append(start)
        return conn

    def _quoted(self, q: _Quote, out: list[TcpEvent]) -> int:
        """A TCP header quoted in an ICMP error: its connection as Wireshark finds it (a new one
        when none matches, or when it is a SYN with another ISN), which records the error.
        Returns the tcp.stream Wireshark gives the frame, -1 for none (a quote too short for
        Wireshark's lookup: recorded on the pair's open connection, if any)."""
        icmp = q.icmp
        flow = self._flows.get(q.key)
        if not icmp.numbered:
            if flow is None or flow.conn is None:
                return -1
        elif flow is None:
            flow = _flow(self._flows, self._ended, q.key, q.version, q.a, q.b)
        conn = flow.conn
        if icmp.numbered and (conn is None or q.flags & SYN):
            if conn.__class__ is Regular:  # its table row holds the bases the rule needs
                self._materialize(conn)  # type: ignore[arg-type]
            conn = self._new_conn(
                flow, q.sa, q.num, q.ts, q.seq, q.ack, q.flags, out.append, quoted=True
            )
        assert conn is not None
        if isinstance(conn, _Conn) and not (conn.da.packets or conn.db.packets):
            conn.last_frame, conn.last_ts = q.num, q.ts  # only errors so far: they are its span
        from_client = flow.endpoint(q.sa, self._names) == conn.client
        flags = q.flags if icmp.numbered else None
        error = IcmpError(
            q.num, q.ts, icmp.family, icmp.type, icmp.code, icmp.reporter, from_client, flags
        )
        self._icmp.setdefault(conn.stream, []).append(error)
        return conn.stream if icmp.numbered else -1

    def _only_quotes(
        self, quotes: list[_Quote], streams: np.ndarray | None, out: list[TcpEvent]
    ) -> None:
        """A batch whose only TCP headers are quoted ones."""
        for q in quotes:
            stream = self._quoted(q, out)
            if streams is not None and stream >= 0:
                streams[q.row] = stream
        now = quotes[-1].ts
        if self._closing:
            self._settle(now, out)
        self._sweep([], now, out)
        if self._released:
            self._compact()

    def _control(
        self,
        conn: _Conn,
        snd: Direction,
        num: int,
        ts: int,
        seq: int,
        fl: int,
        pw: int,
        out: list[TcpEvent],
    ) -> None:
        """SYN, SYN-ACK, FIN and RST: the rare flags, recorded for the summary."""
        if fl & SYN:
            if fl & ACK:
                snd.mark("H")
                if conn.synack_frame is None:
                    conn.synack_frame = num
                    conn.synack_ts = ts
                    if conn.syn_ts:
                        conn.rtt = ts - conn.syn_ts[-1]
            else:
                snd.mark("S")
                if snd.from_client:
                    conn.syn_frames.append(num)
                    conn.syn_ts.append(ts)
            snd.syn(seq)
        if fl & FIN:
            snd.fin((seq + (1 if fl & SYN else 0) + pw) & MASK, num)
        if fl & RST:
            snd.mark("R")
            if conn.rst_side is None:
                conn.rst_side = snd.side
                conn.rst_frame = num
                conn.rst_ts = ts
            if conn.closed_ts < 0:
                self._close(conn, ts, out)

    def _close(self, conn: _Conn, ts: int, out: list[TcpEvent]) -> None:
        conn.closed_ts = ts
        self._closing.append(conn)
        if self._closing[0].closed_ts + self.linger_ns <= ts:
            self._settle(ts, out)

    def _settle(self, now: int, out: list[TcpEvent]) -> None:
        """Release connections closed more than `linger_ns` ago (in capture time)."""
        closing = self._closing
        for _ in range(len(closing)):
            conn = closing[0]
            if conn.closed_ts + self.linger_ns > now:
                break
            closing.popleft()
            if conn.done:
                continue
            if conn.last_ts + self.linger_ns <= now:
                self._end(conn, "close", out)
            else:
                closing.append(conn)

    def _end(self, conn: _Conn | Regular, reason: str, out: list[TcpEvent]) -> None:
        if conn.done:
            return
        if conn.__class__ is Regular:
            if conn.conn is None:  # type: ignore[union-attr]
                self._end_regular(conn, out)  # type: ignore[arg-type]
                return
            conn = self._materialize(conn, ending=True)  # type: ignore[arg-type]
        assert isinstance(conn, _Conn)
        conn.done = True
        conn.da.flush(conn.last_frame, reason, out)
        conn.db.flush(conn.last_frame, reason, out)
        summary = conn.summary()
        if self._icmp:
            self._add_icmp(summary)
        out.append(StreamEnd(summary, conn.quiet))
        del self._open[conn.stream]
        if self._attempts.get(conn.stream) is conn:
            del self._attempts[conn.stream]
        if conn.flow.conn is conn:
            conn.flow.conn = None
            self._released.append(conn.flow)
        # Break the da <-> db cycle so refcounting frees the state now: the cyclic collector
        # is off while batches run, and a connection old enough to sit in its oldest
        # generation would otherwise wait for a full collection (memory followed the file).
        # (Pointing `peer` at itself, as before, is a cycle too.)
        del conn.da.peer, conn.db.peer

    # --- regular connections (tcp_regular) ---------------------------------------------------

    def _start_regular(
        self, h: Regular, frame: int, ts: int, client_a: bool, isn: int, out: list[TcpEvent]
    ) -> None:
        """The loop met a regular connection's SYN: number its stream, as `_new_conn` would."""
        flow = h.flow
        stream = h.stream = self._streams
        self._streams += 1
        h.table.state[h.slot, tcp_regular.STREAM] = stream
        flow.stream = stream
        flow.base_a, flow.base_b = (isn, -1) if client_a else (-1, isn)
        flow.unset = True
        h.client = flow.endpoint(client_a, self._names)
        h.server = flow.endpoint(not client_a, self._names)
        self._open[stream] = h  # type: ignore[assignment]
        self._attempts[stream] = h  # type: ignore[assignment]
        out.append(StreamStart(stream, h.client, h.server, frame, ts, True, False, False))

    def _release_regular(self, h: Regular, v: list[int]) -> None:
        """Free the table row of a connection regular since its SYN, writing the pair's base
        sequence numbers back (Wireshark's numbering needs them; `v`: the row's values)."""
        client = v[tcp_regular.CLIENT + tcp_regular.ISN]
        server = v[tcp_regular.SERVER + tcp_regular.ISN]
        flow = h.flow
        if v[tcp_regular.CLIENT_A] == 1:
            flow.base_a, flow.base_b = client, server
        else:
            flow.base_a, flow.base_b = server, client
        flow.unset = flow.base_a < 0 or flow.base_b < 0
        assert self._regular is not None
        self._regular.release(h)

    def _add_icmp(self, summary: ConnectionSummary) -> None:
        errors = self._icmp.pop(summary.stream, None)
        if errors:
            summary.icmp_errors = tuple(errors)

    def _end_regular(self, h: Regular, out: list[TcpEvent]) -> None:
        v = h.values()
        summary = tcp_regular.summary(h, v)
        if self._icmp:
            self._add_icmp(summary)
        out.append(StreamEnd(summary))
        del self._open[h.stream]
        if self._attempts.get(h.stream) is h:
            del self._attempts[h.stream]
        flow = h.flow
        self._release_regular(h, v)
        if flow.conn is h:
            flow.conn = None
            self._released.append(flow)

    def _materialize(self, h: Regular, ending: bool = False) -> _Conn:
        """Turn a regular connection into an ordinary one, with the state the per-packet path
        would have given it, before any row of the batch is handled (or to end it: `ending`)."""
        assert self._regular is not None
        if h.conn is not None:  # demoted earlier: its object, brought up to date
            conn = self._regular.update(h, ending)
            self._swap(h, conn, ending)
            self._regular.release(h)
            return conn
        r = tcp_regular
        self._regular.settle(h)
        v = h.values()
        flow = h.flow
        a_is_client = v[r.CLIENT_A] == 1
        conn = _Conn(
            h.stream, flow, a_is_client, False, v[r.FIRST_FRAME], v[r.FIRST_TS], self.ooo_cap,
            False, self._names,
        )  # fmt: skip
        conn.last_frame, conn.last_ts = v[r.LAST_FRAME], v[r.LAST_TS]
        conn.syn_frames.append(v[r.FIRST_FRAME])
        conn.syn_ts.append(v[r.FIRST_TS])
        if v[r.SYNACK_FRAME] >= 0:
            conn.synack_frame, conn.synack_ts = v[r.SYNACK_FRAME], v[r.SYNACK_TS]
            conn.rtt = v[r.SYNACK_TS] - v[r.FIRST_TS]
        conn.closed_ts = v[r.CLOSED_TS]
        letters = r.history(v)
        conn.history.extend(letters)
        client, server = (conn.da, conn.db) if a_is_client else (conn.db, conn.da)
        for d, side, recent in ((client, r.CLIENT, h.recent[0]), (server, r.SERVER, h.recent[1])):
            d.deliver = False
            d.isn, d.nxt = v[side + r.ISN], v[side + r.NXT]
            d.off = d.payload_bytes = v[side + r.BYTES]
            d.midstream = d.isn < 0
            d.acked = v[side + r.ACKED]
            d.packets = v[side + r.PACKETS]
            d.fin_seq = v[side + r.FIN_SEQ]
            d.fin_frame = v[side + r.FIN_FRAME] if v[side + r.FIN_FRAME] >= 0 else None
            d.fin_acked = v[side + r.FIN_ACKED] == 1
            d.saw_pure_ack = v[side + r.KEY_A] >= 0
            d.retransmissions, d.slow_wire = v[side + r.RETRANS], v[side + r.SLOW_WIRE]
            d.recent = recent
        client.letters = {x for x in letters if x.isupper()}
        server.letters = {x.upper() for x in letters if x.islower()}
        self._swap(h, conn, ending)
        self._release_regular(h, v)
        return conn

    def _swap(self, h: Regular, conn: _Conn, ending: bool) -> None:
        """Put `conn` wherever the engine holds `h` (a connection about to end is not put
        back among the closing ones: `_settle` just took it from there)."""
        self._open[h.stream] = conn
        if self._attempts.get(h.stream) is h:
            self._attempts[h.stream] = conn
        if conn.closed_ts >= 0 and not ending:
            self._closing[self._closing.index(h)] = conn  # type: ignore[arg-type]
        h.flow.conn = conn


def _regular_again(conn: _Conn, flow: _Flow) -> bool:
    """Can the regular-connection table carry this connection from now on (see tcp_regular)?"""
    da, db = conn.da, conn.db
    return (
        conn.closed_ts < 0
        and not conn.done
        and flow.conn is conn
        and not flow.unset
        and conn.answered()
        and not (da.slow or db.slow or da.zw or db.zw or da.deliver or db.deliver)
        and da.nxt >= 0
        and db.nxt >= 0
        and da.pending is None
        and db.pending is None
    )
