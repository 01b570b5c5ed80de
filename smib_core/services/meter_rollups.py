"""Keeping the hourly and daily rollups up to date as meter snapshots arrive.

Dashboards read rollups, never raw snapshots, so each good reading is folded in at
once: `refresh_rollups` recomputes, whole, the hour that holds the interval the reading
closes and the gaming day that holds that hour, and upserts both rows (the rollup
semantics of `smib_core.analytics.rollups`: a bucket's row is replaced, never added
to, so a refresh done twice, or after a late reading, is still right).

The hour is recomputed from the cabinet's readings of that hour plus its last few
readings before it (the baseline the first interval is measured from), the day from
the stored hourly rows of that day. Histories are keyed by `cabinet_id` (a renamed
cabinet keeps one history); the rows carry the names of the latest reading.

`rebuild_rollups` recomputes everything above for whole gaming days from the stored
readings, cabinet by cabinet (`smib rollups rebuild`): after the time zone or the
gaming-day start hour changed, or to apply the current meter rules to older history.

`verify_rollups` compares, cabinet-hour by cabinet-hour, the stored hourly rows of some
gaming days with what the stored readings give, and repairs the cabinets that disagree
on request (`smib verify meters`; the collector runs it over recent hours on start and
periodically): a snapshot stored whose rollup update failed is never wrong for ever.

`refresh_location_hours` recomputes, whole, the `rollups_location_hourly` rows of some
(location, hour) pairs from the hourly rows of that location and hour (the collector
gathers the pairs its readings touched and flushes them every minute or so), and
`refresh_daily_digests` the `rollups_daily_digest` documents of some gaming days from
the daily rows of those days (flushed with them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from smib_core.analytics import meter_movement, period_bounds, update_rollups
from smib_core.analytics.rollups import ROLLUP_COLUMNS
from smib_core.services.meter_seed import rollups_of
from smib_core.store.meters import MeterStore
from smib_core.store.rollups import location_hourly_frame

_RAW_CHUNK_DAYS = 31  # a cabinet's readings read a month at a time

BASELINE_READINGS = 3  # readings before the hour: a meter missing from one still has a base
# Reads reach this far past a bound so a reading taken on it is included (the movement is
# cut at the bound after): nx-27017 compares times to the second (`$lt 10:00:00.001`
# misses a reading at 10:00:00.000).
_JUST_AFTER = timedelta(seconds=1)
_ONE_NS = pd.Timedelta(1, unit="ns")


def refresh_rollups(
    store: MeterStore,
    cabinet_id: str,
    at: datetime,
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> pd.DataFrame:
    """Recompute and store the hourly and daily rows touched by the cabinet's reading
    taken at `at`; returns the movement of that hour (its `cabinet` is the id)."""
    hour_start, hour_end = _hour_bounds(at, tz)
    readings = store.snapshots(hour_start, hour_end + _JUST_AFTER, cabinet_ids=[cabinet_id])
    baseline = store.previous_snapshots(cabinet_id, hour_start, count=BASELINE_READINGS)
    history = pd.concat([f for f in (baseline, readings) if not f.empty], ignore_index=True)
    if history.empty:
        return meter_movement(readings)
    movement = meter_movement(history.assign(cabinet=cabinet_id))
    movement = movement[(movement["end"] > hour_start) & (movement["end"] <= hour_end)]
    if movement.empty:
        return movement
    day_start, day_end = period_bounds(
        "day", hour_start, gaming_day_start_hour=gaming_day_start_hour, tz=tz
    )
    stored = store.rollups("h", day_start, day_end, cabinet_ids=[cabinet_id], tz=tz)
    stored_hours = stored.assign(cabinet=cabinet_id)[list(ROLLUP_COLUMNS)]
    hourly, daily = update_rollups(
        stored_hours,
        stored_hours.iloc[0:0],
        movement,
        gaming_day_start_hour=gaming_day_start_hour,
        tz=tz,
    )
    latest = history.iloc[-1]
    names = {
        "cabinet": str(latest["cabinet"]),
        "cabinet_id": cabinet_id,
        "location_id": str(latest["location_id"]),
    }
    store.upsert_rollups("h", hourly[hourly["bucket"] == hour_start].assign(**names))
    store.upsert_rollups("D", daily.assign(**names))
    return movement


def reading_hour(at: datetime, tz: str = "UTC") -> pd.Timestamp:
    """The hourly bucket (in `tz`) holding the interval a reading taken at `at` closes:
    a reading on the hour closes the previous hour's last interval."""
    return _hour_bounds(at, tz)[0]


def reading_day(at: datetime, gaming_day_start_hour: int = 0, tz: str = "UTC") -> pd.Timestamp:
    """The gaming-day bucket (in `tz`) holding the hour a reading taken at `at` closes."""
    return period_bounds(
        "day", reading_hour(at, tz), gaming_day_start_hour=gaming_day_start_hour, tz=tz
    )[0]


def _hour_bounds(at: datetime, tz: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    end_of_interval = pd.Timestamp(at).tz_convert("UTC") - _ONE_NS
    return period_bounds("hour", end_of_interval, tz=tz)


def refresh_location_hours(store: MeterStore, keys: Iterable[tuple[str, datetime]]) -> int:
    """Recompute and store the location-hour row of each (location_id, hour bucket) from
    that hour's hourly rollup rows of the location (an indexed read per pair; a pair
    without rows loses its row); returns how many rows were written or removed."""
    frames = []
    for location_id, bucket in sorted(set(keys)):
        start = pd.Timestamp(bucket).tz_convert("UTC")
        hourly = store.rollups(
            "h", start, start + pd.Timedelta(hours=1), location_ids=[location_id]
        )
        frame = location_hourly_frame(hourly)
        if frame.empty:
            frame = pd.DataFrame([{"location_id": location_id, "bucket": start}])
        frames.append(frame)
    if not frames:
        return 0
    return store.upsert_location_hourly(pd.concat(frames, ignore_index=True))


def refresh_daily_digests(
    store: MeterStore, days: Iterable[datetime], *, gaming_day_start_hour: int = 0, tz: str = "UTC"
) -> int:
    """Recompute and store the daily digest of each gaming day (its bucket) from that
    day's daily rollup rows (an indexed read per day; a day without rows loses its
    digest); returns how many digests were written or removed."""
    written = 0
    for day in sorted(set(days)):
        start, end = period_bounds(
            "day", pd.Timestamp(day), gaming_day_start_hour=gaming_day_start_hour, tz=tz
        )
        daily = store.rollups("D", start.to_pydatetime(), end.to_pydatetime(), tz=tz)
        written += store.upsert_daily_digest(daily, days=[start.to_pydatetime()])
    return written


@dataclass(frozen=True, slots=True)
class RebuildCounts:
    removed: int
    hourly: int
    daily: int
    location_hourly: int
    daily_digest: int


def rebuild_rollups(
    store: MeterStore,
    start: datetime,
    end: datetime,
    cabinet_ids: Iterable[str],
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
    progress: Callable[[str], None] | None = None,
) -> RebuildCounts:
    """Recompute, from the readings, every rollup of the gaming days from the one holding
    `start` to the one holding the instant before `end`: the rows there are removed, then
    each cabinet's readings (plus its last ones before, the baseline) are rolled up again
    and the location hours (from the new hourly rows) and daily digests of those days
    rewritten."""
    hour = gaming_day_start_hour
    first, last = _day_span(pd.Timestamp(start), pd.Timestamp(end), hour, tz)
    removed = store.delete_range(first.to_pydatetime(), last.to_pydatetime())
    removed += _remove_other_clock_days(store, first, last, hour, tz)
    hourly_rows = daily_rows = 0
    hours: list[pd.DataFrame] = []
    for cabinet_id in sorted(set(cabinet_ids)):
        hourly, daily = _rebuilt(store, cabinet_id, first, last, gaming_day_start_hour, tz)
        hourly_rows += store.upsert_rollups("h", hourly)
        daily_rows += store.upsert_rollups("D", daily)
        hours.append(hourly[["location_id", "bucket", "coin_in_money"]])
        if progress is not None:
            progress(f"{cabinet_id}: {len(hourly)} hours, {len(daily)} gaming days")
    places = location_hourly_frame(pd.concat(hours, ignore_index=True) if hours else pd.DataFrame())
    days = [d.to_pydatetime() for d in _day_starts(first, last, gaming_day_start_hour, tz)]
    return RebuildCounts(
        removed=removed,
        hourly=hourly_rows,
        daily=daily_rows,
        location_hourly=store.upsert_location_hourly(places),
        daily_digest=refresh_daily_digests(store, days, gaming_day_start_hour=hour, tz=tz),
    )


def _remove_other_clock_days(
    store: MeterStore, first: pd.Timestamp, last: pd.Timestamp, hour: int, tz: str
) -> int:
    """Remove the daily rows and digests just around `[first, last)` whose bucket is not
    a gaming-day start of the current clock (left by another time zone or start hour)."""
    margin = pd.Timedelta(days=2)
    start, end = (first - margin).to_pydatetime(), (last + margin).to_pydatetime()
    stored = set(store.rollups("D", start, end)["bucket"])
    stored |= set(store.daily_digest(start, end)["bucket"])
    clock = set(_day_starts(*_day_span(first - margin, last + margin, hour, tz), hour, tz))
    other = [b.to_pydatetime() for b in stored if b not in clock]
    return store.delete_days(other)


def _day_span(
    start: pd.Timestamp, end: pd.Timestamp, hour: int, tz: str
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The gaming days (first start, last end) covering `[start, end)`."""
    first = period_bounds("day", start, gaming_day_start_hour=hour, tz=tz)[0]
    return first, period_bounds("day", end - _ONE_NS, gaming_day_start_hour=hour, tz=tz)[1]


def _rebuilt(
    store: MeterStore,
    cabinet_id: str,
    first: pd.Timestamp,
    last: pd.Timestamp,
    gaming_day_start_hour: int,
    tz: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cabinet's hourly and daily rows of `[first, last)` from its readings."""
    frames = [store.previous_snapshots(cabinet_id, first.to_pydatetime(), BASELINE_READINGS)]
    chunk = first
    while chunk < last:
        following = min(last, chunk + pd.Timedelta(days=_RAW_CHUNK_DAYS))
        reach = following + (_JUST_AFTER if following == last else pd.Timedelta(0))
        frames.append(store.snapshots(chunk.to_pydatetime(), reach, cabinet_ids=[cabinet_id]))
        chunk = following
    found = [f for f in frames if not f.empty]
    readings = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    if readings.empty:
        empty = pd.DataFrame(columns=[*ROLLUP_COLUMNS, "cabinet_id", "location_id"])
        return empty, empty
    readings = readings.drop_duplicates(["at"], keep="last")
    hourly, daily = rollups_of(readings, gaming_day_start_hour=gaming_day_start_hour, tz=tz)
    inside = (hourly["bucket"] >= first) & (hourly["bucket"] < last)
    days = (daily["bucket"] >= first) & (daily["bucket"] < last)
    return hourly[inside], daily[days]


def _day_starts(
    first: pd.Timestamp, last: pd.Timestamp, gaming_day_start_hour: int, tz: str
) -> list[pd.Timestamp]:
    days, day = [], first
    while day < last:
        days.append(day)
        day = period_bounds("day", day, gaming_day_start_hour=gaming_day_start_hour, tz=tz)[1]
    return days


VERIFIED_COLUMNS: tuple[str, ...] = (
    "coin_in",
    "coin_out",
    "jackpot",
    "cancelled",
    "drop",
    "games_played",
    "intervals",
    "ram_clear",
    "rollover",
)


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One cabinet-hour whose stored rollup is not what its readings give."""

    cabinet_id: str
    bucket: pd.Timestamp
    column: str
    stored: float | None  # None: no stored row
    expected: float | None  # None: the readings give no row


def verify_rollups(
    store: MeterStore,
    start: datetime,
    end: datetime,
    cabinet_ids: Iterable[str],
    *,
    repair: bool = False,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> list[Disagreement]:
    """Every cabinet-hour from the one holding `start` to the last over by `end` whose
    stored hourly rollup disagrees with its readings; with `repair`, the disagreeing
    cabinets' hourly rows there and daily rows of those gaming days are rewritten from
    the readings (and the location hours and digests of the days touched recomputed).
    Returns what was found."""
    hour = gaming_day_start_hour
    first, last = _day_span(pd.Timestamp(start), pd.Timestamp(end), hour, tz)
    window_start = _hour_bounds(pd.Timestamp(start).to_pydatetime() + _ONE_NS, tz)[0]
    window_end = pd.Timestamp(end).tz_convert("UTC")
    found: list[Disagreement] = []
    repaired_days: set[datetime] = set()
    places: set[tuple[str, datetime]] = set()
    for cabinet_id in sorted(set(cabinet_ids)):
        hourly, daily = _rebuilt(store, cabinet_id, first, last, hour, tz)
        stored = store.rollups(
            "h", first.to_pydatetime(), last.to_pydatetime(), cabinet_ids=[cabinet_id], tz=tz
        )
        hourly = hourly[_closed_in(hourly, window_start, window_end)]
        stored = stored[_closed_in(stored, window_start, window_end)]
        wrong = _compare(cabinet_id, stored, hourly)
        if not wrong:
            continue
        found += wrong
        if repair:
            store.upsert_rollups("h", hourly)
            store.upsert_rollups("D", daily)
            buckets = {d.bucket for d in wrong}
            for bucket in buckets:
                start_of = period_bounds("day", bucket, gaming_day_start_hour=hour, tz=tz)[0]
                repaired_days.add(start_of.to_pydatetime())
            for frame in (hourly, stored):
                for row in frame[frame["bucket"].isin(buckets)].to_dict("records"):
                    places.add((str(row["location_id"]), pd.Timestamp(str(row["bucket"]))))
    if repair and found:
        refresh_location_hours(store, places)
        refresh_daily_digests(store, repaired_days, gaming_day_start_hour=hour, tz=tz)
    return found


def _closed_in(rows: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """The hourly rows of hours starting at or after `start` and over by `end` (an hour
    still open may have readings stored but not yet folded into its row)."""
    if rows.empty:
        return pd.Series(False, index=rows.index)
    bucket = pd.to_datetime(rows["bucket"], utc=True)
    return (bucket >= start) & (bucket + pd.Timedelta(hours=1) <= end)


def _compare(cabinet_id: str, stored: pd.DataFrame, expected: pd.DataFrame) -> list[Disagreement]:
    columns = [c for c in VERIFIED_COLUMNS if c in expected.columns or c in stored.columns]

    def by_bucket(frame: pd.DataFrame) -> dict[pd.Timestamp, dict[str, float]]:
        if frame.empty:
            return {}
        rows = frame.assign(bucket=pd.to_datetime(frame["bucket"], utc=True))
        return {
            pd.Timestamp(r["bucket"]): {c: float(r.get(c) or 0) for c in columns}
            for r in rows.to_dict("records")
        }

    have, want = by_bucket(stored), by_bucket(expected)
    found = []
    for bucket in sorted(set(have) | set(want)):
        got, should = have.get(bucket), want.get(bucket)
        for column in columns:
            a = None if got is None else got[column]
            b = None if should is None else should[column]
            if (a or 0.0) != (b or 0.0):  # a missing row differs in intervals
                found.append(Disagreement(cabinet_id, bucket, column, a, b))
    return found
