"""Export (analysts): meter history as CSV, Excel or Parquet, built in the background."""

from __future__ import annotations

import streamlit as st

from smib_core.auth import Permission
from smib_core.ui import export_view as view
from smib_core.ui.meter_filters import gaming_day_note, period_picker, scope_names, scope_picker
from smib_core.ui.resources import get_registry, get_settings
from smib_core.ui.session import page_principal

principal = page_principal(Permission.EXPORT)
settings = get_settings()
registry = get_registry().frame()

st.title("Export")
st.caption(
    "Meter history for your own analysis. The file is built on the server, chunk by chunk, "
    f"while you keep working; every export is recorded in the audit trail. "
    f"{gaming_day_note(settings)}"
)
period = period_picker(settings, key="export", default="yesterday")
scope = scope_picker(registry, key="export")
request = view.choose_request(period, scope) if period is not None else None
if period is None or request is None:
    st.stop()
st.caption(f"{period.label}")
cabinets = len(scope.roster(registry))
has_rows = view.preview_section(request, cabinets)

job = view.current_job()
running = job is not None and not job.done
if st.button(
    "Build export",
    type="primary",
    icon=":material/build:",
    disabled=running or not has_rows,
    help="Runs in the background: you may keep using the console meanwhile.",
):
    view.start_build(principal, request, cabinets, scope_names(registry))
    st.rerun()
if running:
    view.progress_section()
elif job is not None:
    view.finished_section(job)
