"""Microsoft Network Monitor 2.x capture files (``.cap``, magic "GMBU").

Layout (documented in the Network Monitor 3.x help; Wireshark's wiretap/netmon.c describes it
too): a 128-byte header (magic, minor and major version, network type, capture start as a
SYSTEMTIME, then offset and length of the frame table); frames anywhere in the file; and a
frame table of little-endian uint32 file offsets, one per frame, in frame order. Each frame:
uint64 time since the capture start in microseconds, uint32 original length, uint32 captured
length, the bytes, and from version 2.1 on a trailer whose first two bytes are the frame's
own network type (2.1: 2 bytes, 2.2: 6, 2.3 and later: 15, adding the frame's UTC time).

Frames are located through the table (they need not be contiguous), so the file is memory
mapped (a gzipped one is first decompressed to a temporary file): memory stays flat and the
frames are gathered with numpy. Metadata records (network types 0xFFE0 and 0xFFFB-0xFFFF:
process info, DNS cache, filters) are not packets; like Wireshark we skip them unnumbered.
"""

from __future__ import annotations

import calendar
import itertools
import mmap
import struct
import tempfile
from collections.abc import Iterator

import numpy as np

from tdslens.analyzer.capture import byteviews
from tdslens.analyzer.capture.reader import MAX_RECORD, CaptureReader
from tdslens.analyzer.capture.source import ChunkSource
from tdslens.analyzer.frames import CaptureError, FrameBatch, Interface, LinkType

MAGIC_V2 = b"GMBU"
MAGIC_V1 = b"RTSS"
HEADER_SIZE = 128
RECORD_HEADER = 16
_HEADER = struct.Struct("<4sBBH8HII")

# NetMon network type -> LINKTYPE. 7, 8 and 9 are used by 2.x for tunnels, wireless WAN and
# raw IP frames, all plain IP packets. 0 shows up on Ethernet in some VPN captures.
NETWORK_TO_LINKTYPE = {
    0: LinkType.ETHERNET,
    1: LinkType.ETHERNET,
    2: 6,  # Token Ring
    3: 10,  # FDDI
    6: 105,  # 802.11 (NetMon's own radio header; not decoded)
    7: LinkType.RAW,
    8: LinkType.RAW,
    9: LinkType.RAW,
}
PCAP_BASE = 0xE000  # network = 0xE000 | LINKTYPE for frames converted from pcap
METADATA = frozenset({0xFFE0, 0xFFFB, 0xFFFC, 0xFFFD, 0xFFFE, 0xFFFF})
FILETIME_UNIX_EPOCH = 116444736000000000  # 1970-01-01 in 100 ns units since 1601
UNKNOWN_LINKTYPE = 0xFFFF  # a LINKTYPE nobody uses: reported as unsupported


def trailer_size(major: int, minor: int) -> int:
    if major > 2 or (major == 2 and minor >= 3):
        return 15
    return {0: 0, 1: 2, 2: 6}[minor] if major == 2 else 0


def network_linktype(network: int) -> int:
    if network & 0xF000 == PCAP_BASE:
        return network & 0x0FFF
    return int(NETWORK_TO_LINKTYPE.get(network, UNKNOWN_LINKTYPE))


class NetmonReader(CaptureReader):
    """Reads a Network Monitor 2.x file through its frame table."""

    FORMAT = "netmon2"

    def __init__(self, path: str, source: ChunkSource) -> None:
        super().__init__(path, source)
        self._map = self._open_map(path, source)
        mm = self._map
        if len(mm) < HEADER_SIZE:
            raise CaptureError(path, "Network Monitor header is truncated")
        fields = _HEADER.unpack_from(mm, 0)
        _magic, minor, major, network = fields[:4]
        year, month, _dow, day, hour, minute, second, msec = fields[4:12]
        table_offset, table_length = fields[12:14]
        if major != 2:
            raise CaptureError(path, f"Network Monitor version {major}.{minor} is not supported")
        self.trailer = trailer_size(major, minor)
        try:
            start = calendar.timegm((year, month, day, hour, minute, second))
        except (ValueError, OverflowError):
            start = 0
            self._problem(1, "capture start time in the header is invalid; times start at 0")
        # SYSTEMTIME carries no time zone; we read it as UTC.
        self.start_ns = start * 1_000_000_000 + msec * 1_000_000
        count = table_length // 4
        if table_length % 4:
            self._problem(1, f"frame table length {table_length} is not a multiple of 4")
        if table_offset + 4 * count > len(mm):
            have = max(0, (len(mm) - table_offset) // 4)
            self._problem(
                have + 1,
                f"frame table claims {count} frames but the file ends after {have}; reading those",
            )
            count = have
        if count == 0 and table_length:
            raise CaptureError(path, "the frame table lies outside the file")
        self.table = np.frombuffer(mm, dtype="<u4", count=count, offset=table_offset).astype(
            np.int64
        )
        self.file_linktype = network_linktype(network)
        iface = Interface(index=0, linktype=self.file_linktype, snaplen=0, ts_resolution_ns=100)
        self.info = type(self.info)(
            path, self.FORMAT, source.compressed, source.file_size, (iface,)
        )

    @staticmethod
    def _open_map(path: str, source: ChunkSource) -> mmap.mmap | bytes:
        """The whole (decompressed) file, mapped rather than read into memory."""
        try:
            if not source.compressed:
                return mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
            with tempfile.TemporaryFile() as spool:
                source.copy_rest(spool)
                spool.flush()
                return mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return b""

    def _slices(self, rows: int = 1 << 16) -> Iterator[np.ndarray]:
        """Frame-table slices whose frames lie close together (about one chunk of the file).

        Frames are usually in file order; where the table jumps backwards (some files keep a
        statistics record physically first but last in the table) a new slice starts."""
        table, span = self.table, self.source.chunk_size
        breaks = np.flatnonzero(table[1:] < table[:-1]) + 1
        bounds = [0, *breaks.tolist(), len(table)]
        for run_start, run_stop in itertools.pairwise(bounds):
            run = table[run_start:run_stop]
            start = 0
            while start < len(run):
                far = int(np.searchsorted(run, run[start] + span, side="left"))
                stop = max(start + 1, min(start + rows, far))
                yield run[start:stop]
                start = stop

    def _chunks(self) -> Iterator[FrameBatch]:
        mm = self._map
        size = len(mm)
        g = byteviews.gather
        for offs in self._slices():
            whole = offs + RECORD_HEADER + self.trailer <= size
            delta = g(byteviews.view(mm, "<u8"), offs).astype(np.uint64)
            origlen, caplen = byteviews.u32_pairs(mm, "<", offs + 8)
            whole &= (caplen <= MAX_RECORD) & (offs + RECORD_HEADER + caplen + self.trailer <= size)
            bad = None
            if not whole.all():
                bad = int(np.flatnonzero(~whole)[0])
                offs, delta, origlen, caplen = offs[:bad], delta[:bad], origlen[:bad], caplen[:bad]
            data_off = offs + RECORD_HEADER
            if self.trailer:
                network = g(byteviews.view(mm, "<u2"), data_off + caplen).astype(np.int64)
            else:
                network = np.zeros(len(offs), dtype=np.int64)
            packet = ~np.isin(network, list(METADATA)) if self.trailer else np.ones(len(offs), bool)
            n = int(packet.sum())
            if self.trailer:
                linktype = np.array(
                    [network_linktype(x) for x in network[packet].tolist()], dtype=np.int32
                )
            else:
                linktype = np.full(n, self.file_linktype, dtype=np.int32)
            # Microseconds as unsigned, times ten, read as signed 100 ns units (as NetMon does).
            ts_ns = self.start_ns + (delta[packet] * np.uint64(10)).view(np.int64) * 100
            if self.trailer >= 15:
                # 2.3 trailers hold the frame's own UTC time (100 ns units since 1601): finer,
                # and free of the header's time-zone-less start time. Wireshark prefers it too.
                utc = g(byteviews.view(mm, "<u8"), (data_off + caplen + 6)[packet]).view(np.int64)
                ts_ns = np.where(utc > 0, (utc - FILETIME_UNIX_EPOCH) * 100, ts_ns)
            iface_of = self._note_interfaces(linktype)
            # The batch owns a copy of the bytes its frames span, like a chunk of a pcap file:
            # consumers may keep it, and the map can be dropped when reading ends.
            lo = int(data_off.min()) if len(data_off) else 0
            hi = int((data_off + caplen).max()) if len(data_off) else 0
            batch = FrameBatch(
                data=bytes(mm[lo:hi]),
                number=np.arange(self._next_number, self._next_number + n, dtype=np.int64),
                ts_ns=ts_ns,
                interface=iface_of[linktype] if n else np.zeros(0, dtype=np.int32),
                linktype=linktype,
                caplen=caplen[packet],
                origlen=origlen[packet],
                offset=data_off[packet] - lo,
            )
            self._next_number += n
            yield batch
            if bad is not None:
                self._problem(
                    self._next_number,
                    "frame table points at a record that does not fit in the file; "
                    "the rest of the file is not read",
                )
                return

    def _note_interfaces(self, linktype: np.ndarray) -> np.ndarray:
        """Per-frame network types: each link type seen becomes an interface of its own.

        Returns a lookup array: interface index by link type."""
        ifaces = list(self.info.interfaces)
        known = {i.linktype for i in ifaces}
        for lt in np.unique(linktype).tolist():
            if lt not in known:
                ifaces.append(Interface(len(ifaces), lt, 0, ts_resolution_ns=100))
                known.add(lt)
        if len(ifaces) != len(self.info.interfaces):
            self.info = type(self.info)(
                self.path, self.FORMAT, self.info.compressed, self.info.file_size, tuple(ifaces)
            )
        lookup = np.zeros(max(known) + 1, dtype=np.int32)
        for i in ifaces:
            lookup[i.linktype] = i.index
        return lookup
