"""Issue 10: a TLS capture decrypted with its key log reads like its cleartext twin.

The lab ran the same driver through the same scenario with TLS and without it
(redirect_ok / redirect_cleartext, login_failed_tls / login_failed_cleartext,
readonly_routing / readonly_routing_cleartext). Decrypted, the TLS run must give the same roles,
the same redirect outcomes with routing-token evidence, the same error codes and the same verdict.
"""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis, Severity

TWINS = [
    ("redirect_ok", "redirect_cleartext"),
    ("login_failed_tls", "login_failed_cleartext"),
    ("readonly_routing", "readonly_routing_cleartext"),
]
PAIRS = [
    (SAMPLES / f"{tls}__{driver}.pcap", SAMPLES / f"{clear}__{driver}.pcap")
    for tls, clear in TWINS
    for driver in sorted(p.stem.split("__")[1] for p in SAMPLES.glob(f"{tls}__*.pcap"))
    if (SAMPLES / f"{clear}__{driver}.pcap").exists()
]


def shape(a: Analysis) -> dict:
    return {
        "roles": sorted(r.role.value for r in a.roles),
        "redirects": sorted(
            (r.outcome.value, r.evidence.value, r.target_port) for r in a.redirects
        ),
        "errors": sorted(f.code for f in a.findings if f.severity is Severity.ERROR),
        "verdict": a.verdict.result if a.verdict else None,
        "error_numbers": sorted(
            m.number
            for c in a.connections
            if c.response
            for m in c.response.messages
            if m.kind == "error"
        ),
    }


def test_there_are_twins():
    assert len(PAIRS) >= 12


@pytest.mark.parametrize("tls_path, clear_path", PAIRS, ids=lambda p: p.stem)
def test_decrypted_reads_like_cleartext(tls_path, clear_path):
    decrypted = analyze(tls_path, keylog=[str(tls_path.with_suffix(".keys"))])
    if any(c.decryption and c.decryption.undecrypted for c in decrypted.connections):
        pytest.skip("part of this driver's TLS does not decrypt (listed in its report)")
    assert shape(decrypted) == shape(analyze(clear_path))
