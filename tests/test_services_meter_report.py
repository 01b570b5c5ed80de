"""Report periods: a running period is compared with the same elapsed time of the
previous one, to the instant; gaming days in the casino's local time, across DST."""

from __future__ import annotations

from datetime import date

import pandas as pd

from smib_core.services.meter_report import report_period, span


def test_at_10_20_today_is_compared_with_yesterday_00_00_to_10_20() -> None:
    period = report_period("today", pd.Timestamp("2024-05-15 10:20", tz="UTC"))
    assert period.start == pd.Timestamp("2024-05-15", tz="UTC")
    assert period.previous_start == pd.Timestamp("2024-05-14", tz="UTC")
    assert period.previous_end == pd.Timestamp("2024-05-14 10:20", tz="UTC")
    assert period.in_progress


def test_at_00_10_today_is_compared_with_yesterdays_first_ten_minutes() -> None:
    period = report_period("today", pd.Timestamp("2024-05-15 00:10:30", tz="UTC"))
    assert period.previous_end == pd.Timestamp("2024-05-14 00:10:30", tz="UTC")


def test_a_finished_period_is_compared_whole() -> None:
    period = report_period("yesterday", pd.Timestamp("2024-05-15 10:20", tz="UTC"))
    assert (period.previous_start, period.previous_end) == (
        pd.Timestamp("2024-05-13", tz="UTC"),
        pd.Timestamp("2024-05-14", tz="UTC"),
    )
    custom = report_period(
        "custom",
        pd.Timestamp("2024-05-15 10:20", tz="UTC"),
        first_day=date(2024, 5, 1),
        last_day=date(2024, 5, 10),
    )
    assert custom.previous_end == custom.start


def test_this_month_is_compared_with_the_same_elapsed_time_of_last_month() -> None:
    period = report_period("this_month", pd.Timestamp("2024-05-11 10:20", tz="UTC"))
    assert period.previous_start == pd.Timestamp("2024-04-01", tz="UTC")
    assert period.previous_end == pd.Timestamp("2024-04-11 10:20", tz="UTC")


def test_gaming_days_start_at_the_local_hour_of_the_casinos_zone() -> None:
    zone = "America/Los_Angeles"  # UTC-7 in May
    now = pd.Timestamp("2024-05-15 17:20", tz="UTC")  # 10:20 local
    period = report_period("today", now, gaming_day_start_hour=6, tz=zone)
    assert period.start == pd.Timestamp("2024-05-15 06:00", tz=zone)
    assert period.start.tz_convert("UTC") == pd.Timestamp("2024-05-15 13:00", tz="UTC")
    assert period.previous_end == pd.Timestamp("2024-05-14 10:20", tz=zone)


def test_a_daylight_saving_gaming_day_is_23_or_25_hours_long() -> None:
    zone = "America/Los_Angeles"  # clocks went forward on 10 Mar 2024, back on 3 Nov
    spring = report_period("yesterday", pd.Timestamp("2024-03-11 12:00", tz=zone), tz=zone)
    assert spring.end - spring.start == pd.Timedelta(hours=23)
    autumn = report_period(
        "yesterday", pd.Timestamp("2024-11-03 12:00", tz=zone), gaming_day_start_hour=6, tz=zone
    )
    assert autumn.end - autumn.start == pd.Timedelta(hours=25)
    assert autumn.start == pd.Timestamp("2024-11-02 06:00", tz=zone)  # 6 to 6, 02:00 twice


def test_labels_name_the_zone() -> None:
    zone = "Europe/Paris"
    period = report_period("today", pd.Timestamp("2024-05-15 10:20", tz=zone), tz=zone)
    assert (
        period.label == "Today: Wed 15 May 2024 00:00 – Thu 16 May 2024 00:00 CEST (Europe/Paris)"
    )
    assert period.compared_label == "Tue 14 May 2024 00:00 – 10:20 CEST (Europe/Paris)"
    utc = report_period("today", pd.Timestamp("2024-05-15 10:20", tz="UTC"))
    assert utc.compared_label.endswith("10:20 UTC")
    start = pd.Timestamp("2024-03-30 00:00", tz=zone)
    assert span(start, pd.Timestamp("2024-03-31 06:00", tz=zone)).endswith(
        "CET/CEST (Europe/Paris)"
    )
