"""Running one capture for `tdslens scan`, and the two ways of running many: a local process
pool or a Dask distributed cluster.

Why this shape: `run_job` is a plain function of a small `Job` to a small `JobResult`, so it
pickles to a pool process or a Dask worker alike. It writes the capture's reports itself (HTML,
JSON, a Parquet part with its connections and a ``.summary.json``) into OUTDIR, which every
worker must see, and sends back only the summary: no packets, no connection list.

Fault isolation lives here too: whatever one capture does (unreadable, analyzer exception,
running past the timeout) becomes a `JobResult` with ``status="error"`` and a reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdslens import __version__

REPORTS = "reports"
# Test hook: a capture whose display name contains this variable's value never finishes, so the
# timeout can be tested on a tiny capture. Unset in normal use.
HANG_FOR_TEST_ENV = "TDSLENS_SCAN_TEST_HANG"
SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}
MAX_TIMELINE_POINTS = 200  # failure marks per capture sent back for the index timeline


@dataclass(slots=True)
class Job:
    """One capture to analyse. ``path`` must be readable where the job runs."""

    display: str
    path: str
    outdir: str
    report_id: str
    size: int
    sha256: str | None = None
    timeout: float | None = None
    force: bool = False


@dataclass(slots=True)
class JobResult:
    """What comes back: the capture's index row (``summary``), small by design.

    ``status``: "ok" (analysed now), "cached" (report up to date, reused) or "error".
    """

    report_id: str
    display: str
    status: str
    reason: str | None = None
    seconds: float = 0.0
    size: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


class ScanTimeout(Exception):
    """Raised inside the analysis when it runs past ``--timeout``."""


def report_paths(outdir: str | Path, report_id: str) -> dict[str, Path]:
    base = Path(outdir, REPORTS)
    return {
        "html": base / f"{report_id}.html",
        "json": base / f"{report_id}.json",
        "connections": base / f"{report_id}.connections.arrow",
        "summary": base / f"{report_id}.summary.json",
    }


def run_job(job: Job) -> JobResult:
    """Analyse one capture and write its reports; never raises for a capture's sake."""
    started = time.monotonic()
    try:
        sha = job.sha256 or file_sha256(job.path)
        paths = report_paths(job.outdir, job.report_id)
        if not job.force:
            cached = _up_to_date(paths, sha)
            if cached is not None:
                return JobResult(job.report_id, job.display, "cached", None, 0.0, job.size, cached)
        _import_analyzer()  # first job of a worker: imports don't count against the timeout
        with deadline(job.timeout):
            summary = _analyse_and_write(job, sha, paths)
        return JobResult(
            job.report_id, job.display, "ok", None, time.monotonic() - started, job.size, summary
        )
    except ScanTimeout:
        reason = f"timed out after {job.timeout:g} s (--timeout)"
    except MemoryError:
        reason = "analyzer ran out of memory"
    except Exception as exc:
        from tdslens.analyzer.frames import CaptureError

        if isinstance(exc, CaptureError):
            reason = f"unreadable capture: {str(exc).removeprefix(job.path + ': ')}"
        elif isinstance(exc, OSError):
            reason = f"cannot read: {exc.strerror or exc}"
        else:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reason = (
                f"analyzer failed: {type(exc).__name__}: {exc} "
                f"({Path(where.filename).name}:{where.lineno})"
            )
    return JobResult(
        job.report_id, job.display, "error", reason, time.monotonic() - started, job.size
    )


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _up_to_date(paths: dict[str, Path], sha: str) -> dict[str, Any] | None:
    """The stored summary when the reports were made from these bytes by this tdslens."""
    try:
        summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if summary.get("sha256") != sha or summary.get("tdslens_version") != __version__:
        return None
    if not all(p.exists() for p in paths.values()):
        return None
    return summary


def _import_analyzer() -> None:
    import tdslens.analyzer.analysis
    import tdslens.analyzer.scan_index
    import tdslens.reports.html  # noqa: F401


def _analyse_and_write(job: Job, sha: str, paths: dict[str, Path]) -> dict[str, Any]:
    from tdslens.analyzer.analysis import analyze
    from tdslens.analyzer.scan_index import connection_rows, write_part
    from tdslens.reports.html import render_html_document
    from tdslens.reports.json_report import to_json

    hang = os.environ.get(HANG_FOR_TEST_ENV)
    if hang and hang in job.display:
        while True:
            time.sleep(0.01)
    doc = to_json(analyze(job.path))
    doc["capture"]["path"] = job.display  # not the spool copy's name
    summary = capture_summary(job, sha, doc)
    paths["summary"].parent.mkdir(parents=True, exist_ok=True)
    # Compact: json.dumps with indent takes the slow pure-Python encoder (~5 ms a capture).
    _atomic_write(paths["json"], json.dumps(doc, ensure_ascii=False) + "\n")
    _atomic_write(paths["html"], render_html_document(doc))
    tmp = paths["connections"].with_suffix(".tmp")
    write_part(connection_rows(doc, job.display, job.report_id), tmp)
    os.replace(tmp, paths["connections"])
    # Last: its presence (with the hash) is what makes the reports count as up to date.
    _atomic_write(paths["summary"], json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def capture_summary(job: Job, sha: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The index row of one capture, plus its findings (for findings.csv) and failure times."""
    cap = doc["capture"]
    attempts = doc.get("attempts") or []
    redirects = doc.get("redirects") or []
    findings = doc.get("findings") or []
    verdict = doc.get("verdict") or {}
    # The worst finding: the one the verdict names (it explains the first failure), else the
    # most severe one.
    worst = next((f for f in findings if f.get("code") == verdict.get("finding")), None)
    worst = worst or max(
        findings, key=lambda f: SEVERITY_RANK.get(str(f.get("severity")), 0), default=None
    )
    failures = [
        {"ns": a.get("start_ns"), "what": (a.get("verdict") or {}).get("finding") or "failed"}
        for a in attempts
        if (a.get("verdict") or {}).get("result") == "failed"
    ]
    return {
        "capture": job.display,
        "report_id": job.report_id,
        "sha256": sha,
        "tdslens_version": __version__,
        "size": job.size,
        "format": cap.get("format"),
        "first_ns": cap.get("first_ns"),
        "last_ns": cap.get("last_ns"),
        "first_time": cap.get("first_time"),
        "last_time": cap.get("last_time"),
        "packets": cap.get("frames"),
        "capture_problems": len(cap.get("problems") or []),
        "connections": len(doc.get("connections") or []),
        "attempts": len(attempts),
        "attempts_failed": len(failures),
        "redirects": len(redirects),
        "failed_redirects": sum(1 for r in redirects if r.get("outcome") != "connected"),
        "verdict": verdict.get("result"),
        "verdict_summary": verdict.get("summary"),
        "worst_code": worst.get("code") if worst else None,
        "worst_severity": worst.get("severity") if worst else None,
        "worst_title": worst.get("title") if worst else None,
        "failures": failures[:MAX_TIMELINE_POINTS],
        "findings": [
            {
                "code": f.get("code"),
                "severity": f.get("severity"),
                "title": f.get("title"),
                "detail": f.get("detail"),
                "remedy": f.get("remedy"),
                "connections": " ".join(str(c) for c in f.get("connections") or []),
                "frames": " ".join(str(c) for c in f.get("frames") or []),
            }
            for f in findings
        ],
    }


def _atomic_write(path: Path, text: str) -> None:
    """Write then rename: an interrupted scan leaves old or new files, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- the timeout ---------------------------------------------------------------------------------


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise ScanTimeout in this thread after ``seconds``.

    In a process's main thread (the local pool) a SIGALRM timer does it. Dask runs tasks in
    worker threads, where signals cannot reach; there a timer thread posts the exception to the
    task's thread (``PyThreadState_SetAsyncExc``), which the interpreter raises at the next
    bytecode: the analyzer is Python over short numpy calls, so that comes quickly.
    """
    if not seconds or seconds <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        yield from _deadline_signal(seconds)
    else:
        yield from _deadline_thread(seconds)


def _deadline_signal(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise ScanTimeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _deadline_thread(seconds: float) -> Iterator[None]:
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(tid), ctypes.py_object(ScanTimeout)
                )

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:  # posted but maybe not raised yet: withdraw it
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)


# -- runners: many jobs --------------------------------------------------------------------------


class LocalRunner:
    """A process pool on this machine (all cores by default).

    Workers ignore SIGINT: Ctrl-C reaches the scanner, which stops them itself and keeps what
    is done. A worker that dies outright (killed, out of memory, a crash in a library) breaks
    the whole pool, and the pool cannot say which capture did it: every capture that was in
    flight is then run again alone, in a pool of its own, and only the one that kills that
    pool too becomes an error row. A fresh pool takes the rest.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        _import_analyzer()  # before the fork: workers start with it imported
        self.pool = self._new_pool(workers)
        self.futures: dict[Future[JobResult], Job] = {}

    @staticmethod
    def _new_pool(workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint)

    def submit(self, job: Job) -> None:
        self.futures[self.pool.submit(run_job, job)] = job

    def pending(self) -> int:
        return len(self.futures)

    def next_done(self) -> list[JobResult]:
        done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
        out: list[JobResult] = []
        suspects: list[Job] = []
        for fut in done:
            self._settle(fut, self.futures.pop(fut), out, suspects)
        if suspects:
            self.pool.shutdown(wait=True, cancel_futures=True)  # sets every other future
            for fut, job in list(self.futures.items()):
                self._settle(fut, job, out, suspects)
            self.futures.clear()
            self.pool = self._new_pool(self.workers)
            out.extend(self._alone(job) for job in suspects)
        return out

    @staticmethod
    def _settle(
        fut: Future[JobResult], job: Job, out: list[JobResult], suspects: list[Job]
    ) -> None:
        try:
            out.append(fut.result())
        except (BrokenProcessPool, CancelledError):
            suspects.append(job)
        except Exception as exc:  # pickling trouble or the like: still one capture's row
            out.append(_lost(job, f"worker error: {type(exc).__name__}: {exc}"))

    def _alone(self, job: Job) -> JobResult:
        """Run one capture in a pool of its own: if the process dies, this capture did it."""
        pool = self._new_pool(1)
        try:
            return pool.submit(run_job, job).result()
        except BrokenProcessPool:
            return _lost(job, "worker process died while analysing it (crash or killed)")
        finally:
            pool.shutdown(wait=True)

    def stop(self) -> None:
        """Ctrl-C: drop queued work and end the pool's processes (ours) now."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=5)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class DaskRunner:
    """The same jobs on a Dask distributed cluster (``--scheduler tcp://HOST:PORT``).

    Workers must see the captures and OUTDIR at the same paths as this machine (a shared
    filesystem); archive members are spooled into OUTDIR/.spool for that reason.
    """

    def __init__(self, address: str | Any) -> None:
        from distributed import Client, as_completed

        self.client = address if hasattr(address, "submit") else Client(address)
        self.owns_client = self.client is not address
        self.completed = as_completed([], with_results=False)
        self.futures: dict[Any, Job] = {}

    def submit(self, job: Job) -> None:
        fut = self.client.submit(
            run_job, job, pure=False, key=f"tdslens-{job.report_id}-{time.time_ns()}"
        )
        self.futures[fut] = job
        self.completed.add(fut)

    def pending(self) -> int:
        return len(self.futures)

    def next_done(self) -> list[JobResult]:
        fut = next(self.completed)
        job = self.futures.pop(fut)
        try:
            return [fut.result()]
        except Exception as exc:  # the worker died, or the cluster lost the task
            return [_lost(job, f"worker error: {type(exc).__name__}: {exc}")]

    def stop(self) -> None:
        self.client.cancel(list(self.futures))
        self.futures.clear()
        self.close()

    def close(self) -> None:
        if self.owns_client:
            self.client.close()


def _lost(job: Job, reason: str) -> JobResult:
    return JobResult(job.report_id, job.display, "error", reason, 0.0, job.size)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
