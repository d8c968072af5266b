"""What a capture reader hands to the layers above: frames as columns, plus what went wrong.

Why columns: support captures hold millions of frames. One Python object per frame costs more
than tshark spends on the whole frame, so readers return `FrameBatch`es (numpy columns over one
bytes buffer) and the decoding layer above works on whole columns at once. Frame numbers are
Wireshark's `frame.number`: 1-based, in file order, counting every record the file holds
(including ones we cannot decode), so a user can open the same frame in Wireshark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class LinkType(IntEnum):
    """LINKTYPE_* values (tcpdump.org link-layer header types) that tdslens decodes."""

    NULL = 0  # BSD loopback: 4-byte address family in the writer's byte order
    ETHERNET = 1
    RAW = 101  # raw IPv4/IPv6, the value pcap files carry
    RAW_DLT_12 = 12  # DLT_RAW on some BSDs/OpenBSD, written by older tools
    RAW_DLT_14 = 14  # DLT_RAW on others
    LOOP = 108  # OpenBSD loopback: address family in network byte order
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


@dataclass(frozen=True, slots=True)
class Interface:
    """One capture interface (pcapng IDB; pcap and NetMon files have exactly one per link type)."""

    index: int
    linktype: int
    snaplen: int
    name: str = ""
    ts_resolution_ns: int = 1000  # nanoseconds per timestamp unit (pcapng if_tsresol)


@dataclass(frozen=True, slots=True)
class CaptureProblem:
    """Something in the file we could not read as written. Reported, never silently dropped.

    `frame` is the 1-based number of the frame it concerns, or the number the next frame would
    have had when the damage sits between records (e.g. a truncated last record); None when the
    problem is in no frame (a key log line), and then `message` says where it is.
    """

    path: str
    frame: int | None
    message: str

    def __str__(self) -> str:
        where = "" if self.frame is None else f"frame {self.frame}: "
        return f"{self.path}: {where}{self.message}"


class CaptureError(Exception):
    """The file cannot be read at all (nothing to analyse): wrong magic, empty, unreadable."""

    def __init__(self, path: str, message: str, frame: int | None = None) -> None:
        self.path = path
        self.frame = frame
        self.message = message
        where = f"{path}: frame {frame}" if frame is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    """Facts about the file as a whole, for the report's summary."""

    path: str
    format: str  # "pcap", "pcap-ns", "pcapng", "netmon2"
    compressed: bool  # gzip-wrapped
    file_size: int  # bytes on disk (compressed size when gzip)
    interfaces: tuple[Interface, ...]


@dataclass(slots=True)
class FrameBatch:
    """Consecutive frames of one capture as parallel numpy columns over one buffer.

    Row i describes frame ``number[i]``; its captured bytes are
    ``data[offset[i] : offset[i] + caplen[i]]`` and start with the link-layer header of
    ``linktype[i]``. ``caplen < origlen`` means the snap length cut the frame: the missing bytes
    are a gap, never zeros. Frames that could not be read at all are absent from the columns but
    counted in the numbering and reported as a CaptureProblem.
    """

    data: bytes | memoryview
    number: np.ndarray  # int64, 1-based frame numbers
    ts_ns: np.ndarray  # int64, nanoseconds since the Unix epoch
    interface: np.ndarray  # int32, interface index (0 for pcap)
    linktype: np.ndarray  # int32, LINKTYPE_* of the frame's interface
    caplen: np.ndarray  # int64, bytes present in data
    origlen: np.ndarray  # int64, bytes the frame had on the wire
    offset: np.ndarray  # int64, start of the frame in data

    def __len__(self) -> int:
        return len(self.number)

    def frame_bytes(self, i: int) -> bytes:
        """The captured bytes of row i (a copy; for the slow paths and tests)."""
        start = int(self.offset[i])
        return bytes(self.data[start : start + int(self.caplen[i])])


@dataclass(slots=True)
class ReadReport:
    """What a whole read produced besides frames: totals and every problem, in frame order."""

    frames: int = 0
    problems: list[CaptureProblem] = field(default_factory=list)
