"""Chart-ready frames: series over time, by location, top/bottom cabinets, hold by
cabinet, the 7x24 heatmap and sparklines, each checked against hand-computed money."""

from __future__ import annotations

import pandas as pd
import pytest

from smib_core.analytics.charts import (
    WEEKDAYS,
    by_location,
    heatmap_hour_weekday,
    hold_by_cabinet,
    series_over_time,
    sparkline_per_cabinet,
    top_bottom_cabinets,
)
from smib_core.analytics.movement import meter_movement
from smib_core.analytics.rollups import rollup
from tests.test_analytics_movement import reading, snapshot_frame

Event = tuple[str, int, int, int, int]  # UTC time, coin in, drop, cancelled, games (credits)


def play(
    cabinet: str, events: list[Event], *, denomination: float, location: str
) -> list[dict[str, object]]:
    """Readings that make each event one interval ending at its time."""
    first = pd.Timestamp(events[0][0], tz="UTC") - pd.Timedelta(minutes=5)
    rows = [reading(cabinet, 0, start=first, denomination=denomination, location=location)]
    total = dict(coin_in=0, drop=0, cancelled=0, games_played=0)
    for when, coin_in, drop, cancelled, games in events:
        for name, value in zip(total, (coin_in, drop, cancelled, games), strict=True):
            total[name] += value
        at = pd.Timestamp(when, tz="UTC")
        rows.append(
            reading(
                cabinet, 0, start=at, denomination=denomination, location=location, meters=total
            )
        )
    return rows


def fleet() -> pd.DataFrame:
    """Hourly rollups. Week of Mon 13 May 2024; money in comments."""
    rows = [
        # A1 $0.01, Floor A: Mon $10 in (net 30), Tue $20 in (net 10), Sat 02:30 $5 in.
        *play(
            "A1",
            [
                ("2024-05-13 10:30", 1000, 5000, 2000, 100),
                ("2024-05-14 10:30", 2000, 1000, 0, 100),
                ("2024-05-18 02:30", 500, 0, 0, 10),
            ],
            denomination=0.01,
            location="Floor A",
        ),
        # A2 $0.25, Floor A: Mon $50 in, drop $25, cancelled $30 (net -5).
        *play(
            "A2", [("2024-05-13 11:30", 200, 100, 120, 40)], denomination=0.25, location="Floor A"
        ),
        # B1 $0.05, Floor B: Tue $0 in, drop $10 (bills, no play).
        *play("B1", [("2024-05-14 20:30", 0, 200, 0, 0)], denomination=0.05, location="Floor B"),
    ]
    return rollup(meter_movement(snapshot_frame(*rows)), "h")


def test_series_over_time_per_day_and_per_week() -> None:
    daily = series_over_time(fleet(), "D")
    assert daily["bucket"].dt.strftime("%m-%d").tolist() == ["05-13", "05-14", "05-18"]
    assert daily["coin_in"].tolist() == pytest.approx([60.0, 20.0, 5.0])
    assert daily["net_win"].tolist() == pytest.approx([30.0 - 5.0, 10.0 + 10.0, 0.0])
    assert daily["hold_pct"].tolist() == pytest.approx([25 / 60 * 100, 100.0, 0.0])
    weekly = series_over_time(fleet(), "W")
    assert len(weekly) == 1
    assert weekly["bucket"].iloc[0] == pd.Timestamp("2024-05-13", tz="UTC")
    assert weekly["coin_in"].iloc[0] == pytest.approx(85.0)
    assert weekly["cabinets"].iloc[0] == 3


def test_series_over_time_with_a_gaming_day_start() -> None:
    daily = series_over_time(fleet(), "D", gaming_day_start_hour=6)
    # Saturday 02:30 belongs to Friday's gaming day.
    assert daily["bucket"].dt.strftime("%a %H:%M").tolist() == [
        "Mon 06:00",
        "Tue 06:00",
        "Fri 06:00",
    ]


def test_by_location_sorted_by_net_win() -> None:
    table = by_location(fleet())
    assert table["location"].tolist() == ["Floor A", "Floor B"]
    assert table["coin_in"].tolist() == pytest.approx([85.0, 0.0])
    assert table["net_win"].tolist() == pytest.approx([35.0, 10.0])
    assert table["cabinets"].tolist() == [2, 1]
    assert table["hold_pct"].iloc[0] == pytest.approx(35 / 85 * 100)
    assert pd.isna(table["hold_pct"].iloc[1])


def test_top_and_bottom_cabinets() -> None:
    top, bottom = top_bottom_cabinets(fleet(), n=2)
    assert top["cabinet"].tolist() == ["A1", "B1"]
    assert top["net_win"].tolist() == pytest.approx([40.0, 10.0])
    assert bottom["cabinet"].tolist() == ["A2", "B1"]
    assert bottom["net_win"].tolist() == pytest.approx([-5.0, 10.0])
    assert top["location"].tolist() == ["Floor A", "Floor B"]
    by_coin_in, _ = top_bottom_cabinets(fleet(), n=1, by="coin_in")
    assert by_coin_in["cabinet"].tolist() == ["A2"]


def test_hold_by_cabinet_puts_undefined_hold_last() -> None:
    table = hold_by_cabinet(fleet())
    assert table["cabinet"].tolist() == ["A1", "A2", "B1"]
    assert table["hold_pct"].iloc[0] == pytest.approx(40 / 35 * 100)
    assert table["hold_pct"].iloc[1] == pytest.approx(-10.0)
    assert pd.isna(table["hold_pct"].iloc[2])  # no coin in


def test_heatmap_is_7_by_24_coin_in_money() -> None:
    grid = heatmap_hour_weekday(fleet())
    assert grid.shape == (7, 24)
    assert grid.index.tolist() == list(WEEKDAYS)
    assert grid.columns.tolist() == list(range(24))
    assert grid.loc["Mon", 10] == pytest.approx(10.0)
    assert grid.loc["Mon", 11] == pytest.approx(50.0)
    assert grid.loc["Tue", 10] == pytest.approx(20.0)
    assert grid.loc["Sat", 2] == pytest.approx(5.0)
    assert grid.to_numpy().sum() == pytest.approx(85.0)


def test_heatmap_uses_the_gaming_day_and_the_casino_clock() -> None:
    grid = heatmap_hour_weekday(fleet(), gaming_day_start_hour=6)
    assert grid.loc["Fri", 2] == pytest.approx(5.0)  # Saturday 02:30 is Friday's night
    assert grid.loc["Sat", 2] == 0.0
    paris = heatmap_hour_weekday(fleet(), tz="Europe/Paris")
    assert paris.loc["Mon", 12] == pytest.approx(10.0)  # 10:30 UTC is 12:30 in Paris


def test_heatmap_of_nothing_is_zeros() -> None:
    grid = heatmap_hour_weekday(fleet().iloc[:0])
    assert grid.shape == (7, 24)
    assert grid.to_numpy().sum() == 0.0


def test_sparklines_cover_every_bucket_with_zeros_for_quiet_days() -> None:
    daily = rollup(fleet(), "D")
    lines = sparkline_per_cabinet(daily, value="coin_in")
    assert lines["cabinet"].tolist() == ["A1", "A2", "B1"]
    assert lines["sparkline"].iloc[0] == pytest.approx([10.0, 20.0, 5.0])
    assert lines["sparkline"].iloc[1] == pytest.approx([50.0, 0.0, 0.0])
    assert lines["sparkline"].iloc[2] == pytest.approx([0.0, 0.0, 0.0])
    net = sparkline_per_cabinet(daily)
    assert net["sparkline"].iloc[1] == pytest.approx([-5.0, 0.0, 0.0])


def test_every_chart_frame_survives_an_empty_period() -> None:
    empty = fleet().iloc[:0]
    assert series_over_time(empty, "D").empty
    assert by_location(empty).empty
    top, bottom = top_bottom_cabinets(empty)
    assert top.empty and bottom.empty
    assert hold_by_cabinet(empty).empty
    assert list(sparkline_per_cabinet(empty).columns) == ["cabinet", "sparkline"]
