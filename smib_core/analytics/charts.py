"""Chart-ready frames for the dashboard, from rollups. Pure pandas.

Each function takes rollup rows already cut to the period being shown (see
`rollups.select_period`) and returns a small frame a page can hand to a chart as
is. Amounts are money; the KPI columns are those of `kpis.kpi_table`.

- `series_over_time`: one row per bucket (hour, gaming day, week or month), `bucket`
  then the KPI columns.
- `by_location`: one row per location, best net win first.
- `top_bottom_cabinets`: the n best and the n worst cabinets by a KPI (the two
  lists overlap when there are fewer than 2n cabinets).
- `hold_by_cabinet`: one row per cabinet, highest hold first, NaN hold last.
- `heatmap_hour_weekday`: coin in by weekday (rows Mon..Sun) and hour (columns
  0..23), always 7x24, zeros where nothing was played.
- `sparkline_per_cabinet`: per cabinet, a list of one KPI per bucket over every
  bucket of the frame, in time order (0 for a bucket without play).
"""

from __future__ import annotations

import pandas as pd

from smib_core.analytics.kpis import KPI_COLUMNS, kpi_table
from smib_core.analytics.periods import Freq, bucket_start
from smib_core.errors import InvalidInput

WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RATIOS = ("hold_pct", "meter_hold_pct", "avg_bet")


def series_over_time(
    rollups: pd.DataFrame,
    freq: Freq = "D",
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> pd.DataFrame:
    """KPIs per bucket of `freq` ("h" needs hourly rollups), oldest first."""
    rebucketed = rollups.assign(
        bucket=bucket_start(
            rollups["bucket"], freq, gaming_day_start_hour=gaming_day_start_hour, tz=tz
        )
    )
    return kpi_table(rebucketed, ["bucket"])


def by_location(rollups: pd.DataFrame) -> pd.DataFrame:
    table = kpi_table(rollups, ["location"])
    return table.sort_values(["net_win", "location"], ascending=[False, True]).reset_index(
        drop=True
    )


def _per_cabinet(rollups: pd.DataFrame) -> pd.DataFrame:
    """KPIs per cabinet, with the cabinet's latest location."""
    table = kpi_table(rollups, ["cabinet"])
    location = rollups.groupby("cabinet", sort=True)["location"].last()
    table.insert(1, "location", table["cabinet"].map(location))
    return table


def top_bottom_cabinets(
    rollups: pd.DataFrame,
    n: int = 10,
    *,
    by: str = "net_win",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(top n by `by`, highest first; bottom n, lowest first); ties by cabinet id."""
    if by not in KPI_COLUMNS:
        raise InvalidInput(f"cannot rank cabinets by {by!r}")
    table = _per_cabinet(rollups).dropna(subset=[by])
    top = table.sort_values([by, "cabinet"], ascending=[False, True], kind="stable")
    bottom = table.sort_values([by, "cabinet"], ascending=[True, True], kind="stable")
    return top.head(n).reset_index(drop=True), bottom.head(n).reset_index(drop=True)


def hold_by_cabinet(rollups: pd.DataFrame) -> pd.DataFrame:
    table = _per_cabinet(rollups)
    ordered = table.sort_values(
        ["hold_pct", "cabinet"], ascending=[False, True], na_position="last", kind="stable"
    )
    return ordered.reset_index(drop=True)


def heatmap_hour_weekday(
    hourly: pd.DataFrame, *, gaming_day_start_hour: int = 0, tz: str | None = None
) -> pd.DataFrame:
    """Coin in (money) per weekday x hour of day, summed over the frame.

    The weekday is that of the gaming day, so with a start hour of 6, Saturday 02:00
    counts in Friday's row. `tz` converts the buckets first (default: theirs).
    """
    bucket = hourly["bucket"] if tz is None else hourly["bucket"].dt.tz_convert(tz)
    wall = bucket.dt.tz_localize(None)
    weekday = (wall - pd.Timedelta(hours=gaming_day_start_hour)).dt.day_of_week
    grid = (
        hourly.assign(weekday=weekday.to_numpy(), hour=wall.dt.hour.to_numpy())
        .pivot_table(
            index="weekday", columns="hour", values="coin_in_money", aggfunc="sum", fill_value=0.0
        )
        .reindex(index=range(7), columns=range(24), fill_value=0.0)
    )
    grid.index = pd.Index(WEEKDAYS, name="weekday")
    grid.columns = pd.Index(range(24), name="hour")
    return grid.astype("float64")


def sparkline_per_cabinet(
    daily: pd.DataFrame,
    *,
    value: str = "net_win",
) -> pd.DataFrame:
    """Columns cabinet, sparkline (list of float, one per bucket of the frame)."""
    if value not in KPI_COLUMNS:
        raise InvalidInput(f"no KPI named {value!r}")
    table = kpi_table(daily, ["cabinet", "bucket"])
    grid = table.pivot(index="cabinet", columns="bucket", values=value)
    grid = grid.reindex(columns=sorted(grid.columns))
    if value not in _RATIOS:
        grid = grid.fillna(0.0)
    lines = [[float(v) for v in row] for row in grid.to_numpy()]
    return pd.DataFrame({"cabinet": grid.index.astype(str), "sparkline": lines})
