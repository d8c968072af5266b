"""Generate a large, realistic SQL Server / Azure SQL capture (classic pcap, Ethernet).

Why a generator: the benchmark needs captures of 200k to millions of packets whose content is
known exactly (how many TCP conversations, which gateway legs were redirected where), that anyone
can rebuild byte for byte from a seed instead of downloading gigabytes.

What it writes: a fleet of clients talking to Azure SQL gateways on 1433 (Proxy sessions with
SQL batches and multi-segment results; Redirect gateway legs whose login response carries an
ENVCHANGE routing token, then DNS, then a second leg to a worker port in 11000-11999, some of them
blackholed or reset), on-premises servers with cleartext logins, a little HTTP and ARP noise.
TCP is byte-accurate (handshakes, seq/ack, 1460-byte segments, delayed ACKs, FIN/RST closes,
IP and TCP checksums), with ~0.5% retransmissions (exact copies one RTO later) and some adjacent
segments swapped. TDS/TLS bytes come from `tdswire.py`, written from MS-TDS without tdslens code.

Speed: frames are built once with `struct` (checksums by the mod-65535 identity on big ints), kept
in a list with their timestamps, ordered with one numpy argsort and written in large chunks.

Usage: python benchmarks/generate.py --packets 200000 --seed 1 --out benchmarks/data/x.pcap
A JSON manifest (`OUT.json`) records what was written: packets, TCP streams (numbered as
Wireshark numbers `tcp.stream`), sessions by kind, and every redirect with its frames.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tdswire as w

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MSS = 1460
EPOCH_US = 1_793_000_000 * 1_000_000  # 2026-10-26, a fixed start so files are reproducible
ROUTER_MAC = bytes.fromhex("00155d0a0001")
SYN_OPTS = bytes.fromhex("020405b40103030801010402")  # MSS 1460, NOP, WS 8, NOP NOP, SACK_PERM
SYNACK_OPTS = bytes.fromhex("020405b40103030801010402")

_ETH_IP_TCP = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH")
_ETH_IP_UDP = struct.Struct("!6s6sH BBHHHBBH4s4s HHHH")
_PCAP_REC = struct.Struct("<IIII")


def _words(ip: bytes) -> int:
    """Sum of the two 16-bit words of an IPv4 address (for checksums)."""
    return (ip[0] << 8 | ip[1]) + (ip[2] << 8 | ip[3])


def _bytes_sum(data: bytes) -> int:
    """One's-complement sum of 16-bit big-endian words, mod 0xFFFF.

    A big-endian integer of 2k bytes is congruent to the sum of its 16-bit words modulo 65535
    (2^16 = 1 mod 65535), so one C-level int conversion replaces a Python loop.
    """
    v = int.from_bytes(data, "big")
    if len(data) & 1:
        v <<= 8
    return v % 0xFFFF


def _checksum(total: int) -> int:
    """Internet checksum from a word sum: the complement, with 0x0000 rather than 0xFFFF when
    the sum is all ones (RFC 1624; Wireshark flags 0xFFFF for TCP)."""
    return (0xFFFF - total % 0xFFFF) % 0xFFFF


@dataclass(slots=True)
class Host:
    ip: bytes
    mac: bytes
    name: str = ""

    @property
    def dotted(self) -> str:
        return ".".join(str(b) for b in self.ip)


class Capture:
    """All frames of the file, in generation order, with their timestamps and flow ids."""

    def __init__(self) -> None:
        self.ts = array("q")
        self.flow = array("i")
        self.frames: list[bytes] = []
        self.udp_packets = 0
        self.other_packets = 0

    def add(self, ts: int, frame: bytes, flow: int = -1) -> int:
        self.ts.append(ts)
        self.flow.append(flow)
        self.frames.append(frame)
        return len(self.frames) - 1

    def __len__(self) -> int:
        return len(self.frames)

    def udp(
        self,
        ts: int,
        src: Host,
        dst: Host,
        sport: int,
        dport: int,
        payload: bytes,
        ipid: int,
        src_mac: bytes,
        dst_mac: bytes,
    ) -> int:
        """One UDP datagram with correct IP and UDP checksums."""
        ulen = 8 + len(payload)
        tot = 20 + ulen
        s = 0x4500 + tot + ipid + 0x4000 + (64 << 8 | 17) + _words(src.ip) + _words(dst.ip)
        ipcs = _checksum(s)
        s2 = _words(src.ip) + _words(dst.ip) + 17 + ulen + sport + dport + ulen
        ucs = 0xFFFF - (s2 + _bytes_sum(payload)) % 0xFFFF  # never 0: that means none (RFC 768)
        hdr = _ETH_IP_UDP.pack(
            dst_mac,
            src_mac,
            0x0800,
            0x45,
            0,
            tot,
            ipid,
            0x4000,
            64,
            17,
            ipcs,
            src.ip,
            dst.ip,
            sport,
            dport,
            ulen,
            ucs,
        )
        self.udp_packets += 1
        return self.add(ts, hdr + payload)

    def arp(self, ts: int, asker: Host, target_ip: bytes, target_mac: bytes) -> None:
        """ARP who-has and is-at between a client and its default gateway (non-IP noise)."""
        req = (
            b"\xff" * 6
            + asker.mac
            + b"\x08\x06"
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
            + asker.mac
            + asker.ip
            + b"\x00" * 6
            + target_ip
        )
        rep = (
            asker.mac
            + target_mac
            + b"\x08\x06"
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
            + target_mac
            + target_ip
            + asker.mac
            + asker.ip
        )
        self.add(ts, req + b"\x00" * 18)
        self.add(ts + 150, rep + b"\x00" * 18)
        self.other_packets += 2

    def order(self, limit: int) -> np.ndarray:
        """Indices of the first `limit` frames in time order (stable: ties keep creation order)."""
        ts = np.frombuffer(self.ts, dtype=np.int64)
        return np.argsort(ts, kind="stable")[:limit]

    def write(self, path: Path, order: np.ndarray) -> int:
        """Write a classic pcap (microseconds, LINKTYPE_ETHERNET). Returns the file size."""
        ts = self.ts
        frames = self.frames
        rec = _PCAP_REC.pack
        size = 0
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
            size += 24
            idx = order.tolist()
            for start in range(0, len(idx), 65536):
                parts: list[bytes] = []
                for i in idx[start : start + 65536]:
                    t = ts[i] + EPOCH_US
                    fr = frames[i]
                    n = len(fr)
                    parts.append(rec(t // 1_000_000, t % 1_000_000, n, n))
                    parts.append(fr)
                chunk = b"".join(parts)
                size += len(chunk)
                f.write(chunk)
        return size


class TcpFlow:
    """One TCP connection seen from a tap next to the client: builds frames with exact seq/ack.

    Direction 0 is client to server, 1 server to client. `t` is the flow's clock (µs); every
    method advances it, so the frames of one flow are in time order.
    """

    def __init__(
        self,
        rng: random.Random,
        fid: int,
        cli: Host,
        srv: Host,
        sport: int,
        dport: int,
        t0: int,
        rtt: int,
    ) -> None:
        self.rng = rng
        self.fid = fid
        self.t = t0
        self.rtt = rtt
        self.items: list[tuple[int, bytes, int, bool]] = []  # (ts, frame, direction, data?)
        self.seq = [rng.getrandbits(32), rng.getrandbits(32)]
        self.ipid = [rng.randrange(65536), rng.randrange(65536)]
        self.win = [1026, 8212]  # scaled by WS 8 negotiated on the SYNs
        self.macs = [(ROUTER_MAC, cli.mac), (cli.mac, ROUTER_MAC)]  # (dst, src) per direction
        self.ips = [(cli.ip, srv.ip), (srv.ip, cli.ip)]
        self.ports = [(sport, dport), (dport, sport)]
        pseudo = _words(cli.ip) + _words(srv.ip) + 6
        self.ip_const = [
            0x4500 + 0x4000 + (128 << 8 | 6) + _words(cli.ip) + _words(srv.ip),
            0x4500 + 0x4000 + (112 << 8 | 6) + _words(cli.ip) + _words(srv.ip),
        ]
        self.tcp_const = [pseudo + sport + dport, pseudo + sport + dport]
        self.ttl = [128, 112]
        self.unacked = [0, 0]  # full segments received and not yet acknowledged, per receiver

    def frame(self, d: int, flags: int, payload: bytes = b"", opts: bytes = b"") -> bytes:
        """Ethernet + IPv4 + TCP with correct checksums, from the flow's current state."""
        hlen = 20 + len(opts)
        tot = 20 + hlen + len(payload)
        ipid = self.ipid[d]
        self.ipid[d] = (ipid + 1) & 0xFFFF
        ipcs = _checksum(self.ip_const[d] + tot + ipid)
        seq = self.seq[d]
        ack = self.seq[1 - d] if flags & ACK else 0
        win = 64240 if flags & SYN else self.win[d]
        s = (
            self.tcp_const[d]
            + hlen
            + len(payload)
            + (seq >> 16)
            + (seq & 0xFFFF)
            + (ack >> 16)
            + (ack & 0xFFFF)
            + ((hlen // 4) << 12 | flags)
            + win
        )
        if opts:
            s += _bytes_sum(opts)
        if payload:
            s += _bytes_sum(payload)
        tcs = _checksum(s)
        src, dst = self.ips[d]
        sport, dport = self.ports[d]
        dmac, smac = self.macs[d]
        hdr = _ETH_IP_TCP.pack(
            dmac,
            smac,
            0x0800,
            0x45,
            0,
            tot,
            ipid,
            0x4000,
            self.ttl[d],
            6,
            ipcs,
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            (hlen // 4) << 4,
            flags,
            win,
            tcs,
            0,
        )
        return hdr + opts + payload

    def emit(
        self, d: int, flags: int, payload: bytes = b"", dt: int = 0, opts: bytes = b""
    ) -> None:
        self.t += dt
        self.items.append(
            (
                self.t,
                self.frame(d, flags, payload, opts),
                d,
                bool(payload) or bool(flags & (SYN | FIN)),
            )
        )
        self.seq[d] = (self.seq[d] + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF

    # -- connection life ------------------------------------------------------------------------

    def handshake(self) -> None:
        self.emit(0, SYN, opts=SYN_OPTS)
        self.emit(1, SYN | ACK, dt=self.rtt, opts=SYNACK_OPTS)
        self.emit(0, ACK, dt=40 + self.rng.randrange(200))

    def syn_unanswered(self, tries: int = 3) -> None:
        """A SYN dropped on the way (firewall): the same SYN is re-sent after 1 s, then 2 s."""
        frame = self.frame(0, SYN, opts=SYN_OPTS)
        rto = 1_000_000
        for i in range(tries):
            if i:
                self.t += rto
                rto *= 2
            self.items.append((self.t, frame, 0, True))

    def syn_reset(self) -> None:
        """A SYN answered by RST/ACK (nothing listens, or a firewall rejects)."""
        self.emit(0, SYN, opts=SYN_OPTS)
        self.seq[1] = 0  # a RST answering a SYN carries sequence number 0 (RFC 9293 3.10.7.1)
        self.emit(1, RST | ACK, dt=self.rtt)

    def send(self, d: int, data: bytes, dt: int, reply_soon: bool = True) -> None:
        """Send `data` as MSS-sized segments; the receiver ACKs every second segment, and the
        last one at once unless the receiver's answer follows soon (then it piggybacks)."""
        rng = self.rng
        self.t += dt
        n = len(data)
        for off in range(0, n, MSS):
            last = off + MSS >= n
            self.emit(
                d,
                (ACK | PSH) if last else ACK,
                data[off : off + MSS],
                dt=0 if off == 0 else 15 + rng.randrange(60),
            )
            self.unacked[1 - d] += 1
            if self.unacked[1 - d] >= 2 and not (last and reply_soon):
                self.emit(1 - d, ACK, dt=20 + rng.randrange(40))
                self.unacked[1 - d] = 0
        if not reply_soon and self.unacked[1 - d]:
            self.emit(1 - d, ACK, dt=200 + rng.randrange(40_000))
        self.unacked[1 - d] = 0

    def close(self, initiator: int) -> None:
        """FIN from the initiator, FIN/ACK back, last ACK."""
        self.emit(initiator, FIN | ACK, dt=100 + self.rng.randrange(2000))
        self.emit(1 - initiator, FIN | ACK, dt=self.rtt)
        self.emit(initiator, ACK, dt=30 + self.rng.randrange(100))

    def abort(self, d: int) -> None:
        self.emit(d, RST | ACK, dt=100 + self.rng.randrange(5000))

    def finish(self, cap: Capture, p_retx: float, p_reorder: float) -> list[int]:
        """Add reordering and retransmissions, then hand the frames to the capture.

        Returns the capture indices of this flow's frames in flow order.
        """
        rng = self.rng
        items = self.items
        n = len(items)
        i = 0
        while i < n - 1:
            a, b = items[i], items[i + 1]
            if a[3] and b[3] and a[2] == b[2] and not (a[1][47] & SYN) and rng.random() < p_reorder:
                # The later segment overtakes the earlier one; the timestamps stay in order.
                items[i] = (a[0], b[1], b[2], b[3])
                items[i + 1] = (b[0], a[1], a[2], a[3])
                i += 2
                continue
            i += 1
        copies = [it for it in items if it[3] and rng.random() < p_retx]
        for it in copies:
            times = [x[0] for x in items]
            ts = it[0] + 200_000 + rng.randrange(100_000)  # one RTO later
            pos = bisect.bisect_right(times, ts)
            if pos >= len(items) - 2:  # keep copies before the close
                pos = max(1, min(items.index(it) + 2, len(items) - 1))
                ts = items[pos - 1][0]
            items.insert(pos, (ts, it[1], it[2], it[3]))
        return [cap.add(ts, fr, self.fid) for ts, fr, _, _ in items]


@dataclass
class Redirect:
    gateway_flow: int
    worker_flow: int
    port: int
    server: str
    outcome: str  # "connected", "no_answer", "reset", "dns_failed" (then no worker flow: -1)
    routing_visible: bool  # False when the login response is inside TLS (ENCRYPT_ON)
    routing_frame_index: int  # capture index of the segment that ends the login response
    dns_query_index: int | None


@dataclass
class Stats:
    sessions: dict[str, int] = field(default_factory=dict)
    redirects: list[Redirect] = field(default_factory=list)
    flow_kind: list[str] = field(default_factory=list)

    def count(self, kind: str) -> None:
        self.sessions[kind] = self.sessions.get(kind, 0) + 1


QUERIES = [
    "SELECT TOP (@n) * FROM dbo.Orders WHERE CustomerId = @c ORDER BY Created DESC",
    "SELECT o.Id, o.CustomerId, c.Name, o.Amount, o.Created, o.Active, o.Note FROM dbo.Orders o "
    "JOIN dbo.Customers c ON c.Id = o.CustomerId WHERE o.Created > DATEADD(day, -7, GETDATE())",
    "UPDATE dbo.Sessions SET LastSeen = SYSUTCDATETIME() WHERE SessionId = 42",
    "INSERT INTO dbo.Audit (EventType, Payload) VALUES (N'login', N'{\"ok\":true}')",
    "SET NOCOUNT ON; SELECT @@SPID, DB_NAME(), SERVERPROPERTY('ProductVersion')",
    "EXEC sp_reset_connection",
    "SELECT name, object_id, type_desc FROM sys.objects WHERE is_ms_shipped = 0",
]


class Generator:
    """Builds sessions at random start times until the capture holds the requested packets."""

    def __init__(self, packets: int, seed: int) -> None:
        self.target = packets
        self.rng = rng = random.Random(seed)
        self.cap = Capture()
        self.stats = Stats()
        # Sessions start uniformly over `duration` and live ~40 s: with the span growing with
        # the packet count, about 2,000 flows are open at once at every size, so a reader whose
        # memory follows open connections should use the same memory for 200k and 2M packets.
        self.duration = int(max(10.0, packets / 3_570 - 46) * 1_000_000)  # µs
        self.p_retx = 0.005
        self.p_reorder = 0.003
        n_clients = min(800, max(200, packets // 2500))
        self.clients = [
            Host(
                bytes([10, 20 + i // 250, i % 250 + 1, 10 + rng.randrange(200)]),
                bytes([0x02, 0x42, 0x0A, 0x14, i >> 8, i & 0xFF]),
                f"WS-{i:04d}",
            )
            for i in range(n_clients)
        ]
        self.rtt_of = {c.ip: 2_000 + rng.randrange(38_000) for c in self.clients}
        self.next_port = {c.ip: 49152 + rng.randrange(8000) for c in self.clients}
        self.gateways = [
            Host(bytes(ip), ROUTER_MAC, "cr2.westeurope1-a.control.database.windows.net")
            for ip in ([40, 68, 37, 158], [13, 69, 105, 208], [52, 236, 184, 163])
        ]
        self.servers = [
            f"sql-{w_}{i}.database.windows.net"
            for i, w_ in enumerate(["contoso", "fabrikam", "northwind", "tailspin"] * 8)
        ]
        self.workers = []
        for i in range(48):
            ip = bytes([20, 61, 96 + i // 32, 1 + (i * 7) % 250])
            tr = 1000 + i * 13
            self.workers.append(
                Host(ip, ROUTER_MAC, f"tr{tr}.westeurope1-a.worker.database.windows.net")
            )
        # A database lives on one worker at one port: the routing token always names that pair.
        self.placement = {
            s: (rng.choice(self.workers), 11000 + rng.randrange(1000), rng.randbytes(6).hex())
            for s in self.servers
        }
        self.onprem = [
            Host(bytes([10, 50, 0, 10 + i]), ROUTER_MAC, f"SQLPROD{i:02d}") for i in range(4)
        ]
        self.web = [Host(bytes([10, 60, 0, 20 + i]), ROUTER_MAC, f"monitor{i}") for i in range(3)]
        self.dns = Host(bytes([10, 0, 0, 53]), ROUTER_MAC, "dns")
        self.dns_ipid = rng.randrange(65536)
        self.chains: dict[str, list[bytes]] = {}
        # Result sets are built once and reused (with each session's SPID). Their sizes are
        # fixed quantiles of a heavy-tailed mix (mostly a few rows, rarely thousands), drawn
        # from their own generator: the packets-per-flow ratio then does not depend on the
        # file size or on how many random numbers the set-up above consumed.
        trng = random.Random(seed * 7919 + 1)
        bands = [(36, 1, 5), (18, 6, 60), (8, 60, 600), (2, 600, 2400)]  # (templates, rows)
        self.results = []
        for count, low, high in bands:
            for i in range(count):
                rows = round(low * (high / low) ** ((i + 0.5) / count))
                self.results.append(w.result_set(trng, rows))
        self.results.extend(w.rowcount_result(trng.randrange(1, 20)) for _ in range(16))

    # -- helpers --------------------------------------------------------------------------------

    def new_flow(self, cli: Host, srv: Host, dport: int, t0: int) -> TcpFlow:
        port = self.next_port[cli.ip]
        self.next_port[cli.ip] = 49152 + (port + 1 - 49152) % 16384
        fid = len(self.stats.flow_kind)
        self.stats.flow_kind.append("")
        return TcpFlow(self.rng, fid, cli, srv, port, dport, t0, self.rtt_of[cli.ip])

    def chain(self, host: str) -> list[bytes]:
        if host not in self.chains:
            self.chains[host] = w.cert_chain(self.rng, host)
        return self.chains[host]

    def done_flow(self, flow: TcpFlow, kind: str) -> list[int]:
        self.stats.flow_kind[flow.fid] = kind
        return flow.finish(self.cap, self.p_retx, self.p_reorder)

    # -- TDS conversation -------------------------------------------------------------------------

    def tds_login(
        self,
        f: TcpFlow,
        enc: str,
        server: str,
        sni: str,
        database: str,
        packet_size: int,
        spid: int,
        routing: tuple[int, str] | None,
    ) -> None:
        """PRELOGIN both ways, the TLS handshake, LOGIN7 and its answer.

        enc: "clear" (ENCRYPT_NOT_SUP both sides: no TLS), "login" (ENCRYPT_OFF: TLS inside
        PRELOGIN packets, then only LOGIN7 is encrypted), "full" (ENCRYPT_ON: everything after
        the handshake is TLS records), "strict" (TDS 8.0: TLS 1.3 first, all of TDS inside).
        """
        rng = f.rng

        def wire(data: bytes, encrypted: bool) -> bytes:
            return w.encrypt(rng, len(data)) if encrypted else data

        strict = enc == "strict"
        if strict:
            f.send(0, w.client_hello(rng, sni, alpn="tds/8.0"), dt=300 + rng.randrange(3000))
            f.send(1, w.server_flight_13(rng, self.chain(sni)), dt=f.rtt + rng.randrange(3000))
            f.send(0, w.client_finish_13(rng), dt=300 + rng.randrange(2000))
        cli_enc, srv_enc = {
            "clear": (w.ENCRYPT_NOT_SUP, w.ENCRYPT_NOT_SUP),
            "login": (w.ENCRYPT_OFF, w.ENCRYPT_OFF),
            "full": (w.ENCRYPT_ON, w.ENCRYPT_ON),
            "strict": (w.ENCRYPT_ON, w.ENCRYPT_ON),  # inside TLS: not visible anyway
        }[enc]
        pre = w.tds_packets(w.PRELOGIN, w.prelogin_client(rng, cli_enc, rng.randrange(1, 30000)))
        f.send(0, wire(pre, strict), dt=300 + rng.randrange(3000))
        # The answer to PRELOGIN travels in a type 4 (tabular result) packet (MS-TDS 2.2.6.5);
        # the TLS handshake that follows uses type 0x12 in both directions.
        answer = w.tds_packets(w.RESPONSE, w.prelogin_server(srv_enc), spid=0)
        f.send(1, wire(answer, strict), dt=f.rtt)
        if enc in ("login", "full"):
            hello = w.tds_packets(w.PRELOGIN, w.client_hello(rng, sni))
            f.send(0, hello, dt=500 + rng.randrange(5000))
            flight = w.tds_packets(w.PRELOGIN, w.server_flight(rng, self.chain(sni)))
            f.send(1, flight, dt=f.rtt + rng.randrange(3000))
            f.send(0, w.tds_packets(w.PRELOGIN, w.client_finish(rng)), dt=300 + rng.randrange(2000))
            f.send(1, w.tds_packets(w.PRELOGIN, w.server_finish(rng)), dt=f.rtt)
        client = self.clients[self.client_index(f)]
        login = w.login7(
            rng,
            host=client.name,
            user=rng.choice(["app_rw", "reporting", "svc_orders", "sa"]),
            password="Pa55w0rd!" + str(rng.randrange(100)),
            app=rng.choice(["Core .Net SqlClient Data Provider", "OrdersService", "sqlcmd"]),
            server=server,
            database=database,
            packet_size=packet_size,
            client_pid=rng.randrange(1000, 60000),
            client_mac=client.mac,
        )
        login_packets = w.tds_packets(w.LOGIN7, login)
        f.send(0, wire(login_packets, enc != "clear"), dt=200 + rng.randrange(1000))
        response = w.login_response(
            server=server.split(".")[0], database=database, packet_size=packet_size,
            routing=routing,
        )  # fmt: skip
        resp = w.tds_packets(w.RESPONSE, response, packet_size=4096, spid=spid)
        f.send(
            1,
            wire(resp, enc in ("full", "strict")),
            dt=f.rtt + 2000 + rng.randrange(30_000),
            reply_soon=routing is not None,
        )

    def client_index(self, f: TcpFlow) -> int:
        ip = f.ips[0][0]
        return (ip[1] - 20) * 250 + ip[2] - 1

    def tds_batches(self, f: TcpFlow, enc: str, packet_size: int, spid: int, count: int) -> None:
        """SQL batches with think time between them, each answered by a (reused) result set."""
        rng = f.rng
        for _ in range(count):
            req = w.tds_packets(w.SQL_BATCH, w.sql_batch(rng.choice(QUERIES)), packet_size)
            # Pooled connections idle between requests: flows live for seconds, so thousands
            # are open at once in the larger files.
            think = rng.choice(
                [2_000, 20_000, 200_000, 2_000_000, 5_000_000, 10_000_000, 30_000_000]
            )
            think += rng.randrange(100_000)
            f.send(0, w.encrypt(rng, len(req)) if enc in ("full", "strict") else req, dt=think)
            resp = w.tds_packets(w.RESPONSE, rng.choice(self.results), packet_size, spid)
            if enc in ("full", "strict"):  # each TDS packet becomes its own TLS record
                resp = b"".join(
                    w.encrypt(rng, len(resp[o : o + packet_size]))
                    for o in range(0, len(resp), packet_size)
                )
            f.send(1, resp, dt=f.rtt + rng.randrange(50_000), reply_soon=rng.random() < 0.7)

    def end(self, f: TcpFlow) -> None:
        """Most connections close with FIN from the client, a few reset. Those still busy when
        sessions stop starting are left open, as if the capture stopped first: so the number
        open at the end stays the same at every file size (memory should follow it)."""
        r = f.rng.random()
        if f.t > self.duration:
            return
        if r < 0.04:
            f.abort(0)
        else:
            f.close(0 if r < 0.85 else 1)

    # -- sessions ------------------------------------------------------------------------------

    def proxy_session(self, t0: int) -> None:
        """Azure SQL Proxy policy: the whole session stays on the gateway at 1433."""
        rng = self.rng
        server = rng.choice(self.servers)
        cli = rng.choice(self.clients)
        f = self.new_flow(cli, self.gateways[self.servers.index(server) % 3], 1433, t0)
        enc = rng.choices(["login", "full", "clear", "strict"], [0.45, 0.4, 0.1, 0.05])[0]
        size = rng.choice([4096, 8000])
        spid = rng.randrange(51, 1000)
        f.handshake()
        self.tds_login(f, enc, server, server, "ordersdb", size, spid, None)
        self.tds_batches(f, enc, size, spid, self.batch_count())
        self.end(f)
        self.done_flow(f, "proxy")
        self.stats.count("proxy")

    def batch_count(self) -> int:
        return min(60, int(self.rng.expovariate(1 / 5.5)) + 1)

    def onprem_session(self, t0: int) -> None:
        """An on-premises SQL Server: cleartext logins by older applications."""
        rng = self.rng
        srv = rng.choice(self.onprem)
        f = self.new_flow(rng.choice(self.clients), srv, 1433, t0)
        enc = "clear" if rng.random() < 0.7 else "login"
        spid = rng.randrange(51, 300)
        f.handshake()
        self.tds_login(
            f, enc, srv.name, srv.name.lower() + ".corp.contoso.com", "erp", 4096, spid, None
        )
        self.tds_batches(f, enc, 4096, spid, self.batch_count())
        self.end(f)
        self.done_flow(f, "onprem")
        self.stats.count("onprem")

    def redirect_attempt(self, t0: int, cli: Host | None = None, retry: bool = True) -> None:
        """Azure SQL Redirect policy: gateway leg with a routing token, DNS, second leg."""
        rng = self.rng
        cli = cli or rng.choice(self.clients)
        server = rng.choice(self.servers)
        worker, port, db_id = self.placement[server]
        target = f"{db_id}.{worker.name}"
        gw = self.gateways[self.servers.index(server) % 3]
        g = self.new_flow(cli, gw, 1433, t0)
        enc = rng.choices(["login", "full", "clear", "strict"], [0.55, 0.25, 0.15, 0.05])[0]
        g.handshake()
        self.tds_login(g, enc, server, server, "ordersdb", 8000, 0, (port, target))
        routing_item = len(g.items) - 1
        g.close(0)
        # The index of the routing segment is only known after finish(); find it by frame.
        routing_frame = g.items[routing_item][1]
        t = g.t
        idx = self.done_flow(g, "gateway")
        routing_index = idx[next(i for i, it in enumerate(g.items) if it[1] is routing_frame)]

        dns_index = None
        if rng.random() < 0.7:  # not in the client's DNS cache
            txid = rng.randrange(65536)
            sport = 50000 + rng.randrange(15000)
            t += 300 + rng.randrange(2000)
            dns_index = self.cap.udp(
                t,
                cli,
                self.dns,
                sport,
                53,
                w.dns_query(txid, target),
                rng.randrange(65536),
                cli.mac,
                ROUTER_MAC,
            )
            t += 500 + rng.randrange(20_000)
            self.dns_ipid = (self.dns_ipid + 1) & 0xFFFF
            resolved = rng.random() < 0.97
            answer = w.dns_answer(txid, target, worker.ip if resolved else None)
            self.cap.udp(t, self.dns, cli, 53, sport, answer, self.dns_ipid, ROUTER_MAC, cli.mac)
            if not resolved:  # NXDOMAIN: the driver gives up before any second leg
                self.stats.redirects.append(
                    Redirect(g.fid, -1, port, target, "dns_failed", enc in ("clear", "login"),
                             routing_index, dns_index)
                )  # fmt: skip
                self.stats.count("redirect_dns_failed")
                return
        t += 200 + rng.randrange(2000)

        r = rng.random()
        leg = self.new_flow(cli, worker, port, t)
        if r < 0.10:
            outcome = "no_answer"
            leg.syn_unanswered(3)
        elif r < 0.15:
            outcome = "reset"
            leg.syn_reset()
        else:
            outcome = "connected"
            size = 8000
            spid = rng.randrange(51, 1000)
            leg_enc = enc if enc in ("full", "strict") else rng.choice(["full", "login"])
            leg.handshake()
            self.tds_login(leg, leg_enc, server, target, "ordersdb", size, spid, None)
            self.tds_batches(leg, leg_enc, size, spid, self.batch_count())
            self.end(leg)
        self.done_flow(leg, "worker")
        self.stats.redirects.append(
            Redirect(
                g.fid,
                leg.fid,
                port,
                target,
                outcome,
                enc in ("clear", "login"),
                routing_index,
                dns_index,
            )
        )
        self.stats.count(f"redirect_{outcome}")
        if outcome != "connected" and retry and rng.random() < 0.5:
            self.redirect_attempt(leg.t + 2_000_000 + rng.randrange(10_000_000), cli, retry=False)

    def refused(self, t0: int) -> None:
        """A client tries a server that is down: SYN answered by RST."""
        f = self.new_flow(self.rng.choice(self.clients), self.rng.choice(self.onprem), 1433, t0)
        f.syn_reset()
        self.done_flow(f, "refused")
        self.stats.count("refused")

    def http_noise(self, t0: int) -> None:
        """Monitoring probes over plain HTTP: not TDS, must not be taken for it."""
        rng = self.rng
        web = rng.choice(self.web)
        cli = rng.choice(self.clients)
        f = self.new_flow(cli, web, 8080, t0)
        f.handshake()
        for _ in range(rng.randrange(1, 4)):
            req, resp = w.http_exchange(rng, web.name)
            f.send(0, req, dt=1000 + rng.randrange(100_000))
            f.send(1, resp, dt=f.rtt, reply_soon=False)
        f.close(0)
        self.done_flow(f, "http")
        self.stats.count("http")
        if rng.random() < 0.3:
            self.cap.arp(t0 - 500, cli, bytes([10, cli.ip[1], cli.ip[2], 254]), ROUTER_MAC)

    def run(self, progress: bool = False) -> None:
        rng = self.rng
        kinds = [
            self.proxy_session,
            self.redirect_attempt,
            self.onprem_session,
            self.refused,
            self.http_noise,
        ]
        weights = [30, 36, 18, 3, 6]
        last = 0
        while len(self.cap) < self.target:
            t0 = rng.randrange(self.duration)
            rng.choices(kinds, weights)[0](t0)
            if progress and len(self.cap) - last >= 200_000:
                last = len(self.cap)
                print(f"  {last:,} packets", file=sys.stderr)

    # -- results ----------------------------------------------------------------------------------

    def manifest(self, order: np.ndarray, path: Path, size: int, seconds: float) -> dict:
        """What the file holds, numbered as Wireshark numbers frames and tcp.stream."""
        n = len(order)
        frame_of = np.full(len(self.cap), -1, dtype=np.int64)
        frame_of[order] = np.arange(1, n + 1)
        flows = np.frombuffer(self.cap.flow, dtype=np.int32)
        kept = frame_of > 0
        tcp = kept & (flows >= 0)
        first = np.full(len(self.stats.flow_kind), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, flows[tcp], frame_of[tcp])
        present = np.flatnonzero(first < np.iinfo(np.int64).max)
        ranked = present[np.argsort(first[present], kind="stable")]
        stream_of = {int(fid): i for i, fid in enumerate(ranked)}
        kinds: dict[str, int] = {}
        for fid in ranked:
            k = self.stats.flow_kind[fid]
            kinds[k] = kinds.get(k, 0) + 1
        redirects = []
        for r in self.stats.redirects:
            no_leg = r.worker_flow < 0
            if r.gateway_flow not in stream_of or frame_of[r.routing_frame_index] <= 0:
                continue  # cut off by the packet limit
            if not no_leg and r.worker_flow not in stream_of:
                continue
            dns = r.dns_query_index
            redirects.append(
                {
                    "gateway_stream": stream_of[r.gateway_flow],
                    "worker_stream": None if no_leg else stream_of[r.worker_flow],
                    "routing_frame": int(frame_of[r.routing_frame_index]),
                    "worker_first_frame": None if no_leg else int(first[r.worker_flow]),
                    "dns_query_frame": (
                        int(frame_of[dns]) if dns is not None and frame_of[dns] > 0 else None
                    ),
                    "port": r.port,
                    "server": r.server,
                    "outcome": r.outcome,
                    "routing_visible": r.routing_visible,
                }
            )
        udp = int((flows[order] < 0).sum())
        last = np.zeros(len(self.stats.flow_kind), dtype=np.int64)
        np.maximum.at(last, flows[tcp], frame_of[tcp])
        # Most flows open at once: +1 at a flow's first frame, -1 after its last.
        events = np.concatenate([first[present] * 2, last[present] * 2 + 1])
        steps = np.where(events % 2 == 0, 1, -1)[np.argsort(events, kind="stable")]
        concurrent = int(np.cumsum(steps).max()) if len(steps) else 0
        return {
            "file": path.name,
            "packets": n,
            "bytes": size,
            "tcp_streams": len(ranked),
            "max_concurrent_tcp_streams": concurrent,
            "non_tcp_packets": udp,
            "flows_by_kind": kinds,
            "sessions": self.stats.sessions,
            "clients": len(self.clients),
            "duration_s": round(self.duration / 1e6, 1),
            "generation_s": round(seconds, 2),
            "redirects": redirects,
        }


def generate(packets: int, seed: int, out: Path, progress: bool = False) -> dict:
    """Build the capture and its manifest (`OUT.json`); return the manifest."""
    start = time.perf_counter()
    gen = Generator(packets, seed)
    gen.run(progress)
    order = gen.cap.order(packets)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    size = gen.cap.write(tmp, order)
    tmp.replace(out)
    manifest = gen.manifest(order, out, size, time.perf_counter() - start)
    manifest["seed"] = seed
    Path(str(out) + ".json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def parse_count(text: str) -> int:
    """Accept 200000, 200k, 2M."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", type=parse_count, default=200_000, help="e.g. 200k, 2M")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sha256", action="store_true", help="print the file's sha256")
    args = p.parse_args(argv)
    m = generate(args.packets, args.seed, args.out, progress=True)
    print(
        f"{args.out}: {m['packets']:,} packets, {m['bytes']:,} bytes, "
        f"{m['tcp_streams']:,} TCP streams, {len(m['redirects'])} redirects, "
        f"{m['generation_s']} s"
    )
    if args.sha256:
        print(sha256(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
