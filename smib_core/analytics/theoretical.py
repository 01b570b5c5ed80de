"""Actual against theoretical hold, per cabinet. Pure pandas.

A game's *par* (theoretical hold, %) comes from its pay table: over a very long run the
machine keeps par % of coin in. Its actual hold over a period is its meter hold, meter
win / coin in (coin in - total won, 0000 - 0022): the game's own result, which the
credits players leave on a machine do not move (net win does; see `kpis`).

Input: a per-cabinet KPI table (`kpi_table(rollups, ["cabinet"])`: coin_in, meter_win,
games_played) and `par`, a Series of par % by cabinet (NaN or missing: unknown).
Output (`hold_against_par`), one row per cabinet of the table, same order:

    cabinet         str
    par_pct         float   theoretical hold %, NaN when unknown
    meter_hold_pct  float   actual hold %, NaN without coin in
    expected_win    float   coin_in x par / 100 ($)
    meter_win       float   actual ($)
    win_variance    float   meter_win - expected_win ($)
    hold_band_pct   float   the half-width of the band actual hold is expected in (pts)
    unusual         bool    actual hold outside par +/- the band

The band (the rule that marks a cabinet): a game's result per game, in units of the
bet, has a standard deviation `GAME_SD_PER_BET` (its volatility; about 5 to 15 for
video slots, jackpots included); over n games the hold's standard deviation is
sd / sqrt(n), so the band is `BAND_SIGMAS` (3) of those:

    hold_band_pct = 100 x BAND_SIGMAS x GAME_SD_PER_BET / sqrt(games_played)

It narrows with handle: 30 points over 10,000 games, 3 points over a million. A
cabinet is unusual when |meter_hold_pct - par_pct| > hold_band_pct: by chance that
happens about 3 times in 1,000 (for results close to normal), so a mark says "look at
this machine" (a wrong par, a meter fault, a stuck reel, an advantage player), not
"it lost". Without par or without games, nothing is marked.
"""

from __future__ import annotations

import pandas as pd

GAME_SD_PER_BET = 10.0
BAND_SIGMAS = 3.0
THEORETICAL_COLUMNS: tuple[str, ...] = (
    "cabinet",
    "par_pct",
    "meter_hold_pct",
    "expected_win",
    "meter_win",
    "win_variance",
    "hold_band_pct",
    "unusual",
)


def hold_band_pct(
    games_played: pd.Series, sd_per_bet: float = GAME_SD_PER_BET, sigmas: float = BAND_SIGMAS
) -> pd.Series:
    """Half-width (percentage points) of the band hold stays in by chance; NaN without games."""
    games = pd.to_numeric(games_played).astype("float64")
    return 100.0 * sigmas * sd_per_bet / games.where(games > 0) ** 0.5


def hold_against_par(per_cabinet: pd.DataFrame, par: pd.Series) -> pd.DataFrame:
    """Actual against theoretical hold per cabinet (see the module docstring)."""
    coin_in = per_cabinet["coin_in"].astype("float64")
    par_pct = per_cabinet["cabinet"].map(par).astype("float64")
    meter_hold = per_cabinet["meter_win"] / coin_in.where(coin_in != 0) * 100.0
    expected = coin_in * par_pct / 100.0
    band = hold_band_pct(per_cabinet["games_played"])
    unusual = ((meter_hold - par_pct).abs() > band).fillna(False).astype(bool)
    table = pd.DataFrame(
        {
            "cabinet": per_cabinet["cabinet"],
            "par_pct": par_pct,
            "meter_hold_pct": meter_hold,
            "expected_win": expected,
            "meter_win": per_cabinet["meter_win"].astype("float64"),
            "win_variance": per_cabinet["meter_win"] - expected,
            "hold_band_pct": band,
            "unusual": unusual,
        }
    )
    return table[list(THEORETICAL_COLUMNS)].reset_index(drop=True)
