"""Reading capture files: formats, numbering, timestamps, damage. Decoding is in test_decode."""

from __future__ import annotations

import craft
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.frames import CaptureError


def packets(n: int = 5) -> list:
    return [Ether() / IP() / TCP(sport=1000 + i) for i in range(n)]


def read_all(path):
    reader = open_capture(path)
    rows = []
    for b in reader.batches(batch_size=3):
        for i in range(len(b)):
            rows.append((int(b.number[i]), int(b.ts_ns[i]), b.frame_bytes(i)))
    return reader, rows


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcap_numbers_times_and_bytes(tmp_path, nanosecond, big_endian):
    pk = packets()
    path = craft.write_pcap(tmp_path / "a.pcap", pk, nanosecond=nanosecond, big_endian=big_endian)
    reader, rows = read_all(path)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[2] for r in rows] == [bytes(p) for p in pk]
    unit = 1 if nanosecond else 1000
    assert [r[1] for r in rows] == [
        (craft.BASE_TS_NS + i * craft.STEP_NS) // unit * unit for i in range(5)
    ]
    assert reader.report.frames == 5 and reader.report.problems == []
    assert reader.info.format == ("pcap-ns" if nanosecond else "pcap")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty"):
        open_capture(path)


def test_wrong_magic_is_an_error(tmp_path):
    path = tmp_path / "garbage.pcap"
    path.write_bytes(b"this is not a capture file at all" * 10)
    with pytest.raises(CaptureError, match="magic"):
        open_capture(path)
