"""Money KPIs from rollups. Pure pandas.

Every amount here is money (the rollups' `<meter>_money` columns), never credits;
counts are games. Definitions (SAS meters in brackets):

    net_win        = drop - cancelled - jackpot     (0024 - 0004 - 0002): the cash the
                     machines kept: everything put in, less every credit paid out at
                     the machine or by hand, less the jackpots attendants paid
    meter_win      = coin_in - won                  (0000 - 0022): what play itself won
    credits_left   = net_win - meter_win            the credits players left on the
                     machines over the period (the change of 000C; negative when they
                     cashed out more than they put in)
    hold_pct       = net_win / coin_in x 100        (None / NaN when coin in is 0)
    meter_hold_pct = meter_win / coin_in x 100      (what theoretical hold is set against)
    avg_bet        = coin_in / games_played         (None / NaN when no game was played)

A KPI table (`kpi_table`) has the grouping columns, then:

    coin_in, coin_out, drop, cancelled, handpaid_cancelled, jackpot,
    net_win, hold_pct, games_played, games_won, avg_bet   float
    cabinets                                               int (distinct cabinets)

`kpis` gives the same figures for a whole period as a dict (None for an undefined
ratio), and `kpi_change` compares two such dicts. A rollup row counts in a period
when its bucket *starts* in it: use daily rollups for gaming days, weeks and months,
hourly rollups for hours and for custom ranges that do not follow gaming days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import pandas as pd

from smib_core.analytics.rollups import MONEY_COLUMNS, select_period

AMOUNTS: tuple[str, ...] = (
    "coin_in",
    "coin_out",
    "drop",
    "cancelled",
    "handpaid_cancelled",
    "jackpot",
    "won",
)
COUNTS: tuple[str, ...] = ("games_played", "games_won")
_METER = {"won": "won_credits"}  # KPI name -> movement meter, where they differ
KPI_COLUMNS: tuple[str, ...] = (
    *AMOUNTS,
    "net_win",
    "meter_win",
    "credits_left",
    "hold_pct",
    "meter_hold_pct",
    "games_played",
    "games_won",
    "avg_bet",
    "cabinets",
)


class Kpis(TypedDict):
    coin_in: float
    coin_out: float
    drop: float
    cancelled: float
    handpaid_cancelled: float
    jackpot: float
    won: float
    net_win: float
    meter_win: float
    credits_left: float
    hold_pct: float | None
    meter_hold_pct: float | None
    games_played: float
    games_won: float
    avg_bet: float | None
    cabinets: int


class KpiChange(TypedDict):
    current: float | None
    previous: float | None
    delta: float | None  # current - previous (percentage points for hold_pct)
    pct: float | None  # delta / |previous| x 100; None when previous is 0 or None


def net_win(amounts: pd.DataFrame) -> pd.Series:
    """Net win of a frame with money columns `drop`, `cancelled`, `jackpot`."""
    return amounts["drop"] - amounts["cancelled"] - amounts["jackpot"]


def meter_win(amounts: pd.DataFrame) -> pd.Series:
    """Meter win of a frame with money columns `coin_in`, `won`."""
    return amounts["coin_in"] - amounts["won"]


def _ratio(numerator: pd.Series, denominator: pd.Series, scale: float = 1.0) -> pd.Series:
    safe = denominator.where(denominator != 0)
    return numerator / safe * scale


def kpi_table(
    rollups: pd.DataFrame,
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """KPIs of `rollups` per group of `by` columns (one row overall when `by` is empty)."""
    sums = {a: MONEY_COLUMNS[_METER.get(a, a)] for a in AMOUNTS} | {c: c for c in COUNTS}
    keys = list(by)
    if keys:
        grouped = rollups.groupby(keys, sort=True, observed=True)
        table = grouped[list(sums.values())].sum().rename(columns={v: k for k, v in sums.items()})
        table["cabinets"] = grouped["cabinet"].nunique()
        table = table.reset_index()
    else:
        row = {k: float(rollups[v].sum()) for k, v in sums.items()}
        row["cabinets"] = int(rollups["cabinet"].nunique())
        table = pd.DataFrame([row])
    table["net_win"] = net_win(table)
    table["meter_win"] = meter_win(table)
    table["credits_left"] = table["net_win"] - table["meter_win"]
    table["hold_pct"] = _ratio(table["net_win"], table["coin_in"], 100.0)
    table["meter_hold_pct"] = _ratio(table["meter_win"], table["coin_in"], 100.0)
    table["avg_bet"] = _ratio(table["coin_in"], table["games_played"])
    table["cabinets"] = table["cabinets"].astype("int64")
    return table[[*keys, *KPI_COLUMNS]]


def _optional(value: object) -> float | None:
    """A number as float, or None for None/NaN."""
    if not isinstance(value, int | float | np.number):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def kpis(
    rollups: pd.DataFrame,
    period_start: pd.Timestamp,
    period_end: pd.Timestamp,
) -> Kpis:
    """The KPIs of the rollup rows whose bucket starts in `[period_start, period_end)`."""
    part = select_period(rollups, period_start, period_end)
    row = kpi_table(part).iloc[0]
    return Kpis(
        coin_in=float(row["coin_in"]),
        coin_out=float(row["coin_out"]),
        drop=float(row["drop"]),
        cancelled=float(row["cancelled"]),
        handpaid_cancelled=float(row["handpaid_cancelled"]),
        jackpot=float(row["jackpot"]),
        won=float(row["won"]),
        net_win=float(row["net_win"]),
        meter_win=float(row["meter_win"]),
        credits_left=float(row["credits_left"]),
        hold_pct=_optional(row["hold_pct"]),
        meter_hold_pct=_optional(row["meter_hold_pct"]),
        games_played=float(row["games_played"]),
        games_won=float(row["games_won"]),
        avg_bet=_optional(row["avg_bet"]),
        cabinets=int(row["cabinets"]),
    )


def kpi_change(current: Kpis, previous: Kpis) -> dict[str, KpiChange]:
    """Per KPI: both values, the difference and the relative change in percent."""
    changes: dict[str, KpiChange] = {}
    for name in KPI_COLUMNS:
        now_f = _optional(current.get(name))
        before_f = _optional(previous.get(name))
        delta = None if now_f is None or before_f is None else now_f - before_f
        pct = None if delta is None or not before_f else delta / abs(before_f) * 100.0
        changes[name] = KpiChange(current=now_f, previous=before_f, delta=delta, pct=pct)
    return changes
