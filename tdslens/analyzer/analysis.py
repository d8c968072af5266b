"""Compose the layers for one capture: pipeline → per-connection dissectors → Analysis.

Why a module of its own: the command line, the batch scanner and the tests all want "the analysis
of this file" without knowing how TCP events reach the TDS dissectors or where DNS comes from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tdslens.analyzer.correlate import correlate
from tdslens.analyzer.model import Analysis, ConnectionRecord, DnsRecord
from tdslens.analyzer.packet_columns import UDP, PacketColumns, address_text
from tdslens.analyzer.phases import ConnectionDissector
from tdslens.analyzer.pipeline import CapturePipeline
from tdslens.analyzer.tcp_events import Endpoint, Gap, Payload, StreamEnd, StreamStart
from tdslens.dissectors.dns import parse_dns
from tdslens.dissectors.events import DnsMessage

DNS_PORT = 53


def analyze(path: str | Path) -> Analysis:
    """Read the capture once and return what every connection in it did.

    Raises CaptureError when nothing can be read; damage later in the file is listed in
    ``Analysis.problems`` and everything before it is analysed.
    """
    pipe = CapturePipeline(path)
    open_conns: dict[int, ConnectionDissector] = {}
    records: list[ConnectionRecord] = []
    dns: list[DnsRecord] = []
    for batch in pipe.batches():
        if batch.columns is not None:
            dns.extend(_dns_records(batch.columns))
        for event in batch.events:
            if type(event) is Payload:
                open_conns[event.stream].on_payload(event)
            elif isinstance(event, StreamStart):
                open_conns[event.stream] = ConnectionDissector(event)
            elif isinstance(event, Gap):
                open_conns[event.stream].on_gap(event)
            elif isinstance(event, StreamEnd):
                conn = open_conns.pop(event.summary.stream)
                records.append(conn.finish(event.summary))
    records.sort(key=lambda r: r.stream)
    analysis = Analysis(
        capture=pipe.info,
        frames=pipe.frames,
        problems=pipe.problems,
        connections=records,
        dns=dns,
    )
    return correlate(analysis)  # roles, redirects, attempts, findings, verdicts


def _dns_records(cols: PacketColumns) -> list[DnsRecord]:
    """DNS messages among the UDP rows of one batch (port 53 on either side)."""
    rows = np.flatnonzero(
        (cols.proto == UDP) & ((cols.sport == DNS_PORT) | (cols.dport == DNS_PORT))
    )
    out: list[DnsRecord] = []
    for i in rows.tolist():
        start = int(cols.payload_offset[i])
        data = bytes(cols.data[start : start + int(cols.payload_len[i])])
        frame = int(cols.number[i])
        msg = parse_dns(data, frames=(frame,))
        if not isinstance(msg, DnsMessage):
            continue  # not DNS after all, or damaged: nothing a diagnosis can use
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
    return out
