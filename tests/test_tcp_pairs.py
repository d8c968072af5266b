"""PairArchive: the ended pairs' records the TCP engine keeps for Wireshark's numbering.

The engine's use of it is checked against tshark in test_tcp_tshark.py
(`pair_records_archived_*`); here the archive's own contract, on batch boundaries."""

from __future__ import annotations

import random

import pytest

from tdslens.analyzer.tcp_pairs import PairArchive


def test_records_come_back_across_merges_and_replacements() -> None:
    rng = random.Random(7)
    archive = PairArchive(12, batch=5)
    expected: dict[bytes, tuple[int, int, int]] = {}
    keys = [rng.getrandbits(96).to_bytes(12, "big") for _ in range(300)]
    keys += [b"\0" * 12, b"\0" * 11 + b"\1", b"\1" + b"\0" * 11]  # nul bytes at either end
    for stream in range(2000):
        key = rng.choice(keys)
        record = (stream, rng.randrange(-1, 1 << 32), rng.randrange(-1, 1 << 32))
        archive.put(key, record)
        expected[key] = record
        probe = rng.choice(keys)
        assert archive.get(probe) == expected.get(probe)
    assert dict(archive.records()) == expected
    assert archive.get(b"\2" * 12) is None


def test_merge_keeps_the_columns_sorted_and_unique() -> None:
    archive = PairArchive(4, batch=3)
    for i in (5, 1, 9, 1, 3, 7, 9, 2, 8, 0):
        archive.put(i.to_bytes(4, "big"), (i, 0, 0))
    archive.put((4).to_bytes(4, "big"), (4, 0, 0))
    keys = [k for k, _ in archive.records()]
    assert keys == sorted(set(keys)) and len(keys) == 9


def test_a_key_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="3 bytes in a 12-byte archive"):
        PairArchive(12).put(b"abc", (0, 0, 0))
