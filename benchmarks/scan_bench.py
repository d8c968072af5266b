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
from tdslens.analyzer.scan import ScanOptions, report_id, scan  # noqa: E402
from tdslens.analyzer.scan_run import Job, run_job  # noqa: E402

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


def time_run_job(files: list[Path], work: Path) -> float:
    """Seconds for run_job (analysis + both reports + part + summary) in this process."""
    out = work / "inprocess"
    jobs = [Job(str(f), str(f), str(out), report_id(str(f)), 0, force=True) for f in files]
    run_job(jobs[0])
    started = time.perf_counter()
    for job in jobs:
        assert run_job(job).status == "ok"
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
    parser.add_argument("--repeat", type=int, default=5, help="scans per worker count (best)")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tdslens-scan-bench-") as tmp:
        work = Path(tmp)
        files = make_folder(work / "in", args.count)
        size = sum(f.stat().st_size for f in files)
        # Best of several, interleaved: on a shared machine the minimum is the run that was
        # least disturbed, and interleaving spreads a busy spell over every configuration.
        floor = per_job = float("inf")
        runs = {w: float("inf") for w in args.workers}
        for _ in range(args.repeat):
            floor = min(floor, time_analyze(files))
            per_job = min(per_job, time_run_job(files, work))
            for w in args.workers:
                seconds = time_scan(work / "in", w, work)[0]
                runs[w] = min(runs[w], seconds)
                print(f"workers={w}: {seconds:.2f} s", flush=True)
    n = args.count
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base = runs[args.workers[0]]
    lines = [
        HEADING,
        "",
        f"{n} captures ({size / 1e6:.1f} MB; the {len(list(SAMPLES.glob('*.pcap')))} samples "
        f"of samples/pcaps in turn, 32-50 frames each), tdslens {__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU(s). Each scan: fresh OUTDIR, "
        f"`--force`, best of {args.repeat}; includes pool start, hashing, both reports, the "
        "connection part per capture, the index, findings.csv and connections.parquet. "
        f"Load average when measured: {load:.1f} (other work shared the machine).",
        "",
        "| workers | wall time | captures/s | speed-up | ms per capture |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, s in runs.items():
        lines.append(f"| {w} | {s:.2f} s | {n / s:.1f} | {base / s:.2f}x | {s / n * 1000:.1f} |")
    overhead = (runs.get(1, base) - floor) / n * 1000
    reports = (per_job - floor) / n * 1000
    lines += [
        "",
        f"Per capture: `analyze()` alone {floor / n * 1000:.1f} ms (in one process); "
        f"writing its outputs (hash, HTML + JSON report, connection part, summary) "
        f"{reports:.1f} ms more; the scan with 1 worker costs {overhead:.1f} ms over "
        f"`analyze()`, so pool, scheduling and the cross-capture index/tables add "
        f"{overhead - reports:.1f} ms. The speed-up stays below the worker count because the "
        "scanning process (finding files, collecting results, writing the index and tables) "
        "is serial and shares the two cores with the workers.",
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
