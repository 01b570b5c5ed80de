"""Machine events: what the cabinets reported (doors, power, bills, games), filtered and live."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import events_view as view
from smib_core.ui import resources
from smib_core.ui.session import page_principal

principal = page_principal(Permission.VIEW_EVENTS)

st.title("Machine events")
st.caption(
    "The SAS exceptions the boards report: doors, power, bills, games, handpays, operator "
    "menus. Each is stored with its cabinet and location as it arrives. Times in "
    f"{resources.get_settings().timezone}."
)
chosen = view.filters()
view.arriving_now(chosen)
st.divider()
view.history(chosen)
