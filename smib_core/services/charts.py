"""Plotly figures of the dashboard's chart frames (`services.dashboard`). No streamlit.

One look for every chart: white template, a title that says what is shown and in
which unit, money axes as `$12,345`, and the same colour for the same figure on every
chart (coin in blue, net win green, a loss red, hold purple).
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COIN_IN = "#4C78A8"
NET_WIN = "#2E7D32"
LOSS = "#C62828"
HOLD = "#7B1FA2"
HEAT = "Blues"
MONEY_AXIS = {"tickprefix": "$", "tickformat": ",.0f", "separatethousands": True}
MONEY_HOVER = "$%{y:,.2f}"
_MANY_CABINETS = 40  # more bars than this: no tick labels, names in the hover


def _layout(figure: go.Figure, title: str, height: int = 340) -> go.Figure:
    figure.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 16}},
        template="plotly_white",
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        hoverlabel={"bgcolor": "white"},
    )
    return figure


def plain(names: pd.Series) -> list[str]:
    """Names (of cabinets, locations: typed by people) as plotly shows them literally:
    its labels and hover texts read a subset of HTML (`<a href>`, `<b>`, `<span style>`),
    so `<`, `>` and `&` go in as entities, which it shows as the characters."""
    return [html.escape(str(name), quote=False) for name in names]


def _signed(values: pd.Series) -> list[str]:
    return [NET_WIN if v >= 0 else LOSS for v in values.fillna(0)]


def _zero_aligned(values: pd.Series, below: float) -> list[float]:
    """An axis range for `values` whose zero sits `below` (0..1) of the way up."""
    top = max(float(values.max()) if len(values) else 0.0, 0.0)
    if top <= 0:
        top = max(1.0, -float(values.min()) * (1 - below) / max(below, 1e-9))
    return [-top * below / (1 - below), top * 1.08]


def _share_below_zero(values: pd.Series) -> float:
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    return 0.0 if high == low else min(0.9, -low / (high - low))


def over_time_figure(over_time: pd.DataFrame, hourly: bool) -> go.Figure:
    """Coin in (bars, left axis) and net win (line, right axis) per hour or gaming day;
    both axes put zero at the same height."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    when = over_time["bucket"]
    figure.add_trace(
        go.Bar(
            x=when,
            y=over_time["coin_in"],
            name="Coin in",
            marker_color=COIN_IN,
            opacity=0.45,
            hovertemplate=MONEY_HOVER,
        ),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(
            x=when,
            y=over_time["net_win"],
            name="Net win",
            mode="lines+markers",
            line={"color": NET_WIN, "width": 3},
            hovertemplate=MONEY_HOVER,
        ),
        secondary_y=True,
    )
    if len(over_time):
        below = _share_below_zero(over_time["net_win"])
        figure.update_yaxes(range=_zero_aligned(over_time["coin_in"], below), secondary_y=False)
        figure.update_yaxes(range=_zero_aligned(over_time["net_win"], below), secondary_y=True)
    figure.update_yaxes(title_text="Coin in ($)", secondary_y=False, **MONEY_AXIS)
    figure.update_yaxes(title_text="Net win ($)", secondary_y=True, showgrid=False, **MONEY_AXIS)
    figure.update_xaxes(tickformat="%H:%M\n%a %d %b" if hourly else "%a %d %b")
    unit = "hour" if hourly else "gaming day"
    return _layout(figure, f"Net win and coin in per {unit}")


def location_figure(by_location: pd.DataFrame) -> go.Figure:
    """Net win per location, best on top."""
    rows = by_location.iloc[::-1]
    figure = go.Figure(
        go.Bar(
            x=rows["net_win"],
            y=plain(rows["location"]),
            orientation="h",
            marker_color=_signed(rows["net_win"]),
            text=[f"${v:,.0f}" for v in rows["net_win"]],
            textposition="auto",
            customdata=rows[["coin_in", "hold_pct"]],
            hovertemplate="%{y}<br>Net win $%{x:,.2f}<br>Coin in $%{customdata[0]:,.2f}"
            "<br>Hold %{customdata[1]:.2f}%<extra></extra>",
        )
    )
    figure.update_xaxes(title_text="Net win ($)", **MONEY_AXIS)
    return _layout(figure, "Net win by location", height=max(240, 60 + 40 * len(rows)))


def top_bottom_figure(top: pd.DataFrame, bottom: pd.DataFrame) -> go.Figure:
    """The best and the worst cabinets by net win in one ranking, best on top (every
    cabinet when there are no more than the two lists hold)."""
    ranked = (
        pd.concat([top, bottom], ignore_index=True)
        .drop_duplicates("cabinet_id" if "cabinet_id" in top.columns else "cabinet")
        .sort_values("net_win", ascending=True, kind="stable")
    )
    split = len(ranked) == len(top) + len(bottom)  # two lists that do not meet
    figure = go.Figure(
        go.Bar(
            x=ranked["net_win"],
            y=plain(ranked["cabinet"]),
            orientation="h",
            marker_color=_signed(ranked["net_win"]),
            customdata=list(zip(plain(ranked["location"]), ranked["coin_in"], strict=True)),
            hovertemplate="%{y} (%{customdata[0]})<br>Net win $%{x:,.2f}"
            "<br>Coin in $%{customdata[1]:,.2f}<extra></extra>",
        )
    )
    if split and len(bottom):
        figure.add_hline(y=len(bottom) - 0.5, line={"dash": "dot", "color": "#999"})
    figure.update_xaxes(title_text="Net win ($)", nticks=6, **MONEY_AXIS)
    title = (
        f"Top {len(top)} and bottom {len(bottom)} cabinets by net win"
        if split
        else "Cabinets by net win"
    )
    return _layout(figure, title, height=max(260, 90 + 24 * len(ranked)))


def hold_figure(hold: pd.DataFrame, fleet_hold_pct: float | None) -> go.Figure:
    """Hold % per cabinet, highest first, with the fleet's hold as a dashed line."""
    rows = hold.dropna(subset=["hold_pct"])
    figure = go.Figure(
        go.Bar(
            x=plain(rows["cabinet"]),
            y=rows["hold_pct"],
            marker_color=[HOLD if v >= 0 else LOSS for v in rows["hold_pct"]],
            customdata=list(
                zip(plain(rows["location"]), rows["coin_in"], rows["net_win"], strict=True)
            ),
            hovertemplate="%{x} (%{customdata[0]})<br>Hold %{y:.2f}%<br>Coin in "
            "$%{customdata[1]:,.2f}<br>Net win $%{customdata[2]:,.2f}<extra></extra>",
        )
    )
    if fleet_hold_pct is not None:
        figure.add_hline(
            y=fleet_hold_pct,
            line={"dash": "dash", "color": "#555"},
            annotation_text=f"all cabinets {fleet_hold_pct:.2f}%",
            annotation_position="top right",
        )
    figure.update_yaxes(title_text="Hold (%)", ticksuffix="%")
    figure.update_xaxes(showticklabels=len(rows) <= _MANY_CABINETS, title_text="Cabinet")
    return _layout(figure, "Hold % by cabinet")


def heatmap_figure(grid: pd.DataFrame) -> go.Figure:
    """Coin in by weekday (rows) and hour of day (columns)."""
    figure = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[f"{h:02d}:00" for h in grid.columns],
            y=list(grid.index),
            colorscale=HEAT,
            colorbar={"title": {"text": "Coin in ($)"}, "tickprefix": "$", "tickformat": ",.0f"},
            hovertemplate="%{y} %{x}<br>Coin in $%{z:,.2f}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title_text="Hour of day", dtick=2)
    return _layout(figure, "Coin in by hour of day and weekday", height=320)
