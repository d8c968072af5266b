"""`tdslens scan`: analyse a folder (or archive) of captures and index the results.

The flow: `scan_sources` finds captures (spooling archive members), a runner from `scan_run`
analyses them in parallel (process pool or Dask) while this module keeps a bounded number in
flight, shows progress and collects the small per-capture summaries; `scan_index` and
`reports.scan_index` then write the tables and ``index.html`` across all of them.

Why bounded in flight: archive members are spooled to disk just before they are submitted, so
the spool holds at most a few members at a time, not the whole archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tdslens import __version__
from tdslens.analyzer.scan_run import (
    DaskRunner,
    Job,
    JobResult,
    LocalRunner,
    report_paths,
)
from tdslens.analyzer.scan_sources import ARCHIVE, Limits, ScanItem, iter_items

SPOOL = ".spool"


@dataclass(slots=True)
class ScanOptions:
    workers: int | None = None  # None: every core
    scheduler: str | Any | None = None  # "tcp://host:port", or a distributed.Client
    timeout: float | None = None  # seconds per capture
    force: bool = False
    limits: Limits = field(default_factory=Limits)


@dataclass(slots=True)
class ScanResult:
    """What the scan did, for the final summary line and the tests."""

    outdir: Path
    rows: list[dict[str, Any]]
    ok: int = 0
    cached: int = 0
    errors: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    bytes: int = 0

    @property
    def captures(self) -> int:
        return self.ok + self.cached + self.errors


def scan(
    inputs: Iterable[str],
    outdir: str | Path,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Analyse every capture under ``inputs``; write reports and the index into ``outdir``.

    Returns after Ctrl-C too (``interrupted``): the index then covers what was done.
    """
    options = options or ScanOptions()
    outdir = Path(outdir)
    (outdir / "reports").mkdir(parents=True, exist_ok=True)
    spool = outdir / SPOOL
    started = time.monotonic()
    result = ScanResult(outdir, rows=[])
    progress = progress or Progress(None)
    runner: LocalRunner | DaskRunner
    if options.scheduler is not None:
        runner = DaskRunner(options.scheduler)
        in_flight = 4 * max(1, len(_dask_workers(runner)))
    else:
        workers = options.workers or os.cpu_count() or 1
        runner = LocalRunner(workers)
        in_flight = 4 * workers
    spooled: dict[str, str] = {}  # report_id -> spool file to delete when done

    def collect(done: list[JobResult]) -> None:
        for r in done:
            _record(result, r)
            if r.report_id in spooled:
                _unlink(spooled.pop(r.report_id))
            progress.done(r.size)

    inputs = list(inputs)
    try:
        progress.expect(*survey(inputs, spool, options.limits))
        for item in iter_items(inputs, spool, options.limits):
            if item.skipped is not None:
                result.rows.append(_skipped_row(item))
                result.skipped += 1
                continue
            job = _job(item, outdir, options)
            if item.spooled and item.path:
                spooled[job.report_id] = item.path
            progress.found(item.size)
            runner.submit(job)
            while runner.pending() >= in_flight:
                collect(runner.next_done())
        progress.listed()
        while runner.pending():
            collect(runner.next_done())
        runner.close()
    except KeyboardInterrupt:
        result.interrupted = True
        runner.stop()
    finally:
        progress.finish()
        shutil.rmtree(spool, ignore_errors=True)
    result.seconds = time.monotonic() - started
    write_outputs(result)
    return result


def survey(inputs: list[str], spool: Path, limits: Limits) -> tuple[int, int, bool]:
    """Captures and bytes to expect, for the progress bar; False when archives hide more.

    Only when stderr is a terminal would anyone see it, but it is cheap: magic bytes only,
    archives are not opened.
    """
    files = size = 0
    exact = True
    for item in iter_items(inputs, spool, limits, survey=True):
        if item.skipped == ARCHIVE:
            exact = False
        elif item.skipped is None:
            files += 1
            size += item.size
    return files, size, exact


def report_id(display: str) -> str:
    """A stable, safe file name for a capture's reports: readable slug + hash of the name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", display).strip("._")[-80:] or "capture"
    return f"{slug}-{hashlib.sha1(display.encode()).hexdigest()[:10]}"


def _job(item: ScanItem, outdir: Path, options: ScanOptions) -> Job:
    assert item.path is not None
    return Job(
        display=item.display,
        path=os.path.abspath(item.path),
        outdir=str(outdir.resolve()),
        report_id=report_id(item.display),
        size=item.size,
        sha256=item.sha256,
        timeout=options.timeout,
        force=options.force,
    )


def _record(result: ScanResult, r: JobResult) -> None:
    result.bytes += r.size
    if r.status == "error":
        result.errors += 1
        row = {
            "capture": r.display,
            "report_id": r.report_id,
            "status": "error",
            "reason": r.reason,
            "size": r.size,
        }
    else:
        result.ok += r.status == "ok"
        result.cached += r.status == "cached"
        row = {**r.summary, "status": r.status, "reason": None}
    result.rows.append(row)


def _skipped_row(item: ScanItem) -> dict[str, Any]:
    return {
        "capture": item.display,
        "report_id": None,
        "status": "skipped",
        "reason": item.skipped,
        "size": item.size,
    }


def write_outputs(result: ScanResult) -> None:
    """findings.csv, connections.parquet, scan.json, index.html over the rows at hand."""
    from tdslens.analyzer.scan_index import (
        index_rows,
        merge_parts,
        write_findings_csv,
        write_scan_json,
    )
    from tdslens.reports.scan_index import render_index

    outdir = result.outdir
    order = {"error": 0, "ok": 1, "cached": 1, "skipped": 2}
    result.rows.sort(key=lambda r: (order.get(r["status"], 3), r["capture"]))
    analysed = [r for r in result.rows if r["status"] in ("ok", "cached")]
    write_findings_csv(analysed, outdir / "findings.csv")
    parts = [report_paths(outdir, r["report_id"])["connections"] for r in analysed]
    merge_parts([p for p in parts if p.exists()], outdir / "connections.parquet")
    meta = {
        "tdslens_version": __version__,
        "captures": result.captures,
        "ok": result.ok,
        "cached": result.cached,
        "errors": result.errors,
        "skipped": result.skipped,
        "interrupted": result.interrupted,
        "seconds": round(result.seconds, 3),
        "attempts_failed": sum(r.get("attempts_failed") or 0 for r in analysed),
        "captures_failing": sum(1 for r in analysed if r.get("attempts_failed")),
    }
    write_scan_json(result.rows, meta, outdir / "scan.json")
    html = render_index(index_rows(result.rows), meta)
    tmp = outdir / "index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, outdir / "index.html")


def summary_line(result: ScanResult) -> str:
    what = "interrupted after" if result.interrupted else "scanned"
    return (
        f"tdslens scan: {what} {result.captures} capture(s) in {result.seconds:.1f} s: "
        f"{result.ok} analysed, {result.cached} up to date, {result.errors} error(s), "
        f"{result.skipped} file(s) skipped -> {result.outdir / 'index.html'}"
    )


def _dask_workers(runner: DaskRunner) -> dict[str, Any]:
    return runner.client.scheduler_info().get("workers", {})


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- progress ------------------------------------------------------------------------------------


class Progress:
    """One line on stderr: files done/total, bytes, ETA. Silent when ``out`` is not a terminal.

    The total grows while captures are still being found (shown as ``12/40+``); the ETA comes
    from the byte rate so far.
    """

    def __init__(
        self, out: TextIO | None = sys.stderr, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out if out is not None and _isatty(out) else None
        self.clock = clock
        self.start = clock()
        self.total = self.files_done = 0
        self.bytes_total = self.bytes_done = 0
        self.complete_list = False
        self.last_draw = 0.0
        self.expected = self.expected_bytes = 0
        self.exact = False

    def expect(self, files: int, size: int, exact: bool) -> None:
        """What a quick survey found: plain captures are counted, archive members are not."""
        self.expected, self.expected_bytes, self.exact = files, size, exact

    def found(self, size: int) -> None:
        self.total += 1
        self.bytes_total += size
        self._draw()

    def listed(self) -> None:
        self.complete_list = True
        self._draw(force=True)

    def done(self, size: int) -> None:
        self.files_done += 1
        self.bytes_done += size
        self._draw()

    def line(self) -> str:
        total = max(self.total, self.expected)
        bytes_total = max(self.bytes_total, self.expected_bytes)
        known = self.complete_list or self.exact
        frac = self.bytes_done / bytes_total if bytes_total else 0.0
        bar = "#" * int(frac * 24)
        elapsed = self.clock() - self.start
        eta = "?"
        if known and self.bytes_done and frac < 1:
            eta = _clock_text(elapsed / frac - elapsed)
        elif frac >= 1 and known:
            eta = "0:00"
        more = "" if known else "+"
        return (
            f"[{bar:<24}] {self.files_done}/{total}{more} files  "
            f"{_mb(self.bytes_done)}/{_mb(bytes_total)} MB  ETA {eta}"
        )

    def _draw(self, force: bool = False) -> None:
        if self.out is None:
            return
        now = self.clock()
        if not force and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        self.out.write("\r" + self.line() + "\x1b[K")
        self.out.flush()

    def finish(self) -> None:
        if self.out is not None:
            self._draw(force=True)
            self.out.write("\n")
            self.out.flush()


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h"
