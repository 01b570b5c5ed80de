"""SMIB Console's pages, the Streamlit script app.py serves: page config, the sign-in
gate and the navigation built for the person's role (the pages are this folder's other
files; no `pages/` folder lies beside this script, so Streamlit never navigates by
folder)."""

from __future__ import annotations

import streamlit as st

from smib_core.ui.navigation import navigation, signed_out_pages
from smib_core.ui.plain import escape_markdown
from smib_core.ui.resources import get_db, get_settings
from smib_core.ui.session import current_principal, sign_out_button

st.set_page_config(page_title="SMIB Console", page_icon=":material/casino:", layout="wide")


def signed_out() -> None:
    """The only page of a signed-out session (the gate has drawn its form already)."""


principal = current_principal(get_db(), get_settings())
if principal is None:
    st.navigation(signed_out_pages(signed_out), position="hidden").run()
    st.stop()

with st.sidebar:
    st.markdown(f"**{escape_markdown(principal.name)}** · {principal.role.value}")
    sign_out_button(get_db())

st.navigation(navigation(principal), expanded=True).run()
