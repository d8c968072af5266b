"""Speed must never change an answer (issue 9): the whole analysis, fast path against plain path.

The fast path is what `tdslens analyze` runs: the TCP fast lane, and bodies nobody reads (TLS
application data without a key log, result tokens after the login) passed over by length. The
plain path (`analyze(..., plain=True)`) delivers every packet through the per-packet TCP path and
buffers and dissects every byte. Their JSON reports (connections, phases, facts, problems,
links, findings, verdicts) must be identical on every sample capture, with and without its key
log, and on a generated benchmark capture whose bulk results span many segments, with
retransmissions and reordering.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.capture.reader import CaptureReader
from tdslens.analyzer.model import PhaseName
from tdslens.analyzer.phases import ConnectionDissector
from tdslens.analyzer.tcp_events import ConnectionSummary, QuietCount
from tdslens.reports.json_report import to_json

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO / "samples" / "pcaps").glob("*.pcap*"))
SHARED = REPO.parent / "shared" / "captures"
REAL = sorted(p for p in SHARED.glob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))


def _same(path: Path, keylog: Path | None = None) -> None:
    fast = to_json(analyze(path, keylog=keylog))
    plain = to_json(analyze(path, keylog=keylog, plain=True))
    assert json.dumps(fast, sort_keys=True) == json.dumps(plain, sort_keys=True)


@pytest.mark.parametrize("path", SAMPLES + REAL, ids=lambda p: p.name)
def test_samples_same_either_path(path: Path) -> None:
    _same(path)


@pytest.mark.parametrize(
    "path", [p for p in SAMPLES if p.with_suffix(".keys").exists()], ids=lambda p: p.name
)
def test_decrypted_samples_same_either_path(path: Path) -> None:
    _same(path, keylog=path.with_suffix(".keys"))


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "bench.pcap"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "generate.py"), "--packets", "8000",
         "--seed", "3", "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def test_benchmark_capture_same_either_path(bench_capture: Path) -> None:
    """Thousands of bulk results spanning segments, encrypted and clear, with damage."""
    fast = analyze(bench_capture)
    assert sum(c.requests for c in fast.connections) > 100  # bulk data really went by
    assert json.dumps(to_json(fast), sort_keys=True) == json.dumps(
        to_json(analyze(bench_capture, plain=True)), sort_keys=True
    )


@pytest.mark.parametrize("batch", [97, 1000])
def test_sessions_counted_by_the_engine_across_batches(
    bench_capture: Path, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An established session's payload is counted by the TCP engine (`TcpEngine.quiet`),
    from the next batch on, and added to what the TDS layer counted itself: with batch
    boundaries everywhere the report must not change, and the engine must have counted."""
    reference = json.dumps(to_json(analyze(bench_capture, plain=True)), sort_keys=True)
    batches = CaptureReader.batches
    monkeypatch.setattr(
        CaptureReader, "batches", lambda self, batch_size=batch: batches(self, batch_size)
    )
    counted = []
    finish = ConnectionDissector.finish

    def spy(self: ConnectionDissector, summary: ConnectionSummary, quiet: QuietCount | None):
        counted.append(quiet.frames if quiet is not None else 0)
        return finish(self, summary, quiet)

    monkeypatch.setattr(ConnectionDissector, "finish", spy)
    fast = json.dumps(to_json(analyze(bench_capture)), sort_keys=True)
    assert sum(counted) > 1000
    if fast != reference:  # (pytest's own diff of two multi-MB lines takes minutes)
        at = next(i for i, (a, b) in enumerate(zip(fast, reference, strict=False)) if a != b)
        pytest.fail(
            f"reports differ: {fast[at - 300 : at + 100]!r} != {reference[at - 300 : at + 100]!r}"
        )


def test_established_sessions_are_counted_like_wireshark_sees_them(
    bench_capture: Path, tshark: str
) -> None:
    """Past the login, a session's payloads are counted, not dissected: its data phase must
    still end at the last frame that carried its bytes and count every such frame (tshark's
    view: segments with payload that are not retransmissions), from the phase's first frame."""
    out = subprocess.run(
        [tshark, "-r", str(bench_capture), "-o", "tcp.reassemble_out_of_order:TRUE",
         "-T", "fields", "-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.len",
         "-e", "tcp.analysis.retransmission", "-Y", "tcp.len > 0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    payload_frames: dict[int, list[int]] = {}
    for line in out.splitlines():
        frame, stream, _length, retrans = ([*line.split("\t"), ""])[:4]
        if not retrans:
            payload_frames.setdefault(int(stream), []).append(int(frame))
    long_sessions = 0
    for c in analyze(bench_capture).connections:
        data = c.phase(PhaseName.DATA)
        if data is None or c.tcp.to_server.gaps or c.tcp.to_client.gaps or data.frames < 20:
            continue
        long_sessions += 1
        frames = [f for f in payload_frames[c.stream] if f >= data.first_frame]
        assert data.last_frame == frames[-1], c.stream
        assert data.frames == len(frames), c.stream
    assert long_sessions > 20
