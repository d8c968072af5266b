"""pcapng (placeholder until the reader lands)."""

from __future__ import annotations

from tdslens.analyzer.capture.reader import CaptureReader
from tdslens.analyzer.capture.source import ChunkSource
from tdslens.analyzer.frames import CaptureError

SHB_MAGIC = b"\x0a\x0d\x0d\x0a"


class PcapngReader(CaptureReader):
    FORMAT = "pcapng"

    def __init__(self, path: str, source: ChunkSource) -> None:
        raise CaptureError(path, "pcapng reading is not implemented yet")
