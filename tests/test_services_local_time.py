"""Local time for people (services/local_time.py): known UTC instants in a zone with
daylight saving, the zone named in texts and headers, downloads with both clocks."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd

from smib_core.services.events_view import events_per_hour
from smib_core.services.local_time import (
    CLOCK,
    column_label,
    day_start,
    local,
    local_text,
    local_times,
    with_local_times,
    zone_label,
)
from smib_core.services.rollout_plan import summary_text
from smib_core.store.rollouts import Rollout

NY = "America/New_York"
SUMMER = datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC)  # 08:00:05 EDT (UTC-4)
WINTER = datetime(2026, 1, 15, 12, 0, 5, tzinfo=UTC)  # 07:00:05 EST (UTC-5)


def test_a_utc_instant_in_summer_and_winter() -> None:
    assert local_text(SUMMER, NY) == "2026-07-01 08:00:05 EDT (America/New_York)"
    assert local_text(WINTER, NY) == "2026-01-15 07:00:05 EST (America/New_York)"
    assert local_text(SUMMER, NY, CLOCK) == "08:00:05 EDT (America/New_York)"
    assert local_text(SUMMER, "UTC") == "2026-07-01 12:00:05 UTC"


def test_naive_datetimes_are_utc_and_numbers_epoch_seconds() -> None:
    naive = datetime(2026, 7, 1, 12, 0, 5)
    assert local(naive, NY) == local(SUMMER, NY) == local(SUMMER.timestamp(), NY)
    assert local(int(SUMMER.timestamp()), NY).hour == 8


def test_a_column_header_names_the_abbreviations_it_holds_and_the_zone() -> None:
    times = pd.Series(pd.to_datetime([SUMMER, None], utc=True))
    assert column_label("Raised", NY, times) == "Raised (EDT, America/New_York)"
    both = pd.Series(pd.to_datetime([WINTER, SUMMER, SUMMER], utc=True))
    assert column_label("Raised", NY, both) == "Raised (EST/EDT, America/New_York)"
    assert column_label("Raised", "UTC", both) == "Raised (UTC)"
    assert column_label("Raised", NY) in {
        "Raised (EDT, America/New_York)",
        "Raised (EST, America/New_York)",
    }
    assert zone_label(local(SUMMER, "Europe/Paris")) == "CEST (Europe/Paris)"


def test_local_times_converts_the_named_columns_only() -> None:
    frame = pd.DataFrame({"at": [SUMMER], "other": [WINTER]})
    shown = local_times(frame, NY, "at")
    assert shown["at"].iloc[0] == pd.Timestamp("2026-07-01 08:00:05", tz=NY)
    assert str(shown["at"].dt.tz) == NY
    assert shown["other"].iloc[0] == WINTER


def test_a_download_carries_utc_and_local_time_and_names_the_zone() -> None:
    # 2026-11-01 05:30 UTC and 06:30 UTC are both 01:30 in New York (the repeated hour):
    # the UTC column tells them apart.
    frame = pd.DataFrame(
        {
            "at": pd.to_datetime(["2026-11-01 05:30", "2026-11-01 06:30"], utc=True),
            "actor": ["ann", "bob"],
        }
    )
    out = with_local_times(frame, NY, "at")
    assert list(out.columns) == ["at", "at_local", "time_zone", "actor"]
    assert out["at_local"].tolist() == [pd.Timestamp("2026-11-01 01:30")] * 2
    assert out["time_zone"].tolist() == [NY, NY]
    text = out.to_csv(index=False)
    assert "2026-11-01 05:30:00+00:00,2026-11-01 01:30:00,America/New_York,ann" in text


def test_a_local_day_starts_at_local_midnight() -> None:
    assert day_start(date(2026, 7, 1), NY) == datetime(2026, 7, 1, 4, tzinfo=UTC)
    assert day_start(date(2026, 1, 15), NY) == datetime(2026, 1, 15, 5, tzinfo=UTC)
    # Havana springs forward at midnight: 8 March 2026 starts at 01:00 CDT (05:00 UTC).
    assert day_start(date(2026, 3, 8), "America/Havana") == datetime(2026, 3, 8, 5, tzinfo=UTC)


def test_events_are_counted_per_local_hour() -> None:
    events = pd.DataFrame(
        {
            # 01:30 EDT and 01:30 EST: the repeated hour of 1 November 2026 counts twice.
            "at": pd.to_datetime(["2026-11-01 05:30", "2026-11-01 06:30"], utc=True),
            "kind": ["door", "door"],
        }
    )
    hours = events_per_hour(events, NY)["hour"]
    assert [h.isoformat() for h in hours] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
    ]
    india = events_per_hour(events.head(1), "Asia/Kolkata")["hour"]  # 11:00 IST
    assert india.iloc[0].isoformat() == "2026-11-01T11:00:00+05:30"
    assert events_per_hour(events.iloc[:0], NY)["hour"].dt.tz is not None


def test_a_rollout_summary_names_its_start_in_local_time() -> None:
    start = SUMMER.timestamp()
    rollout = Rollout(
        "r1",
        "fw",
        "cloudy",
        "v2",
        "a.bin",
        ("a",),
        5,
        80.0,
        60.0,
        "tina",
        "technician",
        "local",
        "running",
        "",
        start,
        start,
    )
    text = summary_text(rollout, [], now=SUMMER.timestamp() + 5, tz=NY)
    assert "Started by tina on 2026-07-01 08:00 EDT (America/New_York)" in text
