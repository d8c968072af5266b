"""Network Monitor 2.x (placeholder until the reader lands)."""

from __future__ import annotations

from tdslens.analyzer.capture.reader import CaptureReader
from tdslens.analyzer.capture.source import ChunkSource
from tdslens.analyzer.frames import CaptureError

MAGIC_V2 = b"GMBU"
MAGIC_V1 = b"RTSS"


class NetmonReader(CaptureReader):
    FORMAT = "netmon2"

    def __init__(self, path: str, source: ChunkSource) -> None:
        raise CaptureError(path, "Network Monitor reading is not implemented yet")
