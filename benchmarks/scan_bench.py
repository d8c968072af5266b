"""Benchmark `tdslens scan`: a folder of many small captures with 1 and with N workers.

    python benchmarks/scan_bench.py                 # 200 captures, 1 and 2 workers
    python benchmarks/scan_bench.py --count 500 --workers 1 2 4 --no-write

What it measures and why: a support archive is many small captures, so the scan's cost per
capture beyond the analysis itself (hashing, rendering both reports, the Parquet part, pickling
the summary, pool scheduling, the index) decides how well it scales. The script times
``analysis.analyze`` alone on every capture in this process (the floor), then whole scans
with a fresh OUTDIR and ``--force`` for each worker count. It appends (or replaces) its own
section at the end of benchmarks/RESULTS.md and leaves the rest of that file alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tdslens import __version__  # noqa: E402
from tdslens.analyzer.analysis import analyze  # noqa: E402
from tdslens.analyzer.scan import ScanOptions, scan  # noqa: E402

SAMPLES = REPO / "samples" / "pcaps"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Batch scan (`tdslens scan`, benchmarks/scan_bench.py)"


def make_folder(root: Path, count: int) -> list[Path]:
    """``count`` captures: the samples in turn, in sub-folders of 50 (like a real archive)."""
    samples = sorted(SAMPLES.glob("*.pcap"))
    out = []
    for i in range(count):
        src = samples[i % len(samples)]
        dst = root / f"batch{i // 50:02d}" / f"{i:04d}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def time_analyze(files: list[Path]) -> float:
    """Seconds for analyze() alone over every file, in this process (imports already done)."""
    analyze(files[0])  # warm: imports and first-call caches
    started = time.perf_counter()
    for f in files:
        analyze(f)
    return time.perf_counter() - started


def time_scan(folder: Path, workers: int, work: Path) -> tuple[float, int]:
    out = work / f"out-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = scan([str(folder)], out, ScanOptions(workers=workers, force=True))
    seconds = time.perf_counter() - started
    assert result.errors == 0 and not result.interrupted, result
    return seconds, result.ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="scans per worker count (best)")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tdslens-scan-bench-") as tmp:
        work = Path(tmp)
        files = make_folder(work / "in", args.count)
        size = sum(f.stat().st_size for f in files)
        floor = time_analyze(files)
        runs = {}
        for w in args.workers:
            best = min(time_scan(work / "in", w, work)[0] for _ in range(args.repeat))
            runs[w] = best
            print(f"workers={w}: {best:.2f} s, {args.count / best:.1f} captures/s", flush=True)
    n = args.count
    base = runs[args.workers[0]]
    lines = [
        HEADING,
        "",
        f"{n} captures ({size / 1e6:.1f} MB; the {len(list(SAMPLES.glob('*.pcap')))} samples "
        f"of samples/pcaps in turn, 32-50 frames each), tdslens {__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU(s). Each scan: fresh OUTDIR, "
        f"`--force`, best of {args.repeat}; includes pool start, hashing, both reports, the "
        "Parquet part per capture, the index, findings.csv and connections.parquet.",
        "",
        "| workers | wall time | captures/s | speed-up | ms per capture |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, s in runs.items():
        lines.append(f"| {w} | {s:.2f} s | {n / s:.1f} | {base / s:.2f}x | {s / n * 1000:.1f} |")
    overhead = (runs.get(1, base) - floor) / n * 1000
    lines += [
        "",
        f"`analyze()` alone, in one process: {floor:.2f} s for the {n} captures "
        f"({floor / n * 1000:.1f} ms each). Per-capture overhead of the scan with 1 worker "
        f"(wall time minus analysis, per capture): {overhead:.1f} ms: the HTML and JSON "
        "reports, the Parquet part, hashing, and the pool's start and scheduling. The "
        "speed-up is below the worker count because the scanning process itself (finding "
        "files, collecting results, writing the index and tables) and the pool start are "
        "serial and share the same cores.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


def write_section(section: str) -> None:
    """Replace this script's section at the end of RESULTS.md (or append it); keep the rest."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    at = text.find(HEADING)
    if at >= 0:
        end = text.find("\n## ", at + len(HEADING))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:at] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
