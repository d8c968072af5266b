"""`tdslens scan --scheduler`: the same scan on a Dask LocalCluster (2 worker processes) gives
the same rows and tables as the local process pool; the timeout works in Dask's worker threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tdslens.analyzer.scan import ScanOptions, scan
from tdslens.analyzer.scan_run import HANG_FOR_TEST_ENV

distributed = pytest.importorskip("distributed")

from test_scan import make_mixed_folder, sample  # noqa: E402 (after the skip)

# Fields that differ between runs for reasons other than the analysis.
VOLATILE = {"seconds"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two worker processes; they inherit the hang hook, which only names 'dask-hang'."""
    old = os.environ.get(HANG_FOR_TEST_ENV)
    os.environ[HANG_FOR_TEST_ENV] = "dask-hang"
    try:
        with distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        ) as lc:
            yield lc.scheduler_address
    finally:
        if old is None:
            os.environ.pop(HANG_FOR_TEST_ENV, None)
        else:
            os.environ[HANG_FOR_TEST_ENV] = old


def _comparable(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
        key=lambda r: r["capture"],
    )


def test_dask_matches_local_pool(tmp_path: Path, cluster: str) -> None:
    tree = make_mixed_folder(tmp_path)
    local = scan([str(tree)], tmp_path / "local", ScanOptions(workers=2))
    dask = scan([str(tree)], tmp_path / "dask", ScanOptions(scheduler=cluster))
    assert (dask.ok, dask.errors, dask.skipped) == (local.ok, local.errors, local.skipped)
    assert _comparable(dask.rows) == _comparable(local.rows)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "dask" / "connections.parquet"),
        pd.read_parquet(tmp_path / "local" / "connections.parquet"),
    )
    assert (tmp_path / "dask" / "findings.csv").read_text() == (
        tmp_path / "local" / "findings.csv"
    ).read_text()
    assert not (tmp_path / "dask" / ".spool").exists()


def test_dask_timeout_and_resume(tmp_path: Path, cluster: str) -> None:
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "dask-hang.pcap").write_bytes(sample("redirect_blocked__tedious.pcap"))
    (tree / "fine.pcap").write_bytes(sample("redirect_ok__tedious.pcap"))
    options = ScanOptions(scheduler=cluster, timeout=1.0)
    first = scan([str(tree)], tmp_path / "out", options)
    rows = {Path(r["capture"]).name: r for r in first.rows}
    assert rows["dask-hang.pcap"]["status"] == "error"
    assert "timed out after 1 s" in rows["dask-hang.pcap"]["reason"]
    assert rows["fine.pcap"]["status"] == "ok"
    again = scan([str(tree)], tmp_path / "out", options)
    assert {Path(r["capture"]).name: r["status"] for r in again.rows} == {
        "dask-hang.pcap": "error",  # errors are retried, and time out again
        "fine.pcap": "cached",
    }
