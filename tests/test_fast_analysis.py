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
