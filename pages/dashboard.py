"""Dashboard (managers): the money the machines made over a period, against the one before."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import dashboard_view as view
from smib_core.ui.meter_filters import gaming_day_note, period_picker, scope_picker
from smib_core.ui.resources import get_registry, get_settings
from smib_core.ui.session import page_principal

principal = page_principal(Permission.VIEW_DASHBOARD)
settings = get_settings()

st.title("Dashboard")
st.caption(
    "Coin in, drop and net win from the meters the collector reads every "
    f"{settings.collect_period_s / 60:g} minutes, compared with the period before. "
    f"{gaming_day_note(settings)} Money in dollars; amounts per cabinet use its denomination."
)
period = period_picker(settings, key="dashboard")
registry = get_registry().frame()
scope = scope_picker(registry, key="dashboard")
if period is None:
    st.stop()
board = view.load(period, scope)
st.caption(f"{period.label} · compared with {period.compared_label}")

if board.empty:
    st.info(
        "No meter readings in this period yet: the collector reads every board every "
        f"{settings.collect_period_s / 60:g} minutes. Run `smib collect --once` to read "
        "them now, or choose a longer period.",
        icon=":material/hourglass_empty:",
    )
    view.quality_panel(board, expanded=True)
    st.stop()

view.kpi_row(board)
view.chart_grid(board)
view.heatmap(period, scope, len(scope.roster(registry)))
view.theoretical_hold(board)
view.cabinet_table(board)
view.quality_panel(board)
