"""`tdslens scan` on a mixed folder: good captures, damage, non-captures, archives, hostile
archives and links; every output file checked; resume, timeout, analyzer failure, Ctrl-C."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from html import unescape
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tdslens import __version__
from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.scan import Progress, ScanOptions, report_id, scan
from tdslens.analyzer.scan_index import CONNECTION_COLUMNS, FINDING_COLUMNS
from tdslens.analyzer.scan_run import HANG_FOR_TEST_ENV, ScanTimeout, deadline, report_paths
from tdslens.analyzer.scan_sources import unsafe_member_name

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "pcaps"
GOOD = (
    "redirect_blocked__tedious.pcap",
    "redirect_ok__tedious.pcap",
    "login_failed_cleartext__tsql.pcap",
    "proxy_ok__pytds.pcap",
)
PCAP_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
BOMB_BYTES = 24 << 20  # zeros behind a pcap header: deflates ~1000x


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def make_mixed_folder(root: Path) -> Path:
    """The scan input: a folder holding one of every case the issue names."""
    tree = root / "in"
    (tree / "good" / "deeper").mkdir(parents=True)
    for i, name in enumerate(GOOD):
        where = tree / "good" / ("deeper" if i % 2 else "") / name
        where.write_bytes(sample(name))
    (tree / "corrupt.pcap").write_bytes(sample(GOOD[0])[:10])  # header cut: unreadable
    (tree / "notes.txt").write_text("not a capture\n")
    (tree / "renamed.txt").write_bytes(sample("redirect_refused__tsql.pcap"))  # magic, not name
    with zipfile.ZipFile(tree / "nested.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("site-a/day1/refused.pcap", sample("redirect_refused__tedious.pcap"))
        z.writestr("site-a/nx.pcap.gz", gzip.compress(sample("redirect_nxdomain__tsql.pcap")))
        z.writestr("site-b/readme.md", "hello")
    with tarfile.open(tree / "bundle.tar.gz", "w:gz") as t:
        _tar_add(t, "logs/tls13.pcap", sample("tls13_only__tedious.pcap"))
        link = tarfile.TarInfo("logs/passwd.pcap")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        t.addfile(link)
    with zipfile.ZipFile(tree / "evil.zip", "w") as z:
        z.writestr("../../escaped.pcap", sample(GOOD[0]))
        z.writestr("/tmp/absolute.pcap", sample(GOOD[0]))
    bomb = PCAP_HEADER + bytes(BOMB_BYTES)
    with zipfile.ZipFile(tree / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.pcap", bomb)
    with tarfile.open(tree / "bomb.tar.gz", "w:gz") as t:
        _tar_add(t, "bomb.pcap", bomb)
    outside = root / "outside.pcap"
    outside.write_bytes(sample(GOOD[1]))
    (tree / "link-out.pcap").symlink_to(outside)
    return tree


def _tar_add(t: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))


def rows_by_name(rows: list[dict]) -> dict[str, dict]:
    """Key rows by the part after the scanned folder, e.g. 'good/x.pcap', 'nested.zip!a/b.pcap'."""
    return {r["capture"].split("/in/", 1)[-1]: r for r in rows}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("scan")
    tree = make_mixed_folder(root)
    out = root / "out"
    result = scan([str(tree)], out, ScanOptions(workers=2, timeout=60))
    return root, out, result


def test_every_case_lands_in_the_right_row(mixed) -> None:
    _, _, result = mixed
    rows = rows_by_name(result.rows)
    ok = {k for k, r in rows.items() if r["status"] == "ok"}
    assert ok == {
        "good/redirect_blocked__tedious.pcap",
        "good/deeper/redirect_ok__tedious.pcap",
        "good/login_failed_cleartext__tsql.pcap",
        "good/deeper/proxy_ok__pytds.pcap",
        "renamed.txt",
        "nested.zip!site-a/day1/refused.pcap",
        "nested.zip!site-a/nx.pcap.gz",
        "bundle.tar.gz!logs/tls13.pcap",
    }
    assert rows["corrupt.pcap"]["status"] == "error"
    assert "pcap file header is truncated" in rows["corrupt.pcap"]["reason"]
    skipped = {k: r["reason"] for k, r in rows.items() if r["status"] == "skipped"}
    assert "not a capture" in skipped["notes.txt"]
    assert "not a capture" in skipped["nested.zip!site-b/readme.md"]
    assert "link member not followed" in skipped["bundle.tar.gz!logs/passwd.pcap"]
    assert "'..'" in skipped["evil.zip!../../escaped.pcap"]
    assert "absolute path" in skipped["evil.zip!/tmp/absolute.pcap"]
    assert "decompression bomb" in skipped["bomb.zip!bomb.pcap"]
    assert "decompression bomb" in skipped["bomb.tar.gz!bomb.pcap"]
    assert "rest of the archive not read" in skipped["bomb.tar.gz"]
    assert "outside the scanned tree" in skipped["link-out.pcap"]
    assert (result.ok, result.errors, result.cached) == (8, 1, 0)
    assert not result.interrupted


def test_nothing_written_outside_outdir(mixed) -> None:
    root, out, _ = mixed
    assert not (root / "escaped.pcap").exists()
    assert not (root.parent / "escaped.pcap").exists()
    assert not Path("/tmp/absolute.pcap").exists()
    assert not (out / ".spool").exists()  # spooled members are removed
    names = {p.name for p in out.iterdir()}
    assert names == {"reports", "index.html", "findings.csv", "connections.parquet", "scan.json"}


def test_per_capture_reports_match_analyze(mixed) -> None:
    root, out, result = mixed
    for row in result.rows:
        if row["status"] != "ok":
            continue
        paths = report_paths(out, row["report_id"])
        doc = json.loads(paths["json"].read_text())
        html = paths["html"].read_text()
        assert pa.ipc.open_file(paths["connections"]).read_all().num_rows == row["connections"]
        assert doc["capture"]["path"] == row["capture"]
        assert "Content-Security-Policy" in html
        assert row["tdslens_version"] == __version__
    direct = analyze(root / "in" / "good" / "redirect_blocked__tedious.pcap")
    row = rows_by_name(result.rows)["good/redirect_blocked__tedious.pcap"]
    assert row["attempts"] == len(direct.attempts)
    assert row["attempts_failed"] == direct.verdict.attempts_failed
    assert row["worst_code"] == "REDIRECT_BLOCKED"
    assert row["failed_redirects"] == 1
    assert row["packets"] == direct.frames


def test_findings_csv(mixed) -> None:
    _, out, result = mixed
    with (out / "findings.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == FINDING_COLUMNS
        found = list(reader)
    expected = sum(len(r.get("findings") or []) for r in result.rows)
    assert len(found) == expected > 0
    assert any(
        f["code"] == "REDIRECT_BLOCKED" and f["capture"].endswith("redirect_blocked__tedious.pcap")
        for f in found
    )


def test_connections_parquet_reads_back_with_documented_columns(mixed) -> None:
    root, out, result = mixed
    table = pd.read_parquet(out / "connections.parquet")
    assert list(table.columns) == [name for name, _ in CONNECTION_COLUMNS]
    assert str(table["start"].dtype) == "datetime64[ns, UTC]"
    direct = analyze(root / "in" / "good" / "redirect_blocked__tedious.pcap")
    mine = table[table["capture"].str.endswith("good/redirect_blocked__tedious.pcap")]
    assert len(mine) == len(direct.connections)
    assert sorted(mine["tcp_stream"]) == [c.stream for c in direct.connections]
    assert set(table["report_id"]) == {r["report_id"] for r in result.rows if r["status"] == "ok"}
    # the documented example query in docs/scan.md
    blocked = table[
        (table["server_port"].between(11000, 11999)) & (table["outcome"] == "no_answer")
    ]
    assert not blocked.empty


def test_docs_list_every_column() -> None:
    text = (REPO / "docs" / "scan.md").read_text()
    for name, _ in CONNECTION_COLUMNS:
        assert f"`{name}`" in text, name
    for name in FINDING_COLUMNS:
        assert f"`{name}`" in text, name


def test_index_html(mixed) -> None:
    _, out, result = mixed
    html = (out / "index.html").read_text()
    assert '<meta http-equiv="Content-Security-Policy"' in html
    assert "script-src 'sha256-" in unescape(html) and "<script>" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<svg" in html and "<circle" in html  # failures on the timeline
    for row in result.rows:
        assert row["capture"].replace("&", "&amp;") in html
        if row["status"] == "ok":
            assert f'href="reports/{row["report_id"]}.html"' in html
    assert "timed out" not in html
    meta = json.loads((out / "scan.json").read_text())
    assert meta["captures"] == 9 and meta["skipped"] == result.skipped


def test_resume_skips_up_to_date_and_force_redoes(tmp_path: Path) -> None:
    tree = tmp_path / "in"
    tree.mkdir()
    for name in GOOD[:3]:
        (tree / name).write_bytes(sample(name))
    out = tmp_path / "out"
    first = scan([str(tree)], out, ScanOptions(workers=2))
    assert (first.ok, first.cached) == (3, 0)
    connections_before = pd.read_parquet(out / "connections.parquet")
    again = scan([str(tree)], out, ScanOptions(workers=2))
    assert (again.ok, again.cached) == (0, 3)
    assert (out / "index.html").read_text().count('<tr class="cached">') == 3
    pd.testing.assert_frame_equal(pd.read_parquet(out / "connections.parquet"), connections_before)
    inside = scan([str(tree)], tree / "scan-out", ScanOptions(workers=1))
    assert (inside.ok, inside.skipped) == (3, 0)  # OUTDIR inside the tree is not scanned
    inside = scan([str(tree)], tree / "scan-out", ScanOptions(workers=1))
    assert (inside.cached, inside.skipped) == (3, 0)
    shutil.rmtree(tree / "scan-out")
    (tree / GOOD[0]).write_bytes(sample("redirect_refused__tsql.pcap"))  # new content
    changed = scan([str(tree)], out, ScanOptions(workers=2))
    assert (changed.ok, changed.cached) == (1, 2)
    row = rows_by_name(changed.rows)
    new = next(r for k, r in row.items() if k.endswith(GOOD[0]))
    assert new["worst_code"] == analyze(tree / GOOD[0]).verdict.finding != "REDIRECT_BLOCKED"
    forced = scan([str(tree)], out, ScanOptions(workers=2, force=True))
    assert (forced.ok, forced.cached) == (3, 0)


def test_timeout_becomes_an_error_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "hangs.pcap").write_bytes(sample(GOOD[0]))
    (tree / "fine.pcap").write_bytes(sample(GOOD[1]))
    monkeypatch.setenv(HANG_FOR_TEST_ENV, "hangs.pcap")
    result = scan([str(tree)], tmp_path / "out", ScanOptions(workers=2, timeout=0.5))
    rows = {Path(r["capture"]).name: r for r in result.rows}
    assert rows["hangs.pcap"]["status"] == "error"
    assert "timed out after 0.5 s" in rows["hangs.pcap"]["reason"]
    assert rows["fine.pcap"]["status"] == "ok"
    assert "timed out after 0.5 s" in (tmp_path / "out" / "index.html").read_text()


def test_deadline_in_a_worker_thread() -> None:
    """Dask runs tasks in threads: there the deadline posts the exception to the thread."""
    caught: list[str] = []

    def task() -> None:
        try:
            with deadline(0.2):
                while True:
                    time.sleep(0.005)
        except ScanTimeout:
            caught.append("timeout")

    t = threading.Thread(target=task)
    t.start()
    t.join(5)
    assert caught == ["timeout"]
    with deadline(5):  # finishing early leaves nothing pending
        pass


def test_analyzer_failure_becomes_an_error_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdslens.analyzer.analysis as analysis

    real = analysis.analyze

    def flaky(path):  # the pool forks after this patch, so workers see it
        if Path(path).name == "boom.pcap":
            raise ValueError("synthetic analyzer bug")
        return real(path)

    monkeypatch.setattr(analysis, "analyze", flaky)
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "boom.pcap").write_bytes(sample(GOOD[0]))
    (tree / "fine.pcap").write_bytes(sample(GOOD[1]))
    result = scan([str(tree)], tmp_path / "out", ScanOptions(workers=2))
    rows = {Path(r["capture"]).name: r for r in result.rows}
    assert rows["boom.pcap"]["status"] == "error"
    assert "analyzer failed: ValueError: synthetic analyzer bug" in rows["boom.pcap"]["reason"]
    assert rows["fine.pcap"]["status"] == "ok"


def test_a_worker_that_dies_takes_only_its_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdslens.analyzer.analysis as analysis

    real = analysis.analyze

    def deadly(path):  # a crash no Python handler sees (e.g. a segfault, the OOM killer)
        if Path(path).name == "kaboom.pcap":
            os._exit(1)
        return real(path)

    monkeypatch.setattr(analysis, "analyze", deadly)
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "kaboom.pcap").write_bytes(sample(GOOD[0]))
    for i in range(4):
        (tree / f"fine{i}.pcap").write_bytes(sample(GOOD[i]))
    result = scan([str(tree)], tmp_path / "out", ScanOptions(workers=2))
    rows = {Path(r["capture"]).name: r for r in result.rows}
    assert rows["kaboom.pcap"]["status"] == "error"
    assert "worker process died" in rows["kaboom.pcap"]["reason"]
    assert [rows[f"fine{i}.pcap"]["status"] for i in range(4)] == ["ok"] * 4


def test_ctrl_c_stops_and_keeps_what_is_done(tmp_path: Path) -> None:
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "a-fine.pcap").write_bytes(sample(GOOD[1]))
    for i in range(4):
        (tree / f"z-hang{i}.pcap").write_bytes(sample(GOOD[0]))
    out = tmp_path / "out"
    env = {**os.environ, HANG_FOR_TEST_ENV: "z-hang", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdslens.analyzer.cli",
            "scan",
            str(tree),
            "-o",
            str(out),
            "-j",
            "2",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline_at = time.monotonic() + 30
    while not list((out / "reports").glob("*.summary.json")) and time.monotonic() < deadline_at:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted after" in err
    meta = json.loads((out / "scan.json").read_text())
    assert meta["interrupted"] is True
    assert [Path(c["capture"]).name for c in meta["rows"]] == ["a-fine.pcap"]
    assert "interrupted" in (out / "index.html").read_text()


def test_cli_scan_exit_status_and_summary(tmp_path: Path) -> None:
    from tdslens.analyzer.cli import main

    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "a.pcap").write_bytes(sample(GOOD[0]))
    (tree / "b.txt").write_text("x")
    assert main(["scan", str(tree), "-o", str(tmp_path / "out"), "-j", "1"]) == 0
    (tree / "bad.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    assert main(["scan", str(tree / "*.pcap"), "-o", str(tmp_path / "out2"), "-j", "1"]) == 1


def test_progress_line_and_silence_off_a_terminal() -> None:
    now = [0.0]
    p = Progress(io.StringIO(), clock=lambda: now[0])
    assert p.out is None  # StringIO is no terminal: nothing is drawn
    p.found(1_000_000)
    p.found(1_000_000)
    p.listed()
    now[0] = 10.0
    p.done(1_000_000)
    assert p.line().startswith("[############            ] 1/2 files  1.0/2.0 MB  ETA 0:10")


def test_unsafe_member_names() -> None:
    assert unsafe_member_name("a/b.pcap") is None
    assert unsafe_member_name("a/../../b") is not None
    assert unsafe_member_name("/etc/x") is not None
    assert unsafe_member_name("C:\\x") is not None
    assert unsafe_member_name("..\\x") is not None


def test_report_ids_are_safe_and_stable() -> None:
    rid = report_id("in/evil.zip!../../x y.pcap")
    assert "/" not in rid and "\\" not in rid
    assert rid == report_id("in/evil.zip!../../x y.pcap")
    assert not rid.startswith(".")


def test_survey_counts_plain_captures_and_flags_archives(tmp_path: Path) -> None:
    from tdslens.analyzer.scan import survey
    from tdslens.analyzer.scan_sources import Limits

    (tmp_path / "a.pcap").write_bytes(sample(GOOD[0]))
    (tmp_path / "b.txt").write_text("x")
    assert survey([str(tmp_path)], tmp_path / "o" / ".spool", Limits()) == (
        1,
        len(sample(GOOD[0])),
        True,
    )
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("d.pcap", sample(GOOD[1]))
    assert survey([str(tmp_path)], tmp_path / "o" / ".spool", Limits())[::2] == (1, False)
