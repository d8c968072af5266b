"""Compose the layers for one capture: pipeline → per-connection dissectors → Analysis.

Why a module of its own: the command line, the batch scanner and the tests all want "the analysis
of this file" without knowing how TCP events reach the TDS dissectors or where DNS comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path, PurePath

import numpy as np

from tdslens.analyzer.correlate import correlate
from tdslens.analyzer.frames import CaptureProblem
from tdslens.analyzer.keylog import KeyLog, KeyLogProblem, keylog_from_blocks, parse_keylog
from tdslens.analyzer.model import Analysis, ConnectionRecord, DnsRecord
from tdslens.analyzer.packet_columns import UDP, PacketColumns, address_text
from tdslens.analyzer.phases import ConnectionDissector
from tdslens.analyzer.pipeline import CapturePipeline
from tdslens.analyzer.tcp import TcpEngine
from tdslens.analyzer.tcp_events import Endpoint, Gap, Payload, StreamEnd, StreamStart
from tdslens.dissectors.dns import parse_dns
from tdslens.dissectors.events import Malformed

DNS_PORT = 53

KeyLogArg = KeyLog | str | Path | Iterable[str | Path] | None


class CaptureSecrets:
    """The key logs given by the user, then the capture's own pcapng Decryption Secrets Blocks.

    The blocks are read as the file is, so they are parsed again whenever a new one appeared;
    a decryptor asks only once per TLS session (at its ServerHello), which keeps this cheap.
    """

    def __init__(
        self, given: KeyLog, blocks: list[tuple[int, bytes]], requested: bool = False
    ) -> None:
        """``requested``: the user gave a key log, even an empty one: then every TLS connection
        says what it could not decrypt (no_key) rather than nothing."""
        self.given = given
        self.requested = requested
        self.blocks = blocks  # the reader's list: it grows while the capture is read
        self._seen = 0
        self._dsb = KeyLog()

    def __bool__(self) -> bool:
        """Anything to decrypt with? Without keys no decryptor is built (no cost)."""
        return self.requested or len(self.given) > 0 or bool(self.blocks)

    @property
    def from_blocks(self) -> KeyLog:
        if len(self.blocks) != self._seen:
            self._seen = len(self.blocks)
            self._dsb = keylog_from_blocks(self.blocks)
        return self._dsb

    def secret(self, client_random: bytes, label: str) -> bytes | None:
        found = self.given.secret(client_random, label)
        return found if found is not None else self.from_blocks.secret(client_random, label)


def load_keylogs(keylog: KeyLogArg) -> KeyLog:
    """One KeyLog from a KeyLog, a file or several files (the first file wins a conflict).

    An unreadable file raises OSError: the user named it, so it is the user's error."""
    if keylog is None:
        return KeyLog()
    if isinstance(keylog, KeyLog):
        return keylog
    paths = [keylog] if isinstance(keylog, str | Path) else list(keylog)
    log = KeyLog()
    for path in paths:
        log = log.merged(parse_keylog(Path(path).read_bytes(), str(path)))
    return log


def keylog_problems(problems: Iterable[KeyLogProblem], capture: str) -> list[CaptureProblem]:
    """Key log lines we skipped, as capture problems naming the key log and line.

    No frame: the line is in a key log file (the problem's path) or in a pcapng Decryption
    Secrets Block of the capture, and the message names the file or block, since reports show
    only frame and message."""
    out = []
    for p in problems:
        if p.source.startswith("pcapng DSB"):
            path, where = capture, f"key log in {p.source}"
        else:
            path, where = p.source or "key log", f"key log {PurePath(p.source).name}".rstrip()
        line = f", line {p.line}" if p.line else ""
        out.append(CaptureProblem(path, None, f"{where}{line}: {p.issue}: {p.detail}"))
    return out


def analyze(
    path: str | Path,
    keylog: KeyLogArg = None,
    progress: Callable[[int, int], None] | None = None,
    plain: bool = False,
) -> Analysis:
    """Read the capture once and return what every connection in it did.

    ``keylog``: NSS key log file(s) (or a ``KeyLog``) to decrypt TLS with; the capture's own
    pcapng Decryption Secrets Blocks are used as well. Raises CaptureError when nothing can be
    read, OSError when a key log file cannot; damage later in the file is listed in
    ``Analysis.problems`` and everything before it is analysed. ``progress(done, total)`` is
    called after each batch with the file bytes read so far and the file size.
    ``plain`` takes the straightforward path (no TCP fast lane, every byte buffered and
    dissected): slower, and there only so tests can prove the shortcuts change no answer.
    """
    given = load_keylogs(keylog)
    pipe = CapturePipeline(path, engine=TcpEngine(fast_lane=False) if plain else None)
    secrets = CaptureSecrets(given, pipe.reader.secrets, requested=keylog is not None)
    open_conns: dict[int, ConnectionDissector] = {}
    records: list[ConnectionRecord] = []
    dns: list[DnsRecord] = []
    not_dns: list[CaptureProblem] = []
    # Established sessions are counted by the TCP engine, not delivered (not on the plain path).
    quiet = None if plain else pipe.engine.quiet
    for batch in pipe.batches():
        if progress is not None:
            progress(pipe.reader.bytes_read, pipe.info.file_size)
        if batch.columns is not None:
            found, bad = _dns_records(batch.columns, pipe.path)
            dns.extend(found)
            not_dns.extend(bad)
        for event in batch.events:
            if type(event) is Payload:
                open_conns[event.stream].on_payload(event)
            elif isinstance(event, StreamStart):
                open_conns[event.stream] = ConnectionDissector(
                    event, secrets if secrets else None, skip_unread=not plain, on_established=quiet
                )
            elif isinstance(event, Gap):
                open_conns[event.stream].on_gap(event)
            elif isinstance(event, StreamEnd):
                conn = open_conns.pop(event.summary.stream)
                records.append(conn.finish(event.summary, event.quiet))
    records.sort(key=lambda r: r.stream)
    analysis = Analysis(
        capture=pipe.info,
        frames=pipe.frames,
        problems=keylog_problems(given.problems, pipe.path)
        + sorted(pipe.problems + not_dns, key=lambda p: p.frame)
        + keylog_problems(secrets.from_blocks.problems, pipe.path),
        connections=records,
        dns=dns,
    )
    return correlate(analysis)  # roles, redirects, attempts, findings, verdicts


def _dns_records(cols: PacketColumns, path: str) -> tuple[list[DnsRecord], list[CaptureProblem]]:
    """DNS messages among the UDP rows of one batch (port 53 on either side), and a problem for
    each port-53 payload that does not parse as DNS (another protocol, damaged, or cut short)."""
    rows = np.flatnonzero(
        (cols.proto == UDP) & ((cols.sport == DNS_PORT) | (cols.dport == DNS_PORT))
    )
    out: list[DnsRecord] = []
    problems: list[CaptureProblem] = []
    for i in rows.tolist():
        start = int(cols.payload_offset[i])
        data = bytes(cols.data[start : start + int(cols.payload_len[i])])
        frame = int(cols.number[i])
        msg = parse_dns(data, frames=(frame,))
        if isinstance(msg, Malformed):  # another protocol on port 53, damaged, or cut short
            wire = int(cols.payload_wire_len[i])
            cut = f" ({len(data)} of {wire} bytes captured)" if len(data) < wire else ""
            problems.append(
                CaptureProblem(
                    path, frame, f"UDP port 53 payload does not parse as DNS: {msg.detail}{cut}"
                )
            )
            continue
        version = int(cols.ip_version[i])
        src = Endpoint(
            address_text(version, int(cols.src_hi[i]), int(cols.src_lo[i])), int(cols.sport[i])
        )
        dst = Endpoint(
            address_text(version, int(cols.dst_hi[i]), int(cols.dst_lo[i])), int(cols.dport[i])
        )
        client, server = (dst, src) if msg.response else (src, dst)
        out.append(
            DnsRecord(
                frame=frame,
                ts_ns=int(cols.ts_ns[i]),
                client=client,
                server=server,
                response=msg.response,
                id=msg.id,
                names=[name for name, _ in msg.questions],
                rcode=msg.rcode,
                addresses=list(msg.addresses()),
                cnames=[a.value for a in msg.answers if a.type == 5],
            )
        )
    return out, problems
