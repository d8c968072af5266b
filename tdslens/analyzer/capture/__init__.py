"""Capture files in, `FrameBatch`es out: pcap, pcapng and Network Monitor 2.x, gzipped or not.

    reader = open_capture("trace.pcapng.gz")    # CaptureError if nothing at all can be read
    for batch in reader.batches():              # FrameBatch: numpy columns over one chunk
        ...
    reader.report.problems                      # damage found while reading, naming frames
    reader.secrets                              # pcapng Decryption Secrets Blocks (type, bytes)

The format is chosen by the magic bytes (after gunzip when the file starts with 1f 8b), never
by the file name. One module per format; `reader.CaptureReader` holds what they share.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tdslens.analyzer.capture.reader import CaptureReader
from tdslens.analyzer.capture.source import DEFAULT_CHUNK, ChunkSource
from tdslens.analyzer.frames import CaptureError

__all__ = ["CaptureError", "CaptureReader", "open_capture"]


def open_capture(path: str | Path, chunk_size: int = DEFAULT_CHUNK) -> CaptureReader:
    """Open a capture file for one pass of reading; raise CaptureError if it is unreadable."""
    from tdslens.analyzer.capture import netmon, pcap, pcapng

    path = str(path)
    try:
        source = ChunkSource(path, chunk_size)
    except OSError as exc:
        raise CaptureError(path, f"cannot open: {exc.strerror or exc}") from None
    try:
        source.fill(4)
        head = source.buf[source.pos : source.pos + 4]
        if not head:
            what = "decompresses to nothing" if source.compressed else "is empty"
            raise CaptureError(path, f"the file {what}")
        if len(head) < 4:
            raise CaptureError(path, f"only {len(head)} byte(s): not a capture file")
        magic = struct.unpack("<I", head)[0]
        if magic in pcap.MAGICS:
            return pcap.PcapReader(path, source)
        if head == pcapng.SHB_MAGIC:
            return pcapng.PcapngReader(path, source)
        if head == netmon.MAGIC_V2:
            return netmon.NetmonReader(path, source)
        if head == netmon.MAGIC_V1:
            raise CaptureError(path, "Network Monitor 1.x captures are not supported")
        detail = f" ({source.error})" if source.error else ""
        raise CaptureError(
            path, f"not a pcap, pcapng or Network Monitor file: magic bytes {head.hex()}{detail}"
        )
    except BaseException:
        source.close()
        raise
