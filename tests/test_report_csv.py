"""CSV tables (pandas) and the Wireshark profile folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_report_json import all_captures
from test_report_synthetic import build_analysis

from tdslens.analyzer.analysis import analyze
from tdslens.reports.csv_report import CONNECTION_COLUMNS, FINDING_COLUMNS, write_csv
from tdslens.reports.json_report import to_json
from tdslens.reports.wireshark_profile import (
    decode_as_args,
    frame_filter,
    stream_filter,
    write_wireshark_profile,
)


def test_csv_round_trips_through_pandas(tmp_path: Path) -> None:
    a = build_analysis(attempts=3)
    conns_path, finds_path = write_csv(a, tmp_path)
    conns = pd.read_csv(conns_path)
    finds = pd.read_csv(finds_path)
    assert list(conns.columns) == CONNECTION_COLUMNS
    assert list(finds.columns) == FINDING_COLUMNS
    assert conns["tcp_stream"].tolist() == list(range(6))
    assert conns["outcome"].tolist()[:2] == ["redirected", "no_answer"]
    assert conns["routing_port"].dropna().astype(int).tolist() == [11042] * 3
    assert conns.loc[1, "syn_count"] == 8
    assert finds.loc[0, "wireshark_streams"] == "tcp.stream in {0 1}"
    assert not any("password" in c and c != "login_password_present" for c in conns.columns)


def test_csv_cells_cannot_become_formulas(tmp_path: Path) -> None:
    a = build_analysis()
    a.connections[0].login.username = '=HYPERLINK("http://x")'  # type: ignore[union-attr]
    a.findings[0].title = "@SUM(A1)"  # type: ignore[attr-defined]
    conns_path, finds_path = write_csv(a, tmp_path)
    conns = pd.read_csv(conns_path)
    assert conns.loc[0, "login_username"] == '\'=HYPERLINK("http://x")'
    assert pd.read_csv(finds_path).loc[0, "title"] == "'@SUM(A1)"


def test_csv_names_the_icmp_error_that_answered_a_connection(tmp_path: Path) -> None:
    from test_correlate_cases import GW, Session, _icmp_answers, _packets
    from test_correlate_cases import write as write_capture

    syns = _packets(Session(("10.0.0.2", 50000), GW, 0.0, syn="drop", syn_times=(0.0, 1.0)))
    a = write_capture(tmp_path, syns, _icmp_answers(syns, "10.0.0.1", 13))
    conns = pd.read_csv(write_csv(a, tmp_path / "csv")[0])
    assert conns.loc[0, "icmp_errors"] == 2
    assert (
        conns.loc[0, "icmp_last"] == "icmp unreachable (admin prohibited) from 10.0.0.1 (frame 4)"
    )
    clean = pd.read_csv(write_csv(build_analysis(), tmp_path / "clean")[0])
    assert (clean["icmp_errors"] == 0).all() and clean["icmp_last"].isna().all()


def test_csv_for_every_capture(tmp_path: Path) -> None:
    captures = all_captures()[:30]
    if not captures:
        pytest.skip("no captures in this checkout")
    for i, path in enumerate(captures):
        a = analyze(path)
        conns_path, _ = write_csv(a, tmp_path / str(i))
        assert len(pd.read_csv(conns_path)) == len(a.connections)


def test_filters() -> None:
    assert stream_filter([3]) == "tcp.stream eq 3"
    assert stream_filter([5, 1, 5]) == "tcp.stream in {1 5}"
    assert frame_filter([30, 12, 21]) == "frame.number in {12 21 30}"
    assert decode_as_args() == "-d tcp.port==11000-11999,tds -d tcp.port==14000-14999,tds"


def test_profile_files(tmp_path: Path) -> None:
    folder = write_wireshark_profile(build_analysis(attempts=2), tmp_path / "tdslens")
    entries = (folder / "decode_as_entries").read_text().splitlines()
    assert "decode_as_entry: tcp.port,11042,(none),TDS" in entries
    assert "decode_as_entry: tcp.port,14999,(none),TDS" in entries
    assert sum(1 for e in entries if e.startswith("decode_as_entry")) == 2000
    colors = (folder / "colorfilters").read_text()
    assert "@tdslens failed stream@tcp.stream in {0 1}@" in colors
    assert "@tdslens evidence@frame.number in {13 21 22 23}@" in colors


def test_profile_makes_tshark_decode_worker_ports(tmp_path: Path) -> None:
    """tshark run with the profile decodes the redirected leg (port 11xxx) as TDS."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    ok = []
    for path in all_captures():
        if path.name.startswith("redirect_ok__"):
            doc = to_json(analyze(path))
            if any(
                c["role"] == "worker" and c["tcp"]["bytes_to_server"] for c in doc["connections"]
            ):
                ok = [path]
                break
    if not ok:
        pytest.skip("no redirect_ok capture with a second leg")
    config = tmp_path / "config"
    write_wireshark_profile(doc, config / "profiles" / "tdslens")
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(config)}

    def tds_ports(*extra: str) -> set[str]:
        out = subprocess.run(
            [tshark, "-n", "-r", str(ok[0]), *extra, "-Y", "tds", "-T", "fields",
             "-e", "tcp.dstport"],
            capture_output=True, text=True, env=env, check=True,
        ).stdout  # fmt: skip
        return set(out.split())

    without = tds_ports()
    with_profile = tds_ports("-C", "tdslens")
    assert not any(p.startswith("110") for p in without)
    assert any(p.startswith("110") for p in with_profile)
