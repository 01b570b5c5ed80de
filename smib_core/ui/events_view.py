"""The pieces of the events page: filters, the live "arriving now" list, summary, table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from smib_core.services.events_view import PERIODS, events_per_hour, hourly_chart, period_start
from smib_core.services.local_time import (
    CLOCK,
    local_text,
    local_times,
    zone_label,
)
from smib_core.store.documents import utc_now
from smib_core.store.events import KINDS
from smib_core.ui import resources
from smib_core.ui.session import live_section

OPENED_KEY = "events_opened_at"
LIVE_ROWS = 20
ROW_LIMIT = 5_000
DOOR_OPENED = ("11", "13", "15", "19")
UNASSIGNED = "unassigned"
COLUMNS: dict[str, Any] = {
    "at": "At",
    "cabinet": "Cabinet",
    "location": "Location",
    "event": "Event",
    "kind": "Kind",
    "code": "Code",
    "relay": "Relay",
    "details": "Details",
}


@dataclass(frozen=True, slots=True)
class EventFilters:
    location_ids: tuple[str, ...]
    relays: tuple[str, ...]
    kinds: tuple[str, ...]
    period: str

    def query(self, since: datetime, limit: int) -> pd.DataFrame:
        return resources.get_event_store().query(
            self.location_ids, self.relays, self.kinds, since=since, limit=limit
        )


def filters() -> EventFilters:
    """Location, cabinet, kind and period pickers; an empty picker means all."""
    registry = resources.get_registry()
    locations = {loc.id: loc.name for loc in registry.locations()}
    loc_col, cab_col, kind_col, period_col = st.columns([3, 3, 3, 2])
    chosen = loc_col.multiselect(
        "Location",
        list(locations),
        format_func=lambda i: locations.get(i, i),
        placeholder="All locations",
        key="events_locations",
    )
    cabinets = {
        c.relay: c.name
        for c in registry.cabinets()
        if c.relay and (not chosen or c.location_id in chosen)
    }
    relays = cab_col.multiselect(
        "Cabinet",
        list(cabinets),
        format_func=lambda r: cabinets.get(r, r),
        placeholder="All cabinets",
        key="events_cabinets",
    )
    kinds = kind_col.multiselect(
        "Kind", KINDS, format_func=str.capitalize, placeholder="All kinds", key="events_kinds"
    )
    period = period_col.selectbox("Period", list(PERIODS), index=2, key="events_period")
    return EventFilters(tuple(chosen), tuple(relays), tuple(kinds), period or "Last 24 hours")


@live_section("2s")
def arriving_now(chosen: EventFilters) -> None:
    """Events matching the filters that arrived since the page was opened."""
    opened = st.session_state.setdefault(OPENED_KEY, utc_now())
    fresh = chosen.query(since=opened, limit=LIVE_ROWS + 1)
    title, button = st.columns([5, 1], vertical_alignment="bottom")
    shown = f"{LIVE_ROWS}+" if len(fresh) > LIVE_ROWS else str(len(fresh))
    since = local_text(opened, resources.time_zone(), CLOCK)
    title.subheader(f"Arriving now · {shown} since {since}")
    if button.button("Start over", icon=":material/restart_alt:", width="stretch"):
        st.session_state[OPENED_KEY] = utc_now()
        st.rerun(scope="fragment")
    if fresh.empty:
        st.caption("Nothing new since then. New events appear here within 2 seconds.")
    else:
        live = fresh.head(LIVE_ROWS)[["at", "cabinet", "location", "event", "relay"]]
        live = live.assign(cabinet=live["cabinet"].replace("", UNASSIGNED))
        live = local_times(live, resources.time_zone(), "at")
        st.dataframe(live, hide_index=True, width="stretch", column_config=_columns(live))
    st.caption(f"last updated {local_text(time.time(), resources.time_zone(), CLOCK)}")


def _columns(events: pd.DataFrame) -> dict[str, Any]:
    """COLUMNS, the time's header naming the local zone its times are shown in."""
    return COLUMNS | {"at": resources.time_column("At", events["at"])}


def history(chosen: EventFilters) -> None:
    """Metrics, events per hour by kind, and the table for the chosen period."""
    events = chosen.query(since=period_start(chosen.period), limit=ROW_LIMIT)
    st.subheader(chosen.period)
    if events.empty:
        st.info(
            f"No event matches these filters in the {chosen.period.lower()}. Boards report "
            "events as they happen (doors, bills, games): widen the period or clear a filter."
        )
        return
    capped = len(events) >= ROW_LIMIT
    total, doors, bills, boards = st.columns(4)
    total.metric("Events", f"{len(events):,}{'+' if capped else ''}")
    doors.metric("Doors opened", int(events["code"].isin(DOOR_OPENED).sum()))
    bills.metric("Bills accepted", int((events["code"] == "4F").sum()))
    boards.metric("Boards reporting", events["relay"].nunique())
    per_hour = events_per_hour(events, resources.time_zone())
    st.markdown(f"**Events per hour, by kind** · hours in {zone_label(*per_hour['hour'])}")
    st.plotly_chart(hourly_chart(per_hour), width="stretch")
    newest = f"The newest {ROW_LIMIT:,} events" if capped else "Every event"
    st.caption(f"{newest}, newest first. Boards no cabinet claims show as unassigned.")
    events = events.assign(cabinet=events["cabinet"].replace("", UNASSIGNED))
    events = local_times(events, resources.time_zone(), "at")
    st.dataframe(
        events,
        hide_index=True,
        width="stretch",
        column_config=_columns(events),
        column_order=list(COLUMNS),
    )
