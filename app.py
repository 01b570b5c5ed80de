"""SMIB Console: page config, the sign-in gate and the navigation built for the person's role."""

from __future__ import annotations

import streamlit as st

from smib_core.ui.navigation import navigation
from smib_core.ui.resources import get_db, get_settings
from smib_core.ui.session import current_principal, sign_out_button

st.set_page_config(page_title="SMIB Console", page_icon=":material/casino:", layout="wide")

principal = current_principal(get_db(), get_settings())
if principal is None:
    st.stop()

with st.sidebar:
    st.markdown(f"**{principal.name}** · {principal.role.value}")
    sign_out_button(get_db())

st.navigation(navigation(principal)).run()
