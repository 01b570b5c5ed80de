"""Actual against theoretical hold: expected win, variance, and the band that marks a
cabinet as unusual for its handle (narrowing with the games played)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from smib_core.analytics.theoretical import hold_against_par, hold_band_pct


def test_the_band_narrows_with_the_games_played() -> None:
    band = hold_band_pct(pd.Series([10_000, 1_000_000, 0]))
    assert band.iloc[0] == pytest.approx(30.0)  # 3 x 10 / sqrt(10,000) = 0.30
    assert band.iloc[1] == pytest.approx(3.0)
    assert math.isnan(band.iloc[2])


def test_expected_win_variance_and_unusual_cabinets() -> None:
    per_cabinet = pd.DataFrame(
        {
            "cabinet": ["steady", "lucky-players", "few-games", "no-par", "idle"],
            "coin_in": [100_000.0, 100_000.0, 1_000.0, 5_000.0, 0.0],
            "meter_win": [9_000.0, -2_000.0, -500.0, 100.0, 0.0],
            "games_played": [1_000_000, 1_000_000, 100, 10_000, 0],
        }
    )
    par = pd.Series({"steady": 8.0, "lucky-players": 8.0, "few-games": 8.0, "idle": 5.0})
    table = hold_against_par(per_cabinet, par).set_index("cabinet")
    assert table.loc["steady", "expected_win"] == pytest.approx(8_000.0)
    assert table.loc["steady", "win_variance"] == pytest.approx(1_000.0)
    assert table.loc["steady", "meter_hold_pct"] == pytest.approx(9.0)
    assert not table.loc["steady", "unusual"]  # 1 point off, band 3 points
    assert table.loc["lucky-players", "meter_hold_pct"] == pytest.approx(-2.0)
    assert table.loc["lucky-players", "unusual"]  # 10 points off over a million games
    assert table.loc["few-games", "meter_hold_pct"] == pytest.approx(-50.0)
    assert not table.loc["few-games", "unusual"]  # 100 games: a 300-point band
    assert math.isnan(table.loc["no-par", "par_pct"])
    assert not table.loc["no-par", "unusual"]
    assert not table.loc["idle", "unusual"]
    assert table.loc["idle", "expected_win"] == 0.0
