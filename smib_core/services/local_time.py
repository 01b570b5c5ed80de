"""The casino's local time, for people: the one place a time shown on a page (or carried
by a download) is turned into `Settings.timezone` (SMIB_TIMEZONE) and its zone named.

Stored times stay UTC; pages convert at the last moment. Pure: pandas, no streamlit.

- `local(at, tz)`: a datetime (naive: UTC), a Timestamp or epoch seconds, in `tz`;
- `local_text(at, tz)`: `2026-07-01 08:00:00 EDT (America/New_York)`;
- `day_start(day, tz)`: when a local calendar day starts (a period picked in dates);
- `zone_label(*moments)`: `EDT (America/New_York)`, `EST/EDT (...)` across a change;
- `column_label(label, tz, times)`: a table header, `Raised (EDT, America/New_York)`;
- `local_times(frame, tz, *columns)`: those columns converted, for a table;
- `with_local_times(frame, tz, *columns)`: for a download, each column kept in UTC with
  `<column>_local` (the wall time, no offset) beside it and a `time_zone` column, as
  the meter exports do.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import date, datetime

import pandas as pd

Moment = datetime | pd.Timestamp | float | int
DATE_TIME = "%Y-%m-%d %H:%M:%S"
CLOCK = "%H:%M:%S"


def local(at: Moment, tz: str) -> pd.Timestamp:
    """`at` in the zone `tz`; a naive datetime is UTC, a number is epoch seconds."""
    if isinstance(at, int | float):
        stamp = pd.Timestamp(at, unit="s", tz="UTC")
    else:
        stamp = pd.Timestamp(at)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return stamp.tz_convert(tz)


def day_start(day: date, tz: str) -> datetime:
    """When the local calendar day `day` starts in the zone `tz` (a day whose midnight a
    clock change skips starts when the clock resumes)."""
    midnight = pd.Timestamp(day).tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return midnight.to_pydatetime()


def local_text(at: Moment, tz: str, fmt: str = DATE_TIME) -> str:
    """`2026-07-01 08:00:00 EDT (America/New_York)`; `fmt=CLOCK` for the time alone."""
    moment = local(at, tz)
    return f"{moment.strftime(fmt)} {zone_label(moment)}"


def _zone_parts(moments: Iterable[pd.Timestamp]) -> tuple[str, str]:
    """The moments' abbreviations joined (`EST/EDT`) and their IANA zone name."""
    shown = list(moments)
    short = "/".join(n for n in dict.fromkeys(m.tzname() or "" for m in shown) if n)
    zone = str(shown[0].tz) if shown and shown[0].tz is not None else ""
    return short, "" if zone in (short, "UTC") else zone


def zone_label(*moments: pd.Timestamp) -> str:
    """The moments' zone abbreviations (two across a daylight-saving change) and its
    IANA name: `CEST (Europe/Paris)`, `UTC`."""
    short, zone = _zone_parts(moments)
    return f"{short} ({zone})" if zone else short


def column_label(label: str, tz: str, times: Iterable[datetime] = ()) -> str:
    """`Raised (EDT, America/New_York)`: the abbreviations of the times the column
    holds (`EST/EDT` when they straddle a change; now's when it holds none), `Raised
    (UTC)` in UTC. One abbreviation per UTC offset: a table of thousands of rows costs
    a few vector operations."""
    series = times if isinstance(times, pd.Series) else pd.Series(list(times), dtype=object)
    utc = pd.to_datetime(series, utc=True).dropna()
    shown = utc.dt.tz_convert(tz)
    offsets = shown.dt.tz_localize(None) - utc.dt.tz_localize(None)
    firsts = list(shown[~offsets.duplicated()])
    short, zone = _zone_parts(firsts or [local(time.time(), tz)])
    return f"{label} ({short}, {zone})" if zone else f"{label} ({short})"


def local_times(frame: pd.DataFrame, tz: str, *columns: str) -> pd.DataFrame:
    """A copy of `frame` with `columns` (times in UTC, or naive UTC) in the zone `tz`."""
    converted = {c: pd.to_datetime(frame[c], utc=True).dt.tz_convert(tz) for c in columns}
    return frame.assign(**converted)


def with_local_times(frame: pd.DataFrame, tz: str, *columns: str) -> pd.DataFrame:
    """For a download: each of `columns` in UTC, `<column>_local` (the local wall time,
    without an offset) right after it, and a `time_zone` column after the last."""
    out: dict[str, pd.Series] = {}
    for name in frame.columns:
        out[name] = frame[name]
        if name in columns:
            utc = pd.to_datetime(frame[name], utc=True)
            out[name] = utc
            out[f"{name}_local"] = utc.dt.tz_convert(tz).dt.tz_localize(None)
        if columns and name == columns[-1]:
            out["time_zone"] = pd.Series(tz, index=frame.index, dtype=object)
    return pd.DataFrame(out, index=frame.index)
