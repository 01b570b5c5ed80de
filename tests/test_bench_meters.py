"""`smib bench meters` at a tiny size: it seeds its own embedded database, reports every
figure beside its baseline, and leaves no server running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smib_core import embedded
from smib_core.cli import main

pytestmark = pytest.mark.integration


def test_a_tiny_run_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "meters", "--cabinets", "3", "--days", "4", "--window", "2"]
    argv += ["--raw-days", "1", "--formats", "csv,parquet", "--data-dir", str(tmp_path), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    seeded = report["seed"]
    assert seeded["snapshots"] == 3 * 288 and seeded["daily_rows"] == 3 * 4
    assert seeded["hourly_rows"] == 3 * 2 * 24
    board = report["dashboard"]
    assert board["cabinets"] == 3 and board["rollup_rows_read"] == 3 * 4
    assert board["build_s"] > 0 and board["baseline_read_s"] > 0
    assert board["heatmap_hourly_rows"] == 3 * 2 * 24
    assert board["heatmap_location_rows"] == 3 * 2 * 24  # three cabinets, three locations
    assert board["heatmap_same"] and board["heatmap_s"] > 0
    formats = report["export"]["formats"]
    assert set(formats) == {"csv", "parquet"}
    assert all(
        f["rows_per_s"] > 0 and f["rss_peak_mib"] >= f["rss_before_mib"] for f in formats.values()
    )
    assert report["export"]["rows"] == 3 * 288
    assert not embedded.status(tmp_path)["database"]["running"]
