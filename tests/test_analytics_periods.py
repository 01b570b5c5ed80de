"""Gaming-day periods and buckets: start hour, weeks, months, DST, custom ranges."""

from __future__ import annotations

import pandas as pd
import pytest

from smib_core.analytics.periods import bucket_start, period_bounds, previous_period
from smib_core.errors import InvalidInput


def ts(text: str, tz: str = "UTC") -> pd.Timestamp:
    return pd.Timestamp(text, tz=tz)


def test_gaming_day_starting_at_6_puts_0559_into_the_previous_day() -> None:
    times = pd.Series([ts("2024-05-14 05:59"), ts("2024-05-14 06:00"), ts("2024-05-14 23:30")])
    starts = bucket_start(times, "D", gaming_day_start_hour=6)
    assert starts.tolist() == [
        ts("2024-05-13 06:00"),
        ts("2024-05-14 06:00"),
        ts("2024-05-14 06:00"),
    ]
    start, end = period_bounds("day", ts("2024-05-14 05:59"), gaming_day_start_hour=6)
    assert (start, end) == (ts("2024-05-13 06:00"), ts("2024-05-14 06:00"))


def test_day_in_the_casino_time_zone() -> None:
    # 03:30 UTC is 05:30 in Paris (summer, +2): still the previous gaming day.
    start, end = period_bounds(
        "day", ts("2024-06-12 03:30"), gaming_day_start_hour=6, tz="Europe/Paris"
    )
    assert start == ts("2024-06-11 06:00", "Europe/Paris")
    assert end == ts("2024-06-12 06:00", "Europe/Paris")
    assert start == ts("2024-06-11 04:00")  # the same instant in UTC


def test_gaming_day_across_the_spring_dst_change_lasts_23_hours() -> None:
    start, end = period_bounds(
        "day", ts("2024-03-30 12:00", "Europe/Paris"), gaming_day_start_hour=6, tz="Europe/Paris"
    )  # clocks go forward at 02:00 on 31 March
    assert start == ts("2024-03-30 06:00", "Europe/Paris")
    assert end == ts("2024-03-31 06:00", "Europe/Paris")
    assert end - start == pd.Timedelta(hours=23)


def test_hour_bounds_and_hourly_buckets_in_a_half_hour_zone() -> None:
    start, end = period_bounds("hour", ts("2024-05-14 10:42"))
    assert (start, end) == (ts("2024-05-14 10:00"), ts("2024-05-14 11:00"))
    # Kolkata is UTC+5:30: its hours start at hh:30 UTC.
    starts = bucket_start(pd.Series([ts("2024-05-14 10:42")]), "h", tz="Asia/Kolkata")
    assert starts.iloc[0] == ts("2024-05-14 10:30")


def test_repeated_autumn_hour_stays_two_hourly_buckets() -> None:
    # 00:30 and 01:30 UTC on 27 Oct 2024 are both 02:30 on the Paris wall clock.
    times = pd.Series([ts("2024-10-27 00:30"), ts("2024-10-27 01:30")])
    starts = bucket_start(times, "h", tz="Europe/Paris")
    assert starts.tolist() == [ts("2024-10-27 00:00"), ts("2024-10-27 01:00")]


def test_week_bounds_start_on_mondays_gaming_day() -> None:
    start, end = period_bounds("week", ts("2024-05-15 10:00"), gaming_day_start_hour=6)
    assert (start, end) == (ts("2024-05-13 06:00"), ts("2024-05-20 06:00"))
    # Monday 05:00 still belongs to the Sunday gaming day, so to the week before.
    start, _ = period_bounds("week", ts("2024-05-13 05:00"), gaming_day_start_hour=6)
    assert start == ts("2024-05-06 06:00")


def test_month_bounds_follow_the_gaming_day() -> None:
    start, end = period_bounds("month", ts("2024-02-10 12:00"), gaming_day_start_hour=6)
    assert (start, end) == (ts("2024-02-01 06:00"), ts("2024-03-01 06:00"))
    start, end = period_bounds("month", ts("2024-03-01 03:00"), gaming_day_start_hour=6)
    assert (start, end) == (ts("2024-02-01 06:00"), ts("2024-03-01 06:00"))
    start, end = period_bounds("month", ts("2024-12-31 23:00"))
    assert (start, end) == (ts("2024-12-01"), ts("2025-01-01"))


def test_custom_range_is_taken_as_given() -> None:
    start, end = period_bounds("custom", ts("2024-05-01 13:00"), end=ts("2024-05-03 02:00"))
    assert (start, end) == (ts("2024-05-01 13:00"), ts("2024-05-03 02:00"))
    with pytest.raises(InvalidInput):
        period_bounds("custom", ts("2024-05-01"))
    with pytest.raises(InvalidInput):
        period_bounds("custom", ts("2024-05-03"), end=ts("2024-05-01"))


def test_naive_anchor_is_the_casinos_wall_clock() -> None:
    start, _ = period_bounds(
        "day", pd.Timestamp("2024-06-12 05:30"), gaming_day_start_hour=6, tz="Europe/Paris"
    )
    assert start == ts("2024-06-11 06:00", "Europe/Paris")


def test_previous_periods() -> None:
    day = period_bounds("day", ts("2024-05-14 12:00"), gaming_day_start_hour=6)
    assert previous_period("day", *day, gaming_day_start_hour=6) == (
        ts("2024-05-13 06:00"),
        ts("2024-05-14 06:00"),
    )
    week = period_bounds("week", ts("2024-05-15"))
    assert previous_period("week", *week) == (ts("2024-05-06"), ts("2024-05-13"))
    month = period_bounds("month", ts("2024-03-15"), gaming_day_start_hour=6)
    assert previous_period("month", *month, gaming_day_start_hour=6) == (
        ts("2024-02-01 06:00"),
        ts("2024-03-01 06:00"),
    )
    hour = period_bounds("hour", ts("2024-05-14 00:10"))
    assert previous_period("hour", *hour) == (ts("2024-05-13 23:00"), ts("2024-05-14 00:00"))
    assert previous_period("custom", ts("2024-05-10"), ts("2024-05-13")) == (
        ts("2024-05-07"),
        ts("2024-05-10"),
    )


def test_bad_start_hour_and_kind_are_refused() -> None:
    with pytest.raises(InvalidInput):
        period_bounds("day", ts("2024-05-14"), gaming_day_start_hour=24)
    with pytest.raises(InvalidInput):
        period_bounds("year", ts("2024-05-14"))  # type: ignore[arg-type]
