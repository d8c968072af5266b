"""`tdslens streams CAPTURE`: the table, the problem lines on stderr, the exit codes."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from test_tcp_cases import CASES, Wire

from tdslens.analyzer.cli import main

needs_reader = pytest.mark.skipif(
    importlib.util.find_spec("tdslens.analyzer.capture") is None
    or importlib.util.find_spec("tdslens.analyzer.decode") is None,
    reason="analyzer/capture and analyzer/decode have not landed yet",
)


def _streams(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["streams", str(path)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@needs_reader
def test_table_lists_every_connection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = CASES["port_reuse"]().write(tmp_path / "reuse.pcap")
    code, lines, err = _streams(path, capsys)
    assert code == 0 and err == ""
    assert lines[0].split()[:2] == ["stream", "client"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert rows[0][1] == "10.0.0.1:50000" and rows[0][3] == "10.0.0.2:1433"
    assert rows[0][4:6] == ["1", "7"]  # first and last frame
    assert rows[0][-2:] == ["SF", "ShADFf"]
    assert rows[1][-2] == "RSTO"


@needs_reader
def test_guessed_roles_are_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _streams(CASES["midstream"]().write(tmp_path / "mid.pcap"), capsys)
    assert code == 0
    assert lines[1].split()[1] == "10.0.0.1:50000?"
    assert "guessed" in lines[-1]


@needs_reader
def test_shared_captures(shared_captures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _streams(shared_captures / "arkime_tds7_sql2000_session.pcap", capsys)
    assert code == 0
    assert lines[1].split()[-2] == "SF"


@needs_reader
def test_truncated_capture_reports_problem_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CASES["normal"]().write(tmp_path / "cut.pcap")
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last record is cut short
    code, lines, err = _streams(path, capsys)
    assert code == 0
    assert len(lines) >= 2
    assert "cut.pcap" in err and "frame 8" in err
    assert "Traceback" not in err


@needs_reader
def test_unreadable_file_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    code, _, err = _streams(junk, capsys)
    assert code == 2
    assert "junk.pcap" in err and "Traceback" not in err


@needs_reader
def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _streams(tmp_path / "absent.pcap", capsys)
    assert code == 2 and "absent.pcap" in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "streams" in capsys.readouterr().err


@needs_reader
def test_console_script_runs(tmp_path: Path) -> None:
    w = Wire()
    w.handshake()
    path = w.write(tmp_path / "hs.pcap")
    done = subprocess.run(
        ["python", "-m", "tdslens.analyzer.cli", "streams", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "S1" in done.stdout


def _summaries(tmp_path: Path) -> list:
    from test_tcp_cases import events_for, summaries

    return list(summaries(events_for("many_flows", tmp_path)).values())


def test_rows_come_out_in_stream_order(tmp_path: Path) -> None:
    import io

    from tdslens.analyzer.cli import StreamsTable

    rows = sorted(_summaries(tmp_path), key=lambda s: s.stream)
    out = io.StringIO()
    table = StreamsTable(out)
    for s in reversed(rows):  # connections may end in any order
        table.add(s)
    table.close()
    printed = [int(line.split()[0]) for line in out.getvalue().splitlines()[1:]]
    assert printed == [s.stream for s in rows]


def test_reorder_buffer_is_bounded(tmp_path: Path) -> None:
    import io

    from tdslens.analyzer.cli import StreamsTable

    rows = sorted(_summaries(tmp_path), key=lambda s: s.stream)
    out = io.StringIO()
    table = StreamsTable(out, hold=5)
    for s in rows[1:]:  # stream 0 never ends until the capture does
        table.add(s)
        assert len(table.waiting) <= 6
    table.add(rows[0])
    table.close()
    printed = [int(line.split()[0]) for line in out.getvalue().splitlines()[1:]]
    assert sorted(printed) == [s.stream for s in rows]


# -- ICMP errors (docs/tcp.md; the cases: icmp_cases.py) ---------------------------------------


def _icmp_leg(tmp_path: Path):
    """The worker leg of icmp_cases' redirect_leg_rejected: 3 SYNs, each rejected by ICMP."""
    from icmp_cases import CASES as ICMP_CASES

    from tdslens.analyzer.pipeline import CapturePipeline
    from tdslens.analyzer.tcp_events import StreamEnd, no_stream

    path = ICMP_CASES["redirect_leg_rejected"](tmp_path / "icmp.pcap")
    pipe = CapturePipeline(path, payloads=no_stream)
    ends = {e.summary.stream: e.summary for e in pipe.events() if isinstance(e, StreamEnd)}
    return path, ends[1]


@needs_reader
def test_ended_says_which_icmp_error_answered_the_attempt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("scapy.all")
    path, _ = _icmp_leg(tmp_path)
    code, lines, _ = _streams(path, capsys)
    assert code == 0
    assert lines[0].split()[-1] == "ended"
    assert lines[2].split()[0] == "1"
    assert lines[2].endswith("S0     S           icmp unreachable (admin prohibited)")
    assert lines[1].split()[-2:] == ["SF", "ShADdFf"]  # no error: nothing after the history


def test_ended_only_when_the_error_is_the_last_word(tmp_path: Path) -> None:
    import io
    from dataclasses import replace

    from tdslens.analyzer.cli import StreamsTable

    pytest.importorskip("scapy.all")
    _, leg = _icmp_leg(tmp_path)
    later = replace(leg, last_frame=leg.icmp_errors[-1].frame + 1)  # a packet after it
    answered = replace(leg, synack_frame=15)
    v6 = replace(leg, icmp_errors=(replace(leg.icmp_errors[-1], family=6, type=1, code=1),))
    redirect = replace(leg, icmp_errors=(replace(leg.icmp_errors[-1], family=6, type=137),))
    out = io.StringIO()
    table = StreamsTable(out)
    for n, s in enumerate((leg, later, answered, v6, redirect)):
        table.add(replace(s, stream=n))
    table.close()
    lines = out.getvalue().splitlines()[1:]
    cells = [line[line.index("S0") :].split(None, 2)[2:] for line in lines]
    assert cells == [
        ["icmp unreachable (admin prohibited)"],
        [],
        [],
        ["icmpv6 unreachable (admin prohibited)"],
        [],
    ]
