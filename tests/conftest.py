"""Fixtures every test module may use. Keep protocol-specific helpers in their own modules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "pcaps"
# Real SQL Server captures kept beside the project in this workplace (see its README);
# a clone elsewhere has none, and the tests that use them say so when they skip.
SHARED_CAPTURES = REPO.parent / "shared" / "captures"


def _missing(reason: str) -> None:
    """Skip locally, but fail under CI: there the test set-up installs everything."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it through scripts/test; the set-up is broken)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of the tshark binary, the independent reference."""
    path = shutil.which("tshark")
    if path is None:
        _missing("tshark is not installed")
    return path


@pytest.fixture(scope="session")
def shared_captures() -> Path:
    """The folder of real SQL Server captures beside the project."""
    if not SHARED_CAPTURES.is_dir():
        pytest.skip(f"{SHARED_CAPTURES} is absent (only this workplace has ../shared)")
    return SHARED_CAPTURES
