"""Batch work (technicians): one template, field change or restart for many boards."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui.batch_view import run_section
from smib_core.ui.feedback import show_flash
from smib_core.ui.session import page_principal
from smib_core.ui.template_view import templates_section

principal = page_principal(Permission.CONFIGURE_BOARD)

st.title("Batch work")
st.caption(
    "Apply a template or one field change to many boards, or restart a whole "
    "location. Every board is checked: a config write is read back, a restarted "
    "board must answer again. The worker process carries a batch out, up to 8 boards "
    "at a time, and carries on after a restart."
)

show_flash()

work, templates = st.tabs(["Run a batch", "Templates"])
with work:
    run_section(principal)
with templates:
    templates_section(principal)
