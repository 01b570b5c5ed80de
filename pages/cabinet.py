"""Cabinet: one board's live configuration, edits confirmed by read-back, meters on
request, restart and stored-data clears behind a confirmation, and its change history."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import cabinet_controls as controls
from smib_core.ui import cabinet_view as view
from smib_core.ui.session import live_section, page_principal

principal = page_principal(Permission.VIEW_FLEET)

target = view.choose_target()
if target is None:
    st.stop()
view.header(target)
if target.relay is None:
    st.info("This cabinet has no board yet: give it one on the Registry page.")
    st.stop()
relay = target.relay
controls.show_notice()
view.open_board(principal, relay)
view.mark_forms_built(relay)
controls.restart_countdown(principal, relay)


@live_section("2s")
def live_board() -> None:
    view.status_metrics(target, relay)
    st.subheader("Live configuration")
    view.config_cards(principal, relay)


live_board()
if principal.can(Permission.CONFIGURE_BOARD):
    controls.edit_forms(principal, relay)
view.meters(principal, target, relay)
controls.maintenance(principal, target.name, relay)
view.history(relay)
