"""Simulated SQL endpoints (Azure gateway, worker, proxy, AG listener, TDS 8.0 server) and DNS.

One asyncio process plays every server of a scenario, each listener with its own behaviour, and
writes one JSON line per event to a log. That log, not any analysis of the capture, is the ground
truth the expected files are built from.

TLS is done sans-IO with ``ssl.MemoryBIO``/``SSLObject`` because TDS 7.x carries the TLS handshake
inside PRELOGIN packets: the bytes must be unwrapped and wrapped by hand, which a socket-level TLS
wrapper cannot do.

Run: ``python -m samples.lab.server CONFIG.json`` (the lab's runner does this inside a namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tdswire as w
from .dnsd import DnsResponder

IO_TIMEOUT = 30.0  # a client that goes quiet this long is dropped
TLS_RECORD_TYPES = (0x14, 0x15, 0x16, 0x17)  # CCS, alert, handshake, data
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class EventLog:
    """Append-only JSON lines; flushed per line so a killed run still leaves its truth behind."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("a", encoding="utf-8")

    def __call__(self, entry: dict[str, Any]) -> None:
        entry.setdefault("time", time.time())
        self.fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self.fh.flush()


@dataclass
class Listener:
    """One simulated endpoint. ``action`` decides what happens after LOGIN7."""

    name: str
    role: str  # gateway | worker | proxy | listener | server
    host: str
    port: int
    action: str = "serve"  # serve | route | route_readonly | fail_login | close_after_prelogin
    encryption: str = "required"  # required | optional | refuse
    strict: bool = False  # TDS 8.0: TLS (ALPN tds/8.0) before anything else
    tls_min: str = "1.2"
    tls_max: str = "1.3"
    route_host: str = ""
    route_port: int = 0
    padding: int = 0  # bytes of INFO messages sent before the SELECT 1 result (big replies)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Listener:
        return cls(**d)


class ClientGone(Exception):
    """The peer closed or reset; ``how`` says which."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


@dataclass
class Conn:
    """One accepted TCP connection with its optional TLS layer and its event record."""

    lst: Listener
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ctx: ssl.SSLContext
    record: dict[str, Any]
    raw: w.PacketReader = field(default_factory=w.PacketReader)
    plain: w.PacketReader = field(default_factory=w.PacketReader)
    tls: ssl.SSLObject | None = None
    bio_in: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)
    bio_out: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)

    # -- raw socket ------------------------------------------------------------------------
    async def recv_raw(self) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), IO_TIMEOUT)
        except ConnectionResetError as exc:
            raise ClientGone("client_reset") from exc
        except TimeoutError as exc:
            raise ClientGone("timeout") from exc
        if not data:
            raise ClientGone("client_closed")
        return data

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ClientGone("client_reset") from exc

    # -- TLS -------------------------------------------------------------------------------
    def new_tls(self) -> None:
        self.tls = self.ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        SNI_RECORDS[id(self.tls)] = self.record

    async def handshake(self, wrapped: bool) -> None:
        """TLS handshake; ``wrapped``: records travel inside TDS PRELOGIN packets (TDS 7.x)."""
        assert self.tls is not None
        while True:
            try:
                self.tls.do_handshake()
                finished = True
            except ssl.SSLWantReadError:
                finished = False
            out = self.bio_out.read()
            if out:
                await self.send_raw(w.packets(w.PKT_PRELOGIN, out) if wrapped else out)
            if finished:
                break
            if wrapped:
                while not self.raw.buf:
                    self.raw.feed(await self.recv_raw())
                if self.raw.buf[0] in TLS_RECORD_TYPES:
                    # Some clients (ODBC 18, FreeTDS) send their last TLS 1.3 flight unwrapped:
                    # for them the handshake is over once the server's Finished arrived.
                    self.record.setdefault("tls_unwrapped_client_flight", True)
                    self.bio_in.write(self.raw.take_rest())
                    continue
                pkt = self.raw.next_packet()
                while pkt is None:
                    self.raw.feed(await self.recv_raw())
                    pkt = self.raw.next_packet()
                if pkt.ptype != w.PKT_PRELOGIN:
                    raise ssl.SSLError(f"TDS packet type 0x{pkt.ptype:02x} during TLS handshake")
                self.bio_in.write(pkt.payload)
            else:
                self.bio_in.write(await self.recv_raw())
        # Whatever followed the handshake in the same segments is already TLS records.
        rest = self.raw.take_rest()
        if rest:
            self.bio_in.write(rest)
        self.record["tls"] = {
            "version": self.tls.version(),
            "cipher": (self.tls.cipher() or ("",))[0],
            "alpn": self.tls.selected_alpn_protocol(),
            "sni": self.record.pop("_sni", None),
            "wrapped_in_prelogin": wrapped,
        }

    async def recv_stream(self) -> bytes:
        """Next bytes of the TDS stream, decrypted when TLS is on."""
        if self.tls is None:
            return await self.recv_raw()
        while True:
            try:
                data = self.tls.read(65536)
                if data:
                    return data
                raise ClientGone("client_closed")  # TLS close_notify
            except ssl.SSLWantReadError:
                self.bio_in.write(await self.recv_raw())
            except ssl.SSLZeroReturnError as exc:
                raise ClientGone("client_closed") from exc

    async def send_stream(self, data: bytes) -> None:
        if self.tls is None:
            await self.send_raw(data)
            return
        self.tls.write(data)
        await self.send_raw(self.bio_out.read())

    # -- TDS messages ----------------------------------------------------------------------
    async def read_message(self, reader: w.PacketReader | None = None) -> tuple[int, bytes]:
        """Gather packets up to EOM; ``reader`` is the raw one before TLS, else ``plain``."""
        rd = reader or self.plain
        body = bytearray()
        while True:
            pkt = rd.next_packet()
            while pkt is None:
                rd.feed(await (self.recv_raw() if rd is self.raw else self.recv_stream()))
                pkt = rd.next_packet()
            body += pkt.payload
            if pkt.eom:
                return pkt.ptype, bytes(body)

    async def send_message(self, ptype: int, payload: bytes, size: int = 4096) -> None:
        await self.send_stream(w.packets(ptype, payload, size))


def make_context(lst: Listener, cert: Path, key: Path, keylog: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = TLS_VERSIONS[lst.tls_min]
    ctx.maximum_version = TLS_VERSIONS[lst.tls_max]
    ctx.num_tickets = 0  # no post-handshake tickets: TDS 7.x clients do not expect them
    # Old drivers (FreeTDS with GnuTLS defaults, pyOpenSSL) still offer only RSA/ECDHE suites.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=1")
    if lst.strict:
        ctx.set_alpn_protocols(["tds/8.0"])
    if keylog is not None:
        ctx.keylog_filename = str(keylog)
    ctx.sni_callback = _remember_sni
    return ctx


SNI_RECORDS: dict[int, dict[str, Any]] = {}  # id(SSLObject) -> connection record


def _remember_sni(obj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
    """Record the SNI the client sent (drivers differ: some send none, some the routed name)."""
    rec = SNI_RECORDS.get(id(obj))
    if rec is not None:
        rec["_sni"] = name


class Simulator:
    """Owns the listeners, the DNS responder and the event log."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.log = EventLog(Path(cfg["log"]))
        self.cert, self.key = Path(cfg["cert"]), Path(cfg["key"])
        keylog = cfg.get("keylog")
        self.keylog = Path(keylog) if keylog else None
        self.ids = itertools.count(1)

    async def start(self) -> list[Any]:
        servers: list[Any] = []
        for d in self.cfg["listeners"]:
            lst = Listener.from_dict(d)
            ctx = make_context(lst, self.cert, self.key, self.keylog)

            async def handler(r, wr, lst=lst, ctx=ctx) -> None:  # type: ignore[no-untyped-def]
                await self.handle(lst, ctx, r, wr)

            servers.append(await asyncio.start_server(handler, lst.host, lst.port))
            self.log(
                {"event": "listening", "listener": lst.name, "host": lst.host, "port": lst.port}
            )
        dns = self.cfg.get("dns")
        if dns:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: DnsResponder(dns["records"], self.log), local_addr=(dns["host"], 53)
            )
            servers.append(transport)
            self.log({"event": "listening", "listener": "dns", "host": dns["host"], "port": 53})
        return servers

    async def handle(
        self,
        lst: Listener,
        ctx: ssl.SSLContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        record: dict[str, Any] = {
            "event": "connection",
            "id": next(self.ids),
            "listener": lst.name,
            "role": lst.role,
            "client": [peer[0], peer[1]],
            "server": [sock[0], sock[1]],
            "accepted": time.time(),
            "steps": [],
        }

        conn = Conn(lst, reader, writer, ctx, record)
        try:
            await self.session(conn)
            record.setdefault("end", "server_closed")
        except ClientGone as gone:
            record["end"] = gone.how
        except ssl.SSLError as exc:
            record["end"] = "tls_failed"
            record["error"] = f"{type(exc).__name__}: {exc}"
        except (ValueError, IndexError) as exc:
            record["end"] = "protocol_error"
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            record.pop("_sni", None)
            if conn.tls is not None:
                SNI_RECORDS.pop(id(conn.tls), None)
            record["closed"] = time.time()
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()
            self.log(record)

    async def session(self, c: Conn) -> None:
        lst, rec = c.lst, c.record
        if lst.strict:
            c.new_tls()
            await c.handshake(wrapped=False)
            rec["steps"].append("tls")
            if rec["tls"]["alpn"] != "tds/8.0":
                rec["steps"].append("no_alpn")
            ptype, payload = await c.read_message()
        else:
            while not c.raw.buf:
                c.raw.feed(await c.recv_raw())
            first = c.raw.buf[0]
            if first in TLS_RECORD_TYPES:
                # e.g. a TLS-first (strict) client, or a driver reusing the previous leg's TLS
                rec["first_bytes"] = bytes(c.raw.buf[:16]).hex()
                raise ValueError(f"TLS record (type 0x{first:02x}) where PRELOGIN was expected")
            ptype, payload = await c.read_message(c.raw)
        if ptype != w.PKT_PRELOGIN:
            raise ValueError(f"expected PRELOGIN, got packet type 0x{ptype:02x}")
        opts = w.parse_prelogin(payload)
        client_enc = opts.get(w.PL_ENCRYPTION, b"\x02")[0]
        ver = opts.get(w.PL_VERSION, b"")
        rec["prelogin"] = {
            "client_encryption": w.ENCRYPT_NAMES.get(client_enc, str(client_enc)),
            "client_version": ver[:4].hex() if ver else None,
            "options": sorted(opts),
        }
        rec["steps"].append("prelogin")
        if lst.action == "close_after_prelogin":
            rec["end"] = "server_closed_after_prelogin"
            return
        server_enc, tls_mode = negotiate(lst, client_enc)
        rec["prelogin"]["server_encryption"] = w.ENCRYPT_NAMES[server_enc]
        rec["encryption"] = tls_mode
        fedauth = w.PL_FEDAUTHREQUIRED in opts
        await c.send_message(w.PKT_REPLY, w.build_prelogin_response(server_enc, fedauth))
        if tls_mode == "mismatch":
            # The client demanded encryption we refuse: it should hang up now.
            ptype, _ = await c.read_message(c.raw)
            raise ValueError(f"client went on after encryption refusal (0x{ptype:02x})")
        if tls_mode in ("full", "login_only") and not lst.strict:
            c.new_tls()
            await c.handshake(wrapped=True)
            rec["steps"].append("tls")
        ptype, payload = await c.read_message(c.raw if c.tls is None else None)
        if ptype != w.PKT_LOGIN7:
            raise ValueError(f"expected LOGIN7, got packet type 0x{ptype:02x}")
        login = w.parse_login7(payload)
        s = login.strings
        rec["login"] = {
            "tds_version": f"0x{login.tds_version:08x}",
            "packet_size": login.packet_size,
            "readonly_intent": login.readonly_intent,
            "feature_ext": login.wants_feature_ext,
            "hostname": s.get("hostname"),
            "username": s.get("username"),
            "appname": s.get("appname"),
            "servername": s.get("servername"),
            "library": s.get("library"),
            "database": s.get("database"),
        }
        rec["steps"].append("login7")
        if tls_mode == "login_only" and not lst.strict:
            c.tls = None  # ENCRYPT_OFF: only LOGIN7 is encrypted; the rest is cleartext
        await self.after_login(c, login)

    async def after_login(self, c: Conn, login: w.Login7) -> None:
        lst, rec = c.lst, c.record
        tds_version = (
            min(login.tds_version, w.TDS74) if login.tds_version >= 0x71000000 else w.TDS74
        )
        size = 4096
        route = lst.action == "route" or (lst.action == "route_readonly" and login.readonly_intent)
        server_name = lst.name
        if lst.action == "fail_login":
            user = login.strings.get("username", "")
            msg = f"Login failed for user '{user}'."
            tokens = w.info_or_error(w.TOK_ERROR, 18456, 1, 14, msg, server_name)
            tokens += w.done(w.DONE_ERROR)
            await c.send_message(w.PKT_REPLY, tokens)
            rec["outcome"] = {"login": "failed", "error": 18456}
            await self.wait_client_close(c, 5.0)
            return
        ack = w.loginack(tds_version)
        ext = w.feature_ext_ack_empty() if login.wants_feature_ext else b""
        if route:
            rec["outcome"] = {"login": "routed", "route": [lst.route_host, lst.route_port]}
            tokens = ack + w.env_routing(lst.route_host, lst.route_port) + ext + w.done()
            await c.send_message(w.PKT_REPLY, tokens)
            rec["steps"].append("routing")
            await self.wait_client_close(c, 10.0)
            return
        db = login.strings.get("database") or "master"
        tokens = (
            w.env_string(1, db, "master")
            + w.info_or_error(
                w.TOK_INFO, 5701, 2, 0, f"Changed database context to '{db}'.", server_name
            )
            + w.env_collation()
            + w.env_string(2, "us_english")
            + w.info_or_error(
                w.TOK_INFO, 5703, 1, 0, "Changed language setting to us_english.", server_name
            )
            + ack
            + w.env_string(4, str(size), str(login.packet_size))
            + ext
            + w.done()
        )
        await c.send_message(w.PKT_REPLY, tokens)
        rec["outcome"] = {"login": "ok", "queries": []}
        rec["steps"].append("loginack")
        await self.serve_requests(c, size)

    async def serve_requests(self, c: Conn, size: int) -> None:
        """Answer batches until the client leaves: SELECT 1 gets a row, anything else a DONE."""
        queries: list[str] = c.record["outcome"]["queries"]
        while True:
            ptype, payload = await c.read_message(c.raw if c.tls is None else None)
            if ptype == w.PKT_SQL_BATCH:
                text = w.sql_batch_text(payload).strip()
                queries.append(text[:200])
                norm = " ".join(text.lower().split())
                if norm.startswith("select 1"):
                    reply = padding_infos(c.lst.padding, c.lst.name) + w.select_one_result()
                else:
                    reply = w.done()
            elif ptype == w.PKT_RPC:
                queries.append("<rpc>")
                reply = w.select_one_result()[:-13] + w.done(w.DONE_COUNT, 0xC1, 1, w.TOK_DONEPROC)
            elif ptype == w.PKT_ATTENTION:
                queries.append("<attention>")
                reply = w.done(w.DONE_ATTN)
            elif ptype == w.PKT_TRANSACTION:
                queries.append("<transaction-manager>")
                reply = w.done()
            else:
                raise ValueError(f"unexpected packet type 0x{ptype:02x} after login")
            await c.send_message(w.PKT_REPLY, reply, size)

    async def wait_client_close(self, c: Conn, limit: float) -> None:
        """After a routing or failed login the client should hang up; wait, then close."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(c.reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                break
            except ConnectionResetError as exc:
                raise ClientGone("client_reset") from exc
            if not data:
                raise ClientGone("client_closed")
            c.record.setdefault("after_response_bytes", 0)
            c.record["after_response_bytes"] += len(data)
        c.record["end"] = "server_closed_after_wait"


def padding_infos(size: int, server: str) -> bytes:
    """INFO tokens totalling about ``size`` bytes: a reply spanning many packets and segments."""
    out = bytearray()
    n = 0
    while len(out) < size:
        n += 1
        text = f"lab padding message {n}: " + "x" * 1900
        out += w.info_or_error(w.TOK_INFO, 50000, 1, 0, text, server)
    return bytes(out)


def negotiate(lst: Listener, client: int) -> tuple[int, str]:
    """PRELOGIN ENCRYPTION answer and what follows: full | login_only | none | mismatch."""
    if lst.strict:
        return w.ENCRYPT_NOT_SUP if client == w.ENCRYPT_NOT_SUP else client, "strict"
    if lst.encryption == "refuse":
        if client in (w.ENCRYPT_ON, w.ENCRYPT_REQ):
            return w.ENCRYPT_NOT_SUP, "mismatch"
        return w.ENCRYPT_NOT_SUP, "none"
    if lst.encryption == "required":
        if client == w.ENCRYPT_NOT_SUP:
            return w.ENCRYPT_REQ, "mismatch"
        return (w.ENCRYPT_ON if client != w.ENCRYPT_OFF else w.ENCRYPT_REQ), "full"
    # optional: mirror the client
    if client == w.ENCRYPT_NOT_SUP:
        return w.ENCRYPT_NOT_SUP, "none"
    if client == w.ENCRYPT_OFF:
        return w.ENCRYPT_OFF, "login_only"
    return w.ENCRYPT_ON, "full"


async def amain(cfg: dict[str, Any]) -> None:
    sim = Simulator(cfg)
    await sim.start()
    ready = cfg.get("ready_file")
    if ready:
        Path(ready).write_text("ready\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    asyncio.run(amain(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
