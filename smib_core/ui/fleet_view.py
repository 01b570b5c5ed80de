"""The fleet page's pieces: filters, the live table, and adopting unassigned boards.

The table is a fragment that reruns every 2 seconds and reads only process-wide
resources (the bus's in-memory view and the registry); selecting a row opens the
cabinet page with `?relay=<relayId>` (or `?cabinet=<id>` for a cabinet with no board)
in the same tab, so the session stays signed in. Adopting goes through
`services.registry.adopt`, which checks the role again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from smib_core.auth import Permission, Principal, allowed
from smib_core.services import registry as registry_service
from smib_core.services.fleet import (
    FILTERS,
    UNASSIGNED,
    filter_fleet,
    live_table,
    status_counts,
    unassigned_boards,
)
from smib_core.services.local_time import CLOCK, local_text
from smib_core.ui import resources
from smib_core.ui.feedback import act
from smib_core.ui.navigation import PAGES_DIR

CABINET_PAGE = "cabinet.py"
NEW_LOCATION = "__new__"
PICKED_KEY = "adopt_relay"
OFFLINE_AFTER_KEY = "fleet_offline_after"
STATUS_STYLES = {
    "online": "color: #15803d; font-weight: 600",
    "offline": "color: #b91c1c; font-weight: 600",
    "never heard": "color: #6b7280",
}
UNASSIGNED_STYLE = "color: #6b7280; font-style: italic"
TABLE_COLUMNS = [
    "status",
    "cabinet",
    "location",
    "relay",
    "seen",
    "firmware",
    "version",
    "comms",
    "last_meter_reading",
]
COLUMN_CONFIG: dict[str, Any] = {
    "status": st.column_config.TextColumn("Status", width="small"),
    "cabinet": "Cabinet",
    "location": "Location",
    "relay": st.column_config.TextColumn("Board (relayId)"),
    "seen": st.column_config.TextColumn("Last seen", help="When the board last said anything"),
    "firmware": "Firmware",
    "version": "Version",
    "comms": st.column_config.TextColumn("Comms", help="SAS, non-SAS or IGT (coms comsMode)"),
    "last_meter_reading": st.column_config.DatetimeColumn(
        "Last meter reading", format="distance", help="The newest good meter reading"
    ),
}


@dataclass(frozen=True, slots=True)
class Filters:
    locations: tuple[str, ...]
    statuses: tuple[str, ...]
    search: str


def offline_after() -> float:
    """Seconds of silence after which a board shows offline: this tab's choice, else the
    setting (SMIB_OFFLINE_AFTER_S)."""
    chosen = st.session_state.get(OFFLINE_AFTER_KEY)
    return float(chosen) if chosen else float(resources.get_settings().offline_after_s)


def heartbeat_s() -> float:
    return float(resources.get_settings().heartbeat_s)


def filters() -> Filters:
    """The filter row above the table."""
    names = [loc.name for loc in resources.get_registry().locations()]
    default_after = float(resources.get_settings().offline_after_s)
    search, where, status, after = st.columns([3, 3, 5, 2], vertical_alignment="bottom")
    text = search.text_input("Find", placeholder="relayId or cabinet name", key="fleet_q")
    chosen = where.multiselect("Location", names, placeholder="All locations", key="fleet_where")
    statuses = status.pills("Status", FILTERS, selection_mode="multi", key="fleet_status")
    after.number_input(
        "Offline after (s)",
        min_value=5,
        max_value=86_400,
        value=int(default_after),
        step=5,
        key=OFFLINE_AFTER_KEY,
        help="A board is offline when it has said nothing for this long "
        f"(default {default_after:g} s: SMIB_OFFLINE_AFTER_S).",
    )
    return Filters(tuple(chosen), tuple(statuses or ()), text)


def current_table(offline_after_s: float) -> pd.DataFrame:
    registry, meters = resources.get_registry(), resources.get_meter_store()
    return live_table(registry, resources.get_bus(), meters, offline_after_s)


def metrics(table: pd.DataFrame) -> None:
    counts = status_counts(table)
    online, offline, never, stray = st.columns(4)
    online.metric("Online", counts["online"], border=True)
    offline.metric("Offline", counts["offline"], border=True)
    never.metric(
        "Never heard",
        counts["never heard"],
        border=True,
        help="Registered cabinets whose board the console has not heard",
    )
    stray.metric(
        "Unassigned boards",
        counts[UNASSIGNED],
        border=True,
        help="Boards heard that no cabinet claims: adopt them below",
    )


def fleet_grid(table: pd.DataFrame, chosen: Filters) -> None:
    """The table (filtered), with a row selection that opens the cabinet page."""
    shown = filter_fleet(table, chosen.locations, chosen.statuses, chosen.search)
    if table.empty:
        st.info(
            "No cabinet is registered and no board has been heard yet. Boards appear here "
            "as soon as they send anything; register cabinets on the Registry page."
        )
    elif shown.empty:
        st.info("No board or cabinet matches these filters.")
    else:
        _grid(shown)
    st.caption(
        f"{len(shown)} of {len(table)} rows · select a row to open its cabinet · "
        f"last updated {local_text(time.time(), resources.time_zone(), CLOCK)}"
    )


def _grid(shown: pd.DataFrame) -> None:
    view = shown.style.map(lambda status: STATUS_STYLES.get(status, ""), subset=["status"]).map(
        lambda name: UNASSIGNED_STYLE if name == UNASSIGNED else "", subset=["cabinet"]
    )
    event = st.dataframe(
        view,
        hide_index=True,
        width="stretch",
        column_order=TABLE_COLUMNS,
        column_config=COLUMN_CONFIG,
        on_select="rerun",
        selection_mode="single-row",
        key="fleet_grid",
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        open_cabinet(shown.iloc[rows[0]])


def open_cabinet(row: pd.Series) -> None:
    if not (PAGES_DIR / CABINET_PAGE).exists():
        st.warning("The cabinet page is not available in this build.")
        return
    query = {"relay": row["relay"]} if row["relay"] else {"cabinet": row["cabinet_id"]}
    st.switch_page(CABINET_PAGE, query_params=query)


def adopt_form(principal: Principal, relay: str) -> None:
    """Second click: the cabinet's name, location and denomination, pre-filled."""
    registry = resources.get_registry()
    locations = registry.locations()
    options = [loc.id for loc in locations] + [NEW_LOCATION]
    names = {loc.id: loc.name for loc in locations} | {NEW_LOCATION: "A new location…"}
    with st.form(f"adopt_{relay}", border=True):
        st.markdown(f"**Adopt board `{relay}`** as a new cabinet")
        name_col, where_col, new_col = st.columns(3)
        name = name_col.text_input("Cabinet name", registry_service.next_cabinet_name(registry))
        where = where_col.selectbox("Location", options, format_func=names.__getitem__)
        new_name = new_col.text_input(
            "New location name",
            "" if locations else "Main floor",
            help="Used when the location is 'A new location…'",
        )
        denom_col, other_col, _ = st.columns(3)
        choice = denom_col.selectbox(
            "Denomination",
            registry_service.DENOMINATION_CHOICES,
            help="Money per credit: the meters count credits",
        )
        other = other_col.text_input("Other denomination", placeholder="e.g. 2.00, with 'other'")
        if st.form_submit_button("Adopt", type="primary", icon=":material/add_link:"):
            new = where == NEW_LOCATION
            place = new_name.strip() if new else names[where]
            act(
                lambda: registry_service.adopt(
                    registry,
                    principal,
                    relay,
                    name=name,
                    denomination=registry_service.chosen_denomination(choice, other),
                    location_id=None if new else where,
                    new_location=new_name if new else "",
                ),
                f"Board {relay} is now cabinet {name.strip()} in {place}.",
            )


def unassigned_picker(principal: Principal, table: pd.DataFrame) -> None:
    """First click: pick a board (live, inside the table's fragment). The form is drawn
    outside the live fragment (`adopt_panel`), so a rerun every 2 s never fights typing."""
    stray = unassigned_boards(table)
    st.subheader(f"Unassigned boards ({len(stray)})")
    if stray.empty:
        st.caption("Every board the console hears belongs to a cabinet.")
        return
    if not allowed(principal, Permission.MANAGE_REGISTRY):
        st.caption("Boards heard that no cabinet claims. A technician can adopt them.")
        return
    st.caption("Boards heard that no cabinet claims. Pick one, then Adopt it into a cabinet.")
    relays = stray["relay"].tolist()
    picked = st.pills(
        "Board to adopt",
        relays,
        key=f"adopt_pick_{hash(tuple(relays))}",
        label_visibility="collapsed",
    )
    if picked and picked != st.session_state.get(PICKED_KEY):
        st.session_state[PICKED_KEY] = picked
        st.rerun(scope="app")


def adopt_panel(principal: Principal) -> None:
    """The adopt form for the board picked, while it is still unassigned."""
    relay = st.session_state.get(PICKED_KEY)
    if not relay or not allowed(principal, Permission.MANAGE_REGISTRY):
        return
    if resources.get_registry().cabinet_for_relay(relay) is not None:
        st.session_state.pop(PICKED_KEY, None)  # adopted (here or elsewhere)
        return
    adopt_form(principal, relay)
