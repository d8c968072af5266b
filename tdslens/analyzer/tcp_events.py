"""What the TCP engine hands to the layers above: per-connection events and one summary.

Events come out in the order the engine learns them, which is frame order except that bytes held
back by a hole (out-of-order segments) come out when the hole fills; each event names the frame
its bytes came from, so evidence stays exact.

Offsets are stream offsets per direction: 0 is the first byte after the SYN, or the first byte
seen when the capture started mid-connection. They never wrap (the 32-bit sequence space is
unwrapped), so the layer above can index its buffers with them.

`Payload` is the one event built per data segment. A frozen dataclass costs about 2 µs to build
in CPython 3.11 (its `__init__` goes through `object.__setattr__`), a plain slotted one 0.45 µs,
and the whole engine has about 1 µs per packet. So `Payload` is an immutable NamedTuple, which
the engine builds with `tuple.__new__` in 0.15 µs. The rare events are frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a connection: address as text (IPv4 dotted, IPv6 RFC 5952) and port."""

    address: str
    port: int

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A new connection (a new Wireshark ``tcp.stream``) begins at `frame`.

    `client` sent the SYN. Without a SYN the roles are guessed (`roles_guessed`): the SYN-ACK
    sender is the server, else the side on a SQL Server / well-known port, else the lower port.
    `continued` marks a connection whose summary was already emitted and which saw packets again
    long after it closed, without a new SYN (Wireshark keeps the same stream index).
    """

    stream: int
    client: Endpoint
    server: Endpoint
    frame: int
    ts_ns: int
    saw_syn: bool
    roles_guessed: bool
    continued: bool = False


class Payload(NamedTuple):
    """In-order bytes of one direction: `data` continues the stream at `offset`.

    `data` is a memoryview into the capture buffer of the batch being processed (or bytes, for
    segments that waited out of order). Copy it if you keep it past the event.
    A NamedTuple, not a dataclass, for speed (see module docstring); immutable all the same.
    """

    stream: int
    from_client: bool
    offset: int
    data: bytes | memoryview
    frame: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Gap:
    """`length` bytes at `offset` will never be delivered: the capture does not hold them.

    The layer above must resynchronise after a gap. `frame` is where the engine concluded it.
    `reason`: "acked" (the peer acknowledged bytes the capture lacks), "snaplen" (the frame was
    cut by the snap length), "buffer" (out-of-order buffer cap reached), "close" (connection
    ended with a hole), "end" (the capture ended with a hole).
    """

    stream: int
    from_client: bool
    offset: int
    length: int
    frame: int
    reason: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """A retransmission at `frame` carried bytes that differ from the first copy at `offset`.

    The first copy was already delivered and wins (as in Wireshark); this flags the evidence.
    """

    stream: int
    from_client: bool
    offset: int
    length: int
    frame: int


@dataclass(frozen=True, slots=True)
class ZeroWindow:
    """One zero-window episode: `side` ("client"/"server") advertised a zero receive window
    from `first_frame` until `reopen_frame` (None: it never reopened in the capture).
    `probe_frames` are the 1-byte probes the peer sent meanwhile."""

    side: str
    first_frame: int
    reopen_frame: int | None
    probe_frames: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP or ICMPv6 error about one of the connection's packets (it quotes its TCP
    header): a router, firewall or host telling the sender the packet did not get through.
    (Also an ICMPv6 ND Redirect, type 137, whose redirected header Wireshark numbers alike.)

    Evidence only: the quoted header never counts as a packet, data or flags of the connection.
    `family` 4 is ICMP, 6 ICMPv6 (`icmp_quote.describe` names type and code); `reporter` is the
    address that sent the error; `from_client` says whether the quoted packet was the client's;
    `quoted_flags` are its TCP flags, None when the quote stops before them (fewer than 16
    bytes, RFC 792 routers quote 8: such a frame gets no tcp.stream in Wireshark).
    """

    frame: int
    ts_ns: int
    family: int
    type: int
    code: int
    reporter: str
    from_client: bool
    quoted_flags: int | None


@dataclass(slots=True)
class DirectionStats:
    """Facts about one direction of a connection (bytes the sender sent)."""

    packets: int
    payload_bytes: int  # distinct stream bytes delivered (retransmissions not counted twice)
    wire_payload_bytes: int  # every payload byte on the wire, retransmissions included
    retransmissions: int  # data segments wholly or partly repeating earlier bytes
    keepalives: int
    conflict_frames: tuple[int, ...]  # retransmissions whose bytes differ from the first copy
    gaps: int
    gap_bytes: int
    buffer_cap_hit: bool  # the out-of-order buffer cap forced a gap
    fin_frame: int | None
    midstream: bool  # no SYN/SYN-ACK seen from this side: offsets start at the first byte seen


@dataclass(slots=True)
class ConnectionSummary:
    """One row per connection, emitted once when it ends (or when the capture ends).

    Plain (not frozen) like `DirectionStats`: one is built per connection and frozen ones cost
    ~15 µs each to build. Treat them as read-only.

    `conn_state` follows Zeek's conn.log codes so people who know Zeek read it at a glance:

    - ``S0``: SYN seen, no reply.
    - ``REJ``: SYN answered by RST (no SYN-ACK).
    - ``RSTOS0``: client sent SYN then RST, no SYN-ACK seen.
    - ``SH``: client sent SYN then FIN, no SYN-ACK seen.
    - ``RSTRH``: server sent SYN-ACK then RST, client SYN not seen.
    - ``SHR``: server sent SYN-ACK then FIN, client SYN not seen.
    - ``S1``: established (a SYN-ACK seen), not closed in the capture.
    - ``SF``: established and closed normally (FIN from both sides).
    ("Established" only needs the SYN-ACK: a capture may miss the SYN.)
    - ``S2`` / ``S3``: established, only the client / only the server sent FIN.
    - ``RSTO`` / ``RSTR``: established, then reset by the client (originator) / server.
    - ``OTH``: no SYN nor SYN-ACK seen: mid-stream traffic (or only ICMP errors about it).

    `history` is Zeek-like, one letter per first occurrence, upper case for the client, lower
    case for the server: S syn, H syn-ack, A pure ack, D data, F fin, R rst, T retransmitted
    data, W zero window, K keep-alive, G gap, C conflicting retransmission.

    `icmp_errors`: ICMP/ICMPv6 errors quoting the connection's packets, in frame order. They
    move `first_frame`/`last_frame` (and the times) only while the connection has no packet of
    its own: Wireshark starts a stream for a quoted header that matches no conversation, and
    such a connection may never see a packet (``OTH``, 0 packets).
    """

    stream: int
    client: Endpoint
    server: Endpoint
    roles_guessed: bool
    continued: bool
    first_frame: int
    last_frame: int
    first_ts_ns: int
    last_ts_ns: int
    syn_frames: tuple[int, ...]  # first is the original SYN, the rest its retransmissions
    syn_ts_ns: tuple[int, ...]
    synack_frame: int | None
    synack_ts_ns: int | None
    handshake_rtt_ns: int | None  # SYN-ACK time minus the last SYN before it
    rst_side: str | None  # "client" or "server": who sent the first RST
    rst_frame: int | None
    rst_ts_ns: int | None
    zero_windows: tuple[ZeroWindow, ...]
    to_server: DirectionStats
    to_client: DirectionStats
    conn_state: str
    history: str
    icmp_errors: tuple[IcmpError, ...] = ()

    @property
    def duration_ns(self) -> int:
        return self.last_ts_ns - self.first_ts_ns

    @property
    def packets(self) -> int:
        return self.to_server.packets + self.to_client.packets


@dataclass(slots=True)
class QuietCount:
    """Payload the engine counted instead of delivering, after the consumer said it has read
    enough of a connection (`TcpEngine.quiet`).

    Why: an established TDS session is only counted from some point on (frames, the last
    frame, requests), and building a `Payload` per segment just to be counted was most of the
    engine's cost on a busy capture; counting here lets the connection leave the per-packet
    path (`tcp_regular`). Counted exactly as the consumer would count `Payload` events: one per
    delivered segment, in delivery order.
    """

    frames: int = 0
    last_frame: int = -1
    last_ts_ns: int = -1
    first_from_client: bool | None = None  # side of the first counted segment
    last_from_client: bool | None = None
    requests: int = 0  # client segments right after server segments, among those counted

    def add(self, from_client: bool, frame: int, ts_ns: int) -> None:
        last = self.last_from_client
        if last is None:
            self.first_from_client = from_client
        elif from_client and not last:
            self.requests += 1
        self.frames += 1
        self.last_frame, self.last_ts_ns, self.last_from_client = frame, ts_ns, from_client


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The connection is over (closed and settled, or the capture ended); its state is freed.
    `quiet`: what was counted after `TcpEngine.quiet` (None if it was never called)."""

    summary: ConnectionSummary
    quiet: QuietCount | None = None


TcpEvent = StreamStart | Payload | Gap | Conflict | StreamEnd

# The consumer's subscription to payload bytes, decided once per connection when it starts.
# Building one `Payload` per data segment is most of the engine's cost per packet; a consumer
# that only wants summaries (`tdslens streams`), or bytes of some connections only (the TDS
# layer), says so here and the engine skips the events nobody reads. Everything else (offsets,
# gaps, conflicts, summaries) is the same either way.
PayloadFilter = Callable[[StreamStart], bool]


def every_stream(start: StreamStart) -> bool:
    """Subscribe to the payload of every connection (the default)."""
    return True


def no_stream(start: StreamStart) -> bool:
    """Subscribe to no payload: summaries, gaps and conflicts only."""
    return False


def conn_state(syn: bool, synack: bool, fin_c: bool, fin_s: bool, rst_side: str | None) -> str:
    """Zeek-like connection state from what the capture showed (codes in ConnectionSummary)."""
    if not syn and not synack:
        return "OTH"
    if syn and not synack:
        if rst_side == "server":
            return "REJ"
        if rst_side == "client":
            return "RSTOS0"
        return "SH" if fin_c else "S0"
    if synack and not syn:
        if rst_side == "server":
            return "RSTRH"
        if fin_s and not fin_c:
            return "SHR"
    if rst_side is not None:
        return "RSTO" if rst_side == "client" else "RSTR"
    if fin_c and fin_s:
        return "SF"
    if fin_c:
        return "S2"
    if fin_s:
        return "S3"
    return "S1"
