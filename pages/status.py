"""Bus status: is the console connected, what boards does it hear, what did it reject,
and which background services run where (from the database: this process runs none)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from smib_core.firmware.server import FirmwareServer
from smib_core.services import background
from smib_core.services.live import boards_seen
from smib_core.services.local_time import CLOCK, local_text, local_times
from smib_core.services.rollout_plan import http_status, local_url
from smib_core.ui.resources import get_bus, get_db, get_settings, time_column
from smib_core.ui.session import live_section

st.title("Bus status")
st.caption("What the console hears from the boards, refreshed every 2 seconds.")


@live_section("2s")
def live_status() -> None:
    bus = get_bus()
    stats = bus.stats()
    settings = get_settings()
    left, mid, right, far = st.columns(4)
    left.metric("Broker", "connected" if stats.connected else "disconnected")
    mid.metric("Boards heard", stats.relays_known)
    right.metric("Messages in / out", f"{stats.messages_in:,} / {stats.messages_out:,}")
    p99 = "–" if stats.latency_p99_ms is None else f"{stats.latency_p99_ms:.1f} ms"
    far.metric("Reply latency p99", p99)
    st.caption(
        f"Broker {stats.broker} · reconnects {stats.reconnects} · "
        f"last updated {local_text(time.time(), settings.timezone, CLOCK)}"
    )
    boards = boards_seen(bus, settings.offline_after_s)
    st.subheader(f"Boards ({len(boards)})")
    if boards.empty:
        st.info("No board has been heard yet. Boards appear here as soon as they send anything.")
    else:
        st.dataframe(
            boards.drop(columns=["last_seen"]),
            hide_index=True,
            width="stretch",
            column_config={"relay": "Relay", "status": "Status", "seen": "Last seen"},
        )
    st.subheader("Rejected messages")
    if not stats.rejections:
        st.success("No malformed board message so far.")
        return
    counts = pd.DataFrame(sorted(stats.rejections.items()), columns=["reason", "count"])
    st.dataframe(counts, hide_index=True)
    recent = pd.DataFrame(stats.recent_rejections, columns=["at", "reason", "detail", "topic"])
    if not recent.empty:
        recent["at"] = pd.to_datetime(recent["at"], unit="s", utc=True)
        recent = local_times(recent, settings.timezone, "at").tail(20).iloc[::-1]
        st.dataframe(
            recent,
            hide_index=True,
            width="stretch",
            column_config={"at": time_column("At", recent["at"])},
        )


@live_section("5s")
def background_services() -> None:
    st.subheader("Background services")
    statuses = background.service_statuses(get_db())
    if not any(s.running for s in statuses):
        st.warning(
            "No background service runs: nothing collects meters, records events or drives "
            "rollouts. Start a worker: `smib worker` (`smib serve` starts one with the app)."
        )
    st.dataframe(
        background.status_frame(statuses),
        hide_index=True,
        column_config={"service": "Service", "status": "Status", "where": "Where"},
    )
    server = FirmwareServer.from_settings(get_settings())
    answers = http_status(local_url(server), timeout=0.5) is not None
    serving = any(s.running for s in statuses if s.lease == "firmware-server")
    if answers and not serving:
        st.caption(
            f"Port {server.port} answers, but no worker serves firmware there: another "
            "program (`smib ota`?) holds the port; workers retry every second."
        )
    elif serving and not answers:
        st.caption(f"The firmware server does not answer on this host's port {server.port}.")
    last = background.last_meter_reading(get_db())
    st.caption(
        "No meter reading stored yet."
        if last is None
        else f"Last meter reading stored {local_text(last, get_settings().timezone)}."
    )


live_status()
background_services()


@live_section("10s")
def clocks() -> None:
    st.subheader("Clocks")
    checks = background.clock_frame(get_db())
    if checks.empty:
        st.caption("No service has checked its clock against the database's yet.")
        return
    st.caption(
        "Each service's clock against the database's (positive: ahead). Readings, events "
        "and leases are stamped in the database's time whatever this skew; a reading "
        "stamped at or before a cabinet's latest (the database's own clock stepped back) "
        "is refused as clock behind."
    )
    checks = local_times(checks, get_settings().timezone, "checked")
    st.dataframe(
        checks,
        hide_index=True,
        column_config={
            "service": "Service",
            "skew": "Skew",
            "checked": time_column("Checked", checks["checked"]),
            "refused_24h": "Refused (clock behind, 24 h)",
        },
    )


clocks()
