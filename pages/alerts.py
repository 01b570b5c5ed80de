"""Alerts: boards offline, doors open, power lost, RAM clears, failed updates; acknowledge."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import alerts_view as view
from smib_core.ui.feedback import show_flash
from smib_core.ui.session import page_principal

principal = page_principal(Permission.VIEW_EVENTS)

st.title("Alerts")
st.caption(view.explain())
show_flash()
view.open_alerts(principal)
st.divider()
view.history()
