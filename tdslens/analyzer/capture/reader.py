"""What every format reader shares: numbering, batching, problem reporting, link-type checks.

A format module (pcap, pcapng, netmon) only knows its own record layout. It yields `FrameBatch`es
per chunk through `_chunks()`; this base class numbers nothing itself but splits chunks into
batches of at most `batch_size` frames, keeps `report.frames` current and, at the end, reports
frames whose link type tdslens cannot decode (one problem per link type, with the count).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tdslens.analyzer.capture.source import ChunkSource
from tdslens.analyzer.frames import CaptureInfo, CaptureProblem, FrameBatch, LinkType, ReadReport

# Records longer than this are damage, not data (Wireshark's own limit for most links is 256 KiB;
# we allow far more so jumbo/TSO frames and odd writers pass, but never a 4 GB "length").
MAX_RECORD = 256 << 20
SUPPORTED_LINKTYPES = frozenset(int(x) for x in LinkType)


def linktype_name(linktype: int) -> str:
    """Human name of a LINKTYPE_* value for messages."""
    names = {
        6: "IEEE 802.5 Token Ring",
        9: "PPP",
        10: "FDDI",
        104: "Cisco HDLC",
        105: "IEEE 802.11",
        119: "Prism 802.11",
        127: "802.11 radiotap",
        147: "user-defined (DLT_USER0)",
        192: "PPI",
        197: "ERF",
        220: "USB Linux mmapped",
        239: "NFLOG",
        252: "Wireshark upper PDU",
        253: "netlink",
    }
    try:
        return f"{int(linktype)} ({LinkType(linktype).name})"
    except ValueError:
        return f"{linktype} ({names.get(linktype, 'unknown')})"


class CaptureReader:
    """One open capture file. Iterate `batches()` once; read `info`, `report`, `secrets`."""

    FORMAT = "?"

    def __init__(self, path: str, source: ChunkSource) -> None:
        self.path = path
        self.source = source
        self.report = ReadReport()
        self.secrets: list[tuple[int, bytes]] = []  # pcapng Decryption Secrets Blocks
        self.info = CaptureInfo(
            path=path,
            format=self.FORMAT,
            compressed=source.compressed,
            file_size=source.file_size,
            interfaces=(),
        )
        self._next_number = 1  # Wireshark frame.number of the next record
        self._unsupported: dict[int, list[int]] = {}  # linktype -> [count, first frame]

    # -- for format modules -------------------------------------------------------------------

    def _problem(self, frame: int, message: str) -> None:
        self.report.problems.append(CaptureProblem(self.path, frame, message))

    def _chunks(self) -> Iterator[FrameBatch]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------

    def batches(self, batch_size: int = 65536) -> Iterator[FrameBatch]:
        """Frames in file order, at most `batch_size` per batch; problems go to `report`."""
        try:
            for chunk in self._chunks():
                n = len(chunk)
                if n:
                    self._count_unsupported(chunk)
                    for start in range(0, n, batch_size):
                        yield _slice(chunk, start, min(n, start + batch_size))
                del chunk  # not kept alive while the next chunk is read
            if self.source.error:
                self._problem(self._next_number, self.source.error)
        finally:
            self.report.frames = self._next_number - 1
            self._report_unsupported()
            self.source.close()

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has got, against ``info.file_size``."""
        return self.source.bytes_read

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- link types --------------------------------------------------------------------------

    def _count_unsupported(self, chunk: FrameBatch) -> None:
        if all(i.linktype in SUPPORTED_LINKTYPES for i in self.info.interfaces):
            return
        bad = ~np.isin(chunk.linktype, list(SUPPORTED_LINKTYPES))
        if not bad.any():
            return
        lts, first, counts = np.unique(chunk.linktype[bad], return_index=True, return_counts=True)
        numbers = chunk.number[bad]
        for lt, f, c in zip(lts.tolist(), first.tolist(), counts.tolist(), strict=True):
            entry = self._unsupported.setdefault(lt, [0, int(numbers[f])])
            entry[0] += c

    def _report_unsupported(self) -> None:
        for lt, (count, first) in sorted(self._unsupported.items()):
            self._problem(
                first,
                f"link type {linktype_name(lt)} is not supported: {count} frame(s) from "
                f"frame {first} on are counted but not decoded",
            )
        self._unsupported.clear()


def _slice(batch: FrameBatch, start: int, stop: int) -> FrameBatch:
    if start == 0 and stop == len(batch):
        return batch
    s = slice(start, stop)
    return FrameBatch(
        data=batch.data,
        number=batch.number[s],
        ts_ns=batch.ts_ns[s],
        interface=batch.interface[s],
        linktype=batch.linktype[s],
        caplen=batch.caplen[s],
        origlen=batch.origlen[s],
        offset=batch.offset[s],
    )
