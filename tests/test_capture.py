"""Reading capture files: formats, numbering, timestamps, damage. Decoding is in test_decode."""

from __future__ import annotations

import gzip
import random
import struct

import craft
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tdslens.analyzer.capture import open_capture
from tdslens.analyzer.decode import decode_batch
from tdslens.analyzer.frames import CaptureError


def packets(n: int = 5) -> list:
    return [eth() / IP() / TCP(sport=1000 + i) for i in range(n)]


def eth() -> Ether:
    """Ethernet with fixed addresses (scapy would otherwise look them up on the host)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


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


# -- chunking -------------------------------------------------------------------------------


def frames_of(path, chunk_size: int | None = None):
    reader = open_capture(path) if chunk_size is None else open_capture(path, chunk_size)
    rows = []
    for b in reader.batches(batch_size=4):
        for i in range(len(b)):
            rows.append(
                (int(b.number[i]), int(b.ts_ns[i]), int(b.interface[i]), int(b.linktype[i]),
                 int(b.origlen[i]), b.frame_bytes(i))
            )  # fmt: skip
    return rows, reader.report.problems


def varied(n: int = 40) -> list:
    return [eth() / IP() / TCP(sport=i) / Raw(bytes(i * 37 % 1500)) for i in range(n)]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng", "netmon", "pcap.gz", "pcapng.gz"])
def test_small_chunks_give_the_same_frames(tmp_path, fmt):
    """Records straddling chunk ends, and records bigger than a chunk, read the same."""
    pk = varied()
    base = fmt.split(".")[0]
    path = tmp_path / f"x.{base}"
    if base == "pcap":
        craft.write_pcap(path, pk)
    elif base == "pcapng":
        recs = [craft.Rec(p, interface=i % 2) for i, p in enumerate(pk)]
        craft.write_pcapng(path, recs, [craft.Iface(1), craft.Iface(1, tsresol=9)])
    else:
        craft.write_netmon(path, pk)
    if fmt.endswith(".gz"):
        path = craft.gzip_file(path)
    whole, problems = frames_of(path)
    assert problems == []
    assert [r[-1] for r in whole] == [bytes(p) for p in pk]
    for chunk in (64, 100, 1000, 4099):
        assert frames_of(path, chunk) == (whole, [])


# -- damaged files --------------------------------------------------------------------------


def test_pcap_header_only_has_no_frames(tmp_path):
    path = craft.write_pcap(tmp_path / "h.pcap", [])
    rows, problems = frames_of(path)
    assert rows == [] and problems == []


def test_truncated_pcap_header_is_an_error(tmp_path):
    path = tmp_path / "h.pcap"
    path.write_bytes(craft.write_pcap(tmp_path / "x.pcap", []).read_bytes()[:10])
    with pytest.raises(CaptureError, match="truncated"):
        open_capture(path)


@pytest.mark.parametrize("cut", [1, 10, 20, 60])
def test_truncated_last_record_keeps_the_frames_before(tmp_path, cut):
    path = craft.write_pcap(tmp_path / "t.pcap", packets(3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1, 2]
    assert len(problems) == 1 and problems[0].frame == 3 and str(path) in str(problems[0])
    assert "file ends inside" in problems[0].message


def test_record_longer_than_the_file(tmp_path):
    pk = packets(3)
    path = craft.write_pcap(tmp_path / "t.pcap", pk)
    data = bytearray(path.read_bytes())
    third = 24 + 2 * (16 + len(bytes(pk[0])))
    struct.pack_into("<I", data, third + 8, 100_000)  # caplen of frame 3
    path.write_bytes(bytes(data))
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1, 2]
    assert [p.frame for p in problems] == [3]


@pytest.mark.parametrize("which", [1, 2])
def test_absurd_record_length(tmp_path, which):
    pk = packets(4)
    path = craft.write_pcap(tmp_path / "t.pcap", pk)
    data = bytearray(path.read_bytes())
    at = 24 + which * (16 + len(bytes(pk[0])))
    struct.pack_into("<I", data, at + 8, 0x7FFFFFF0)
    path.write_bytes(bytes(data))
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == list(range(1, which + 1))
    assert [p.frame for p in problems] == [which + 1]
    assert "absurd" in problems[0].message


def test_absurd_snaplen_is_reported_but_read(tmp_path):
    path = craft.write_pcap(tmp_path / "s.pcap", packets(2), snaplen=0xFFFFFFFF)
    rows, problems = frames_of(path)
    assert len(rows) == 2
    assert len(problems) == 1 and "snap length" in problems[0].message


def test_pcapng_bad_block_length_stops_with_a_problem(tmp_path):
    path = craft.write_pcapng(tmp_path / "b.pcapng", packets(3))
    data = bytearray(path.read_bytes())
    shb_len = struct.unpack_from("<I", data, 4)[0]
    idb_len = struct.unpack_from("<I", data, shb_len + 4)[0]
    epb = shb_len + idb_len
    epb_len = struct.unpack_from("<I", data, epb + 4)[0]
    struct.pack_into("<I", data, epb + epb_len + 4, 7)  # second EPB: impossible length
    path.write_bytes(bytes(data))
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1]
    assert [p.frame for p in problems] == [2] and "impossible length" in problems[0].message


def test_pcapng_unknown_interface_stops_with_a_problem(tmp_path):
    recs = [craft.Rec(p, interface=0) for p in packets(2)] + [craft.Rec(packets(1)[0], interface=5)]
    path = craft.write_pcapng(tmp_path / "i.pcapng", recs)
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1, 2]
    assert [p.frame for p in problems] == [3] and "unknown interface" in problems[0].message


def test_pcapng_truncated_block(tmp_path):
    path = craft.write_pcapng(tmp_path / "t.pcapng", packets(3))
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1, 2]
    assert [p.frame for p in problems] == [3]


def test_pcapng_bad_byte_order_magic_in_second_section(tmp_path):
    one = craft.Section(packets(2))
    two = craft.Section(packets(2))
    path = craft.write_pcapng_sections(tmp_path / "s.pcapng", [one, two])
    data = bytearray(path.read_bytes())
    second = data.index(b"\x0a\x0d\x0d\x0a", 4)
    struct.pack_into("<I", data, second + 8, 0xDEADBEEF)
    path.write_bytes(bytes(data))
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1, 2]
    assert [p.frame for p in problems] == [3] and "byte-order" in problems[0].message


def test_netmon_frame_table_past_the_end(tmp_path):
    path = craft.write_netmon(tmp_path / "n.cap", packets(3))
    data = path.read_bytes()
    path.write_bytes(data[:-4])  # the table loses its last entry
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1, 2]
    assert [p.frame for p in problems] == [3]


def test_netmon_record_past_the_end(tmp_path):
    path = craft.write_netmon(tmp_path / "n.cap", packets(3))
    data = bytearray(path.read_bytes())
    table = struct.unpack_from("<I", data, 24)[0]
    struct.pack_into("<I", data, table + 4, len(data) - 8)  # frame 2 points near the end
    path.write_bytes(bytes(data))
    rows, problems = frames_of(path)
    assert [r[0] for r in rows] == [1]
    assert [p.frame for p in problems] == [2]


def test_cut_gzip_stream_keeps_what_was_decompressed(tmp_path):
    path = craft.gzip_file(craft.write_pcap(tmp_path / "g.pcap", varied(200)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rows, problems = frames_of(path)
    assert 0 < len(rows) < 200
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert problems and problems[-1].frame >= len(rows) + 1


def test_gzip_of_garbage_is_an_error(tmp_path):
    path = tmp_path / "g.bin"
    with gzip.open(path, "wb") as f:
        f.write(b"nothing to see here, not a capture" * 3)
    with pytest.raises(CaptureError, match="magic"):
        open_capture(path)


def test_gzip_detected_by_content_not_name(tmp_path):
    src = craft.write_pcap(tmp_path / "a.pcap", packets(2))
    path = craft.gzip_file(src, tmp_path / "looks_plain.pcap")
    reader = open_capture(path)
    assert reader.info.compressed and len(frames_of(path)[0]) == 2


def test_unsupported_link_type_is_one_problem_and_counted(tmp_path):
    ifaces = [craft.Iface(1), craft.Iface(105)]
    recs = [craft.Rec(p, interface=i % 2) for i, p in enumerate(packets(6))]
    path = craft.write_pcapng(tmp_path / "u.pcapng", recs, ifaces)
    reader = open_capture(path)
    cols = [decode_batch(b)[0] for b in reader.batches(batch_size=2)]
    assert sum(len(c) for c in cols) == 3  # the Ethernet frames
    assert reader.report.frames == 6
    [problem] = reader.report.problems
    assert problem.frame == 2 and "105" in problem.message and "3 frame(s)" in problem.message


def test_secrets_are_kept(tmp_path):
    dsb = craft.secrets_block("<", 0x544C534B, b"CLIENT_RANDOM aa bb\n")
    path = craft.write_pcapng(tmp_path / "k.pcapng", packets(2), blocks=[(1, dsb)])
    reader = open_capture(path)
    rows = [len(b) for b in reader.batches()]
    assert sum(rows) == 2
    assert reader.secrets == [(0x544C534B, b"CLIENT_RANDOM aa bb\n")]


def test_no_traceback_on_any_truncation_or_mutation(tmp_path):
    """Cut and corrupt valid files everywhere: CaptureError or problems, never a traceback."""
    sources = [
        craft.write_pcap(tmp_path / "a.pcap", varied(6)),
        craft.write_pcapng(tmp_path / "a.pcapng", [craft.Rec(p, block=b) for p, b in
                           zip(varied(6), ["epb", "spb", "pb"] * 2, strict=True)]),
        craft.write_netmon(tmp_path / "a.cap", varied(6)),
    ]  # fmt: skip
    rng = random.Random(7)
    victim = tmp_path / "victim"
    for src in sources:
        data = src.read_bytes()
        cases = [data[:k] for k in range(0, len(data), 7)]
        for _ in range(150):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            cases.append(bytes(mutated))
        for blob in cases:
            victim.write_bytes(blob)
            try:
                reader = open_capture(victim)
            except CaptureError:
                continue
            for b in reader.batches():
                decode_batch(b)
                decode_batch(b, fast=False)
