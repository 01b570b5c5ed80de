"""Rollouts (technicians): update boards' firmware in batches, and follow each board live."""

from __future__ import annotations

import time

import streamlit as st

from smib_core.auth import Permission
from smib_core.services.local_time import CLOCK, local_text
from smib_core.ui import rollout_view as view
from smib_core.ui.feedback import show_flash
from smib_core.ui.resources import time_zone
from smib_core.ui.session import live_section, page_principal

principal = page_principal(Permission.OTA)

st.title("Firmware rollouts")
st.caption(
    "Update boards over the air, a batch at a time. Each board is told where the firmware "
    "is, downloads it, restarts and must come back reporting the new version. A rollout "
    "carries on while enough boards are confirmed, and survives an app restart."
)
show_flash()
view.service_status()

with st.expander("Start a rollout", expanded=not view.store().recent(1), icon=":material/add:"):
    view.start_section(principal)


@live_section("2s")
def live_rollouts() -> None:
    st.header("Rollouts")
    view.rollouts_section(principal)
    st.caption(f"Last updated {local_text(time.time(), time_zone(), CLOCK)}")


live_rollouts()
