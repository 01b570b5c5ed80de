"""Rollups: money by denomination, bucket assignment, gaming days, flags, and the
incremental updates (day by day, hour by hour, mid-hour) that must equal the rollup
of the whole history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smib_core.analytics.movement import MOVEMENT_METERS, meter_movement
from smib_core.analytics.periods import bucket_start
from smib_core.analytics.rollups import (
    ROLLUP_COLUMNS,
    add_money,
    merge_rollups,
    rollup,
    select_period,
    update_rollups,
)
from smib_core.errors import InvalidInput
from tests.test_analytics_movement import reading, snapshot_frame

TZ = "Europe/Paris"
START_HOUR = 6


def ts(text: str, tz: str = "UTC") -> pd.Timestamp:
    return pd.Timestamp(text, tz=tz)


# --- money ------------------------------------------------------------------------------


def test_money_is_credits_times_the_cabinets_denomination() -> None:
    frame = snapshot_frame(
        reading("penny", 0, denomination=0.01, coin_in=0, drop=0),
        reading("penny", 5, denomination=0.01, coin_in=1000, drop=2000),
        reading("quarter", 0, denomination=0.25, coin_in=0, drop=0),
        reading("quarter", 5, denomination=0.25, coin_in=1000, drop=2000),
    )
    money = add_money(meter_movement(frame))
    assert money["coin_in_money"].tolist() == pytest.approx([10.0, 250.0])
    assert money["drop_money"].tolist() == pytest.approx([20.0, 500.0])
    assert "games_played_money" not in money.columns  # games are not money
    hourly = rollup(meter_movement(frame), "h")
    assert hourly["coin_in"].sum() == 2000.0  # credits of different sizes...
    assert hourly["coin_in_money"].sum() == pytest.approx(260.0)  # ...money adds up


# --- buckets ----------------------------------------------------------------------------


def test_an_interval_belongs_to_the_bucket_just_before_its_end() -> None:
    base = ts("2024-05-13 09:50")
    frame = snapshot_frame(
        *[reading("C1", m, start=base, coin_in=c) for m, c in [(0, 0), (5, 10), (10, 30), (15, 60)]]
    )  # readings at 09:50, 09:55, 10:00, 10:05
    hourly = rollup(meter_movement(frame), "h")
    assert hourly["bucket"].tolist() == [ts("2024-05-13 09:00"), ts("2024-05-13 10:00")]
    assert hourly["coin_in"].tolist() == [30.0, 30.0]  # 10 + 20 up to 10:00, then 30
    assert hourly["intervals"].tolist() == [2, 1]
    assert hourly["start"].tolist() == [ts("2024-05-13 09:50"), ts("2024-05-13 10:00")]
    assert hourly["end"].tolist() == [ts("2024-05-13 10:00"), ts("2024-05-13 10:05")]
    assert list(hourly.columns) == list(ROLLUP_COLUMNS)


def test_daily_rollup_uses_the_gaming_day() -> None:
    base = ts("2024-05-14 05:49")
    frame = snapshot_frame(
        *[reading("C1", m, start=base, coin_in=c) for m, c in [(0, 0), (10, 7), (15, 11)]]
    )  # intervals end at 05:59 (Monday's gaming day) and 06:04 (Tuesday's)
    daily = rollup(meter_movement(frame), "D", gaming_day_start_hour=6)
    assert daily["bucket"].tolist() == [ts("2024-05-13 06:00"), ts("2024-05-14 06:00")]
    assert daily["coin_in"].tolist() == [7.0, 4.0]


def test_gap_across_buckets_lands_once_where_it_ends() -> None:
    base = ts("2024-05-13 10:50")
    frame = snapshot_frame(
        *[reading("C1", m, start=base, coin_in=c) for m, c in [(0, 0), (5, 10), (25, 90)]]
    )  # 10:55 -> 11:15: a 20-minute restart across the hour
    hourly = rollup(meter_movement(frame), "h")
    assert hourly["coin_in"].tolist() == [10.0, 80.0]
    assert hourly["coin_in"].sum() == 90.0


def test_flags_are_counted_per_bucket() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=99_999_990),
        reading("C1", 5, coin_in=10),  # rollover: +20
        reading("C1", 10, coin_in=3),  # RAM clear: +3, the play since the clear
        reading("C1", 15, coin_in=50_000_003),  # absurd: 0
        reading("C1", 20, coin_in=50_000_013),  # +10
    )
    hourly = rollup(meter_movement(frame), "h")
    assert len(hourly) == 1
    row = hourly.iloc[0]
    assert (row["rollover"], row["ram_clear"], row["absurd"]) == (1, 1, 1)
    assert row["coin_in"] == 33.0
    assert row["intervals"] == 4


def test_daily_from_hourly_equals_daily_from_movement() -> None:
    snaps = _history()
    movement = meter_movement(snaps)
    hourly = rollup(movement, "h", gaming_day_start_hour=START_HOUR, tz=TZ)
    from_hours = rollup(hourly, "D", gaming_day_start_hour=START_HOUR, tz=TZ)
    from_movement = rollup(movement, "D", gaming_day_start_hour=START_HOUR, tz=TZ)
    pd.testing.assert_frame_equal(from_hours, from_movement)


def test_empty_movement_gives_an_empty_rollup() -> None:
    empty = meter_movement(snapshot_frame(reading("C1", 0)))
    hourly = rollup(empty, "h")
    assert hourly.empty
    assert list(hourly.columns) == list(ROLLUP_COLUMNS)
    with pytest.raises(InvalidInput):
        rollup(empty, "W")  # type: ignore[arg-type]


# --- incremental updates ----------------------------------------------------------------


def _history() -> pd.DataFrame:
    """3 cabinets, 3 days of 5-minute readings from Sunday 04:00 Paris time.

    C1 (1 cent) rolls over its 8 digits on day 2; C2 (25 cents) has a RAM clear at
    reading 400 and misses its coin-in meter now and then; C3 (5 cents) goes quiet
    for 20 minutes twice (board restarts).
    """
    rng = np.random.default_rng(42)
    n = 3 * 288
    at = pd.date_range("2024-05-12 04:00", periods=n, freq="5min", tz=TZ).tz_convert("UTC")
    frames = []
    for cabinet, denomination, start in (
        ("C1", 0.01, 99_990_000),
        ("C2", 0.25, 5_000),
        ("C3", 0.05, 70_000),
    ):
        frame = pd.DataFrame(
            {
                "relay": f"relay-{cabinet}",
                "cabinet": cabinet,
                "location": "Floor A" if cabinet != "C3" else "Floor B",
                "at": at,
                "denomination": denomination,
            }
        )
        for code in MOVEMENT_METERS.values():
            frame[code] = np.cumsum(rng.integers(0, 40, size=n)) + start
        if cabinet == "C1":
            frame["0000"] = frame["0000"] % 100_000_000
        if cabinet == "C2":
            for code in MOVEMENT_METERS.values():  # RAM clear: every meter back to 3
                values = frame[code].to_numpy()
                frame[code] = np.concatenate([values[:400], values[400:] - values[400] + 3])
            frame["0000"] = frame["0000"].astype("float64")
            frame.loc[[100, 101, 500], "0000"] = np.nan
        if cabinet == "C3":
            frame = frame.drop(index=[*range(50, 54), *range(300, 304)])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _window(snaps: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Readings in (start, end] plus each cabinet's last reading at or before start."""
    before = snaps[snaps["at"] <= start]
    baseline = before.sort_values("at").groupby("cabinet").tail(1)
    inside = snaps[(snaps["at"] > start) & (snaps["at"] <= end)]
    return pd.concat([baseline, inside], ignore_index=True)


def _whole(snaps: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    movement = meter_movement(snaps)
    return (
        rollup(movement, "h", gaming_day_start_hour=START_HOUR, tz=TZ),
        rollup(movement, "D", gaming_day_start_hour=START_HOUR, tz=TZ),
    )


def _empty() -> pd.DataFrame:
    return rollup(meter_movement(snapshot_frame(reading("C1", 0))), "h", tz=TZ)


def test_history_has_the_events_it_claims() -> None:
    hourly, daily = _whole(_history())
    flags = hourly.groupby("cabinet")[["rollover", "ram_clear"]].sum()
    assert flags.loc["C1", "rollover"] == 1
    assert flags.loc["C2", "ram_clear"] == 1
    assert daily["intervals"].sum() == 3 * (3 * 288 - 1) - 8  # C3 lost 8 readings
    assert daily["bucket"].min() == ts("2024-05-11 06:00", TZ)  # Sunday 04:00 is Saturday's
    assert (daily[["coin_in", "drop", "games_played"]] >= 0).all().all()


def test_day_by_day_incremental_merge_equals_the_rollup_of_the_whole() -> None:
    snaps = _history()
    whole_hourly, whole_daily = _whole(snaps)
    hourly, daily = _empty(), _empty()
    days = bucket_start(snaps["at"], "D", gaming_day_start_hour=START_HOUR, tz=TZ).unique()
    movements = []
    for day in sorted(days):
        end = day + pd.Timedelta(days=1)
        movement = meter_movement(_window(snaps, day, end))
        movements.append(movement)
        day_hours = rollup(movement, "h", gaming_day_start_hour=START_HOUR, tz=TZ)
        hourly = merge_rollups(hourly, day_hours)
        day_rows = rollup(movement, "D", gaming_day_start_hour=START_HOUR, tz=TZ)
        daily = merge_rollups(daily, day_rows)
    pd.testing.assert_frame_equal(hourly, whole_hourly)
    pd.testing.assert_frame_equal(daily, whole_daily)
    # The windows' movement, put together, is the movement of the whole history.
    joined = pd.concat(movements, ignore_index=True).sort_values(["cabinet", "end"])
    pd.testing.assert_frame_equal(joined.reset_index(drop=True), meter_movement(snaps))


def test_live_updates_every_15_minutes_equal_the_rollup_of_the_whole() -> None:
    snaps = _history()
    snaps = snaps[snaps["at"] < snaps["at"].min() + pd.Timedelta(hours=10)]  # across 06:00
    whole_hourly, whole_daily = _whole(snaps)
    hourly, daily = _empty(), _empty()
    first = snaps["at"].min()
    ticks = pd.date_range(first, snaps["at"].max() + pd.Timedelta(minutes=15), freq="15min")
    for tick in ticks[1:]:
        hour = bucket_start(pd.Series([tick - pd.Timedelta(1, "ns")]), "h", tz=TZ).iloc[0]
        movement = meter_movement(_window(snaps, hour, tick))  # the current hour so far
        hourly, daily = update_rollups(
            hourly, daily, movement, gaming_day_start_hour=START_HOUR, tz=TZ
        )
    pd.testing.assert_frame_equal(hourly, whole_hourly)
    pd.testing.assert_frame_equal(daily, whole_daily)


def test_merge_is_idempotent_and_replaces_a_partial_bucket() -> None:
    snaps = _history()
    hourly, _ = _whole(snaps)
    again = merge_rollups(hourly, hourly)
    pd.testing.assert_frame_equal(again, hourly)
    # A first, partial version of an hour is replaced by the complete one.
    partial = hourly.iloc[[5]].assign(coin_in=1.0, intervals=1)
    stale = merge_rollups(hourly, partial)
    assert stale["coin_in"].iloc[5] == 1.0
    fixed = merge_rollups(stale, hourly.iloc[[5]])
    pd.testing.assert_frame_equal(fixed, hourly)
    assert merge_rollups(_empty(), hourly).equals(hourly)
    assert merge_rollups(hourly, _empty()).equals(hourly)


def test_select_period_cuts_on_bucket_start() -> None:
    _, daily = _whole(_history())
    monday = ts("2024-05-13 06:00", TZ)
    part = select_period(daily, monday, monday + pd.Timedelta(days=1))
    assert part["bucket"].unique().tolist() == [monday]
    assert sorted(part["cabinet"]) == ["C1", "C2", "C3"]


def test_rollup_keeps_the_last_identity_of_the_bucket() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=0),
        reading("C1", 5, coin_in=5, relay="old"),
        reading("C1", 10, coin_in=9, relay="new", location="Floor B", denomination=0.05),
    )
    row = rollup(meter_movement(frame), "h").iloc[0]
    assert (row["relay"], row["location"], row["denomination"]) == ("new", "Floor B", 0.05)
    assert row["coin_in_money"] == pytest.approx(5 * 0.01 + 4 * 0.05)
    # Credits of two denominations are not added: the row's credits are in its (last)
    # denomination, from money, so credits x denomination = money.
    assert row["coin_in"] == pytest.approx((5 * 0.01 + 4 * 0.05) / 0.05)


def test_a_denomination_change_does_not_mix_credits_in_daily_rows() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=0, denomination=0.01),
        reading("C1", 30, coin_in=1_000, denomination=0.01),  # $10 at 1 cent
        reading("C1", 90, coin_in=1_040, denomination=0.25),  # 40 credits at 25 cents: $10
    )
    hourly = rollup(meter_movement(frame), "h")
    assert hourly["coin_in"].tolist() == pytest.approx([1_000.0, 40.0])  # one denomination each
    daily = rollup(hourly, "D")
    assert daily["coin_in_money"].tolist() == pytest.approx([20.0])
    assert daily["denomination"].tolist() == [0.25]
    assert daily["coin_in"].tolist() == pytest.approx([80.0])  # $20 at 25 cents, not 1,040
