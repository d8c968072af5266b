"""`tdslens analyze` at a real terminal (a pseudo-terminal) versus in a pipe.

Issue 7: coloured when the output is a terminal, plain when piped; a progress bar on stderr for
large captures, hidden when stderr is not a terminal.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLES

ESC = "\x1b["


def run_in_pty(args: list[str]) -> str:
    """Run with stdout and stderr on a pseudo-terminal; return everything it wrote."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    proc = subprocess.Popen(args, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


CLI = [sys.executable, "-m", "tdslens.analyzer.cli", "analyze"]


def test_colour_at_a_terminal_plain_in_a_pipe():
    sample = str(SAMPLES / "redirect_blocked__tedious.pcap")
    at_terminal = run_in_pty([*CLI, sample])
    assert f"{ESC}31;1m[ERROR]" in at_terminal
    piped = subprocess.run([*CLI, sample], capture_output=True, text=True)
    assert "[ERROR] REDIRECT_BLOCKED" in piped.stdout and ESC not in piped.stdout


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory) -> Path:
    """A generated capture over the 20 MB size where the bar appears."""
    out = tmp_path_factory.mktemp("big") / "fleet.pcap"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "generate.py"),
            "--packets",
            "30k",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.stat().st_size > 20 << 20
    return out


def test_progress_bar_on_a_terminal_only(big_capture):
    at_terminal = run_in_pty([*CLI, "-q", str(big_capture)])
    assert "100% of" in at_terminal and "#" * 30 in at_terminal
    piped = subprocess.run([*CLI, "-q", str(big_capture)], capture_output=True, text=True)
    assert "% of" not in piped.stderr
