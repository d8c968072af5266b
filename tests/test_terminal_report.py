"""The terminal report stays readable on a busy capture and complete on a small one.

A capture of a fleet has thousands of attempts and findings; printing each one (the report did,
7.6 MB of text at 2M packets) buries the failures. Beyond fixed counts the report lists what did
not succeed first, counts the rest and points to the JSON and HTML reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import icmp_cases
import pytest
from conftest import REPO, SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.reports import terminal
from tdslens.reports.redact import redact
from tdslens.reports.terminal import render_text


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fleet") / "fleet.pcap"
    generator = str(REPO / "benchmarks" / "generate.py")
    subprocess.run(
        [sys.executable, generator, "--packets", "30k", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_busy_capture_lists_failures_first_and_counts_the_rest(fleet, monkeypatch):
    # Smaller limits than the shipped ones, so a quick 30k-packet capture exceeds every one.
    for name, value in [
        ("ATTEMPTS_SHOWN", 10), ("FINDINGS_SHOWN", 10), ("LADDERS_SHOWN", 10), ("STREAMS_SHOWN", 1)
    ]:  # fmt: skip
        monkeypatch.setattr(terminal, name, value)
    a = analyze(fleet)
    assert len(a.attempts) > terminal.ATTEMPTS_SHOWN  # the case under test
    assert len(a.findings) > terminal.FINDINGS_SHOWN
    text = render_text(a)
    lines = text.splitlines()

    listed = [int(m.group(1)) for m in re.finditer(r"^  attempt (\d+): ", text, re.M)]
    failed = [att.index + 1 for att in a.attempts if att.verdict.result != "ok"]
    assert listed == failed[: terminal.ATTEMPTS_SHOWN]
    assert f"{len(failed)} attempt(s) did not succeed" in text
    assert f"... {len(a.attempts) - len(listed)} more attempt(s)" in text

    counted = {
        (m.group(2), m.group(3)): int(m.group(1))
        for m in re.finditer(r"^ +(\d+) (error|warning|info) (\w+)$", text, re.M)
    }
    assert counted == Counter((f.severity.value, f.code) for f in a.findings)
    in_full = [ln for ln in lines if re.match(r"\[(ERROR|WARNING|INFO)\] ", ln)]
    assert len(in_full) == terminal.FINDINGS_SHOWN

    ladders = [ln for ln in lines if re.match(r"stream \d+  ", ln)]
    assert 0 < len(ladders) <= terminal.LADDERS_SHOWN
    for ln in lines:
        if ln.strip().startswith("Evidence: streams"):
            named = ln.split("streams ", 1)[1].split(";")[0]
            assert len(named.split(", ... (")[0].split(", ")) <= terminal.STREAMS_SHOWN
    widest = max(a.findings, key=lambda f: len(f.connections))
    assert len(widest.connections) > terminal.STREAMS_SHOWN
    monkeypatch.setattr(terminal, "FINDINGS_SHOWN", len(a.findings))
    assert f"({len(widest.connections)} streams in all; every one is in the JSON" in render_text(a)
    # Bounded whatever the capture's size: a few lines per item shown, nothing per connection.
    assert len(lines) < 20 * (terminal.FINDINGS_SHOWN + terminal.LADDERS_SHOWN)


def test_small_capture_is_listed_in_full():
    a = analyze(SAMPLES / "redirect_blocked__tedious.pcap")
    text = render_text(a)
    assert "more attempt(s)" not in text and "findings, by code" not in text
    for att in a.attempts:
        assert f"  attempt {att.index + 1}: " in text
    for f in a.findings:
        assert f"{f.code}: {f.title}" in text


def test_redacted_report_says_so():
    a = analyze(SAMPLES / "redirect_blocked__tedious.pcap")
    assert "pseudonyms" not in render_text(a)
    assert "Names and addresses are pseudonyms" in render_text(redact(a))


def test_syn_rejected_by_icmp_says_so(tmp_path: Path) -> None:
    """A firewall's ICMP error is what answered the worker leg's SYNs: the ladder names it,
    its sender and its frame, instead of 'no answer'."""
    a = analyze(icmp_cases.CASES["redirect_leg_rejected"](tmp_path / "rejected.pcap"))
    leg = next(c for c in a.connections if c.tcp.icmp_errors)
    last = leg.tcp.icmp_errors[-1]
    text = render_text(a)
    head = f"3 SYN(s), answered by ICMP unreachable (admin prohibited) from {last.reporter}"
    assert f"{head} (frame {last.frame})" in text
    assert sum(f"(frame {e.frame}), about a packet of the client" in text
               for e in leg.tcp.icmp_errors) == 3  # fmt: skip
