"""Command line: argument parsing and printing only; the work happens in the pipeline.

Each subcommand is one `_cmd_*` function registered in `_build_parser`, so `analyze` and
`scan` slot in beside `streams` without touching the others.

Exit codes: 0 success (even when the capture had damaged frames: they are reported on
stderr, one line each, naming file and frame); 1 (`analyze`) at least one error finding;
2 when a capture could not be read at all; 3 for an internal error (a bug of ours: reported
in one line; `--debug` shows the traceback). 1 and 3 differ so that a script can tell "the
capture shows a failure" from "tdslens failed".
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from tdslens import __version__
from tdslens.analyzer.frames import CaptureError
from tdslens.analyzer.tcp_events import ConnectionSummary, StreamEnd

EXIT_OK = 0
EXIT_FINDINGS = 1  # analyze: at least one error finding
EXIT_INTERNAL = 3
EXIT_UNREADABLE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_UNREADABLE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"tdslens: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdslens",
        description="Explain what went wrong on the wire in captures of SQL Server (TDS) traffic.",
    )
    parser.add_argument("--version", action="version", version=f"tdslens {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    streams = sub.add_parser(
        "streams",
        help="list the TCP connections of a capture",
        description="List the TCP connections (Wireshark tcp.stream numbering) of each capture.",
    )
    streams.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap/pcapng file")
    streams.set_defaults(func=_cmd_streams)

    analyze = sub.add_parser(
        "analyze",
        help="diagnose the SQL Server connections of a capture",
        description=(
            "Explain what happened to every SQL Server / Azure SQL connection in a capture: "
            "verdict per client attempt, findings with the frames that prove them, and each "
            "connection's phases. Exit status: 0 no error finding, 1 at least one error "
            "finding, 2 the capture could not be read."
        ),
    )
    analyze.add_argument(
        "capture", metavar="CAPTURE", help="pcap/pcapng/NetMon file, maybe gzipped"
    )
    analyze.add_argument("-o", "--html", metavar="FILE", help="write the HTML report to FILE")
    analyze.add_argument("--json", metavar="FILE", help="write the JSON report to FILE")
    analyze.add_argument(
        "--csv", metavar="DIR", help="write connections.csv and findings.csv into DIR"
    )
    analyze.add_argument(
        "--redact",
        action="store_true",
        help="replace addresses, host, user and database names by stable pseudonyms in every "
        "output (terminal included), for sharing a report outside the organisation",
    )
    analyze.add_argument(
        "--wireshark-profile",
        metavar="DIR",
        help="write a Wireshark profile folder (worker ports decoded as TDS, failures coloured)",
    )
    analyze.add_argument(
        "--keylog",
        metavar="FILE",
        action="append",
        default=[],
        help=(
            "TLS key log (SSLKEYLOGFILE format) to decrypt the login, routing and errors with; "
            "repeatable. Secrets stored in a pcapng capture are used without it"
        ),
    )
    analyze.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing on stdout (exit status only)"
    )
    analyze.set_defaults(func=_cmd_analyze)
    _add_scan_parser(sub)
    return parser


# --- analyze ------------------------------------------------------------------------------


def _cmd_analyze(args: argparse.Namespace) -> int:
    from tdslens.analyzer.analysis import analyze, load_keylogs
    from tdslens.analyzer.model import Severity

    try:
        # None, not an empty KeyLog, when no key log was named: an empty one means "a key log
        # was given and holds nothing for these sessions", and every connection would say so.
        keylog = load_keylogs(args.keylog) if args.keylog else None
    except OSError as exc:
        print(f"tdslens: {exc.filename or args.keylog}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        result = analyze(args.capture, keylog=keylog, progress=_progress_bar(args.capture))
    except CaptureError as exc:
        print(f"tdslens: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except OSError as exc:
        print(f"tdslens: {args.capture}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    for problem in result.problems:
        print(f"tdslens: {problem}", file=sys.stderr)
    if args.redact:
        from tdslens.reports.redact import redact

        result = redact(result)
    if not args.quiet:
        from tdslens.reports.terminal import render_text

        sys.stdout.write(render_text(result, color=_wants_color(sys.stdout)))
    _write_reports(result, args)
    if any(f.severity is Severity.ERROR for f in result.findings):
        return EXIT_FINDINGS
    return EXIT_OK


PROGRESS_MIN_BYTES = 20 << 20  # smaller captures finish before a bar would help


def _progress_bar(path: str) -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr, only when stderr is a terminal and the file is big."""
    import os

    try:
        big = os.path.getsize(path) >= PROGRESS_MIN_BYTES
    except OSError:
        return None
    if not (big and sys.stderr.isatty()):
        return None

    def show(done: int, total: int) -> None:
        share = min(1.0, done / total) if total else 1.0
        bar = "#" * int(share * 30)
        end = "\n" if share >= 1.0 else ""
        sys.stderr.write(f"\r{bar:<30} {share:4.0%} of {total / 1e6:,.0f} MB{end}")
        sys.stderr.flush()

    return show


def _wants_color(out: TextIO) -> bool:
    """Colour for people at a terminal; plain text in pipes, files and for NO_COLOR users."""
    import os

    return out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _write_reports(result: object, args: argparse.Namespace) -> None:
    """The files the user asked for; each renderer only renders."""
    if args.json:
        from tdslens.reports.json_report import write_json

        write_json(result, args.json)
    if args.csv:
        from tdslens.reports.csv_report import write_csv

        write_csv(result, args.csv)
    if args.html:
        from pathlib import Path

        from tdslens.reports.html import render_html

        Path(args.html).write_text(render_html(result), encoding="utf-8")
    if args.wireshark_profile:
        from tdslens.reports.wireshark_profile import write_wireshark_profile

        write_wireshark_profile(result, args.wireshark_profile)


# --- streams ------------------------------------------------------------------------------


def _cmd_streams(args: argparse.Namespace) -> int:
    from tdslens.analyzer.pipeline import CapturePipeline
    from tdslens.analyzer.tcp_events import no_stream

    status = EXIT_OK
    many = len(args.captures) > 1
    for n, path in enumerate(args.captures):
        try:
            pipe = CapturePipeline(path, payloads=no_stream)  # summaries only: no bytes
        except CaptureError as exc:
            print(f"tdslens: {exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        except OSError as exc:
            print(f"tdslens: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        if many:
            print(("\n" if n else "") + f"{path}:")
        table = StreamsTable(sys.stdout)
        try:
            for event in pipe.events():
                if isinstance(event, StreamEnd):
                    table.add(event.summary)
        except CaptureError as exc:  # damage after some frames: report, keep what was read
            print(f"tdslens: {exc}", file=sys.stderr)
            for event in pipe.engine.finish():
                if isinstance(event, StreamEnd):
                    table.add(event.summary)
        table.close()
        for problem in pipe.problems:
            print(f"tdslens: {problem}", file=sys.stderr)
    return status


def _row_format(widths: Sequence[int], right: frozenset[int]) -> str:
    """One str.format template for a table row: columns padded to their widths."""
    return "  ".join(f"{{:{'>' if i in right else '<'}{w or ''}}}" for i, w in enumerate(widths))


class StreamsTable:
    """Prints one line per connection as connections end, in stream order.

    Why streaming: a capture can hold millions of connections and memory must follow the open
    ones, not the file. Rows wait in a small reorder buffer until every lower stream has ended;
    past `hold` waiting rows (a long-lived connection blocks the order) the lowest is printed
    anyway, so the order is by stream except around such connections. Column widths are fixed
    for that reason (IPv6 endpoints overflow their column).
    """

    WIDTHS = (6, 22, 1, 21, 6, 6, 9, 9, 9, 9, 5, 10, 0)
    RIGHT = frozenset({0, 4, 5, 6, 7, 8, 9})
    HEADER = (
        "stream", "client", "", "server", "first", "last", "packets",
        "bytes c>s", "bytes s>c", "duration", "state", "history", "ended",
    )  # fmt: skip

    def __init__(self, out: TextIO, hold: int = 4096) -> None:
        self.out = out
        self.hold = hold
        self.arrow = "→" if _can_encode(out, "→") else "->"
        self.waiting: list[tuple[int, str]] = []  # heap of (stream, line)
        self.next = 0
        self.rows = 0
        self.guessed = False
        self._write(self.HEADER)

    def add(self, s: ConnectionSummary) -> None:
        self.guessed = self.guessed or s.roles_guessed
        cells = (
            str(s.stream),
            f"{s.client}{'?' if s.roles_guessed else ''}",
            self.arrow,
            str(s.server),
            str(s.first_frame),
            str(s.last_frame),
            f"{s.to_server.packets}/{s.to_client.packets}",
            str(s.to_server.payload_bytes),
            str(s.to_client.payload_bytes),
            f"{s.duration_ns / 1e9:.3f}s",
            s.conn_state,
            s.history,
        )
        line = self._line(cells) if not s.icmp_errors else self._line((*cells, _ended(s)))
        heapq.heappush(self.waiting, (s.stream, line))
        self._drain(force=len(self.waiting) > self.hold)

    def close(self) -> None:
        self._drain(force=True, everything=True)
        if not self.rows:
            self.out.write("(no TCP connections)\n")
        elif self.guessed:
            self.out.write(
                "? client/server guessed from ports: the capture has no SYN for that connection\n"
            )

    def _drain(self, force: bool, everything: bool = False) -> None:
        waiting = self.waiting
        while waiting and (waiting[0][0] <= self.next or force):
            stream, line = heapq.heappop(waiting)
            self.out.write(line)
            self.rows += 1
            self.next = max(self.next, stream + 1)
            force = everything

    # One format string for a whole row: a capture may print millions of them. Rows without
    # an "ended" cell (nearly all) stop at the history, which then needs no padding.
    ROW = _row_format(WIDTHS, RIGHT)
    SHORT_ROW = _row_format((*WIDTHS[:-2], 0), RIGHT)

    def _line(self, cells: Sequence[str]) -> str:
        row = self.ROW if len(cells) == len(self.WIDTHS) else self.SHORT_ROW
        return row.format(*cells).rstrip() + "\n"

    def _write(self, cells: Sequence[str]) -> None:
        self.out.write(self._line(cells))


def _ended(s: ConnectionSummary) -> str:
    """The "ended" cell: the ICMP error that answered an attempt, when it is the last thing
    the capture shows of a connection that never got a SYN-ACK (e.g. a firewall rejecting the
    redirected leg); empty otherwise (state and history say how the others ended)."""
    if not s.icmp_errors or s.synack_frame is not None:
        return ""
    last = s.icmp_errors[-1]
    if last.frame < s.last_frame or (last.family == 6 and last.type == 137):  # (a redirect)
        return ""
    from tdslens.analyzer.icmp_quote import describe

    family = "icmp" if last.family == 4 else "icmpv6"
    return f"{family} {describe(last.family, last.type, last.code)}"


def print_streams(rows: Sequence[ConnectionSummary], out: TextIO) -> None:
    """The whole table for summaries already at hand."""
    table = StreamsTable(out)
    for s in rows:
        table.add(s)
    table.close()


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# --- scan ---------------------------------------------------------------------------------


def _add_scan_parser(sub: argparse._SubParsersAction) -> None:
    scan = sub.add_parser(
        "scan",
        help="analyse folders, globs and archives of captures into an index",
        description=(
            "Analyse every capture under PATH (files, folders, globs, .zip/.tar/.tar.gz "
            "archives) in parallel; write one HTML + JSON report per capture, index.html, "
            "findings.csv and connections.parquet into OUTDIR (docs/scan.md). Re-runs skip "
            "captures whose report is up to date. Exit status: 0 all captures analysed, 1 some "
            "became error rows, 130 interrupted."
        ),
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="file, folder, glob or archive")
    scan.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder")
    scan.add_argument(
        "-j", "--workers", type=int, metavar="N", help="local processes (default: all cores)"
    )
    scan.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run on this Dask distributed cluster (workers must see PATHs and OUTDIR)",
    )
    scan.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up on a capture after this long"
    )
    scan.add_argument("--force", action="store_true", help="redo captures already up to date")
    scan.add_argument(
        "--max-member-size",
        type=float,
        default=4096,
        metavar="MB",
        help="largest archive member to extract, in MB (default 4096)",
    )
    scan.add_argument(
        "--max-ratio",
        type=float,
        default=200,
        metavar="N",
        help="largest compression ratio of an archive member (default 200)",
    )
    scan.set_defaults(func=_cmd_scan)


def _cmd_scan(args: argparse.Namespace) -> int:
    from tdslens.analyzer.scan import Progress, ScanOptions, scan, summary_line
    from tdslens.analyzer.scan_sources import Limits

    options = ScanOptions(
        workers=args.workers,
        scheduler=args.scheduler,
        timeout=args.timeout,
        force=args.force,
        limits=Limits(int(args.max_member_size * 1024 * 1024), args.max_ratio),
    )
    result = scan(args.paths, args.outdir, options, Progress(sys.stderr))
    for row in result.rows:
        if row["status"] == "error":
            print(f"tdslens: {row['capture']}: {row['reason']}", file=sys.stderr)
    print(summary_line(result), file=sys.stderr)
    if result.interrupted:
        return 130
    return EXIT_FINDINGS if result.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
