"""Fleet: every cabinet and board, online or not, live; adopt boards nobody registered."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import fleet_view as view
from smib_core.ui.alerts_banner import render_active_alerts
from smib_core.ui.feedback import show_flash
from smib_core.ui.session import live_section, page_principal

principal = page_principal(Permission.VIEW_FLEET)

st.title("Fleet")
st.caption(
    "Every cabinet and every board the console hears, refreshed every 2 seconds. A board "
    "is online while it keeps talking: any message proves it alive, and the console asks "
    f"every board for a sign of life every {view.heartbeat_s():g} s."
)
show_flash()
render_active_alerts()


@live_section("2s")
def live_fleet() -> None:
    table = view.current_table(view.offline_after())
    view.metrics(table)
    chosen = view.filters()
    view.fleet_grid(table, chosen)
    st.divider()
    view.unassigned_picker(principal, table)


live_fleet()
view.adopt_panel(principal)
