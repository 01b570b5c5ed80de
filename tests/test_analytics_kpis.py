"""KPIs in money: net win (hand-paid jackpots subtracted) and meter win side by side,
hold %, average bet, zero guards, mixed denominations, period cuts, and the change
against the previous period."""

from __future__ import annotations

import pandas as pd
import pytest

from smib_core.analytics.kpis import Kpis, kpi_change, kpi_table, kpis
from smib_core.analytics.movement import meter_movement
from smib_core.analytics.periods import period_bounds, previous_period
from smib_core.analytics.rollups import rollup
from tests.test_analytics_movement import T0, reading, snapshot_frame

SUNDAY = T0 - pd.Timedelta(days=1)

# Monday, in credits: penny cabinet at $0.01, quarter cabinet at $0.25.
PENNY = dict(
    coin_in=10_000,
    coin_out=8_000,
    drop=5_000,
    cancelled=2_000,
    jackpot=1_000,
    games_played=200,
    games_won=50,
    handpaid_cancelled=500,
)
QUARTER = dict(
    coin_in=400,
    coin_out=300,
    drop=800,
    cancelled=200,
    jackpot=40,
    games_played=100,
    games_won=30,
    handpaid_cancelled=0,
)


def _rollups() -> pd.DataFrame:
    """Hourly rollups of Monday (above) and Sunday (half the penny's play only)."""
    sunday_penny = {k: v // 2 for k, v in PENNY.items()}
    frame = snapshot_frame(
        reading("penny", 0, start=SUNDAY, denomination=0.01),
        reading("penny", 5, start=SUNDAY, denomination=0.01, meters=sunday_penny),
        reading("penny", 0, denomination=0.01, meters=sunday_penny),
        reading(
            "penny", 5, denomination=0.01, meters={k: v + sunday_penny[k] for k, v in PENNY.items()}
        ),
        reading("quarter", 0, denomination=0.25, location="Floor B"),
        reading("quarter", 5, denomination=0.25, location="Floor B", meters=QUARTER),
    )
    return rollup(meter_movement(frame), "h")


def _monday() -> tuple[pd.Timestamp, pd.Timestamp]:
    return period_bounds("day", T0)


def test_kpis_in_money_across_denominations() -> None:
    result = kpis(_rollups(), *_monday())
    assert result["coin_in"] == pytest.approx(100 + 100)
    assert result["coin_out"] == pytest.approx(80 + 75)
    assert result["drop"] == pytest.approx(50 + 200)
    assert result["cancelled"] == pytest.approx(20 + 50)
    assert result["handpaid_cancelled"] == pytest.approx(5)
    assert result["jackpot"] == pytest.approx(10 + 10)
    assert result["games_played"] == 300
    assert result["games_won"] == 80
    assert result["cabinets"] == 2
    assert result["net_win"] == pytest.approx(250 - 70 - 20)  # drop - cancelled - jackpots
    assert result["hold_pct"] == pytest.approx(80.0)
    assert result["avg_bet"] == pytest.approx(200 / 300)


def test_meter_win_is_coin_in_minus_total_won_and_reconciles_with_net_win() -> None:
    result = kpis(_rollups(), *_monday())
    assert result["won"] == pytest.approx(80 + 10 + 75 + 10)  # 0022 = 0001 + 0002
    assert result["meter_win"] == pytest.approx(200 - 175)
    assert result["meter_hold_pct"] == pytest.approx(12.5)
    assert result["credits_left"] == pytest.approx(160 - 25)
    assert result["meter_win"] + result["credits_left"] == pytest.approx(result["net_win"])


def test_zero_coin_in_and_zero_games_give_none_not_a_division_error() -> None:
    frame = snapshot_frame(reading("C1", 0), reading("C1", 5, drop=2_000))  # bills, no play
    result = kpis(rollup(meter_movement(frame), "h"), *_monday())
    assert result["coin_in"] == 0.0
    assert result["drop"] == pytest.approx(20.0)
    assert result["net_win"] == pytest.approx(20.0)
    assert result["hold_pct"] is None
    assert result["avg_bet"] is None


def test_an_empty_period_has_zero_kpis() -> None:
    far = period_bounds("day", T0 + pd.Timedelta(days=30))
    result = kpis(_rollups(), *far)
    assert result["coin_in"] == 0.0
    assert result["games_played"] == 0.0
    assert result["cabinets"] == 0
    assert result["hold_pct"] is None
    assert result["avg_bet"] is None


def test_period_cut_keeps_the_previous_day_out() -> None:
    sunday = previous_period("day", *_monday())
    result = kpis(_rollups(), *sunday)
    assert result["coin_in"] == pytest.approx(50.0)  # half the penny's 10 000 credits
    assert result["cabinets"] == 1


def test_kpi_change_against_the_previous_period() -> None:
    rollups = _rollups()
    monday = kpis(rollups, *_monday())
    sunday = kpis(rollups, *previous_period("day", *_monday()))
    change = kpi_change(monday, sunday)
    assert change["coin_in"]["current"] == pytest.approx(200.0)
    assert change["coin_in"]["previous"] == pytest.approx(50.0)
    assert change["coin_in"]["delta"] == pytest.approx(150.0)
    assert change["coin_in"]["pct"] == pytest.approx(300.0)
    # Sunday: drop 25, cancelled 10, jackpots 5 -> net win 10, hold 20 %; Monday 80 %.
    assert change["net_win"]["delta"] == pytest.approx(160 - 10)
    assert change["hold_pct"]["delta"] == pytest.approx(80.0 - 20.0)  # points
    assert change["cabinets"]["delta"] == 1


def test_kpi_change_with_missing_or_zero_previous_values() -> None:
    empty = kpis(_rollups(), *period_bounds("day", T0 + pd.Timedelta(days=30)))
    current = kpis(_rollups(), *_monday())
    change = kpi_change(current, empty)
    assert change["coin_in"]["delta"] == pytest.approx(200.0)
    assert change["coin_in"]["pct"] is None  # from 0: no relative change
    assert change["hold_pct"]["previous"] is None
    assert change["hold_pct"]["delta"] is None
    negative: Kpis = {**current, "net_win": -50.0}
    assert kpi_change(current, negative)["net_win"]["pct"] == pytest.approx(420.0)  # vs |-50|


def test_kpi_table_per_location() -> None:
    table = kpi_table(_rollups(), ["location"])
    assert table["location"].tolist() == ["Floor A", "Floor B"]
    assert table["coin_in"].tolist() == pytest.approx([150.0, 100.0])  # penny: both days
    assert table["hold_pct"].tolist() == pytest.approx([(75 - 30 - 15) / 150 * 100, 140.0])
    assert table["cabinets"].tolist() == [1, 1]
