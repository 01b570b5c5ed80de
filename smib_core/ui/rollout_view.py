"""The Rollouts page's pieces: start a rollout (with a confirmation), list them, and follow
one live, per batch and per board.

Rollouts are driven by the runner of a worker process (`services.worker.Worker`), never
by this page: it writes a plan to the database and reads progress back, so closing the
tab or restarting the app loses nothing. No `st.*` call runs on the runner's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from smib_core.auth import Principal
from smib_core.firmware.server import FirmwareServer
from smib_core.protocol import mask_uri
from smib_core.services import rollout_plan as plan
from smib_core.services.batch_targets import board_choices, cabinet_labels, location_relays
from smib_core.services.local_time import local_text, local_times
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
from smib_core.store.rollouts import Rollout, RolloutStore
from smib_core.ui import resources
from smib_core.ui.feedback import act
from smib_core.ui.plain import escape_markdown

SELECTED_KEY = "rollout_selected"
BY_LOCATION, ONE_BY_ONE, BY_VERSION = "A location", "Boards one by one", "Boards on a version"
STATE_WORDS = {
    "url_set": "URL set",
    "command_sent": "command sent",
    "back_online": "back online",
    "timed_out": "timed out",
    "not_started": "not started",
}
BADGES = {  # rollout state -> badge colour and icon
    "pending": ("gray", ":material/schedule:"),
    "running": ("blue", ":material/autorenew:"),
    "paused": ("orange", ":material/pause_circle:"),
    "cancelled": ("gray", ":material/block:"),
    "completed": ("green", ":material/check_circle:"),
    "halted": ("red", ":material/report:"),
}


@dataclass(frozen=True, slots=True)
class Plan:
    firmware: FirmwareInfo
    relays: tuple[str, ...]
    batch_size: int
    min_success_pct: float
    timeout_s: float
    already: int  # boards that report the target already


def store() -> RolloutStore:
    return RolloutStore(resources.get_db(), resources.get_audit())


def service_status() -> None:
    """Say whether boards can download, and whether a runner drives rollouts."""
    server = FirmwareServer.from_settings(resources.get_settings())
    answers = plan.http_status(plan.local_url(server), timeout=0.5) is not None
    holder = plan.runner_holder(resources.get_db())
    if not answers:
        st.warning(
            f"No firmware server answers on port {server.port}: boards could not "
            "download. A worker serves it (`smib worker`, or the one `smib serve` starts); "
            "check FIRMWARE_PORT and the worker's log."
        )
    if holder is None:
        st.warning(
            "No rollout runner is alive: rollouts wait until a worker (`smib worker`, "
            "`smib serve`) or `smib ota` runs."
        )
    if answers and holder is not None:
        _, host, pid, *_ = [*holder.owner.split(":"), "?", "?", "?"]
        st.caption(
            f"Boards download firmware from {mask_uri(server.base_url)} · the rollout runner works "
            f"on {host} (process {pid})"
        )


# --- start --------------------------------------------------------------------------


def start_section(principal: Principal) -> None:
    firmwares = FirmwareLibrary(resources.get_db()).list()
    if not firmwares:
        st.info(
            "The firmware library is empty: upload a .bin on the Firmware library page, "
            "then come back to roll it out."
        )
        return
    left, right = st.columns([2, 3])
    firmware = left.selectbox(
        "Firmware", firmwares, format_func=lambda f: f"{f.product} {f.version}"
    )
    if firmware is None:
        return
    right.caption(
        f"File {firmware.filename} · {firmware.size:,} bytes · uploaded by "
        f"{firmware.uploaded_by}" + (f"\n\n{firmware.notes}" if firmware.notes else "")
    )
    relays, versions = choose_boards()
    a, b, c = st.columns(3)
    batch = a.number_input(
        "Batch size",
        1,
        1000,
        value=min(10, max(1, len(relays) or 10)),
        help="How many boards update at the same time.",
    )
    threshold = b.slider(
        "Minimum success %",
        0,
        100,
        80,
        help="After each batch, the rollout goes on only while at least this "
        "share of the updated boards came back on the new version.",
    )
    timeout = c.number_input(
        "Timeout per board (s)",
        10,
        3600,
        value=300,
        step=30,
        help="How long a board may take to download, flash, restart and report the new version.",
    )
    already = len(plan.already_on({r: versions.get(r, "") for r in relays}, firmware.version))
    if not relays:
        st.caption("Choose the boards to update.")
        return
    st.caption(
        f"{len(relays)} boards in {plan.batch_count(len(relays), int(batch))}"
        + (f" · {already} already report {firmware.version} and will be skipped" if already else "")
    )
    chosen = Plan(firmware, tuple(relays), int(batch), float(threshold), float(timeout), already)
    if st.button(
        f"Review the update of {len(relays)} boards",
        type="primary",
        icon=":material/system_update_alt:",
    ):
        confirm(principal, chosen)


def choose_boards() -> tuple[list[str], dict[str, str]]:
    """The chosen relays, and the version each board last reported."""
    registry, bus = resources.get_registry(), resources.get_bus()
    known = board_choices(registry, bus.relays_seen())
    versions = plan.reported_versions(bus, known)
    by = st.radio("Boards", [BY_LOCATION, ONE_BY_ONE, BY_VERSION], horizontal=True)
    if by == BY_LOCATION:
        locations = registry.locations()
        if not locations:
            st.info("No location is registered yet: choose boards one by one or by version.")
            return [], versions
        place = st.selectbox("Location", locations, format_func=lambda loc: loc.name)
        return (location_relays(registry, place.id) if place else []), versions
    if by == BY_VERSION:
        seen = sorted({v for v in versions.values() if v})
        if not seen:
            st.info("No board has reported its version yet: versions appear as boards talk.")
            return [], versions
        wanted = st.multiselect("Current version", seen, placeholder="Boards running…")
        return plan.relays_on(versions, wanted), versions
    labels = cabinet_labels(registry)
    picked = st.multiselect(
        "Boards",
        known,
        placeholder="Choose one or more boards",
        format_func=lambda r: " · ".join(x for x in (r, labels.get(r, ""), versions.get(r)) if x),
    )
    return picked, versions


@st.dialog("Start this rollout?", width="large")
def confirm(principal: Principal, chosen: Plan) -> None:
    fw = chosen.firmware
    product, version = escape_markdown(fw.product), escape_markdown(fw.version)
    st.markdown(
        f"This **reflashes {len(chosen.relays)} machines' boards** with "
        f"**{product} {version}**, {chosen.batch_size} at a time."
    )
    st.markdown(
        f"- Each board downloads {escape_markdown(fw.filename)}, flashes it and restarts: "
        "its machine is off the network for a moment.\n"
        f"- The next batch starts only while at least {chosen.min_success_pct:g}% of the "
        "updated boards came back on the new version; otherwise the rollout halts.\n"
        f"- A board that is not back on {version} within {chosen.timeout_s:g} s counts "
        "as not confirmed."
        + (
            f"\n- {chosen.already} boards already report {version}: they are skipped."
            if chosen.already
            else ""
        )
    )
    with st.expander(f"The {len(chosen.relays)} boards"):
        st.dataframe(pd.DataFrame({"relay": chosen.relays}), hide_index=True, width="stretch")
    go, back = st.columns(2)
    if go.button(f"Reflash {len(chosen.relays)} boards", type="primary", width="stretch"):
        act(lambda: _start(principal, chosen), f"Rollout of {fw.product} {fw.version} started.")
    if back.button("Cancel", width="stretch"):
        st.rerun()


def _start(principal: Principal, chosen: Plan) -> None:
    rollout = plan.start_rollout(
        resources.get_db(),
        principal,
        chosen.firmware.id,
        chosen.relays,
        batch_size=chosen.batch_size,
        min_success_pct=chosen.min_success_pct,
        timeout_s=chosen.timeout_s,
    )
    st.session_state[SELECTED_KEY] = rollout.id


# --- follow -------------------------------------------------------------------------


def rollouts_section(principal: Principal) -> None:
    rollouts = store().recent(20)
    if not rollouts:
        st.info("No rollout yet. Start one above: choose a firmware and the boards to update.")
        return
    table = local_times(plan.rollouts_table(rollouts, store()), resources.time_zone(), "created_at")
    st.dataframe(
        table.drop(columns=["reason"]),
        hide_index=True,
        width="stretch",
        column_config=_with_times(_ROLLOUT_COLUMNS, table, ("created_at",), "YYYY-MM-DD HH:mm"),
    )
    ids = [r.id for r in rollouts]
    wanted = st.session_state.get(SELECTED_KEY)
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox("Rollout", rollouts, index=index, format_func=_rollout_label)
    if chosen is not None:
        st.session_state[SELECTED_KEY] = chosen.id
        detail(principal, chosen.id)


def _rollout_label(r: Rollout) -> str:
    when = local_text(r.created_at, resources.time_zone(), "%Y-%m-%d %H:%M")
    return f"{r.product} {r.version} · {len(r.relays)} boards · {when} · {r.state} ({r.id})"


def detail(principal: Principal, rollout_id: str) -> None:
    rollout = store().get(rollout_id)
    if rollout is None:
        st.error("This rollout no longer exists.")
        return
    boards = store().boards(rollout_id)
    counts = plan.board_counts(boards)
    colour, icon = BADGES.get(rollout.state, ("gray", ""))
    st.markdown(
        f"### {escape_markdown(rollout.product)} {escape_markdown(rollout.version)} "
        f"to {len(rollout.relays)} boards "
        f":{colour}-badge[{icon} {rollout.state}]"
    )
    outcome(rollout, counts)
    cols = st.columns(5)
    for col, (label, key) in zip(
        cols,
        (
            ("Confirmed", "confirmed"),
            ("Updating", "updating"),
            ("Not confirmed", "not_confirmed"),
            ("Skipped", "skipped"),
            ("Waiting", "queued"),
        ),
        strict=True,
    ):
        col.metric(label, counts[key])
    st.caption(escape_markdown(plan.summary_text(rollout, boards, tz=resources.time_zone())))
    controls(principal, rollout)
    st.markdown("**Batches**")
    for done, text in plan.batch_lines(boards):
        st.progress(done, text=escape_markdown(text))
    st.markdown("**Boards**")
    table = local_times(plan.boards_table(boards), resources.time_zone(), *_BOARD_TIMES)
    table["state"] = table["state"].map(lambda state: STATE_WORDS.get(state, state))
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config=_with_times(_BOARD_COLUMNS, table, _BOARD_TIMES, "HH:mm:ss"),
        column_order=list(_BOARD_COLUMNS),
    )


def outcome(rollout: Rollout, counts: dict[str, int]) -> None:
    """How the rollout ended (or why it waits), in a coloured box."""
    if rollout.state == "completed":
        show = st.warning if counts["not_confirmed"] else st.success
        show(f"Completed: {escape_markdown(rollout.reason)}.", icon=":material/task_alt:")
    elif rollout.state == "halted":
        st.error(
            f"Halted: {escape_markdown(rollout.reason)}. The boards not started were left alone.",
            icon=":material/report:",
        )
    elif rollout.state == "cancelled":
        st.info(f"The rollout was {escape_markdown(rollout.reason)}.", icon=":material/block:")
    elif rollout.state == "paused":
        st.info(
            f"Paused ({escape_markdown(rollout.reason)}): no new board starts until it is resumed.",
            icon=":material/pause_circle:",
        )


def controls(principal: Principal, rollout: Rollout) -> None:
    if rollout.finished:
        return
    rollouts = store()
    pause, resume, cancel, _ = st.columns([1, 1, 1, 3])
    if rollout.state in ("pending", "running") and pause.button(
        "Pause", icon=":material/pause:", key=f"pause_{rollout.id}"
    ):
        act(lambda: rollouts.pause(rollout.id, principal), "Rollout paused: no new board starts.")
    if rollout.state == "paused" and resume.button(
        "Resume", icon=":material/play_arrow:", key=f"resume_{rollout.id}"
    ):
        act(lambda: rollouts.resume(rollout.id, principal), "Rollout resumed.")
    with cancel.popover("Cancel", icon=":material/stop:"):
        st.caption("Boards not started yet will not be updated; boards updating now finish.")
        if st.button("Cancel this rollout", type="primary", key=f"cancel_{rollout.id}"):
            act(lambda: rollouts.cancel(rollout.id, principal), "Rollout cancelled.")


_ROLLOUT_COLUMNS: dict[str, Any] = {
    "id": "Rollout",
    "state": "State",
    "firmware": "Firmware",
    "boards": "Boards",
    "confirmed": "Confirmed",
    "not_confirmed": "Not confirmed",
    "progress": st.column_config.ProgressColumn("Progress", min_value=0.0, max_value=1.0),
    "started_by": "Started by",
    "created_at": "Started",
}
_BOARD_COLUMNS: dict[str, Any] = {
    "relay": "Relay",
    "batch": st.column_config.NumberColumn("Batch", width="small"),
    "state": st.column_config.TextColumn("State", width=110),
    "from_version": st.column_config.TextColumn("From", width="small"),
    "version": st.column_config.TextColumn("Now", width="small"),
    "reason": st.column_config.TextColumn("Reason", width="medium"),
    "command_at": "Commanded",
    "downloaded_at": "Downloaded",
    "updated_at": "Last change",
}
_BOARD_TIMES = ("command_at", "downloaded_at", "updated_at")
_TIME_HELP = {"updated_at": "When the board reached its state"}


def _with_times(
    config: dict[str, Any], table: pd.DataFrame, times: tuple[str, ...], fmt: str
) -> dict[str, Any]:
    """`config` with its time columns' headers naming the local zone they are shown in."""
    return config | {
        column: resources.time_column(config[column], table[column], fmt, _TIME_HELP.get(column))
        for column in times
    }
