"""benchmarks/generate.py writes what it claims: checked by tshark.

Why: the benchmark captures are also inputs for tdslens's own differential tests (issue 9), so
they must be valid TDS per MS-TDS, reproducible from a seed, and described truthfully by their
manifest (TCP stream count, redirects). Wireshark's dissectors are the independent judge.

Known Wireshark 4.0 gap, not a generator bug: packet-tds.c names ENVCHANGE type 20 (routing,
MS-TDS 2.2.7.9) but does not decode its value and shows the rest of that token as
"Token - Unknown" without an expert info; so the routing target is checked here on the raw
TCP payload instead. Likewise Wireshark 4.0 does not know TDS 8.0 (strict encryption: TLS first,
ALPN "tds/8.0"): on those connections it takes the ClientHello for a TDS packet of "Unknown
Packet Type: 22" and then sees undissected segments; the bytes are correct TLS records, and
Wireshark raises no expert info for them.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATE = REPO / "benchmarks" / "generate.py"
PACKETS = 5000
SEED = 7
# Correct TDS after out-of-order segments needs this (docs: DESIGN, Wireshark's default misframes);
# worker ports are not TDS ports for Wireshark, so decode them as TDS.
TSHARK_OPTS = [
    "-o", "tcp.reassemble_out_of_order:TRUE",
    "-o", "tcp.check_checksum:TRUE",
    "-o", "ip.check_checksum:TRUE",
    "-o", "udp.check_checksum:TRUE",
    "-d", "tcp.port==11000-11999,tds",
]  # fmt: skip


def _generate(out: Path, seed: int = SEED) -> dict:
    subprocess.run(
        [sys.executable, str(GENERATE), "--packets", str(PACKETS), "--seed", str(seed),
         "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return json.loads(Path(str(out) + ".json").read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tshark(tshark: str, capture: Path, *args: str) -> list[str]:
    result = subprocess.run(
        [tshark, "-n", "-r", str(capture), *TSHARK_OPTS, *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [line for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "gen.pcap"
    return out, _generate(out)


@pytest.fixture(scope="module")
def frames(tshark: str, capture: tuple[Path, dict]) -> list[dict[str, str]]:
    """One dict per frame with the fields the checks below need."""
    names = [
        "frame.number", "tcp.stream", "ip.src", "tcp.dstport", "tcp.flags.syn",
        "tcp.flags.ack", "tds.type", "tds.envchange.type", "tcp.payload", "dns.qry.name",
        "udp.srcport",
    ]  # fmt: skip
    fields = [a for n in names for a in ("-e", n)]
    lines = _tshark(tshark, capture[0], "-T", "fields", "-E", "occurrence=a",
                    "-E", "aggregator=,", *fields)  # fmt: skip
    return [dict(zip(names, line.split("\t"), strict=False)) for line in lines]


def test_same_seed_gives_identical_bytes(tmp_path: Path, capture: tuple[Path, dict]) -> None:
    again = tmp_path / "again.pcap"
    manifest = _generate(again)
    assert _sha256(again) == _sha256(capture[0])
    assert manifest["packets"] == capture[1]["packets"] == PACKETS
    other = tmp_path / "other.pcap"
    _generate(other, seed=SEED + 1)
    assert _sha256(other) != _sha256(again)


def test_tshark_finds_nothing_malformed(tshark: str, capture: tuple[Path, dict]) -> None:
    """No malformed packet, no expert error, no bad checksum, no warning but the TCP ones the
    generator puts there on purpose (resets, out-of-order segments, retransmissions)."""
    problems = _tshark(
        tshark, capture[0], "-Y",
        "_ws.malformed || _ws.expert.severity >= error"
        # Warnings other than the intended ones (RSTs, reordering, retransmissions):
        " || (_ws.expert.severity >= warning && !(tcp.analysis.flags || tcp.connection.rst))"
        " || tds.token.length.invalid || tds.type_info.type.invalid"
        " || tcp.checksum.status == 0 || ip.checksum.status == 0 || udp.checksum.status == 0",
    )  # fmt: skip
    assert problems == []


def test_every_record_is_read(frames: list[dict[str, str]], capture: tuple[Path, dict]) -> None:
    assert len(frames) == capture[1]["packets"]


def test_tds_message_types_present(frames: list[dict[str, str]]) -> None:
    """PRELOGIN (0x12), LOGIN7 (0x10, the cleartext logins), responses (4), SQL batches (1)."""
    types = Counter(t for f in frames for t in f["tds.type"].split(",") if t)
    for tds_type in ("18", "16", "4", "1"):
        assert types[tds_type] > 0, f"no TDS packet of type {tds_type} in {dict(types)}"


def test_tcp_stream_count_matches_manifest(
    frames: list[dict[str, str]], capture: tuple[Path, dict]
) -> None:
    streams = {f["tcp.stream"] for f in frames if f["tcp.stream"]}
    assert len(streams) == capture[1]["tcp_streams"]


def test_routing_legs_are_followed_by_worker_legs(
    frames: list[dict[str, str]], capture: tuple[Path, dict]
) -> None:
    manifest = capture[1]
    redirects = manifest["redirects"]
    assert any(r["routing_visible"] for r in redirects)
    assert any(r["outcome"] != "connected" for r in redirects)
    by_number = {int(f["frame.number"]): f for f in frames}
    first_of_stream: dict[int, dict[str, str]] = {}
    client_of_stream: dict[int, str] = {}
    for f in frames:
        if f["tcp.stream"]:
            s = int(f["tcp.stream"])
            if s not in first_of_stream:
                first_of_stream[s] = f
                client_of_stream[s] = f["ip.src"]
    routed_streams = {
        int(f["tcp.stream"]) for f in frames if "20" in f["tds.envchange.type"].split(",")
    }
    visible = {r["gateway_stream"] for r in redirects if r["routing_visible"]}
    assert routed_streams == visible

    for r in redirects:
        routing = by_number[r["routing_frame"]]
        assert int(routing["tcp.stream"]) == r["gateway_stream"]
        if r["routing_visible"]:
            # ENVCHANGE type 20 value: Protocol 0, port, AlternateServer as US_VARCHAR.
            server = r["server"]
            value = struct.pack("<BH", 0, r["port"]) + struct.pack("<H", len(server))
            value += server.encode("utf-16-le")
            token = b"\xe3" + struct.pack("<HBH", len(value) + 5, 20, len(value)) + value
            assert token + b"\x00\x00" in bytes.fromhex(routing["tcp.payload"])
        if r["worker_stream"] is None:  # the worker's name did not resolve: no second leg
            assert r["outcome"] == "dns_failed" and r["dns_query_frame"] is not None
            continue
        worker = first_of_stream[r["worker_stream"]]
        assert int(worker["frame.number"]) == r["worker_first_frame"] > r["routing_frame"]
        assert worker["tcp.flags.syn"] in ("1", "True") and worker["tcp.flags.ack"] in (
            "0",
            "False",
        )
        assert 11000 <= int(worker["tcp.dstport"]) <= 11999
        assert int(worker["tcp.dstport"]) == r["port"]
        assert client_of_stream[r["worker_stream"]] == client_of_stream[r["gateway_stream"]]
        if r["dns_query_frame"] is not None:
            query = by_number[r["dns_query_frame"]]
            assert query["dns.qry.name"] == r["server"]
            assert r["routing_frame"] < r["dns_query_frame"] < r["worker_first_frame"]
