"""Audit trail (admin): who did what to which boards and accounts; filter and export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from smib_core.auth import Permission, require
from smib_core.errors import SmibError
from smib_core.services.local_time import day_start, local, local_times, with_local_times
from smib_core.store.audit import KNOWN_KINDS, AuditTrail, to_csv
from smib_core.ui.plain import escape_markdown
from smib_core.ui.resources import get_db, time_column, time_zone
from smib_core.ui.session import PRINCIPAL_KEY, page_principal

ALL = "(all kinds)"
ROW_LIMIT = 5_000

page_principal(Permission.VIEW_AUDIT)
zone = time_zone()
st.title("Audit trail")
st.caption(
    "Every command sent to a board and every change to accounts, the registry, "
    f"templates and firmware. Secrets are masked. Times in {zone}; the CSV has each "
    "time in UTC and in local time."
)

person_col, relay_col, kind_col, period_col = st.columns(4)
person = person_col.text_input("Person", placeholder="alice, cli:root, ann@example.com")
relay = relay_col.text_input("Relay", placeholder="e831cdfa8384")
kind = kind_col.selectbox("Kind", [ALL, *KNOWN_KINDS], accept_new_options=True)
today = local(datetime.now(UTC), zone).date()
period = period_col.date_input("Period", (today - timedelta(days=7), today), max_value=today)
start, end = (period[0], period[-1]) if isinstance(period, tuple) and period else (today, today)

try:
    require(st.session_state.get(PRINCIPAL_KEY), Permission.VIEW_AUDIT)
    records = AuditTrail(get_db()).query(
        person=person or None,
        relay=relay or None,
        kind=None if kind in (None, ALL) else kind,
        since=day_start(start, zone),
        until=day_start(end + timedelta(days=1), zone),
        limit=ROW_LIMIT,
    )
except SmibError as exc:
    st.error(escape_markdown(str(exc)))
    st.stop()

if records.empty:
    st.info("No audit record matches these filters.")
else:
    more = (
        " (the newest; narrow the filters to see older ones)" if len(records) >= ROW_LIMIT else ""
    )
    st.write(f"{len(records):,} records{more}")
    shown = local_times(records.drop(columns=["id"]), zone, "at")
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={"at": time_column("at", shown["at"])},
    )
st.download_button(
    "Export CSV",
    data=to_csv(with_local_times(records, zone, "at")),
    file_name=f"smib-audit-{start:%Y%m%d}-{end:%Y%m%d}.csv",
    mime="text/csv",
    disabled=records.empty,
)
