"""What the events page shows: periods, events per hour by kind, and its chart. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import plotly.graph_objects as go

from smib_core.store.events import KINDS

PERIODS: dict[str, timedelta] = {
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}


def period_start(label: str, now: datetime | None = None) -> datetime:
    """When a period named in PERIODS starts (the last 24 hours for an unknown name)."""
    now = now if now is not None else datetime.now(UTC)
    return now - PERIODS.get(label, timedelta(hours=24))


def events_per_hour(events: pd.DataFrame, tz: str = "UTC") -> pd.DataFrame:
    """Counts per local hour (in the zone `tz`) and kind: columns hour, kind, events
    (kinds in KINDS order)."""
    if events.empty:
        return pd.DataFrame(
            {
                "hour": pd.Series(dtype=f"datetime64[ns, {tz}]"),
                "kind": pd.Series(dtype=str),
                "events": pd.Series(dtype=int),
            }
        )
    local = pd.to_datetime(events["at"], utc=True).dt.tz_convert(tz)
    wall = local.dt.tz_localize(None)
    hours = local + (wall.dt.floor("h") - wall)  # the local hour, right on a repeated hour
    counts = events.assign(hour=hours).groupby(["hour", "kind"]).size().rename("events")
    frame = counts.reset_index()
    order = {kind: i for i, kind in enumerate(KINDS)}
    frame["_order"] = frame["kind"].map(order).fillna(len(order))
    return frame.sort_values(["hour", "_order"]).drop(columns="_order").reset_index(drop=True)


# Doors and power stand out; games, the bulk of the traffic, stay in the background.
KIND_COLOURS: dict[str, str] = {
    "door": "#1f77b4",
    "power": "#d62728",
    "bill": "#2ca02c",
    "game": "#c7c7c7",
    "handpay": "#9467bd",
    "meters": "#ff7f0e",
    "tilt": "#8c564b",
    "operator": "#17becf",
    "other": "#7f7f7f",
}


def hourly_chart(per_hour: pd.DataFrame) -> go.Figure:
    """A stacked bar chart of events per hour, one colour per kind."""
    figure = go.Figure()
    for kind in [k for k in KINDS if k in set(per_hour["kind"])]:
        part = per_hour[per_hour["kind"] == kind]
        figure.add_bar(
            x=part["hour"], y=part["events"], name=kind, marker_color=KIND_COLOURS.get(kind)
        )
    figure.update_layout(
        barmode="stack",
        height=260,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"orientation": "h", "y": -0.25, "traceorder": "normal"},
        yaxis_title="events per hour",
    )
    return figure
