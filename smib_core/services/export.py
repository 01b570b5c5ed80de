"""Meter exports for analysts: raw snapshots, hourly or daily movement, as CSV, Excel or
Parquet, written chunk by chunk. No streamlit.

Contract: `export_chunks(source, request)` yields frames of at most `chunk_rows` rows
(`source` is a `MeterStore`) whose columns are named in words with their unit
(`Time (UTC)`, `Cabinet`, `Coin in (credits)`, `Coin in ($)`, `Hold (%)`), the same
columns in every chunk (`columns(granularity)`); `export_files.write_export` streams
them into a file, so memory holds one chunk whatever the export's size. Every row
carries its time twice, in UTC and in the casino's local time (`request.tz`, named in
a `Time zone` column), both without an offset (Excel has no time zones), and its
gaming day (a date: the local day starting at `request.gaming_day_start_hour`). A
raw reading's gaming day is the one whose play it closes (a reading at the very start
of a gaming day closes the previous day's last interval), as in the rollups.

- raw: every reading attempt of `[start, end)` in time order, failed ones included
  (`Reading OK`, `Failure`), the standard SAS meters as the machine counted them
  (cumulative credits or games) and credit meters in money (x denomination);
- hour / day: the rollups whose bucket starts in `[start, end)`, i.e. the movement
  (play) of each cabinet per hour or gaming day, with net win (drop - cancelled -
  jackpots), meter win (coin in - total won), the credits left on the machines (their
  difference), hold and average bet. Credits are in the row's denomination.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from smib_core import sas
from smib_core.analytics.kpis import meter_win, net_win
from smib_core.analytics.movement import CREDIT_METERS, FLAGS, MOVEMENT_METERS
from smib_core.analytics.periods import bucket_start
from smib_core.errors import InvalidInput
from smib_core.services.meter_report import MeterSource, Scope, span
from smib_core.xlsx import CellKind

Granularity = Literal["raw", "hour", "day"]
Format = Literal["csv", "xlsx", "parquet"]
GRANULARITIES: dict[str, str] = {
    "raw": "Raw snapshots",
    "hour": "Hourly movement",
    "day": "Daily movement",
}
FORMATS: dict[str, str] = {"csv": "CSV", "xlsx": "Excel (.xlsx)", "parquet": "Parquet"}
MIME_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}
DEFAULT_CHUNK_ROWS = 5_000

# Short names for the meters people know; others keep their SAS name.
METER_LABELS: dict[str, str] = {
    "0000": "Coin in",
    "0001": "Coin out",
    "0002": "Jackpots",
    "0003": "Hand-paid cancelled",
    "0004": "Cancelled credits",
    "0005": "Games played",
    "0006": "Games won",
    "0007": "Games lost",
    "000B": "Bills accepted",
    "000C": "Current credits",
    "0022": "Total won",
    "0024": "Drop",
}
RAW_METERS = tuple(sorted(sas.STANDARD_METER_CODES))
_CODE_METER = {code: name for name, code in MOVEMENT_METERS.items()}

Kind = CellKind  # how a column is typed in every format


def _unit(code: str) -> str:
    unit = sas.meter_spec(code).unit
    return {"credits": "credits", "count": "games", "cents": "cents"}.get(unit.value, unit.value)


def _meter_label(code: str) -> str:
    return METER_LABELS.get(code, sas.meter_spec(code).name)


def _raw_columns() -> list[tuple[str, str, Kind]]:
    """(frame column, header, kind) of a raw export."""
    spec: list[tuple[str, str, Kind]] = [
        ("at", "Time (UTC)", "time"),
        ("at_local", "Time (local)", "time"),
        ("time_zone", "Time zone", "text"),
        ("gaming_day", "Gaming day", "date"),
        ("cabinet", "Cabinet", "text"),
        ("location", "Location", "text"),
        ("relay", "Board (relay id)", "text"),
        ("denomination", "Denomination ($ per credit)", "float"),
        ("ok", "Reading OK", "bool"),
        ("failure", "Failure", "text"),
    ]
    spec += [(code, f"{_meter_label(code)} ({_unit(code)})", "int") for code in RAW_METERS]
    spec += [
        (f"{code}$", f"{_meter_label(code)} ($)", "money")
        for code in RAW_METERS
        if _CODE_METER.get(code) in CREDIT_METERS
    ]
    return spec


def _movement_columns(granularity: Granularity) -> list[tuple[str, str, Kind]]:
    starts = "Hour starting" if granularity == "hour" else "Gaming day starting"
    spec: list[tuple[str, str, Kind]] = [
        ("gaming_day", "Gaming day", "date"),
        ("bucket", f"{starts} (UTC)", "time"),
        ("bucket_local", f"{starts} (local)", "time"),
        ("time_zone", "Time zone", "text"),
        ("cabinet", "Cabinet", "text"),
        ("location", "Location", "text"),
        ("relay", "Board (relay id)", "text"),
        ("denomination", "Denomination ($ per credit)", "float"),
        ("intervals", "Intervals (readings differenced)", "int"),
    ]
    labels = {name: _meter_label(code) for name, code in MOVEMENT_METERS.items()}
    spec += [(f"{m}_money", f"{labels[m]} ($)", "money") for m in CREDIT_METERS]
    spec += [
        ("net_win", "Net win ($)", "money"),
        ("meter_win", "Meter win ($)", "money"),
        ("credits_left", "Credits left on the machines ($)", "money"),
        ("hold_pct", "Hold (%)", "float"),
        ("avg_bet", "Average bet ($)", "money"),
    ]
    spec += [(m, f"{labels[m]} (credits)", "float") for m in CREDIT_METERS]
    spec += [("games_played", "Games played", "int"), ("games_won", "Games won", "int")]
    flags = {"rollover": "Rollovers", "ram_clear": "RAM clears", "absurd": "Absurd readings"}
    spec += [(f, flags[f], "int") for f in FLAGS]
    return spec


def column_spec(granularity: Granularity) -> list[tuple[str, str, Kind]]:
    return _raw_columns() if granularity == "raw" else _movement_columns(granularity)


def columns(granularity: Granularity) -> list[str]:
    """The headers of an export of this granularity, in order."""
    return [header for _, header, _ in column_spec(granularity)]


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: `[start, end)`, which cabinets, how fine, which format, and the
    casino's clock its rows are labelled in (time zone, gaming-day start hour)."""

    start: pd.Timestamp
    end: pd.Timestamp
    granularity: Granularity = "day"
    format: Format = "csv"
    scope: Scope = field(default_factory=Scope)
    tz: str = "UTC"
    gaming_day_start_hour: int = 0

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise InvalidInput(f"unknown granularity {self.granularity!r}: raw, hour or day")
        if self.format not in FORMATS:
            raise InvalidInput(f"unknown format {self.format!r}: csv, xlsx or parquet")
        for name in ("start", "end"):
            stamp = pd.Timestamp(getattr(self, name))
            object.__setattr__(
                self, name, stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
            )
        if self.end <= self.start:
            raise InvalidInput("the export period must end after it starts")

    @property
    def file_name(self) -> str:
        last = (self.end - pd.Timedelta(1, unit="ns")).tz_convert(self.tz)
        first = self.start.tz_convert(self.tz)
        return f"meters-{self.granularity}-{first:%Y%m%d}-{last:%Y%m%d}.{self.format}"

    def detail(self, names: dict[str, str] | None = None) -> dict[str, Any]:
        """For the audit trail: period, filters, granularity and format in words."""
        return {
            "period": span(self.start.tz_convert(self.tz), self.end.tz_convert(self.tz)),
            "filters": self.scope.describe(names or {}),
            "granularity": self.granularity,
            "format": self.format,
        }


def estimate_rows(request: ExportRequest, cabinets: int, collect_period_s: float = 300.0) -> int:
    """About how many rows the export has (for progress): no count query needed."""
    seconds = (request.end - request.start).total_seconds()
    per_cabinet = {"raw": seconds / max(1.0, collect_period_s), "hour": seconds / 3600}
    return max(1, round(max(1, cabinets) * per_cabinet.get(request.granularity, seconds / 86400)))


def _typed(frame: pd.DataFrame, spec: list[tuple[str, str, Kind]]) -> pd.DataFrame:
    """The frame cut and typed to `spec`, columns renamed to their headers."""
    out: dict[str, Any] = {}
    for column, header, kind in spec:
        values = frame[column] if column in frame.columns else pd.Series(None, index=frame.index)
        if kind == "time":
            out[header] = pd.to_datetime(values, utc=True).dt.tz_localize(None).dt.as_unit("ns")
        elif kind == "date":
            out[header] = pd.to_datetime(values).dt.tz_localize(None).dt.date
        elif kind == "text":
            out[header] = values.astype("string")
        elif kind == "int":
            out[header] = pd.to_numeric(values).round().astype("Int64")
        elif kind == "bool":
            out[header] = values.astype("boolean")
        else:
            out[header] = pd.to_numeric(values).astype("float64")
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _clock(
    frame: pd.DataFrame, column: str, request: ExportRequest, *, closes: bool
) -> dict[str, pd.Series]:
    """`<column>_local` (naive local wall time), `time_zone` and `gaming_day` of a time
    column; `closes`: the time ends an interval (a reading), so an instant on a day's
    start belongs to the day before."""
    utc = pd.to_datetime(frame[column], utc=True).dt.as_unit("ns")
    local = utc.dt.tz_convert(request.tz)
    probe = utc - pd.Timedelta(1, unit="ns") if closes else utc
    day = bucket_start(
        probe, "D", gaming_day_start_hour=request.gaming_day_start_hour, tz=request.tz
    )
    return {
        f"{column}_local": local.dt.tz_localize(None),
        "time_zone": pd.Series(request.tz, index=frame.index),
        "gaming_day": day.dt.tz_localize(None).dt.normalize(),
    }


def _raw_frame(chunk: pd.DataFrame, request: ExportRequest) -> pd.DataFrame:
    money: dict[str, pd.Series] = {
        f"{code}$": (pd.to_numeric(chunk[code]) * chunk["denomination"]).round(2)
        for code in RAW_METERS
        if code in chunk.columns and _CODE_METER.get(code) in CREDIT_METERS
    }
    if "ok" not in chunk.columns:
        money["ok"] = pd.Series(True, index=chunk.index)
    return chunk.assign(**money, **_clock(chunk, "at", request, closes=True))


def _movement_frame(rows: pd.DataFrame, request: ExportRequest) -> pd.DataFrame:
    amounts = pd.DataFrame(
        {m: rows[f"{m}_money"] for m in ("drop", "cancelled", "jackpot", "coin_in")}
        | {"won": rows["won_credits_money"]}
    )
    win = net_win(amounts)
    won_by_play = meter_win(amounts)
    coin_in = rows["coin_in_money"]
    played = rows["games_played"]
    money = {f"{m}_money": rows[f"{m}_money"].round(2) for m in CREDIT_METERS}
    return rows.assign(
        **money,
        **_clock(rows, "bucket", request, closes=False),
        net_win=win.round(2),
        meter_win=won_by_play.round(2),
        credits_left=(win - won_by_play).round(2),
        hold_pct=(win / coin_in.where(coin_in != 0) * 100).round(4),
        avg_bet=(coin_in / played.where(played != 0)).round(4),
    )


def _windows(request: ExportRequest, cabinets: int, chunk_rows: int) -> Iterator[tuple[Any, Any]]:
    """Time windows whose rollup rows are about `chunk_rows` (one bucket at least)."""
    bucket = pd.Timedelta(hours=1) if request.granularity == "hour" else pd.Timedelta(days=1)
    step = bucket * max(1, chunk_rows // max(1, cabinets))
    start = request.start
    while start < request.end:
        end = min(request.end, start + step)
        yield start.to_pydatetime(), end.to_pydatetime()
        start = end


def export_chunks(
    source: MeterSource,
    request: ExportRequest,
    *,
    cabinets: int = 1,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Generator[pd.DataFrame, None, None]:
    """The export's rows as typed frames with human headers (see the module docstring).

    `cabinets` (how many the scope covers) sizes the time windows rollups are read in.
    """
    spec = column_spec(request.granularity)
    scope = request.scope
    if request.granularity == "raw":
        filters = {
            "cabinet_ids": scope.cabinet_ids or None,
            "location_ids": scope.location_ids or None,
        }
        for chunk in source.iter_snapshot_chunks(
            request.start.to_pydatetime(),
            request.end.to_pydatetime(),
            filters,
            chunk_rows,
            include_failed=True,
        ):
            yield _typed(_raw_frame(chunk, request), spec)
        return
    freq: Literal["h", "D"] = "h" if request.granularity == "hour" else "D"
    for start, end in _windows(request, cabinets, chunk_rows):
        rows = source.rollups(
            freq,
            start,
            end,
            cabinet_ids=scope.cabinet_ids or None,
            location_ids=scope.location_ids or None,
            tz=request.tz,
        )
        rows = rows.sort_values(["bucket", "cabinet"], kind="stable")
        for first in range(0, len(rows), chunk_rows):
            part = rows.iloc[first : first + chunk_rows]
            yield _typed(_movement_frame(part, request), spec)


def preview(
    source: MeterSource, request: ExportRequest, rows: int = 20, **options: Any
) -> pd.DataFrame:
    """The first `rows` rows of the export, with its headers (empty when there is none)."""
    chunks = export_chunks(source, request, chunk_rows=rows, **options)
    first = next(chunks, None)
    chunks.close()
    return first if first is not None else pd.DataFrame(columns=columns(request.granularity))
