"""The analytics package's contract: pandas in, pandas out, no I/O; small modules; and
fast enough for a day of 500 cabinets read every 5 minutes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from smib_core.analytics import meter_movement, rollup, update_rollups
from smib_core.analytics.movement import MOVEMENT_METERS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "smib_core" / "analytics"
NOT_HERE = ("paho", "pymongo", "bson", "gridfs", "streamlit", "plotly", "amqtt", "psutil")


def test_importing_analytics_loads_no_io_library() -> None:
    code = "import sys, smib_core.analytics; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "pandas" in loaded  # the walker sees real imports
    assert not [m for m in loaded if m.split(".")[0] in NOT_HERE]
    own = {m for m in loaded if m.split(".")[0] == "smib_core"}
    assert own <= {"smib_core", "smib_core.errors"} | {
        f"smib_core.analytics{'' if p.stem == '__init__' else '.' + p.stem}"
        for p in PACKAGE.glob("*.py")
    }


def test_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert len(sizes) >= 6
    assert max(sizes.values()) < 400, sizes


def _day(cabinets: int, readings: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    at = pd.date_range("2024-05-13 06:00", periods=readings, freq="5min", tz="UTC")
    frame = pd.DataFrame(
        {
            "relay": np.repeat([f"r{i:03d}" for i in range(cabinets)], readings),
            "cabinet": np.repeat([f"c{i:03d}" for i in range(cabinets)], readings),
            "location": np.repeat([f"L{i % 10}" for i in range(cabinets)], readings),
            "at": np.tile(at, cabinets),
            "denomination": np.repeat(np.where(np.arange(cabinets) % 2, 0.01, 0.25), readings),
        }
    )
    for code in MOVEMENT_METERS.values():
        steps = rng.integers(0, 500, size=(cabinets, readings))
        frame[code] = (np.cumsum(steps, axis=1) + 1_000).ravel()
    return frame


def test_a_day_of_500_cabinets_rolls_up_whole() -> None:
    # Speed lives in `smib bench meters`, not in a timed test.
    day = _day(500, 289)  # a baseline reading plus 288 five-minute readings each
    empty = rollup(meter_movement(day.iloc[:0]), "h")
    movement = meter_movement(day)
    hourly, daily = update_rollups(empty, empty, movement, gaming_day_start_hour=6)
    assert len(movement) == 500 * 288
    assert len(hourly) == 500 * 24
    assert len(daily) == 500
    assert daily["intervals"].sum() == 500 * 288
