"""Command line: argument parsing and printing only; the work happens in the pipeline.

Each subcommand is one `_cmd_*` function registered in `_build_parser`, so `analyze` and
`scan` slot in beside `streams` without touching the others.

Exit codes: 0 success (even when the capture had damaged frames: they are reported on
stderr, one line each, naming file and frame), 2 when a capture could not be read at all,
1 for an internal error (a bug: reported in one line; `--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from tdslens import __version__
from tdslens.analyzer.frames import CaptureError
from tdslens.analyzer.tcp_events import ConnectionSummary, StreamEnd

EXIT_OK = 0
EXIT_INTERNAL = 1
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
    return parser


# --- streams ------------------------------------------------------------------------------


def _cmd_streams(args: argparse.Namespace) -> int:
    from tdslens.analyzer.pipeline import CapturePipeline

    status = EXIT_OK
    many = len(args.captures) > 1
    for n, path in enumerate(args.captures):
        try:
            pipe = CapturePipeline(path)
            rows = [e.summary for e in pipe.events() if isinstance(e, StreamEnd)]
        except CaptureError as exc:
            print(f"tdslens: {exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        except OSError as exc:
            print(f"tdslens: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        for problem in pipe.problems:
            print(f"tdslens: {problem}", file=sys.stderr)
        if many:
            print(("\n" if n else "") + f"{path}:")
        print_streams(sorted(rows, key=lambda s: s.stream), sys.stdout)
    return status


def print_streams(rows: Sequence[ConnectionSummary], out: TextIO) -> None:
    """One line per connection, aligned columns, in stream order."""
    arrow = "→" if _can_encode(out, "→") else "->"
    header = (
        "stream",
        "client",
        "",
        "server",
        "first",
        "last",
        "packets",
        "bytes c>s",
        "bytes s>c",
        "duration",
        "state",
        "history",
    )
    table = [header]
    for s in rows:
        client = f"{s.client}{'?' if s.roles_guessed else ''}"
        table.append(
            (
                str(s.stream),
                client,
                arrow,
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
        )
    right = {0, 4, 5, 6, 7, 8, 9}
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        cells = [
            r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(r))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    if not rows:
        out.write("(no TCP connections)\n")
    elif any(s.roles_guessed for s in rows):
        out.write(
            "? client/server guessed from ports: the capture has no SYN for that connection\n"
        )


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
