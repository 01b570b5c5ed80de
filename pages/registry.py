"""Registry: the locations and the cabinets in them, each with its board (relayId)."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import registry_view as view
from smib_core.ui.feedback import show_flash
from smib_core.ui.resources import get_registry
from smib_core.ui.session import page_principal

principal = page_principal(Permission.VIEW_FLEET)
registry = get_registry()

st.title("Registry")
st.caption(
    "Where each slot machine stands, what it is and which board (relayId) reads it. "
    "Denominations turn meter credits into money. Retiring keeps history readable."
)
if not view.may_change(principal):
    st.caption("You can look; a technician or an administrator changes the registry.")
show_flash()
view.summary(registry)

locations, cabinets, files = st.tabs(["Locations", "Cabinets", "Import and export"])
with locations:
    view.locations_tab(principal, registry)
with cabinets:
    view.cabinets_tab(principal, registry)
with files:
    view.files_tab(principal, registry)
