"""The pieces of the alerts page: open alerts with their acknowledge buttons, and history."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from smib_core.auth import Permission, Principal
from smib_core.services.alerts import duration_text, offline_alert_after_s
from smib_core.services.local_time import CLOCK, local_text, local_times
from smib_core.store.alerts import Alert, alerts_frame
from smib_core.ui import resources
from smib_core.ui.alerts_banner import alert_line
from smib_core.ui.feedback import act
from smib_core.ui.plain import escape_markdown
from smib_core.ui.session import PRINCIPAL_KEY, live_section

MAX_CARDS = 30
HISTORY_DAYS = 30


HISTORY_COLUMNS: dict[str, Any] = {
    "alert": "Alert",
    "cabinet": "Cabinet",
    "location": "Location",
    "relay": "Relay",
    "since": "Raised",
    "acknowledged_by": "Acknowledged by",
    "acknowledged_at": "Acknowledged",
    "resolution": "Resolved by",
    "detail": "Detail",
    "count": "Times",
}


def explain() -> str:
    silence = duration_text(offline_alert_after_s(resources.get_settings()))
    return (
        f"Raised when a registered board is not heard for {silence}, a slot, drop or "
        "cashbox door opens, AC power is lost, meters are cleared (RAM clear) or a firmware "
        "update fails. A door or power alert resolves itself when the machine reports the "
        "door closed or power back; every alert stays listed until someone acknowledges it."
    )


def _clock(at: datetime | None) -> str:
    return "" if at is None else local_text(at, resources.time_zone())


def _acknowledge(alert: Alert) -> None:
    """Acknowledge as the signed-in person; the store checks the role again."""

    def change() -> None:
        resources.get_alert_store().acknowledge(alert.id, st.session_state.get(PRINCIPAL_KEY))

    where = alert.cabinet or alert.relay
    act(change, f"{alert.label} on {where} acknowledged.")


def _card(alert: Alert, can_ack: bool) -> None:
    with st.container(border=True, key=f"alert_{alert.id}"):
        text, button = st.columns([6, 1], vertical_alignment="center")
        badge = (
            ":red-badge[:material/error: active]"
            if alert.active
            else ":green-badge[:material/check: resolved]"
        )
        lines = [f"{badge} {alert_line(alert)}", escape_markdown(alert.detail)]
        if alert.resolved_at is not None:
            resolution = escape_markdown(alert.resolution)
            lines.append(f"Resolved {_clock(alert.resolved_at)}: {resolution}")
        text.markdown("  \n".join(line for line in lines if line))
        help_text = None if can_ack else "Your role does not allow you to acknowledge alerts."
        if button.button(
            "Acknowledge",
            key=f"ack_{alert.id}",
            disabled=not can_ack,
            help=help_text,
            width="stretch",
        ):
            _acknowledge(alert)


@live_section("5s")
def open_alerts(principal: Principal) -> None:
    """Alerts not acknowledged yet: active first, then resolved ones; live."""
    alerts = resources.get_alert_store().unacknowledged(limit=500)
    active = sum(alert.active for alert in alerts)
    left, right, _ = st.columns([1, 1, 2])
    left.metric("Active", active)
    right.metric("Resolved, not acknowledged", len(alerts) - active)
    if not alerts:
        st.success("No open alert. New ones appear here within 5 seconds.")
    can_ack = principal.can(Permission.ACK_ALERTS)
    for alert in alerts[:MAX_CARDS]:
        _card(alert, can_ack)
    if len(alerts) > MAX_CARDS:
        st.caption(f"{len(alerts) - MAX_CARDS} more (acknowledge the ones above to see them):")
        rest = local_times(alerts_frame(alerts[MAX_CARDS:]), resources.time_zone(), "since")
        st.dataframe(
            rest[["alert", "status", "cabinet", "location", "since", "detail"]],
            hide_index=True,
            width="stretch",
            column_config={"since": resources.time_column("Raised", rest["since"])},
        )
    st.caption(f"last updated {local_text(time.time(), resources.time_zone(), CLOCK)}")


def history() -> None:
    since = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    times = ("since", "acknowledged_at")
    acknowledged = alerts_frame(resources.get_alert_store().acknowledged(since=since))
    done = local_times(acknowledged, resources.time_zone(), *times)
    st.subheader("Acknowledged")
    if done.empty:
        st.caption(f"No alert raised in the last {HISTORY_DAYS} days was acknowledged yet.")
        return
    st.caption(f"Alerts raised in the last {HISTORY_DAYS} days, who acknowledged them and when.")
    st.dataframe(
        done,
        hide_index=True,
        width="stretch",
        column_config=HISTORY_COLUMNS
        | {c: resources.time_column(HISTORY_COLUMNS[c], done[c]) for c in times},
        column_order=list(HISTORY_COLUMNS),
    )
