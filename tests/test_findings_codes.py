"""The finding codes are stable API: each one is documented, ranked, and has a remedy."""

from __future__ import annotations

import re
from pathlib import Path

from tdslens.analyzer.finding_codes import CODES, PRIORITY

DOC = Path(__file__).resolve().parent.parent / "docs" / "findings.md"


def test_every_code_is_documented_with_its_severity():
    documented = dict(
        re.findall(r"^### ([A-Z_]+) \[(error|warning|info)\]$", DOC.read_text(), re.M)
    )
    assert set(documented) == set(CODES)
    for code, entry in CODES.items():
        assert documented[code] == entry.severity.value, code


def test_every_code_is_ranked_once_and_has_a_remedy():
    assert sorted(PRIORITY) == sorted(CODES)
    assert all(entry.remedy.strip() for entry in CODES.values())
