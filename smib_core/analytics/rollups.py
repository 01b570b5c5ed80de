"""Rollups: movement summed per cabinet per hour or per gaming day. Pure pandas.

Dashboards read rollups, never raw snapshots. A rollup frame has one row per
(cabinet, bucket), sorted by cabinet then bucket:

    cabinet                  str
    bucket                   datetime   bucket start, tz-aware in the casino's tz
    relay, location          str        from the bucket's last interval
    denomination             float      from the bucket's last interval: the credit
                                        columns are in it (see below)
    intervals                int        movement intervals summed into the row
    start, end               datetime   first interval start, last interval end (UTC)
    coin_in ... won_credits, games_played, games_won
                             float      movement summed, in credits / games
    coin_in_money ... won_credits_money
                             float      the same in money (see `add_money`)
    rollover, ram_clear, absurd
                             int        how many intervals carried each flag

Denomination changes: credits of different denominations are not added up. Money
is computed per interval (`add_money`) and summed; where a bucket holds intervals of
more than one denomination, its credit columns are its money divided by the row's
(last) denomination, so credits x denomination = money on every row.

Bucket assignment: an interval (start, end] belongs to the bucket holding the
instant just before its end, so a reading at 10:00:00 sums the play up to 10:00
into the 09:00 hour. Play is not split across buckets: with 5-minute readings the
error is one interval at most, and a long gap's play lands, once, in the bucket
where the gap ends.

Updating (idempotent, by replacement): `merge_rollups(existing, new)` keeps the
rows of `existing` whose (cabinet, bucket) is not in `new` and takes every row of
`new`, so merging the same rows twice changes nothing. The price is that each row
of `new` must be complete: computed from all the movement of its bucket. As
readings arrive, recompute the touched hours from the readings since the start of
the earliest touched hour (plus each cabinet's reading just before it), then
recompute the touched gaming days from the hourly rows (`update_rollups` does both
steps; `rollup` of an hourly rollup gives daily rows).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from smib_core.analytics.movement import CREDIT_METERS, FLAGS, MOVEMENT_METERS
from smib_core.analytics.periods import bucket_start
from smib_core.errors import InvalidInput

MONEY_COLUMNS: dict[str, str] = {m: f"{m}_money" for m in CREDIT_METERS}
SUM_COLUMNS: tuple[str, ...] = (*MOVEMENT_METERS, *MONEY_COLUMNS.values(), *FLAGS, "intervals")
ROLLUP_COLUMNS: tuple[str, ...] = (
    "cabinet",
    "bucket",
    "relay",
    "location",
    "denomination",
    "intervals",
    "start",
    "end",
    *MOVEMENT_METERS,
    *MONEY_COLUMNS.values(),
    *FLAGS,
)
KEY = ["cabinet", "bucket"]
_ONE_NS = pd.Timedelta(1, unit="ns")


def add_money(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with `<meter>_money` = credits x denomination for each credit meter.

    Done per row (per interval) before anything is summed across cabinets, since
    cabinets have different denominations and 1 credit is not 1 credit.
    """
    denomination = pd.to_numeric(frame["denomination"])
    money = {MONEY_COLUMNS[m]: frame[m] * denomination for m in CREDIT_METERS}
    return frame.assign(**money)


def rollup(
    frame: pd.DataFrame,
    freq: Literal["h", "D"] = "h",
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> pd.DataFrame:
    """Sum a movement frame (or a finer rollup, e.g. hourly into daily) per cabinet
    per bucket. Input rows are expected in time order per cabinet (as produced)."""
    if freq not in ("h", "D"):
        raise InvalidInput(f"rollups are hourly ('h') or daily ('D'), not {freq!r}")
    if "bucket" in frame.columns:
        times = frame["bucket"]
        source = frame
    elif "end" in frame.columns:
        times = frame["end"] - _ONE_NS
        source = frame.assign(intervals=1)
        if MONEY_COLUMNS["coin_in"] not in source.columns:
            source = add_money(source)
    else:
        raise InvalidInput("rollup needs a movement frame (end) or a rollup frame (bucket)")
    if source.empty:
        return _empty_rollup(tz)
    keyed = source.assign(
        bucket=bucket_start(times, freq, gaming_day_start_hour=gaming_day_start_hour, tz=tz)
    )
    aggregations: dict[str, tuple[str, str]] = {
        "relay": ("relay", "last"),
        "location": ("location", "last"),
        "denomination": ("denomination", "last"),
        "_lowest": ("denomination", "min"),
        "_highest": ("denomination", "max"),
        "start": ("start", "min"),
        "end": ("end", "max"),
    }
    aggregations |= {c: (c, "sum") for c in SUM_COLUMNS}
    grouped = keyed.groupby(KEY, sort=True, observed=True).agg(**aggregations).reset_index()
    for column in (*FLAGS, "intervals"):
        grouped[column] = grouped[column].astype("int64")
    mixed = (grouped["_lowest"] != grouped["_highest"]) & (grouped["denomination"] > 0)
    if mixed.any():  # credits in the row's denomination, from money
        for meter, money in MONEY_COLUMNS.items():
            grouped.loc[mixed, meter] = (
                grouped.loc[mixed, money] / grouped.loc[mixed, "denomination"]
            )
    return grouped[list(ROLLUP_COLUMNS)]


def _empty_rollup(tz: str) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in ROLLUP_COLUMNS})
    for column in ("cabinet", "relay", "location"):
        frame[column] = pd.Series(dtype="str")
    frame["bucket"] = pd.Series(dtype=f"datetime64[ns, {tz}]")
    for column in ("start", "end"):
        frame[column] = pd.Series(dtype="datetime64[ns, UTC]")
    for column in (*FLAGS, "intervals"):
        frame[column] = pd.Series(dtype="int64")
    return frame


def merge_rollups(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """`existing` with every (cabinet, bucket) row of `new` put in (replacing)."""
    if new.empty:
        return existing.reset_index(drop=True)
    if existing.empty:
        return new.sort_values(KEY, kind="stable").reset_index(drop=True)
    tz = existing["bucket"].dt.tz
    new = new.assign(bucket=new["bucket"].dt.tz_convert(tz))
    replaced = pd.MultiIndex.from_frame(existing[KEY]).isin(pd.MultiIndex.from_frame(new[KEY]))
    merged = pd.concat([existing[~replaced], new], ignore_index=True)
    return merged.sort_values(KEY, kind="stable").reset_index(drop=True)


def select_period(rollups: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The rows whose bucket starts in `[start, end)`."""
    bucket = rollups["bucket"]
    return rollups[(bucket >= start) & (bucket < end)]


def update_rollups(
    hourly: pd.DataFrame,
    daily: pd.DataFrame,
    movement: pd.DataFrame,
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold new movement into the hourly and daily rollups.

    `movement` must hold all the intervals of every hour it touches; `hourly` must
    hold every hour of each gaming day the movement touches (it may hold only those).
    Returns the new (hourly, daily) frames.
    """
    new_hours = rollup(movement, "h", gaming_day_start_hour=gaming_day_start_hour, tz=tz)
    hourly = merge_rollups(hourly, new_hours)
    if new_hours.empty:
        return hourly, daily
    day_of = bucket_start(hourly["bucket"], "D", gaming_day_start_hour=gaming_day_start_hour, tz=tz)
    touched = bucket_start(
        new_hours["bucket"], "D", gaming_day_start_hour=gaming_day_start_hour, tz=tz
    )
    hours_of_touched_days = hourly[day_of.isin(set(touched))]
    new_days = rollup(
        hours_of_touched_days, "D", gaming_day_start_hour=gaming_day_start_hour, tz=tz
    )
    return hourly, merge_rollups(daily, new_days)
