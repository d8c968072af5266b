"""Classic libpcap files: 24-byte file header, then (16-byte record header, bytes) records.

Variants told apart by the magic number: microsecond or nanosecond timestamps, either byte
order, and Alexey Kuznetzov's "modified" pcap (24-byte record headers). Reference:
draft-ietf-opsawg-pcap (File Header, Packet Record).

Speed: the only sequential work is following record lengths, a tight loop that appends record
offsets; every header field is then gathered for all records at once with numpy.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator

import numpy as np

from tdslens.analyzer.capture import byteviews
from tdslens.analyzer.capture.reader import MAX_RECORD, CaptureReader
from tdslens.analyzer.capture.source import ChunkSource
from tdslens.analyzer.frames import CaptureError, FrameBatch, Interface

FILE_HEADER = 24
# magic as read little-endian -> (byte order, ns per timestamp fraction unit, record header size)
MAGICS: dict[int, tuple[str, int, int]] = {
    0xA1B2C3D4: ("<", 1000, 16),
    0xD4C3B2A1: (">", 1000, 16),
    0xA1B23C4D: ("<", 1, 16),
    0x4D3CB2A1: (">", 1, 16),
    0xA1B2CD34: ("<", 1000, 24),  # modified pcap (Kuznetzov)
    0x34CDB2A1: (">", 1000, 24),
}


class PcapReader(CaptureReader):
    """Reads a classic pcap file in chunks."""

    FORMAT = "pcap"

    def __init__(self, path: str, source: ChunkSource) -> None:
        super().__init__(path, source)
        if not source.fill(FILE_HEADER):
            raise CaptureError(path, "pcap file header is truncated")
        magic = struct.unpack_from("<I", source.buf, source.pos)[0]
        self.byte_order, self.frac_ns, self.record_header = MAGICS[magic]
        if self.frac_ns == 1:
            self.FORMAT = "pcap-ns"
        _m, _maj, _min, _zone, _sig, snaplen, network = struct.unpack_from(
            self.byte_order + "IHHiIII", source.buf, source.pos
        )
        source.pos += FILE_HEADER
        self.linktype = network & 0xFFFF  # upper bits: FCS length flags
        self.max_caplen = MAX_RECORD
        if snaplen > MAX_RECORD:
            self._problem(1, f"absurd snap length {snaplen} in the file header; ignored")
        iface = Interface(
            index=0, linktype=self.linktype, snaplen=snaplen, ts_resolution_ns=self.frac_ns
        )
        self.info = type(self.info)(
            path=path,
            format=self.FORMAT,
            compressed=source.compressed,
            file_size=source.file_size,
            interfaces=(iface,),
        )

    def _walk(self, buf: bytes, off: int) -> tuple[array, int]:
        """Offsets of the complete records from `off`, and where the first incomplete one starts."""
        caplen_at = struct.Struct(self.byte_order + "8xI").unpack_from
        hdr = self.record_header
        offsets = array("q")
        append = offsets.append
        n = len(buf)
        last = n - hdr
        while off <= last:
            nxt = off + hdr + caplen_at(buf, off)[0]
            if nxt > n:
                break
            append(off)
            off = nxt
        return offsets, off

    def _chunks(self) -> Iterator[FrameBatch]:
        src = self.source
        hdr = self.record_header
        bo = self.byte_order
        while True:
            if not src.fill(hdr):
                if src.available:
                    self._problem(
                        self._next_number,
                        f"file ends inside a record header ({src.available} of {hdr} bytes)",
                    )
                return
            buf = src.buf
            offsets, stop = self._walk(buf, src.pos)
            if offsets:
                offs = np.frombuffer(offsets, dtype=np.int64)
                caplen, origlen = byteviews.u32_pairs(buf, bo, offs + 8)
                bad = np.flatnonzero(caplen > self.max_caplen)
                if len(bad):
                    # Damage: the walk went on through garbage; keep what came before.
                    k = int(bad[0])
                    bad_len = caplen[k]
                    offs = offs[:k]
                    caplen, origlen = caplen[:k], origlen[:k]
                    stop = -1
                batch = self._batch(buf, offs, caplen, origlen)
                self._next_number += len(offs)
                yield batch
                del batch  # the consumer has it: this frame must not keep the chunk alive
                if stop < 0:
                    self._problem(
                        self._next_number,
                        f"record length {int(bad_len)} is absurd; the rest of the file is not read",
                    )
                    return
            del buf  # the next fill replaces the chunk; only one is in memory at a time
            src.pos = stop
            # The record at `stop` is incomplete in this chunk: check it, then read on.
            if not src.fill(hdr):
                continue  # reported at the top of the loop
            caplen0 = struct.unpack_from(bo + "I", src.buf, src.pos + 8)[0]
            if caplen0 > self.max_caplen:
                self._problem(
                    self._next_number,
                    f"record length {caplen0} is absurd; the rest of the file is not read",
                )
                return
            if not src.fill(hdr + caplen0):
                self._problem(
                    self._next_number,
                    f"file ends inside the record: {src.available - hdr} of {caplen0} "
                    "captured bytes present",
                )
                return

    def _batch(
        self, buf: bytes, offs: np.ndarray, caplen: np.ndarray, origlen: np.ndarray
    ) -> FrameBatch:
        n = len(offs)
        sec, frac = byteviews.u32_pairs(buf, self.byte_order, offs)
        return FrameBatch(
            data=buf,
            number=np.arange(self._next_number, self._next_number + n, dtype=np.int64),
            ts_ns=sec * 1_000_000_000 + frac * self.frac_ns,
            interface=np.zeros(n, dtype=np.int32),
            linktype=np.full(n, self.linktype, dtype=np.int32),
            caplen=caplen,
            origlen=origlen,
            offset=offs + self.record_header,
        )
