"""The dashboard page's parts: cached loading, KPI row, chart grid, cabinet table and the
data-quality panel. The numbers come from `services.dashboard`, the figures from
`services.charts`; this module only lays them out."""

from __future__ import annotations

from typing import Literal

import pandas as pd
import streamlit as st

from smib_core.services import charts
from smib_core.services.dashboard import Dashboard, build_dashboard, coin_in_heatmap
from smib_core.services.meter_report import ReportPeriod, Scope
from smib_core.ui import resources

# (KPI, label, money?, delta colour: "normal" when up is good for the house, "off" else)
Colour = Literal["normal", "off"]
KPIS: tuple[tuple[str, str, bool, Colour], ...] = (
    ("coin_in", "Coin in", True, "normal"),
    ("coin_out", "Coin out", True, "off"),
    ("drop", "Drop", True, "normal"),
    ("cancelled", "Cancelled credits", True, "off"),
    ("jackpot", "Jackpots", True, "off"),
    ("net_win", "Net win", True, "normal"),
    ("meter_win", "Meter win", True, "normal"),
    ("hold_pct", "Hold", False, "normal"),
    ("games_played", "Games played", False, "normal"),
    ("avg_bet", "Average bet", True, "normal"),
)
AUTO_HEATMAP_ROWS = 50_000
BAND_HELP = (
    "Actual hold is expected within par ± 3 standard deviations of chance, which "
    "narrow with the games played (a result's spread of 10 bets per game is assumed); "
    "outside it the cabinet is marked unusual."
)
_HEATMAPS_ASKED = "dashboard_heatmaps_asked"
HELP = {
    "net_win": "Drop minus cancelled credits minus hand-paid jackpots: the cash the machines kept.",
    "meter_win": "Coin in minus total won (coin out + jackpots): what play won. Net win "
    "minus meter win is the credits players left on the machines.",
    "hold_pct": "Net win as a share of coin in.",
    "avg_bet": "Coin in per game played.",
    "drop": "Everything put into the machines: coins, bills, tickets, electronic transfers in.",
    "jackpot": "Jackpots paid by an attendant (hand pays).",
}


def _period_key(period: ReportPeriod) -> tuple[str, ...]:
    bounds = (period.start, period.end, period.previous_start, period.previous_end)
    return (period.choice, *(b.isoformat() for b in bounds))


def _period_of(key: tuple[str, ...]) -> ReportPeriod:
    choice, *bounds = key
    zone = resources.get_settings().timezone
    start, end, previous_start, previous_end = (pd.Timestamp(t).tz_convert(zone) for t in bounds)
    now = pd.Timestamp.now(tz=zone)
    return ReportPeriod(choice, start, end, previous_start, previous_end, now)


@st.cache_data(ttl=60, show_spinner=False)
def _dashboard(key: tuple[str, ...], scope: tuple[tuple[str, ...], tuple[str, ...]]) -> Dashboard:
    registry = resources.get_registry().frame()
    return build_dashboard(
        resources.get_meter_store(),
        registry,
        _period_of(key),
        Scope(*scope),
        resources.get_settings(),
    )


def load(period: ReportPeriod, scope: Scope) -> Dashboard:
    """The dashboard, cached for a minute per period and filters (clicks stay quick)."""
    with st.spinner("Reading the rollups…"):
        return _dashboard(_period_key(period), (scope.location_ids, scope.cabinet_ids))


@st.cache_data(ttl=300, show_spinner=False)
def _heatmap(key: tuple[str, ...], scope: tuple[tuple[str, ...], tuple[str, ...]]) -> pd.DataFrame:
    return coin_in_heatmap(
        resources.get_meter_store(), _period_of(key), Scope(*scope), resources.get_settings()
    )


def _delta(name: str, board: Dashboard) -> str | None:
    change = board.change[name]
    if change["delta"] is None:
        return None
    if name == "hold_pct":
        return f"{change['delta']:+.2f} pts"
    if change["pct"] is None:
        return None
    return f"{change['pct']:+.1f}%"


def _value(name: str, money: bool, value: float | None) -> str:
    if value is None:
        return "–"
    if name == "hold_pct":
        return f"{value:.2f}%"
    if money:
        return f"${value:,.2f}" if abs(value) < 1000 else f"${value:,.0f}"
    return f"{value:,.0f}"


def kpi_row(board: Dashboard) -> None:
    compared = f"vs {board.period.compared_label}"
    trend = board.over_time
    for row in (KPIS[:5], KPIS[5:]):
        for column, (name, label, money, colour) in zip(st.columns(5), row, strict=False):
            current, previous = board.change[name]["current"], board.change[name]["previous"]
            column.metric(
                label,
                _value(name, money, current),
                _delta(name, board),
                colour,
                help=f"{HELP.get(name, '')} Before: {_value(name, money, previous)}.".strip(),
                border=True,
                chart_data=trend[name].fillna(0).tolist() if len(trend) > 1 else None,
                delta_description=compared if _delta(name, board) else None,
            )


def chart_grid(board: Dashboard) -> None:
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.over_time_figure(board.over_time, board.period.hourly), key="time")
    right.plotly_chart(charts.location_figure(board.by_location), key="locations")
    left, right = st.columns(2)
    left.plotly_chart(charts.top_bottom_figure(board.top, board.bottom), key="topbottom")
    right.plotly_chart(charts.hold_figure(board.hold, board.kpis["hold_pct"]), key="hold")


def heatmap(period: ReportPeriod, scope: Scope, cabinets: int) -> None:
    """The hour-of-day by weekday heatmap; past AUTO_HEATMAP_ROWS hourly rows (a month
    of a large fleet) it waits for a click, as reading them takes a while."""
    if period.hourly:
        st.caption(
            "The hour-of-day by weekday heatmap needs a week or more: choose This week, "
            "Last 7 days or This month."
        )
        return
    key = (_period_key(period), (scope.location_ids, scope.cabinet_ids))
    hours = (min(period.end, period.now) - period.start) / pd.Timedelta(hours=1)
    rows = max(0, round(hours)) * max(1, cabinets)
    asked = st.session_state.setdefault(_HEATMAPS_ASKED, set())
    if rows > AUTO_HEATMAP_ROWS and key not in asked:
        st.caption(f"Coin in by hour of day and weekday reads about {rows:,} hourly rows.")
        if not st.button("Show the heatmap", icon=":material/grid_on:"):
            return
        asked.add(key)
    with st.spinner(f"Reading about {rows:,} hourly rows for the heatmap…"):
        grid = _heatmap(*key)
    st.plotly_chart(charts.heatmap_figure(grid), key="heatmap")


def cabinet_table(board: Dashboard) -> None:
    st.subheader(f"Cabinets ({len(board.cabinets)})")
    money = "dollar"
    unit = "hour" if board.period.hourly else "gaming day"
    st.dataframe(
        board.cabinets.drop(columns=["cabinet_id"]),
        hide_index=True,
        width="stretch",
        column_config={
            "cabinet": st.column_config.TextColumn("Cabinet", pinned=True),
            "location": "Location",
            "coin_in": st.column_config.NumberColumn("Coin in", format=money),
            "coin_out": st.column_config.NumberColumn("Coin out", format=money),
            "drop": st.column_config.NumberColumn("Drop", format=money),
            "cancelled": st.column_config.NumberColumn("Cancelled", format=money),
            "jackpot": st.column_config.NumberColumn("Jackpots", format=money),
            "net_win": st.column_config.NumberColumn("Net win", format=money, help=HELP["net_win"]),
            "meter_win": st.column_config.NumberColumn(
                "Meter win", format=money, help=HELP["meter_win"]
            ),
            "credits_left": st.column_config.NumberColumn(
                "Credits left", format=money, help="Net win minus meter win"
            ),
            "hold_pct": st.column_config.NumberColumn("Hold", format="%.2f%%"),
            "meter_hold_pct": st.column_config.NumberColumn(
                "Actual hold", format="%.2f%%", help="Meter win as a share of coin in"
            ),
            "par_pct": st.column_config.NumberColumn(
                "Par", format="%.2f%%", help="Theoretical hold, from the registry"
            ),
            "hold_band_pct": st.column_config.NumberColumn(
                "± band", format="%.1f pts", help=BAND_HELP
            ),
            "unusual": st.column_config.CheckboxColumn("Unusual", help=BAND_HELP),
            "expected_win": st.column_config.NumberColumn(
                "Expected win", format=money, help="Coin in x par"
            ),
            "win_variance": st.column_config.NumberColumn(
                "Win − expected", format=money, help="Meter win minus expected win"
            ),
            "games_played": st.column_config.NumberColumn("Games", format="localized"),
            "avg_bet": st.column_config.NumberColumn("Avg bet", format=money),
            "trend": st.column_config.LineChartColumn(
                f"Net win per {unit}", help="Net win of each bucket of the period"
            ),
        },
    )


def theoretical_hold(board: Dashboard) -> None:
    """Actual against theoretical hold for the cabinets with a par, and the unusual ones."""
    summary = board.with_par
    if summary is None:
        st.caption(
            "Theoretical hold: no cabinet of the period has a par yet (set it on the "
            "Registry page) to compare actual with theoretical hold."
        )
        return
    st.subheader("Actual against theoretical hold")
    cols = st.columns(4)
    cols[0].metric("Cabinets with a par", summary.cabinets)
    cols[1].metric("Expected win", _value("x", True, summary.expected_win), help="Coin in x par")
    cols[2].metric("Meter win", _value("x", True, summary.meter_win), help=HELP["meter_win"])
    theoretical, actual = summary.theoretical_hold_pct, summary.meter_hold_pct
    cols[3].metric(
        "Actual / theoretical hold",
        f"{_value('hold_pct', False, actual)} / {_value('hold_pct', False, theoretical)}",
    )
    unusual = board.unusual
    if unusual:
        st.warning(f"Unusual for their handle: {', '.join(unusual)}. " + BAND_HELP)


def quality_panel(board: Dashboard, expanded: bool = False) -> None:
    quality = board.quality
    problems = len(quality.silent) + quality.ram_clears + quality.rollovers
    title = "Data quality" + (
        " · needs a look" if problems + quality.failed_readings else " · all good"
    )
    with st.expander(title, expanded=expanded, icon=":material/fact_check:"):
        st.caption(
            "Intervals are the stretches between two readings closed in the period (about "
            "one per collection). A RAM clear counts the play since the clear; an absurd "
            "jump counts no play for its interval; a rollover is counted."
        )
        cols = st.columns(5)
        cols[0].metric("Silent cabinets", len(quality.silent), help="No reading in the period")
        cols[1].metric("Failed readings", f"{quality.failed_readings:,}")
        cols[2].metric("RAM clears", quality.ram_clears)
        cols[3].metric("Rollovers", quality.rollovers)
        cols[4].metric("Absurd jumps", quality.absurd)
        table = quality.per_cabinet
        flagged = table[
            table["no_reading"]
            | (table[["failed_readings", "rollover", "ram_clear", "absurd"]].sum(axis=1) > 0)
        ]
        if flagged.empty:
            st.success(f"All {quality.cabinets} cabinets reported, with no fault in the period.")
            return
        zone = board.period.start.tz
        flagged = flagged.assign(last_reading=flagged["last_reading"].dt.tz_convert(zone))
        st.dataframe(
            flagged.drop(columns=["cabinet_id"]),
            hide_index=True,
            width="stretch",
            column_config={
                "cabinet": "Cabinet",
                "location": "Location",
                "intervals": st.column_config.NumberColumn("Intervals", format="localized"),
                "failed_readings": "Failed readings",
                "last_reading": resources.time_column("Last reading", flagged["last_reading"]),
                "rollover": "Rollovers",
                "ram_clear": "RAM clears",
                "absurd": "Absurd jumps",
                "no_reading": st.column_config.CheckboxColumn("Silent"),
            },
        )
