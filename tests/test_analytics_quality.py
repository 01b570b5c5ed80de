"""Data-quality summary: silent cabinets, failed readings (by cabinet or by relay),
RAM clears, rollovers and absurd jumps, from movement or from rollups."""

from __future__ import annotations

import pandas as pd

from smib_core.analytics.movement import meter_movement
from smib_core.analytics.quality import QUALITY_COLUMNS, data_quality
from smib_core.analytics.rollups import rollup
from tests.test_analytics_movement import T0, reading, snapshot_frame

PERIOD = (T0, T0 + pd.Timedelta(hours=1))
ROSTER = pd.DataFrame(
    {
        "cabinet": ["C1", "C2", "C3", "C4"],
        "location": ["Floor A", "Floor A", "Floor B", "Floor B"],
        "relay": ["relay-C1", "relay-C2", "relay-C3", "relay-C4"],
    }
)


def _snapshots() -> pd.DataFrame:
    return snapshot_frame(
        reading("C1", 0, coin_in=99_999_990),
        reading("C1", 5, coin_in=10),  # rollover
        reading("C1", 10, coin_in=20),
        reading("C2", 0, coin_in=1_000),
        reading("C2", 5, coin_in=4),  # RAM clear
        reading("C2", 10, coin_in=90_000_004),  # absurd
        reading("C3", -30, coin_in=5),  # before the period: C3 is silent in it
        reading("C3", 65, coin_in=6),  # after it
    )


def _failed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "relay": ["relay-C3", "relay-C3", "relay-C1", "relay-C4"],
            "at": [T0 + pd.Timedelta(minutes=m) for m in (5, 10, 15, 90)],  # last is after
        }
    )


def test_quality_summary_from_movement() -> None:
    snaps = _snapshots()
    quality = data_quality(
        snaps[["cabinet", "at"]], meter_movement(snaps), _failed(), ROSTER, PERIOD
    )
    assert quality.cabinets == 4
    assert quality.silent == ["C3", "C4"]  # C3 (2 failures) before C4 (none)
    assert quality.readings == 6
    assert quality.failed_readings == 3
    assert (quality.rollovers, quality.ram_clears, quality.absurd) == (1, 1, 1)
    table = quality.per_cabinet.set_index("cabinet")
    assert list(quality.per_cabinet.columns) == list(QUALITY_COLUMNS)
    assert table.loc["C1", "readings"] == 3
    assert table.loc["C1", "failed_readings"] == 1
    assert table.loc["C1", "rollover"] == 1
    assert table.loc["C2", "ram_clear"] == 1
    assert table.loc["C2", "absurd"] == 1
    assert table.loc["C3", "failed_readings"] == 2
    assert table.loc["C1", "last_reading"] == T0 + pd.Timedelta(minutes=10)
    assert table["last_reading"].isna().to_dict()["C4"]
    assert table.loc["C4", "location"] == "Floor B"
    assert table["no_reading"].to_dict() == {"C1": False, "C2": False, "C3": True, "C4": True}


def test_quality_from_rollups_and_failures_by_cabinet() -> None:
    snaps = _snapshots()
    hourly = rollup(meter_movement(snaps), "h")
    failed = pd.DataFrame({"cabinet": ["C2"], "at": [T0 + pd.Timedelta(minutes=1)]})
    quality = data_quality(snaps[["cabinet", "at"]], hourly, failed, ROSTER, PERIOD)
    assert (quality.rollovers, quality.ram_clears, quality.absurd) == (1, 1, 1)
    assert quality.failed_readings == 1
    assert quality.per_cabinet["cabinet"].tolist()[:2] == ["C3", "C4"]  # silent first
    assert quality.per_cabinet.set_index("cabinet").loc["C2", "failed_readings"] == 1


def test_a_cabinet_missing_from_the_roster_still_shows() -> None:
    snaps = snapshot_frame(reading("X9", 0), reading("X9", 5))
    empty_failed = pd.DataFrame(
        {"cabinet": pd.Series(dtype="str"), "at": pd.Series(dtype="datetime64[ns, UTC]")}
    )
    quality = data_quality(
        snaps[["cabinet", "at"]], meter_movement(snaps), empty_failed, ROSTER, PERIOD
    )
    assert quality.cabinets == 5
    row = quality.per_cabinet.set_index("cabinet").loc["X9"]
    assert row["readings"] == 2
    assert pd.isna(row["location"])
    assert quality.silent == ["C1", "C2", "C3", "C4"]
