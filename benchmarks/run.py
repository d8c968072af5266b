"""Time tdslens against tshark on generated captures; write benchmarks/RESULTS.md.

Why one script: the targets (issue 3: `tdslens streams` at least 5x faster than
`tshark -q -z conv,tcp` with a peak RSS that does not grow with the file; issue 9: `tdslens
analyze` at least 10x faster than tshark's TDS dissection) are only meaningful when both tools
run on the same machine, on the same files, in the same run. The machine is shared and noisy,
so every command runs `--repeat` times, interleaved with its competitor, and only medians count.

    python benchmarks/run.py                          # 200k and 2M packets, 3 runs each
    python benchmarks/run.py --sizes 20k --repeat 1   # a quick check of the script itself

Captures are cached in benchmarks/data/ (git-ignored) and rebuilt when the generator changes.
Each process's peak RSS is its own `ru_maxrss` from `os.wait4`, so nothing else is counted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "RESULTS.md"
# Outputs of the timed commands: per process, so that two runs at once do not overwrite each
# other's files (the captures in DATA are shared; they are only read).
SCRATCH = DATA / f".run-{os.getpid()}"
sys.path.insert(0, str(HERE))
import generate  # noqa: E402  (sibling module; benchmarks/ is not a package)

STREAMS_TARGET = 5.0  # issue 3: tshark time / tdslens time
ANALYZE_TARGET = 10.0  # issue 9
ANALYZE_RSS_GROWTH = 1.2  # issue 9: the 2M run within 1.2x the 200k run's peak RSS...
ANALYZE_RSS_LIMIT_MIB = 300  # ...and under 300 MB
RSS_GROWTH_LIMIT = 1.15  # "does not grow": largest size within 15% of the smallest
# Issue 9's reference: Wireshark's TDS dissection, worker ports decoded as TDS, one line per PDU.
TSHARK_TDS = (
    "-d tcp.port==11000-11999,tds -Y tds -T fields -e frame.number -e tcp.stream -e tds.type"
)
MAX_RUNS_KEPT = 8  # earlier runs kept in RESULTS.md below the latest

# The in-process measurement: read + decode + TCP stream assignment and reassembly, no output.
INPROCESS = """
import json, sys, time
from tdslens.analyzer.pipeline import CapturePipeline
t = time.perf_counter()
pipe = CapturePipeline(sys.argv[1])
n = 0
for batch in pipe.batches():
    n += len(batch.events)
seconds = time.perf_counter() - t
streams = getattr(pipe.engine, "streams", None)
streams = streams() if callable(streams) else streams
print(json.dumps({"seconds": seconds, "events": n, "frames": pipe.frames, "streams": streams}))
"""


# Issue 9: the HTML report's rendering on its own. The analysis is made once (its time is
# reported, not compared); then render_html runs `repeat` times in the same process.
HTML_RENDER = """
import json, sys, time
from tdslens.analyzer.analysis import analyze
from tdslens.reports.html import render_html
t = time.perf_counter()
a = analyze(sys.argv[1])
analysis_s = time.perf_counter() - t
renders = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    page = render_html(a)
    renders.append(time.perf_counter() - t)
print(json.dumps({"analysis_s": analysis_s, "render_s": renders, "html_bytes": len(page.encode()),
                  "connections": len(a.connections)}))
"""


@dataclass
class Sample:
    seconds: float
    peak_rss_kb: int
    returncode: int
    stderr: str


@dataclass
class Measure:
    """All runs of one command on one capture."""

    name: str
    argv: list[str]
    samples: list[Sample] = field(default_factory=list)
    accept: tuple[int, ...] = (0,)  # exit codes that mean success

    @property
    def output(self) -> Path:
        return SCRATCH / f"out-{self.name.replace(' ', '_')}.txt"

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(self.succeeded(s) for s in self.samples)

    def succeeded(self, s: Sample) -> bool:
        # `tdslens analyze` exits 1 when it has error findings (3 is an internal error).
        return s.returncode in self.accept and "internal error" not in s.stderr

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def rss_mib(self) -> float:
        return statistics.median(s.peak_rss_kb for s in self.samples) / 1024


def run_once(argv: list[str], stdout: Path, timeout: float = 3600) -> Sample:
    """Run a command, its output to a file; wall time and the child's own peak RSS.

    Output goes to a file (not a pipe we would have to drain) so that it can be checked after.
    """
    err_path = SCRATCH / "stderr"
    with open(err_path, "w+b") as err, open(stdout, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Sample(seconds, usage.ru_maxrss, proc.returncode, text[-2000:])


def run_capture(argv: list[str]) -> tuple[Sample, dict]:
    """Like run_once, but keeps stdout (the in-process script prints JSON)."""
    out_path = SCRATCH / "stdout"
    with open(out_path, "w+b") as out, open(SCRATCH / "stderr", "w+b") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        errors = err.read().decode(errors="replace")
    try:
        info = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except json.JSONDecodeError:
        info = {}
    return Sample(seconds, usage.ru_maxrss, proc.returncode, errors[-2000:]), info


# -- environment ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "python": platform.python_version(),
    }


def tshark_version(tshark: str) -> str:
    out = subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].rstrip(".") if out else "?"


def git_commit() -> str:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return r.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "tdslens")
    return commit + (" (+ uncommitted changes in tdslens/)" if dirty else "")


def tdslens_command(explicit: str | None) -> list[str]:
    """The tdslens entry point: --tdslens, ./.venv, PATH, or the module from this checkout."""
    if explicit:
        return explicit.split()
    venv = REPO / ".venv" / "bin" / "tdslens"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("tdslens")
    if found:
        return [found]
    return [
        sys.executable,
        "-c",
        "import sys; from tdslens.analyzer.cli import main; sys.exit(main())",
    ]


def has_subcommand(cmd: list[str], sub: str) -> bool:
    r = subprocess.run([*cmd, sub, "--help"], capture_output=True, text=True)
    return r.returncode == 0


def tdslens_python(cmd: list[str]) -> str:
    """The interpreter tdslens runs under (for the in-process measurement)."""
    exe = shutil.which(cmd[0]) or cmd[0]  # (--tdslens "python -m tdslens.analyzer.cli")
    if Path(exe).resolve() == Path(sys.executable).resolve():
        return sys.executable
    first = Path(exe).read_bytes()[:200].decode(errors="replace").splitlines()[0]
    if first.startswith("#!") and "python" in first:
        return first[2:].strip().split()[0]
    return sys.executable


# -- captures ----------------------------------------------------------------------------------


def generator_fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("generate.py", "tdswire.py"):
        h.update((HERE / name).read_bytes())
    return h.hexdigest()[:12]


def capture_for(label: str, packets: int, seed: int) -> tuple[Path, dict]:
    """The cached capture for this size, rebuilt when missing or made by another generator."""
    path = DATA / f"tds-{label}-s{seed}.pcap"
    meta = Path(str(path) + ".json")
    fingerprint = generator_fingerprint()
    if path.exists() and meta.exists():
        manifest = json.loads(meta.read_text())
        if manifest.get("generator") == fingerprint and manifest.get("packets") == packets:
            return path, manifest
    print(f"generating {path.name} ({packets:,} packets)...", flush=True)
    # In a child process: a child's ru_maxrss starts from its parent's peak (Linux keeps the
    # high-water mark across fork and exec), so run.py itself must never grow large.
    subprocess.run(
        [sys.executable, str(HERE / "generate.py"), "--packets", str(packets), "--seed",
         str(seed), "--out", str(path)],
        check=True,
    )  # fmt: skip
    manifest = json.loads(meta.read_text())
    manifest["generator"] = fingerprint
    meta.write_text(json.dumps(manifest, indent=1) + "\n")
    return path, manifest


def warm(path: Path) -> None:
    """Read the file once so that every timed run finds it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


# -- benchmark -----------------------------------------------------------------------------------


@dataclass
class SizeResult:
    label: str
    manifest: dict
    streams: tuple[Measure, Measure] | None = None  # (tdslens, tshark)
    analyze: tuple[Measure, Measure] | None = None
    inprocess: Measure | None = None
    inprocess_info: dict = field(default_factory=dict)
    html: dict = field(default_factory=dict)  # HTML_RENDER's output, plus peak RSS
    notes: list[str] = field(default_factory=list)


def compare(a: Measure, b: Measure, repeat: int, capture: Path) -> None:
    """Interleave the two commands so that noise hits both alike."""
    for i in range(repeat):
        for m in (a, b):
            s = run_once(m.argv, m.output)
            m.samples.append(s)
            status = "" if m.succeeded(s) else f"  exit {s.returncode}: {s.stderr.strip()[-300:]}"
            print(
                f"  {m.name:<18} run {i + 1}: {s.seconds:8.2f} s "
                f"{s.peak_rss_kb / 1024:8.0f} MiB{status}",
                flush=True,
            )
        if not a.ok:  # a broken command would only repeat its error
            break


def listing_check(label: str, ours: Measure, theirs: Measure, expected: int) -> str:
    """Speed means nothing if the listing is wrong: count the connections each tool listed."""

    def count(m: Measure, marker: str) -> str:
        if not m.ok or not m.output.exists():
            return "?"
        with open(m.output, encoding="utf-8", errors="replace") as f:
            if marker == "<->":
                return str(sum(1 for line in f if "<->" in line))
            return str(sum(1 for line in f if line.strip()[:1].isdigit()))

    return (f"{label}: the generator wrote {expected:,} TCP streams; `tdslens streams` listed "
            f"{count(ours, 'row')}, tshark conv,tcp {count(theirs, '<->')}.")  # fmt: skip


def bench_size(
    label: str,
    packets: int,
    args: argparse.Namespace,
    cmd: list[str],
    can_streams: bool,
    can_analyze: bool,
) -> SizeResult:
    path, manifest = capture_for(label, packets, args.seed)
    res = SizeResult(label, manifest)
    warm(path)
    print(f"{path.name}: {manifest['packets']:,} packets, {manifest['bytes']:,} bytes", flush=True)

    if can_streams:
        a = Measure("tdslens streams", [*cmd, "streams", str(path)])
        b = Measure("tshark conv,tcp", [args.tshark, "-r", str(path), "-q", "-z", "conv,tcp"])
        compare(a, b, args.repeat, path)
        res.streams = (a, b)
        res.notes.append(listing_check(label, a, b, manifest["tcp_streams"]))
    else:
        res.notes.append("`tdslens streams` is not available in this checkout: not timed.")

    if can_analyze:
        out = SCRATCH / f"analyze-{label}.json"
        a = Measure(
            "tdslens analyze", [*cmd, "analyze", str(path), "--json", str(out)], accept=(0, 1)
        )
        b = Measure("tshark tds fields", [args.tshark, "-r", str(path), *TSHARK_TDS.split()])
        compare(a, b, args.repeat, path)
        res.analyze = (a, b)
    else:
        res.notes.append("`tdslens analyze` does not exist yet (issue 9): skipped.")

    if not args.no_inprocess:
        python = tdslens_python(cmd)
        m = Measure("in-process", [python, "-c", INPROCESS, str(path)])
        for i in range(args.repeat):
            s, info = run_capture(m.argv)
            if s.returncode != 0:
                res.notes.append(
                    "In-process pipeline measurement unavailable: "
                    + (s.stderr.strip().splitlines() or ["?"])[-1][:200]
                )
                m = None
                break
            # The script's own clock excludes interpreter start and imports.
            m.samples.append(Sample(info.get("seconds", s.seconds), s.peak_rss_kb, 0, ""))
            res.inprocess_info = info
            print(
                f"  {'in-process':<18} run {i + 1}: {info.get('seconds', 0):8.2f} s "
                f"{s.peak_rss_kb / 1024:8.0f} MiB",
                flush=True,
            )
        res.inprocess = m

    if can_analyze:  # the caller passes can_analyze only for --analyze-sizes
        s, info = run_capture([tdslens_python(cmd), "-c", HTML_RENDER, str(path), str(args.repeat)])
        if s.returncode != 0 or not info:
            res.notes.append("HTML rendering unavailable: "
                             + (s.stderr.strip().splitlines() or ["?"])[-1][:200])  # fmt: skip
        else:
            res.html = {**info, "peak_rss_kb": s.peak_rss_kb}
            print(f"  {'render_html':<18} {statistics.median(info['render_s']):8.2f} s "
                  f"{info['html_bytes'] / 1e6:8.1f} MB", flush=True)  # fmt: skip
    return res


# -- report --------------------------------------------------------------------------------------


def _row(size: SizeResult, pair: tuple[Measure, Measure], target: float) -> str:
    ours, theirs = pair
    m = size.manifest
    if not ours.ok:
        err = next(
            (s.stderr.strip().splitlines()[-1:] for s in ours.samples if not ours.succeeded(s)),
            [""],
        )
        return (
            f"| {size.label} | {m['packets']:,} | {m['bytes'] / 1e6:,.0f} MB | failed "
            f"({err[0][:80] if err else ''}) | {theirs.median:.2f} | - | - | "
            f"{theirs.rss_mib:,.0f} | >={target:g}x | no |"
        )
    ratio = theirs.median / ours.median
    met = "yes" if ratio >= target else "no"
    return (
        f"| {size.label} | {m['packets']:,} | {m['bytes'] / 1e6:,.0f} MB | {ours.median:.2f} "
        f"| {theirs.median:.2f} | **{ratio:.1f}x** | {ours.rss_mib:,.0f} | {theirs.rss_mib:,.0f} "
        f"| >={target:g}x | {met} |"
    )


HEADER = (
    "| size | packets | file | tdslens s | tshark s | tshark/tdslens | tdslens peak RSS MiB "
    "| tshark peak RSS MiB | target | met |\n|---|--:|--:|--:|--:|--:|--:|--:|---|---|"
)


def report(results: list[SizeResult], args: argparse.Namespace, env: dict[str, str]) -> str:
    now = env["started"]  # the heading identifies this run across its partial writes
    lines = [
        f"## {now} - tdslens {env['commit']}",
        "",
        f"Machine: {env['nproc']} CPUs ({env['cpu']}), {env['ram']} RAM, shared with other "
        f"work (noisy; medians of {args.repeat} interleaved runs). {env['tshark']}. "
        f"Python {env['python']}. Generator seed {args.seed}, fingerprint {env['generator']}. "
        f"Load average (1 min) at start {env['load_start']}, at end {os.getloadavg()[0]:.1f}. "
        f"run.py's own peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
        "MiB (a floor: a child's ru_maxrss starts from its parent's peak).",
        "",
    ]
    streams = [r for r in results if r.streams]
    if streams:
        lines += [
            "### Issue 3: `tdslens streams CAPTURE` vs `tshark -r CAPTURE -q -z conv,tcp`",
            "",
            HEADER,
        ]
        lines += [_row(r, r.streams, STREAMS_TARGET) for r in streams]
        ok = [r for r in streams if r.streams[0].ok]
        if len(ok) >= 2:
            small, big = ok[0], ok[-1]
            growth = big.streams[0].rss_mib / small.streams[0].rss_mib
            verdict = "met" if growth <= RSS_GROWTH_LIMIT else "NOT met"
            lines += [
                "",
                f"Peak RSS of tdslens, {small.label} → {big.label}: "
                f"{small.streams[0].rss_mib:,.0f} → {big.streams[0].rss_mib:,.0f} MiB "
                f"(x{growth:.2f}; target: no growth, i.e. <= x{RSS_GROWTH_LIMIT}): {verdict}.",
            ]
        large = [r for r in ok if r.manifest["packets"] >= 1_000_000]
        if large:
            r = large[-1]
            ratio = r.streams[1].median / r.streams[0].median
            lines += [
                "",
                f"Speed target (>={STREAMS_TARGET:g}x on >=1M packets, {r.label}): "
                f"{ratio:.1f}x - {'met' if ratio >= STREAMS_TARGET else 'NOT met'}.",
            ]
        lines.append("")
    analyze = [r for r in results if r.analyze]
    if analyze:
        lines += [
            "### Issue 9: `tdslens analyze CAPTURE --json OUT` vs tshark TDS dissection "
            "(`-d tcp.port==11000-11999,tds -Y tds -T fields -e frame.number -e tcp.stream "
            "-e tds.type`)",
            "",
            HEADER,
        ]
        lines += [_row(r, r.analyze, ANALYZE_TARGET) for r in analyze]
        ok = [r for r in analyze if r.analyze[0].ok]
        if len(ok) >= 2:
            small, big = ok[0].analyze[0], ok[-1].analyze[0]
            growth = big.rss_mib / small.rss_mib
            met = growth <= ANALYZE_RSS_GROWTH and big.rss_mib < ANALYZE_RSS_LIMIT_MIB
            lines += ["", f"Peak RSS of tdslens analyze, {ok[0].label} → {ok[-1].label}: "
                      f"{small.rss_mib:,.0f} → {big.rss_mib:,.0f} MiB (x{growth:.2f}; target: "
                      f"<= x{ANALYZE_RSS_GROWTH} and < {ANALYZE_RSS_LIMIT_MIB} MiB): "
                      f"{'met' if met else 'NOT met'}."]  # fmt: skip
        large = [r for r in ok if r.manifest["packets"] >= 1_000_000]
        if large:
            r = large[-1]
            ratio = r.analyze[1].median / r.analyze[0].median
            lines += ["", f"Speed target (>={ANALYZE_TARGET:g}x on {r.label}): {ratio:.1f}x - "
                      f"{'met' if ratio >= ANALYZE_TARGET else 'NOT met'}."]  # fmt: skip
        lines.append("")
    inproc = [r for r in results if r.inprocess and r.inprocess.samples]
    if inproc:
        lines += [
            "### In process: read + decode + TCP stream assignment and reassembly "
            "(`CapturePipeline.batches()`, no output)",
            "",
            "| size | packets | median s | packets/s | TCP events | streams | peak RSS MiB |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in inproc:
            m = r.inprocess
            pps = r.manifest["packets"] / m.median
            lines.append(
                f"| {r.label} | {r.manifest['packets']:,} | {m.median:.2f} | {pps:,.0f} "
                f"| {r.inprocess_info.get('events', '?'):,} | "
                f"{r.inprocess_info.get('streams', '?')} | {m.rss_mib:,.0f} |"
            )
        lines.append("")
    rendered = [r for r in results if r.html]
    if rendered:
        lines += ["### Issue 9: the HTML report rendered on its own (`render_html(analysis)`, "
                  "in process, after one `analyze`)", "",
                  "| size | connections | analyze s (once) | render median s | HTML MB "
                  "| peak RSS MiB (analysis + render) |", "|---|--:|--:|--:|--:|--:|"]  # fmt: skip
        for r in rendered:
            h = r.html
            render = statistics.median(h["render_s"])
            lines.append(f"| {r.label} | {h['connections']:,} | {h['analysis_s']:.2f} "
                         f"| {render:.2f} | {h['html_bytes'] / 1e6:.1f} "
                         f"| {h['peak_rss_kb'] / 1024:,.0f} |")  # fmt: skip
        lines.append("")
    notes = sorted({n for r in results for n in r.notes})
    if notes:
        lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    caps = ", ".join(
        f"{r.label}: {r.manifest['tcp_streams']:,} TCP streams, "
        f"{r.manifest.get('max_concurrent_tcp_streams', '?'):,} open at once"
        for r in results
    )
    lines += [f"Captures: {caps}.", ""]
    return "\n".join(lines)


PREAMBLE = """# Benchmark results

Written by `python benchmarks/run.py` (see README.md in this folder for what each number means).
Latest run first; earlier runs below it.

"""
SEPARATOR = "\n<!-- run -->\n"


def split_results(text: str) -> tuple[list[str], str]:
    """The run sections of RESULTS.md, and the rest: sections other scripts own (headings not
    starting with a date, e.g. scan_bench.py's) are kept verbatim at the end."""
    lines = text.splitlines(keepends=True)
    cut = next(
        (i for i, ln in enumerate(lines) if ln.startswith("## ") and not ln.startswith("## 20")),
        len(lines),
    )
    body, tail = "".join(lines[:cut]), "".join(lines[cut:])
    runs = [r.strip() + "\n" for r in body.split(SEPARATOR)[1:] if r.strip()]
    return runs, tail


def write_results(section: str) -> None:
    """Put this run first; re-read the file each time so concurrent edits by others survive."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    runs, tail = split_results(text)
    heading = section.splitlines()[0]
    runs = [r for r in runs if r.splitlines()[0] != heading]  # our own partial write
    out = PREAMBLE + "".join(SEPARATOR + r for r in [section, *runs][:MAX_RUNS_KEPT])
    if tail:
        out += "\n" + tail
    RESULTS.write_text(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="200k,2M", help="packet counts, e.g. 200k,2M")
    p.add_argument("--repeat", type=int, default=3, help="runs per command (median reported)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tshark", default=shutil.which("tshark") or "/usr/bin/tshark")
    p.add_argument("--tdslens", help="tdslens command (default: .venv, PATH, or this checkout)")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process measurement")
    p.add_argument("--analyze-sizes", help="sizes for the analyze benchmark (default: all)")
    p.add_argument("--no-write", action="store_true", help="print the results, keep RESULTS.md")
    args = p.parse_args(argv)

    SCRATCH.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args)
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)


def compile_package() -> None:
    """Write the package's bytecode caches, as `pip install` does: with
    PYTHONDONTWRITEBYTECODE set (this machine sets it) every timed run would otherwise compile
    all of tdslens first (~0.5 s), which is no part of analysing a capture."""
    import compileall

    compileall.compile_dir(REPO / "tdslens", quiet=1)


def _run(args: argparse.Namespace) -> int:
    compile_package()
    cmd = tdslens_command(args.tdslens)
    can_streams = has_subcommand(cmd, "streams")
    can_analyze = has_subcommand(cmd, "analyze")
    env = machine() | {
        "load_start": f"{os.getloadavg()[0]:.1f}",
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tshark": tshark_version(args.tshark),
        "commit": git_commit(),
        "generator": generator_fingerprint(),
    }
    print(
        f"tdslens: {' '.join(cmd[:1])} (streams: {can_streams}, analyze: {can_analyze}); "
        f"{env['tshark']}; {env['nproc']} CPUs",
        flush=True,
    )

    analyze_sizes = args.analyze_sizes.split(",") if args.analyze_sizes else None
    results = []
    for label in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        analyze_here = can_analyze and (analyze_sizes is None or label in analyze_sizes)
        res = bench_size(label, generate.parse_count(label), args, cmd, can_streams, analyze_here)
        if can_analyze and not analyze_here:
            res.notes = [n for n in res.notes if "does not exist" not in n]
            res.notes.append(
                f"{label}: `tdslens analyze` not timed at this size (--analyze-sizes)."
            )
        results.append(res)
        if not args.no_write:  # after every size, so a long run interrupted still leaves data
            write_results(report(results, args, env))
    section = report(results, args, env)
    print()
    print(section)
    if not args.no_write:
        print(f"written to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
