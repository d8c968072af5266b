"""`tdslens analyze` end to end on lab samples: what it prints, what it writes, how it exits."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SAMPLES

from tdslens.analyzer.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdslens.analyzer.cli", *args], capture_output=True, text=True
    )


def test_healthy_redirect_exits_0_and_says_so(tmp_path):
    out_json = tmp_path / "r.json"
    out_html = tmp_path / "r.html"
    proc = run(
        "analyze",
        str(SAMPLES / "redirect_ok__tedious.pcap"),
        "--json",
        str(out_json),
        "-o",
        str(out_html),
    )
    assert proc.returncode == 0, proc.stderr
    first_lines = proc.stdout.splitlines()[:3]
    assert first_lines[1].startswith("Verdict: OK")
    assert "[ERROR]" not in proc.stdout
    assert "redirected" in proc.stdout  # the gateway leg is not reported as stopped
    # No key log was given: nothing may claim one was, or list TLS as "not decrypted".
    assert "key log:" not in proc.stdout and "not decrypted" not in proc.stdout
    doc = json.loads(out_json.read_text())
    assert doc["schema_version"]
    assert out_html.read_text().lstrip().lower().startswith("<!doctype html>")


def test_blocked_redirect_exits_1_with_the_syn_frames(tmp_path):
    """The frames named as evidence are the SYNs tshark sees toward the worker port."""
    path = SAMPLES / "redirect_blocked__tedious.pcap"
    proc = run("analyze", str(path))
    assert proc.returncode == 1, proc.stderr
    assert "REDIRECT_BLOCKED" in proc.stdout.split("stream 0")[0]  # before the ladders
    syns = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.dstport == 11042",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert syns
    evidence = next(line for line in proc.stdout.splitlines() if "Evidence:" in line)
    for frame in syns[:5]:
        assert frame in evidence


def test_unreadable_capture_exits_2_with_one_line(tmp_path):
    junk = tmp_path / "notes.pcap"
    junk.write_bytes(b"this is not a capture at all")
    proc = run("analyze", str(junk))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(junk) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_quiet_prints_nothing(capsys):
    assert main(["analyze", "-q", str(SAMPLES / "proxy_ok__pytds.pcap")]) == 0
    assert capsys.readouterr().out == ""


def test_redact_reaches_every_output(tmp_path):
    """No client/server address or Azure host name of the capture survives --redact, in the
    terminal text, the JSON or the CSV; the names come from the lab's expected file."""
    path = SAMPLES / "redirect_blocked__tedious.pcap"
    expected = json.loads(path.with_suffix(".json").read_text())
    secrets = {expected["client_request"]["host"]}
    for conn in expected["connections"]:
        secrets.update({conn["client"][0], conn["server"][0]})
    proc = run(
        "analyze",
        str(path),
        "--redact",
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "csv"),
    )
    assert proc.returncode == 1
    outputs = [proc.stdout, (tmp_path / "r.json").read_text()]
    outputs += [p.read_text() for p in sorted((tmp_path / "csv").iterdir())]
    assert len(outputs) == 4 and "REDIRECT_BLOCKED" in proc.stdout
    for text in outputs:
        for secret in secrets:
            assert secret not in text


def test_a_bug_of_ours_exits_3_in_one_line(monkeypatch, capsys):
    """Exit 1 means "the capture shows an error"; our own failure must not look like that."""
    import tdslens.analyzer.analysis as analysis_module

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(analysis_module, "analyze", broken)
    assert main(["analyze", str(SAMPLES / "proxy_ok__pytds.pcap")]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "simulated bug" in err
    assert "Traceback" not in err and err.count("\n") == 1
