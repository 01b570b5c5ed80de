"""Periods and buckets in the casino's clock: pure pandas, no I/O.

A casino reports by *gaming day*: a day that starts at `gaming_day_start_hour` (0..23)
of its local time zone `tz` and lasts until that hour the next day, so with a start
hour of 6, 05:59 on Tuesday still belongs to Monday's gaming day. Weeks start on
Monday's gaming day, months on the 1st's gaming day. Hours are plain local hours.

Every period and bucket is half-open, `[start, end)`, and its bounds are tz-aware
timestamps in `tz`. Bounds are computed on the local wall clock and then placed on
the time line, so a gaming day is 23 or 25 hours long across a DST change, a wall
time that does not exist is moved forward, and an ambiguous one is taken as the
first (summer time) occurrence. Naive inputs are read as local wall time in `tz`.

Bucket frequencies: "h" (hour), "D" (gaming day), "W" (gaming week), "M" (gaming
month). Period kinds, as a UI names them: hour, day, week, month, custom.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import pandas as pd

from smib_core.errors import InvalidInput

Freq = Literal["h", "D", "W", "M"]
PeriodKind = Literal["hour", "day", "week", "month", "custom"]

KIND_FREQ: dict[str, Freq] = {"hour": "h", "day": "D", "week": "W", "month": "M"}
_ONE_NS = pd.Timedelta(1, unit="ns")


def check_start_hour(hour: int) -> int:
    if not 0 <= hour <= 23:
        raise InvalidInput(f"the gaming day start hour must be 0..23, got {hour}")
    return hour


def to_utc(times: pd.Series) -> pd.Series:
    """Instants as tz-aware UTC at ns resolution; naive values are taken as UTC.

    (MongoDB hands back naive UTC datetimes unless asked otherwise.)
    """
    stamps = pd.to_datetime(times)
    stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    return stamps.dt.as_unit("ns")


def _localize(wall: pd.Series, tz: str) -> pd.Series:
    """Wall-clock times in `tz` to instants (each distinct value is localized once)."""
    codes, uniques = pd.factorize(wall)
    index = pd.DatetimeIndex(uniques)
    placed = index.tz_localize(
        tz, ambiguous=np.ones(len(index), dtype=bool), nonexistent="shift_forward"
    )
    out = placed.take(codes, allow_fill=True, fill_value=None)
    return pd.Series(out, index=wall.index).dt.as_unit("ns")


def _floor_wall(wall: pd.Series, freq: Freq, start_hour: int) -> pd.Series:
    """The wall-clock start of the gaming day/week/month holding each wall time."""
    shift = pd.Timedelta(hours=start_hour)
    day = (wall - shift).dt.floor("D")
    if freq == "W":
        day = day - pd.to_timedelta(day.dt.day_of_week, unit="D")
    elif freq == "M":
        day = day - pd.to_timedelta(day.dt.day - 1, unit="D")
    return day + shift


def bucket_start(
    times: pd.Series, freq: Freq, *, gaming_day_start_hour: int = 0, tz: str = "UTC"
) -> pd.Series:
    """The start (tz-aware, in `tz`) of the bucket holding each instant of `times`.

    Vectorised: an hour is found by taking the wall-clock minutes off the instant
    (so the repeated hour of a DST change stays two buckets); days, weeks and
    months are floored on the wall clock and localized once per distinct value.
    """
    check_start_hour(gaming_day_start_hour)
    local = to_utc(times).dt.tz_convert(tz)
    wall = local.dt.tz_localize(None)
    if freq == "h":
        return local - (wall - wall.dt.floor("h"))
    if freq not in ("D", "W", "M"):
        raise InvalidInput(f"unknown bucket frequency {freq!r} (h, D, W or M)")
    return _localize(_floor_wall(wall, freq, gaming_day_start_hour), tz)


def _next_start(start: pd.Timestamp, freq: Freq, tz: str) -> pd.Timestamp:
    if freq == "h":
        return start + pd.Timedelta(hours=1)
    wall = start.tz_convert(tz).tz_localize(None)
    step = {"D": pd.DateOffset(days=1), "W": pd.DateOffset(days=7), "M": pd.DateOffset(months=1)}
    following = pd.Series([wall + step[freq]])
    return cast(pd.Timestamp, _localize(following, tz).iloc[0])


def _instant(value: pd.Timestamp | str, tz: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        wall = pd.Series([stamp])
        return cast(pd.Timestamp, _localize(wall, tz).iloc[0])
    return stamp.tz_convert(tz).as_unit("ns")


def period_bounds(
    kind: PeriodKind,
    anchor: pd.Timestamp | str,
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
    end: pd.Timestamp | str | None = None,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """`[start, end)` of the hour/day/week/month holding `anchor`, or a custom range.

    For kind "custom", `anchor` is the start and `end` the (exclusive) end.
    """
    start = _instant(anchor, tz)
    if kind == "custom":
        if end is None:
            raise InvalidInput("a custom period needs an end")
        stop = _instant(end, tz)
        if stop <= start:
            raise InvalidInput("a custom period must end after it starts")
        return start, stop
    if kind not in KIND_FREQ:
        raise InvalidInput(f"unknown period kind {kind!r}")
    freq = KIND_FREQ[kind]
    first = cast(
        pd.Timestamp,
        bucket_start(
            pd.Series([start]), freq, gaming_day_start_hour=gaming_day_start_hour, tz=tz
        ).iloc[0],
    )
    return first, _next_start(first, freq, tz)


def previous_period(
    kind: PeriodKind,
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The period just before `[start, end)`: the previous hour/day/week/month, or,
    for a custom range, the range of the same length that ends where it starts."""
    first, stop = _instant(start, tz), _instant(end, tz)
    if kind == "custom":
        return first - (stop - first), first
    return period_bounds(kind, first - _ONE_NS, gaming_day_start_hour=gaming_day_start_hour, tz=tz)
