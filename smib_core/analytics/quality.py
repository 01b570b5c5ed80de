"""Data quality of a period: who was silent, what fell, what failed. Pure pandas.

Inputs, all cut by `period` = `[start, end)` here:

    snapshots_meta   one row per successful reading: cabinet, at (meters not needed)
    movement         a movement frame (flags are bools, timed by `end`) or a rollup
                     frame (flags are counts, timed by `bucket`)
    failed_readings  one row per failed reading (board "-1", bad frame): at, and
                     cabinet or relay (a relay is mapped to its cabinet via `cabinets`)
    cabinets         the roster: cabinet, location (relay optional)

`DataQuality.per_cabinet` has one row per cabinet of the roster (plus any cabinet
seen in the data but missing from it), cabinets with a problem first:

    cabinet, location   str
    readings            int   successful readings in the period
    failed_readings     int
    last_reading        datetime (UTC) of the last successful reading, NaT if none
    rollover, ram_clear, absurd   int   flagged intervals
    no_reading          bool  no successful reading in the period
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from smib_core.analytics.movement import FLAGS
from smib_core.analytics.periods import to_utc

QUALITY_COLUMNS: tuple[str, ...] = (
    "cabinet",
    "location",
    "readings",
    "failed_readings",
    "last_reading",
    *FLAGS,
    "no_reading",
)
_ONE_NS = pd.Timedelta(1, unit="ns")


@dataclass(frozen=True, eq=False)
class DataQuality:
    """The period's data quality: per-cabinet table and fleet totals (see above)."""

    per_cabinet: pd.DataFrame = field(repr=False)
    cabinets: int
    silent: list[str]  # cabinets with no successful reading in the period
    readings: int
    failed_readings: int
    rollovers: int
    ram_clears: int
    absurd: int


def _within(times: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    utc = to_utc(times)
    return (utc >= start) & (utc < end)


def _failed_cabinets(failed: pd.DataFrame, cabinets: pd.DataFrame) -> pd.Series:
    if "cabinet" in failed.columns:
        return failed["cabinet"]
    if "relay" in failed.columns and "relay" in cabinets.columns:
        return failed["relay"].map(cabinets.drop_duplicates("relay").set_index("relay")["cabinet"])
    return pd.Series(pd.NA, index=failed.index, dtype="str")


def _flag_counts(movement: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    if "bucket" in movement.columns:
        inside = (movement["bucket"] >= start) & (movement["bucket"] < end)
    else:
        ends = to_utc(movement["end"]) - _ONE_NS  # the interval (start, end] ends inside
        inside = (ends >= start) & (ends < end)
    flags = movement.loc[inside, ["cabinet", *FLAGS]]
    return flags.groupby("cabinet", sort=True)[list(FLAGS)].sum().astype("int64")


def data_quality(
    snapshots_meta: pd.DataFrame,
    movement: pd.DataFrame,
    failed_readings: pd.DataFrame,
    cabinets: pd.DataFrame,
    period: tuple[pd.Timestamp, pd.Timestamp],
) -> DataQuality:
    start, end = period
    readings = snapshots_meta[_within(snapshots_meta["at"], start, end)]
    failed = failed_readings[_within(failed_readings["at"], start, end)]
    failed_by_cabinet = _failed_cabinets(failed, cabinets).value_counts()
    reading_times = to_utc(readings["at"]).groupby(readings["cabinet"].to_numpy())
    flags = _flag_counts(movement, start, end)

    roster = cabinets.drop_duplicates("cabinet", keep="last").set_index("cabinet")["location"]
    seen = pd.Index(readings["cabinet"].unique()).union(flags.index).union(failed_by_cabinet.index)
    ids = pd.Index(roster.index).union(seen.dropna())
    table = pd.DataFrame({"cabinet": ids.astype(str)})
    table["location"] = table["cabinet"].map(roster)
    table["readings"] = table["cabinet"].map(reading_times.size()).fillna(0).astype("int64")
    table["failed_readings"] = table["cabinet"].map(failed_by_cabinet).fillna(0).astype("int64")
    # Mapped from a dict: mapping from an empty datetime Series fails in pandas 3.
    last_reading = table["cabinet"].map(reading_times.max().to_dict())
    table["last_reading"] = pd.to_datetime(last_reading, utc=True).dt.as_unit("ns")
    for flag in FLAGS:
        table[flag] = table["cabinet"].map(flags[flag]).fillna(0).astype("int64")
    table["no_reading"] = table["readings"] == 0
    problems = table["failed_readings"] + table[list(FLAGS)].sum(axis=1)
    table = (
        table.assign(_silent=table["no_reading"], _problems=problems)
        .sort_values(["_silent", "_problems", "cabinet"], ascending=[False, False, True])
        .drop(columns=["_silent", "_problems"])
        .reset_index(drop=True)
    )
    return DataQuality(
        per_cabinet=table[list(QUALITY_COLUMNS)],
        cabinets=len(table),
        silent=table.loc[table["no_reading"], "cabinet"].tolist(),
        readings=int(table["readings"].sum()),
        failed_readings=len(failed),
        rollovers=int(table["rollover"].sum()),
        ram_clears=int(table["ram_clear"].sum()),
        absurd=int(table["absurd"].sum()),
    )
