"""What a meter report covers: a period in the casino's clock and a set of cabinets.

Shared by the dashboard and the exports. No streamlit, no database.

- `report_period(choice, now, ...)` turns a period picker's choice (today, yesterday,
  this week, last 7 days, this month, custom dates) into a `ReportPeriod`: `[start,
  end)` in gaming days (`settings.gaming_day_start_hour` of `settings.timezone`), and
  the period it is compared with. While a period is still running, the comparison is
  the *same elapsed time* of the previous period, to the instant (at 10:20 today:
  yesterday 00:00-10:20; at 00:10: yesterday's first ten minutes), so a half-played
  day is not set against a whole one. The elapsed time is real time: on the day after
  a daylight-saving change it ends an hour off the same clock time.
- `Scope` names the locations and cabinets a report is cut to (empty: all of them),
  filters rollup or snapshot frames by their ids, and picks the registered cabinets
  (the roster) it covers.
- `MeterSource` is what reports read of `smib_core.store.meters.MeterStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, Protocol, cast

import pandas as pd

from smib_core.analytics.periods import bucket_start, period_bounds, previous_period
from smib_core.errors import InvalidInput
from smib_core.services.local_time import zone_label

PERIOD_CHOICES: dict[str, str] = {
    "today": "Today",
    "yesterday": "Yesterday",
    "this_week": "This week",
    "last_7_days": "Last 7 days",
    "this_month": "This month",
    "custom": "Custom dates",
}
MAX_CUSTOM_DAYS = 366
_HOURLY_UP_TO = pd.Timedelta(days=2)  # periods this short are shown hour by hour
_KINDS = {"this_week": "week", "this_month": "month"}
_NS = pd.Timedelta(1, unit="ns")


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    """A period `[start, end)` and the one it is compared with, `[previous_start,
    previous_end)` (cut to the elapsed part while the period runs)."""

    choice: str
    start: pd.Timestamp
    end: pd.Timestamp
    previous_start: pd.Timestamp
    previous_end: pd.Timestamp
    now: pd.Timestamp

    @property
    def in_progress(self) -> bool:
        return bool(self.start <= self.now < self.end)

    @property
    def hourly(self) -> bool:
        """Short periods are read and charted per hour, longer ones per gaming day."""
        return bool(self.end - self.start <= _HOURLY_UP_TO)

    @property
    def label(self) -> str:
        return f"{PERIOD_CHOICES.get(self.choice, self.choice)}: {span(self.start, self.end)}"

    @property
    def compared_label(self) -> str:
        return span(self.previous_start, self.previous_end)


def span(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """`Mon 13 May 2024 00:00 – Tue 14 May 2024 00:00 UTC`, shortened when the dates agree,
    in the bounds' time zone, named (`… 10:20 CEST (Europe/Paris)`)."""
    first = f"{start:%a %d %b %Y %H:%M}"
    last = f"{end:%H:%M}" if start.date() == end.date() else f"{end:%a %d %b %Y %H:%M}"
    return f"{first} – {last} {zone_label(start, end)}".strip()


def _day(anchor: pd.Timestamp, start_hour: int, tz: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    return period_bounds("day", anchor, gaming_day_start_hour=start_hour, tz=tz)


def _date_start(day: date, start_hour: int, tz: str) -> pd.Timestamp:
    """Start of the gaming day named by a calendar date (a naive wall time in `tz`)."""
    wall = pd.Timestamp(day) + pd.Timedelta(hours=start_hour)
    return _day(wall, start_hour, tz)[0]


def _bounds(
    choice: str,
    now: pd.Timestamp,
    first_day: date | None,
    last_day: date | None,
    start_hour: int,
    tz: str,
) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """(start, end, previous_start, previous_end) before any cut."""
    today, today_end = _day(now, start_hour, tz)
    if choice in ("today", "yesterday"):
        start, end = (today, today_end) if choice == "today" else _day(today - _NS, start_hour, tz)
        return start, end, *_day(start - _NS, start_hour, tz)
    if choice in _KINDS:
        kind = cast(Any, _KINDS[choice])
        start, end = period_bounds(kind, now, gaming_day_start_hour=start_hour, tz=tz)
        previous = previous_period(kind, start, end, gaming_day_start_hour=start_hour, tz=tz)
        return start, end, *previous
    if choice == "last_7_days":
        start = _date_start(today.date() - pd.Timedelta(days=6), start_hour, tz)
        end = today_end
    elif choice == "custom":
        if first_day is None or last_day is None:
            raise InvalidInput("choose the first and the last day of the period")
        if last_day < first_day:
            raise InvalidInput("the last day comes before the first day")
        if (last_day - first_day).days + 1 > MAX_CUSTOM_DAYS:
            raise InvalidInput(f"choose at most {MAX_CUSTOM_DAYS} days")
        start = _date_start(first_day, start_hour, tz)
        end = _day(_date_start(last_day, start_hour, tz), start_hour, tz)[1]
    else:
        raise InvalidInput(f"unknown period {choice!r}: one of {', '.join(PERIOD_CHOICES)}")
    return start, end, *previous_period("custom", start, end, tz=tz)


def report_period(
    choice: str,
    now: pd.Timestamp | None = None,
    *,
    first_day: date | None = None,
    last_day: date | None = None,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> ReportPeriod:
    """The period a picker's `choice` means at `now` (default: the current time)."""
    moment = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    moment = (moment.tz_localize("UTC") if moment.tzinfo is None else moment).tz_convert(tz)
    start, end, previous_start, previous_end = _bounds(
        choice, moment, first_day, last_day, gaming_day_start_hour, tz
    )
    if start <= moment < end:  # running: compare with the same elapsed time, to the instant
        previous_end = min(previous_end, previous_start + (moment - start))
    return ReportPeriod(choice, start, end, previous_start, previous_end, moment)


def day_start(
    moment: pd.Timestamp, gaming_day_start_hour: int = 0, tz: str = "UTC"
) -> pd.Timestamp:
    """The start of the gaming day holding `moment` (the moment itself on a boundary)."""
    starts = bucket_start(
        pd.Series([moment]), "D", gaming_day_start_hour=gaming_day_start_hour, tz=tz
    )
    return cast(pd.Timestamp, starts.iloc[0])


class MeterSource(Protocol):
    """The reads of `smib_core.store.meters.MeterStore` that reports use."""

    def rollups(
        self,
        freq: Literal["h", "D"],
        start: datetime,
        end: datetime,
        cabinet_ids: Iterable[str] | None = None,
        location_ids: Iterable[str] | None = None,
        *,
        tz: str = "UTC",
    ) -> pd.DataFrame: ...

    def failed_readings(
        self,
        start: datetime,
        end: datetime,
        relays: Iterable[str] | None = None,
        cabinet_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame: ...

    def snapshots(
        self,
        start: datetime,
        end: datetime,
        relays: Iterable[str] | None = None,
        cabinet_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame: ...

    def iter_snapshot_chunks(
        self,
        start: datetime,
        end: datetime,
        filters: Mapping[str, Iterable[str] | None] | None = None,
        chunk_rows: int = ...,
        *,
        include_failed: bool = False,
    ) -> Iterator[pd.DataFrame]: ...


# --- which cabinets -----------------------------------------------------------------------


def _ids(values: Iterable[str] | str | None) -> tuple[str, ...]:
    if values is None:
        return ()
    listed = [values] if isinstance(values, str) else list(values)
    return tuple(dict.fromkeys(str(v).strip() for v in listed if str(v).strip()))


@dataclass(frozen=True, slots=True)
class Scope:
    """Locations and cabinets (by id) a report covers; empty means all."""

    location_ids: tuple[str, ...] = ()
    cabinet_ids: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        location_ids: Iterable[str] | str | None = None,
        cabinet_ids: Iterable[str] | str | None = None,
    ) -> Scope:
        return cls(_ids(location_ids), _ids(cabinet_ids))

    @property
    def everything(self) -> bool:
        return not self.location_ids and not self.cabinet_ids

    def keep(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows (rollups or snapshots, with `cabinet_id`/`location_id`) in scope."""
        mask = pd.Series(True, index=frame.index)
        if self.location_ids:
            mask &= frame["location_id"].isin(self.location_ids)
        if self.cabinet_ids:
            mask &= frame["cabinet_id"].isin(self.cabinet_ids)
        return frame if bool(mask.all()) else frame[mask]

    def roster(self, registry: pd.DataFrame) -> pd.DataFrame:
        """The registered cabinets in scope, as `cabinet_id, cabinet, location_id,
        location, relay, par` (from `Registry.frame()`; par NaN where unknown)."""
        roster = registry.rename(columns={"id": "cabinet_id", "name": "cabinet"})
        columns = ["cabinet_id", "cabinet", "location_id", "location", "relay", "par"]
        return self.keep(roster.reindex(columns=columns)).reset_index(drop=True)

    def describe(self, names: Mapping[str, str]) -> dict[str, list[str]]:
        """The filters in words, for the audit trail and captions (`names` maps location
        and cabinet ids to names; an unknown id is shown as is)."""
        return {
            "locations": [names.get(i, i) for i in self.location_ids] or ["all"],
            "cabinets": [names.get(i, i) for i in self.cabinet_ids] or ["all"],
        }
