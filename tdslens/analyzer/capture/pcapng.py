"""pcapng files: sections of blocks; packets in EPB, SPB and the obsolete Packet Block.

Reference: draft-ietf-opsawg-pcapng. What matters for reading correctly:

* Each Section Header Block (SHB) sets the byte order of its section and resets the interface
  list; interface ids in packet blocks count from 0 within the section. We give every interface
  a global index (``FrameBatch.interface``) in order of appearance across the file.
* Each Interface Description Block (IDB) has its own link type, snap length and timestamp
  resolution (``if_tsresol``: 10**-n or, with the high bit set, 2**-n seconds) and offset.
* A Simple Packet Block (SPB) belongs to the section's first interface, has no timestamp and
  its captured length is the block's room, limited by that interface's snap length.
* Decryption Secrets Blocks are kept in ``reader.secrets``; every other block is skipped by its
  length. Frame numbers count what Wireshark shows as frames: packet blocks, and also systemd
  journal and custom blocks (counted, then skipped: they are not packets).

Speed: EPBs are the hot case; the walk appends their offsets and the fields are gathered with
numpy afterwards. Everything else is handled in Python when met.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tdslens.analyzer.capture import byteviews
from tdslens.analyzer.capture.reader import MAX_RECORD, CaptureReader
from tdslens.analyzer.capture.source import ChunkSource
from tdslens.analyzer.frames import CaptureError, FrameBatch, Interface

SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
SHB, IDB, PB, SPB, EPB, DSB = 0x0A0D0D0A, 1, 2, 3, 6, 0x0000000A
# Blocks that are not packets but that Wireshark still shows (and numbers) as frames:
# systemd Journal Export Blocks and custom blocks (copyable or not).
NUMBERED_NON_PACKETS = frozenset({9, 0x00000BAD, 0x40000BAD})
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, IF_NAME, IF_TSRESOL, IF_TSOFFSET = 0, 2, 9, 14
MAX_BLOCK = MAX_RECORD + 4096


@dataclass(frozen=True, slots=True)
class _Clock:
    """How one interface's timestamp units become Unix nanoseconds."""

    units_per_second: int
    offset_s: int = 0

    def to_ns(self, units: np.ndarray) -> np.ndarray:
        """`units` is uint64. Truncates like Wireshark (whole ns, never rounded up)."""
        ups = self.units_per_second
        base = self.offset_s * 1_000_000_000
        if ups <= 1_000_000_000 and 1_000_000_000 % ups == 0:
            return units.astype(np.int64) * (1_000_000_000 // ups) + base
        if ups > 1_000_000_000 and ups % 1_000_000_000 == 0:
            return (units // np.uint64(ups // 1_000_000_000)).astype(np.int64) + base
        sec = units // np.uint64(ups)
        frac = units % np.uint64(ups)
        if ups < (1 << 33):  # frac * 1e9 stays below 2**63
            ns = frac * np.uint64(1_000_000_000) // np.uint64(ups)
            return sec.astype(np.int64) * 1_000_000_000 + ns.astype(np.int64) + base
        # Exotic resolutions: exact integer arithmetic in Python.
        vals = [
            s * 1_000_000_000 + f * 1_000_000_000 // ups
            for s, f in zip(sec.tolist(), frac.tolist(), strict=True)
        ]
        return np.array(vals, dtype=np.int64) + base

    def one(self, units: int) -> int:
        return int(self.to_ns(np.array([units], dtype=np.uint64))[0])


class PcapngReader(CaptureReader):
    """Reads a pcapng file in chunks, section by section."""

    FORMAT = "pcapng"

    def __init__(self, path: str, source: ChunkSource) -> None:
        super().__init__(path, source)
        self._interfaces: list[Interface] = []  # every interface of the file, global index
        self._clocks: list[_Clock] = []
        self._section_first = 0  # global index of the current section's interface 0
        self.byte_order = "<"
        if not source.fill(12):
            raise CaptureError(path, "pcapng section header is truncated")
        problem = self._section_header()
        if problem:
            raise CaptureError(path, problem)

    # -- blocks other than EPB -----------------------------------------------------------------

    def _section_header(self) -> str | None:
        """Parse the SHB at `source.pos` (it must be complete after fill); None if fine."""
        src = self.source
        if not src.fill(12):
            return "section header block is truncated"
        bom = struct.unpack_from("<I", src.buf, src.pos + 8)[0]
        if bom == BYTE_ORDER_MAGIC:
            self.byte_order = "<"
        elif bom == struct.unpack(">I", struct.pack("<I", BYTE_ORDER_MAGIC))[0]:
            self.byte_order = ">"
        else:
            return f"section header has a bad byte-order magic {bom:#010x}"
        blen = struct.unpack_from(self.byte_order + "I", src.buf, src.pos + 4)[0]
        if blen < 28 or blen % 4 or blen > MAX_BLOCK:
            return f"section header block has an impossible length {blen}"
        if not src.fill(blen):
            return "section header block is truncated"
        src.pos += blen
        self._section_first = len(self._interfaces)
        return None

    def _interface(self, buf: bytes, off: int, blen: int) -> None:
        bo = self.byte_order
        linktype, _reserved, snaplen = struct.unpack_from(bo + "HHI", buf, off + 8)
        name, ups, offset_s = "", 1_000_000, 0
        for code, value in _options(bo, buf, off + 16, off + blen - 4):
            if code == IF_NAME:
                name = value.rstrip(b"\0").decode("utf-8", "replace")
            elif code == IF_TSRESOL and value:
                r = value[0]
                ups = 1 << (r & 0x7F) if r & 0x80 else 10**r
            elif code == IF_TSOFFSET and len(value) == 8:
                offset_s = struct.unpack(bo + "q", value)[0]
        index = len(self._interfaces)
        ns_per_unit = max(1, 1_000_000_000 // ups) if ups <= 1_000_000_000 else 1
        self._interfaces.append(Interface(index, linktype, snaplen, name, ns_per_unit))
        self._clocks.append(_Clock(ups, offset_s))
        self.info = type(self.info)(
            self.path,
            self.FORMAT,
            self.info.compressed,
            self.info.file_size,
            tuple(self._interfaces),
        )

    def _global(self, local: int) -> int | None:
        g = self._section_first + local
        return g if g < len(self._interfaces) else None

    def _special(self, btype: int, buf: bytes, off: int, blen: int, number: int) -> tuple | None:
        """A non-EPB block: returns a frame (iface, ts_ns, caplen, origlen, data offset) for
        SPB/PB, or None. Interfaces and secrets are recorded as a side effect."""
        bo = self.byte_order
        if btype == IDB and blen >= 20:
            self._interface(buf, off, blen)
        elif btype == DSB and blen >= 20:
            stype, slen = struct.unpack_from(bo + "II", buf, off + 8)
            self.secrets.append((stype, bytes(buf[off + 16 : off + 16 + min(slen, blen - 20)])))
        elif btype == SPB and blen >= 16:
            g = self._global(0)
            if g is None:
                self._problem(number, "simple packet block before any interface; skipped")
                return ("skip",)
            origlen = struct.unpack_from(bo + "I", buf, off + 8)[0]
            caplen = min(origlen, blen - 16)
            snap = self._interfaces[g].snaplen
            if snap:
                caplen = min(caplen, snap)
            return (g, 0, caplen, origlen, off + 12)
        elif btype in NUMBERED_NON_PACKETS:
            return ("skip",)  # a frame number, but nothing for us to decode
        elif btype == EPB:  # shorter than its fixed fields
            self._problem(number, f"enhanced packet block of {blen} bytes is too short; skipped")
            return ("skip",)
        elif btype == PB and blen >= 32:
            iface, _drops, hi, lo, caplen, origlen = struct.unpack_from(bo + "HHIIII", buf, off + 8)
            g = self._global(iface)
            if g is None or caplen > blen - 32:
                self._problem(number, "damaged packet block (bad interface or length); skipped")
                return ("skip",)
            return (g, self._clocks[g].one((hi << 32) | lo), caplen, origlen, off + 28)
        return None

    # -- the walk ------------------------------------------------------------------------------

    def _walk(self, buf: bytes, off: int) -> tuple[array, dict[int, tuple], int]:
        """Blocks from `off` until an incomplete/odd block or an SHB: EPB offsets (and, for
        other packet blocks, their decoded fields keyed by row) and where the walk stopped."""
        head = struct.Struct(self.byte_order + "II").unpack_from
        offsets = array("q")
        append = offsets.append
        special: dict[int, tuple] = {}
        n = len(buf)
        while off + 12 <= n:
            btype, blen = head(buf, off)
            nxt = off + blen
            if btype == EPB and blen >= 32 and nxt <= n:
                append(off)
                off = nxt
                continue
            if nxt > n or blen < 12 or blen % 4 or btype == SHB:
                break
            frame = self._special(btype, buf, off, blen, self._next_number + len(offsets))
            if frame is not None:
                special[len(offsets)] = frame
                append(off)
            off = nxt
        return offsets, special, off

    def _chunks(self) -> Iterator[FrameBatch]:
        src = self.source
        while True:
            if not src.fill(12):
                if src.available:
                    self._problem(
                        self._next_number,
                        f"file ends inside a block header ({src.available} bytes)",
                    )
                return
            buf = src.buf
            offsets, special, stop = self._walk(buf, src.pos)
            if offsets:
                batch, bad = self._batch(buf, offsets, special)
                self._next_number += len(offsets) if bad is None else bad
                yield batch
                if bad is not None:
                    return
            src.pos = stop
            if not src.fill(12):
                continue
            btype, blen = struct.unpack_from(self.byte_order + "II", src.buf, src.pos)
            if btype == SHB:
                problem = self._section_header()
                if problem:
                    self._problem(self._next_number, problem + "; the rest of the file is not read")
                    return
                continue
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                self._problem(
                    self._next_number,
                    f"block of type {btype:#x} has an impossible length {blen}; "
                    "the rest of the file is not read",
                )
                return
            if not src.fill(blen):
                self._problem(
                    self._next_number,
                    f"file ends inside a block of type {btype:#x} "
                    f"({src.available} of {blen} bytes present)",
                )
                return

    def _batch(
        self, buf: bytes, offsets: array, special: dict[int, tuple]
    ) -> tuple[FrameBatch, int | None]:
        """Columns for the walked records; also the row of the first damaged EPB, if any."""
        bo = self.byte_order
        offs = np.frombuffer(offsets, dtype=np.int64)
        n = len(offs)
        # Three 8-byte gathers: (block length, interface), (timestamp high, low), (lengths).
        blen, local = byteviews.u32_pairs(buf, bo, offs + 4)
        ts_hi, ts_lo = byteviews.u32_pairs(buf, bo, offs + 12)
        caplen, origlen = byteviews.u32_pairs(buf, bo, offs + 20)
        units = (ts_hi.astype(np.uint64) << np.uint64(32)) | ts_lo.astype(np.uint64)
        data_off = offs + 28
        iface = local + self._section_first
        is_special = np.zeros(n, dtype=bool)
        if special:
            is_special[list(special)] = True
        damaged = ~is_special & ((iface >= len(self._interfaces)) | (caplen > blen - 32))
        bad: int | None = None
        if damaged.any():
            bad = int(np.flatnonzero(damaged)[0])
            self._problem(
                self._next_number + bad,
                "enhanced packet block names an unknown interface or claims more bytes than "
                "it holds; the rest of the file is not read",
            )
        iface = np.where(damaged | is_special, 0, iface)
        ts_ns = np.zeros(n, dtype=np.int64)
        for k in np.unique(iface).tolist():
            if k < len(self._clocks):
                rows = iface == k
                ts_ns[rows] = self._clocks[k].to_ns(units[rows])
        skip = []
        for row, frame in special.items():
            if frame[0] == "skip":
                skip.append(row)
                continue
            iface[row], ts_ns[row], caplen[row], origlen[row], data_off[row] = frame
        number = np.arange(self._next_number, self._next_number + n, dtype=np.int64)
        keep = np.ones(n, dtype=bool)
        keep[skip] = False
        if bad is not None:
            keep[bad:] = False
        if not keep.all():
            number, ts_ns, iface, caplen, origlen, data_off = (
                x[keep] for x in (number, ts_ns, iface, caplen, origlen, data_off)
            )
        linktypes = np.array([i.linktype for i in self._interfaces] or [0], dtype=np.int32)
        batch = FrameBatch(
            data=buf,
            number=number,
            ts_ns=ts_ns,
            interface=iface.astype(np.int32),
            linktype=linktypes[iface],
            caplen=caplen,
            origlen=origlen,
            offset=data_off,
        )
        return batch, bad


def _options(bo: str, buf: bytes, off: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(code, value) of a block's options, stopping at opt_endofopt or the block's end."""
    head = struct.Struct(bo + "HH").unpack_from
    while off + 4 <= end:
        code, length = head(buf, off)
        if code == OPT_END:
            return
        value = bytes(buf[off + 4 : min(end, off + 4 + length)])
        yield code, value
        off += 4 + length + (-length % 4)
