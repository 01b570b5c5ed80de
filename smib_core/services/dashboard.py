"""The managers' dashboard: KPIs, their change, chart frames, the cabinet table and the
data quality of a period, from rollups. No streamlit.

Contract: `build_dashboard(source, registry, period, scope, settings)` reads rollups
only, never raw snapshots (apart from the failed readings of the period, which exist
only as snapshots, and the readings of the compared period's last, cut hour, below):
daily rollups for whole gaming days, hourly rollups for periods of two days or less
(shown hour by hour) and for the whole hours of the day the comparison is cut in.
A running period is compared with the same elapsed time of the previous one, to the
instant (`report_period`): the hour the cut falls in (yesterday 10:00-10:20 at 10:20
today) comes from the readings of that part of the hour, and from up to
`CUT_LOOKBACK_PERIODS` collection periods before it (each cabinet's baseline), their
movement rolled up as a partial hourly row. Whole gaming days come from the daily
digests (`rollups_daily_digest`: one document a day holding the daily rows of every
cabinet; a month is 30 documents, where the daily rollups of 500 cabinets are 15,000
to read), and from the daily rollups for the days without a digest (history older
than them). `coin_in_heatmap` needs hours: for
the whole fleet or whole locations it reads the location-hourly coin in
(`rollups_location_hourly`: a month of 10 locations is 7,200 rows, where the hourly
rollups of 500 cabinets are 360,000), and the hourly rollups, one gaming day at a
time, for chosen cabinets and for the hours before the location rows begin (history
older than them).

Rollups are read by time range alone and cut to the scope in pandas: an index on time
serves every query, and a filtered dashboard never reads more than the whole fleet's.
Analytics run keyed by cabinet and location *ids* (two cabinets may share a name);
the frames handed out carry names, for people.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

from smib_core import analytics
from smib_core.analytics import DataQuality, KpiChange, Kpis, bucket_start, period_bounds
from smib_core.analytics.rollups import KEY
from smib_core.analytics.theoretical import hold_against_par
from smib_core.services.meter_report import MeterSource, ReportPeriod, Scope, day_start
from smib_core.settings import Settings

Freq = Literal["h", "D"]
TOP_N = 10
CUT_LOOKBACK_PERIODS = 3  # readings this many collection periods before the cut hour
_JUST_AFTER = pd.Timedelta(seconds=1)  # nx-27017 compares times to the second
CABINET_TABLE_COLUMNS = (
    "cabinet",
    "location",
    "trend",
    "net_win",
    "meter_win",
    "credits_left",
    "hold_pct",
    "meter_hold_pct",
    "par_pct",
    "hold_band_pct",
    "unusual",
    "expected_win",
    "win_variance",
    "coin_in",
    "coin_out",
    "drop",
    "cancelled",
    "jackpot",
    "games_played",
    "avg_bet",
    "cabinet_id",
)


@dataclass(frozen=True, slots=True)
class Theoretical:
    """The cabinets that have a par, together: their coin in, expected win (coin in x
    par) and actual (meter) win, and the hold each means."""

    cabinets: int
    coin_in: float
    expected_win: float
    meter_win: float

    @property
    def theoretical_hold_pct(self) -> float | None:
        return self.expected_win / self.coin_in * 100 if self.coin_in else None

    @property
    def meter_hold_pct(self) -> float | None:
        return self.meter_win / self.coin_in * 100 if self.coin_in else None


@dataclass(frozen=True, eq=False)
class Dashboard:
    """Everything the dashboard page shows for one period and scope (money in $)."""

    period: ReportPeriod
    kpis: Kpis
    previous: Kpis
    change: dict[str, KpiChange]
    over_time: pd.DataFrame = field(repr=False)  # bucket + KPI columns
    by_location: pd.DataFrame = field(repr=False)  # location + KPI columns, best first
    top: pd.DataFrame = field(repr=False)  # best cabinets by net win
    bottom: pd.DataFrame = field(repr=False)  # worst cabinets by net win
    hold: pd.DataFrame = field(repr=False)  # cabinet, location, hold_pct, ... highest first
    cabinets: pd.DataFrame = field(repr=False)  # CABINET_TABLE_COLUMNS, best net win first
    quality: DataQuality = field(repr=False)
    rows_read: int = 0
    with_par: Theoretical | None = None  # the cabinets with a par, together

    @property
    def unusual(self) -> list[str]:
        """Cabinets whose actual hold is outside the band around their par."""
        return self.cabinets.loc[self.cabinets["unusual"].astype(bool), "cabinet"].tolist()

    @property
    def empty(self) -> bool:
        """No play recorded in the period for the scope (the page shows what to do)."""
        return self.cabinets.empty


@runtime_checkable
class LocationHourlySource(Protocol):
    """A source that also keeps the location-hourly coin in (`MeterStore` does)."""

    def location_hourly(
        self,
        start: datetime,
        end: datetime,
        location_ids: Iterable[str] | None = None,
        *,
        tz: str = "UTC",
    ) -> pd.DataFrame: ...


@runtime_checkable
class DailyDigestSource(Protocol):
    """A source that also keeps the daily digests (`MeterStore` does)."""

    def daily_digest(self, start: datetime, end: datetime, *, tz: str = "UTC") -> pd.DataFrame: ...


def _ranges(
    period: ReportPeriod, settings: Settings, tz: str
) -> list[tuple[Freq, pd.Timestamp, pd.Timestamp]]:
    """(freq, start, end) reads covering the compared period and the period, adjacent
    reads of one frequency merged."""
    start, end = period.start, period.end
    before, cut = period.previous_start, max(period.previous_start, _cut_hour(period, tz))
    if period.hourly:
        wanted: list[tuple[Freq, pd.Timestamp, pd.Timestamp]] = [("h", before, cut)]
    else:
        whole = max(before, day_start(cut, settings.gaming_day_start_hour, tz))
        wanted = [("D", before, whole)] if whole > before else []
        if cut > whole:
            wanted.append(("h", whole, cut))
    wanted.append(("h" if period.hourly else "D", start, end))
    merged: list[tuple[Freq, pd.Timestamp, pd.Timestamp]] = []
    for freq, first, last in wanted:
        if last <= first:
            continue
        if merged and merged[-1][0] == freq and merged[-1][2] == first:
            merged[-1] = (freq, merged[-1][1], last)
        else:
            merged.append((freq, first, last))
    return merged


def _cut_hour(period: ReportPeriod, tz: str) -> pd.Timestamp:
    """The start of the hour the compared period's end falls in (its end on the hour)."""
    return bucket_start(pd.Series([period.previous_end]), "h", tz=tz).iloc[0]


def _cut_part(
    source: MeterSource, period: ReportPeriod, scope: Scope, settings: Settings, tz: str
) -> pd.DataFrame:
    """The compared period's last hour up to its end (not on the hour: a running period
    is compared to the instant), as hourly rollup rows of that part of the hour, from
    the readings: the intervals ending in (hour, end]."""
    hour, cut = _cut_hour(period, tz), period.previous_end
    if cut == hour or cut <= period.previous_start:
        return pd.DataFrame()
    lookback = pd.Timedelta(seconds=CUT_LOOKBACK_PERIODS * settings.collect_period_s)
    readings = source.snapshots(
        (hour - lookback).to_pydatetime(),
        (cut + _JUST_AFTER).to_pydatetime(),
        cabinet_ids=scope.cabinet_ids or None,
    )
    readings = scope.keep(readings)
    if readings.empty:
        return pd.DataFrame()
    movement = analytics.meter_movement(readings.assign(cabinet=readings["cabinet_id"]))
    movement = movement[(movement["end"] > hour) & (movement["end"] <= cut)]
    rows = analytics.rollup(movement, "h", tz=tz)
    latest = readings.drop_duplicates("cabinet_id", keep="last").set_index("cabinet_id")
    return rows.assign(
        cabinet_id=rows["cabinet"],
        location_id=rows["cabinet"].map(latest["location_id"]),
        cabinet=rows["cabinet"].map(latest["cabinet"]),
    )


def _read(
    source: MeterSource,
    freq: Freq,
    start: pd.Timestamp,
    end: pd.Timestamp,
    scope: Scope,
    tz: str,
) -> pd.DataFrame:
    cabinets = scope.cabinet_ids or None  # read only the chosen cabinets' rows
    frame = source.rollups(
        freq, start.to_pydatetime(), end.to_pydatetime(), cabinet_ids=cabinets, tz=tz
    )
    return scope.keep(frame)


def _read_days(
    source: MeterSource,
    start: pd.Timestamp,
    end: pd.Timestamp,
    scope: Scope,
    settings: Settings,
    tz: str,
) -> pd.DataFrame:
    """The daily rows of the whole gaming days of `[start, end)`: the digests' where a
    day has one, the daily rollups' (runs of adjacent days read at once) where not."""
    if not isinstance(source, DailyDigestSource):
        return _read(source, "D", start, end, scope, tz)
    digest = source.daily_digest(start.to_pydatetime(), end.to_pydatetime(), tz=tz)
    covered = set(_utc_ns(digest["bucket"]))
    parts = [scope.keep(digest)]
    runs: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for day, following in _gaming_days(start, end, settings, tz):
        if _utc_ns(pd.Series([day])).iloc[0] in covered:
            continue
        if runs and runs[-1][1] == day:
            runs[-1] = (runs[-1][0], following)
        else:
            runs.append((day, following))
    parts.extend(_read(source, "D", first, last, scope, tz) for first, last in runs)
    if len(parts) == 1:
        return parts[0]
    rows = pd.concat(parts, ignore_index=True)
    return rows.sort_values(KEY, kind="stable").reset_index(drop=True)


def _gaming_days(
    start: pd.Timestamp, end: pd.Timestamp, settings: Settings, tz: str
) -> Iterator[tuple[pd.Timestamp, pd.Timestamp]]:
    """(start, end) of each gaming day of `[start, end)`, the first and last cut to it."""
    day = start
    while day < end:
        following = min(end, _day_end(day, settings.gaming_day_start_hour, tz))
        yield day, following
        day = following


def _utc_ns(moments: pd.Series) -> pd.Series:
    return pd.to_datetime(moments, utc=True).dt.as_unit("ns")


def _names(rows: pd.DataFrame, roster: pd.DataFrame) -> dict[str, str]:
    """Cabinet and location id -> name: the registry's, else the newest in the rows."""
    names: dict[str, str] = {}
    for id_column, name_column in (("cabinet_id", "cabinet"), ("location_id", "location")):
        latest = rows.sort_values("bucket").drop_duplicates(id_column, keep="last")
        names.update(zip(latest[id_column], latest[name_column], strict=True))
        known = roster.dropna(subset=[id_column])
        names.update(zip(known[id_column], known[name_column], strict=True))
    return {k: v or k for k, v in names.items()}


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows keyed by ids for the analytics (names may repeat, ids do not)."""
    return rows.assign(cabinet=rows["cabinet_id"], location=rows["location_id"])


def _named(frame: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    named = frame.copy()
    if "cabinet" in named.columns:
        named.insert(len(named.columns), "cabinet_id", named["cabinet"])
        named["cabinet"] = _unique_labels(named["cabinet"], names)
    if "location" in named.columns:
        named["location"] = named["location"].map(lambda i: names.get(i, i))
    return named


def _unique_labels(ids: pd.Series, names: Mapping[str, str]) -> pd.Series:
    """Each id's name, with the id added where two cabinets of the frame share a name."""
    labels = ids.map(lambda i: names.get(i, i))
    shared = labels.groupby(labels).transform("size") > 1
    return labels.where(~shared, labels + " (" + ids + ")")


def build_dashboard(
    source: MeterSource,
    registry: pd.DataFrame,
    period: ReportPeriod,
    scope: Scope | None = None,
    settings: Settings | None = None,
    *,
    tz: str | None = None,
    top_n: int = TOP_N,
) -> Dashboard:
    """The dashboard of `period` for the cabinets of `scope` (`registry`: Registry.frame()),
    in the casino's time zone (`tz`, default `settings.timezone`)."""
    scope = scope or Scope()
    settings = settings or Settings()
    tz = tz or settings.timezone
    parts = [
        _read_days(source, a, b, scope, settings, tz)
        if f == "D"
        else _read(source, f, a, b, scope, tz)
        for f, a, b in _ranges(period, settings, tz)
    ]
    cut = _cut_part(source, period, scope, settings, tz)
    if not cut.empty:
        parts.append(cut)
    rows = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    roster = scope.roster(registry)
    names = _names(rows, roster)
    keyed = _keyed(rows)
    current = analytics.select_period(keyed, period.start, period.end)
    before = analytics.select_period(keyed, period.previous_start, period.previous_end)
    now = analytics.kpis(current, period.start, period.end)
    previous = analytics.kpis(before, period.previous_start, period.previous_end)
    top, bottom = analytics.top_bottom_cabinets(current, top_n)
    hold = analytics.hold_by_cabinet(current)
    par = roster.set_index("cabinet_id")["par"] if not roster.empty else pd.Series(dtype=float)
    cabinets = _cabinet_table(current, hold, names, par)
    return Dashboard(
        period=period,
        kpis=now,
        previous=previous,
        change=analytics.kpi_change(now, previous),
        over_time=analytics.series_over_time(
            current,
            "h" if period.hourly else "D",
            gaming_day_start_hour=settings.gaming_day_start_hour,
            tz=tz,
        ),
        by_location=_named(analytics.by_location(current), names),
        top=_named(top, names),
        bottom=_named(bottom, names),
        hold=_named(hold, names),
        cabinets=cabinets,
        quality=_quality(source, current, roster, period, names),
        rows_read=len(rows),
        with_par=_with_par(cabinets),
    )


def _cabinet_table(
    current: pd.DataFrame, per_cabinet: pd.DataFrame, names: Mapping[str, str], par: pd.Series
) -> pd.DataFrame:
    """One row per cabinet that played, best net win first, with its net win trend and
    its actual against theoretical hold (`par`: par % by cabinet id)."""
    if per_cabinet.empty:
        return pd.DataFrame(columns=list(CABINET_TABLE_COLUMNS))
    lines = analytics.sparkline_per_cabinet(current)
    table = per_cabinet.merge(lines.rename(columns={"sparkline": "trend"}), on="cabinet")
    against = hold_against_par(table, par).drop(columns=["meter_win", "meter_hold_pct"])
    table = table.merge(against, on="cabinet")
    table = table.sort_values(["net_win", "cabinet"], ascending=[False, True], kind="stable")
    return _named(table, names)[list(CABINET_TABLE_COLUMNS)].reset_index(drop=True)


def _with_par(cabinets: pd.DataFrame) -> Theoretical | None:
    """The cabinets of the table that have a par, summed (None: none has one)."""
    known = cabinets[cabinets["par_pct"].notna()]
    if known.empty:
        return None
    return Theoretical(
        cabinets=len(known),
        coin_in=float(known["coin_in"].sum()),
        expected_win=float(known["expected_win"].sum()),
        meter_win=float(known["meter_win"].sum()),
    )


def _quality(
    source: MeterSource,
    current: pd.DataFrame,
    roster: pd.DataFrame,
    period: ReportPeriod,
    names: Mapping[str, str],
) -> DataQuality:
    """Data quality from the rollups (readings = intervals closed in the period, last
    reading = the latest interval end, flag counts) and the period's failed readings."""
    start, end = period.start, period.end
    failed = source.failed_readings(start.to_pydatetime(), end.to_pydatetime())
    if "cabinet_id" not in failed.columns:
        relay_to_id = dict(zip(roster["relay"], roster["cabinet_id"], strict=True))
        failed = failed.assign(cabinet_id=failed["relay"].map(relay_to_id))
    failed = failed.dropna(subset=["cabinet_id"])
    failed = failed[failed["cabinet_id"].isin(set(roster["cabinet_id"]) | set(current["cabinet"]))]
    cabinets = roster.assign(cabinet=roster["cabinet_id"], location=roster["location_id"])
    last = current.groupby("cabinet", as_index=False).agg(at=("end", "max"))
    quality = analytics.data_quality(
        last[last["at"].notna()],
        current,
        failed.assign(cabinet=failed["cabinet_id"]),
        cabinets[["cabinet", "location", "relay"]],
        (start, end),
    )
    table = quality.per_cabinet
    readings = current.groupby("cabinet")["intervals"].sum()
    intervals = table["cabinet"].map(readings).fillna(0).astype("int64")
    table = table.drop(columns=["readings"]).assign(intervals=intervals)
    silent = table.loc[table["no_reading"], "cabinet"]
    return replace(
        quality,
        per_cabinet=_named(table, names),
        silent=[names.get(c, c) for c in silent],
        readings=int(table["intervals"].sum()),
    )


def _day_end(moment: pd.Timestamp, gaming_day_start_hour: int, tz: str) -> pd.Timestamp:
    return period_bounds("day", moment, gaming_day_start_hour=gaming_day_start_hour, tz=tz)[1]


def coin_in_heatmap(
    source: MeterSource,
    period: ReportPeriod,
    scope: Scope | None = None,
    settings: Settings | None = None,
    *,
    tz: str | None = None,
) -> pd.DataFrame:
    """Coin in ($) by weekday (rows Mon..Sun) and hour (0..23) over the period: from the
    location-hourly rows when no single cabinet is chosen (the hours before the first
    of them, if any, from the hourly rollups), else from the hourly rollups alone."""
    scope = scope or Scope()
    settings = settings or Settings()
    tz = tz or settings.timezone
    start, last = period.start, min(period.end, period.now + pd.Timedelta(hours=1))
    hours = []
    if not scope.cabinet_ids and isinstance(source, LocationHourlySource) and start < last:
        places = source.location_hourly(
            start.to_pydatetime(), last.to_pydatetime(), scope.location_ids or None
        )
        if not places.empty:
            hours.append(_coin_in_by_hour(places))
            last = places["bucket"].min()
    hours.extend(_cabinet_hours(source, start, last, scope, settings, tz))
    hourly = pd.concat(hours, ignore_index=True) if hours else _coin_in_by_hour(pd.DataFrame())
    return analytics.heatmap_hour_weekday(
        hourly, gaming_day_start_hour=settings.gaming_day_start_hour, tz=tz
    )


def _coin_in_by_hour(rows: pd.DataFrame) -> pd.DataFrame:
    """bucket (UTC), coin_in_money summed over the rows of each bucket."""
    rows = rows.reindex(columns=["bucket", "coin_in_money"])
    summed = rows.groupby("bucket", as_index=False).agg(coin_in_money=("coin_in_money", "sum"))
    bucket = pd.to_datetime(summed["bucket"], utc=True).dt.as_unit("ns")
    return summed.assign(bucket=bucket, coin_in_money=summed["coin_in_money"].astype("float64"))


def _cabinet_hours(
    source: MeterSource,
    start: pd.Timestamp,
    end: pd.Timestamp,
    scope: Scope,
    settings: Settings,
    tz: str,
) -> list[pd.DataFrame]:
    """Coin in by hour of `[start, end)` from the hourly rollups of the scope's cabinets:
    chosen cabinets in one read (their rows only, by index), the whole fleet or some
    locations one gaming day at a time (memory bounded by a day's rows)."""
    if scope.cabinet_ids:
        return [_coin_in_by_hour(_read(source, "h", start, end, scope, tz))] if start < end else []
    return [
        _coin_in_by_hour(_read(source, "h", day, following, scope, tz))
        for day, following in _gaming_days(start, end, settings, tz)
    ]
