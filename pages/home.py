"""Home: who is signed in and where to go from here."""

from __future__ import annotations

import streamlit as st

from smib_core.ui.navigation import visible_pages
from smib_core.ui.plain import escape_markdown
from smib_core.ui.session import PRINCIPAL_KEY

principal = st.session_state[PRINCIPAL_KEY]
st.title("SMIB Console")
st.markdown(f"Signed in as **{escape_markdown(principal.name)}** ({principal.role.value}).")
st.caption("Slot Machine Interface Boards: live config, meters, dashboards, exports and OTA.")
for spec in visible_pages(principal):
    if spec.file != "home.py":
        st.page_link(spec.file, label=spec.title, icon=spec.icon)
