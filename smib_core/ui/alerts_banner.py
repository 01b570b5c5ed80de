"""A compact list of active alerts for the top of a page (the fleet page calls it)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import streamlit as st
from streamlit.errors import StreamlitAPIException

from smib_core.services.live import ago
from smib_core.services.local_time import local_text
from smib_core.store.alerts import Alert
from smib_core.ui import resources
from smib_core.ui.plain import escape_markdown
from smib_core.ui.session import live_section

ALERTS_PAGE = "alerts.py"


def alert_line(alert: Alert) -> str:
    """'**Slot door open** · Cabinet 003, Main floor · since 2025-03-01 08:03 EDT
    (America/New_York) (4 min ago)': local time (SMIB_TIMEZONE)."""
    places = (alert.cabinet or alert.relay, alert.location)
    where = ", ".join(escape_markdown(part) for part in places if part)
    repeats = f" · {alert.count}×" if alert.count > 1 else ""
    since = local_text(alert.raised_at, resources.time_zone(), "%Y-%m-%d %H:%M")
    age = ago((datetime.now(UTC) - alert.raised_at).total_seconds())
    label = escape_markdown(alert.label)
    return f"**{label}** · {where} · since {since} ({age}){repeats}"


@live_section("10s")
def render_active_alerts(limit: int = 5) -> None:
    """Nothing when no alert is active; else how many, the newest `limit`, and a link to
    the alerts page. Refreshes itself every 10 seconds."""
    active = resources.get_alert_store().active(limit=500)
    if not active:
        return
    more = len(active) - limit
    lines = [f"- {alert_line(alert)}" for alert in active[:limit]]
    if more > 0:
        lines.append(f"- and {more} more")
    count = f"{len(active)} active alert" + ("s" if len(active) != 1 else "")
    with st.container(border=True):
        st.markdown(f":red[:material/notifications_active:] **{count}**\n\n" + "\n".join(lines))
        # StreamlitAPIException: the page is not in this app's navigation (a page test).
        with contextlib.suppress(StreamlitAPIException):
            st.page_link(ALERTS_PAGE, label="Open the alerts page", icon=":material/arrow_forward:")
