"""The batch page's pieces: choose boards and a change, confirm, then watch every board.

Starting a batch only stores it (`services.batch.submit_batch`); a worker process
(`BatchWorker`) carries it out. This tab remembers the batch id in the session and a
fragment polls the batch and its boards from the database, so the page shows the same
whichever process runs the batch, and after a restart of either.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from smib_core import protocol
from smib_core.auth import Permission, Principal, allowed
from smib_core.csvsafe import csv_bytes
from smib_core.errors import InvalidInput, SmibError
from smib_core.services import batch_progress
from smib_core.services.batch import BatchJob, cancel_batch, submit_batch
from smib_core.services.batch_targets import (
    board_choices,
    cabinet_labels,
    location_relays,
    targets_frame,
)
from smib_core.services.local_time import CLOCK, local, local_text, with_local_times
from smib_core.store.batches import Batch, BatchBoard
from smib_core.store.templates import TemplateStore
from smib_core.ui import resources
from smib_core.ui.feedback import sentence
from smib_core.ui.plain import escape_markdown
from smib_core.ui.session import live_section
from smib_core.ui.template_view import field_input, spec_label, writable_components

JOB_KEY = "batch_job_id"
PENDING_KEY = "batch_pending"
TEMPLATE, FIELD, RESTART = "Apply a template", "Change one field", "Restart"
# Cell colours of the state column (light, readable, the usual traffic-light meaning).
STATE_COLOURS = {
    "sending": "#e0f2fe",
    "waiting": "#e0f2fe",
    "confirmed": "#dcfce7",
    "not confirmed": "#fef3c7",
    "offline": "#e5e7eb",  # also the confirmation list's status
    "failed": "#fee2e2",
    "cancelled": "#e5e7eb",
}


def run_section(principal: Principal) -> None:
    """The current job's progress, or the steps to start one."""
    batch = resources.get_batch_store().get(st.session_state.get(JOB_KEY))
    if batch is not None:
        show_batch(batch, principal)
        return
    relays = choose_boards()
    job = choose_change(principal, relays)
    if job is not None:
        confirm_and_start(principal, job)
    recent_batches()


# --- 1. boards ------------------------------------------------------------------------


def choose_boards() -> list[str]:
    st.subheader("1 · Boards")
    registry = resources.get_registry()
    by = st.radio("Choose boards", ["By location", "Board by board"], horizontal=True)
    if by == "By location":
        locations = registry.locations()
        if not locations:
            st.info(
                "No location is registered yet: add locations and cabinets on the "
                "Registry page, or choose boards one by one."
            )
            return []
        place = st.selectbox("Location", locations, format_func=lambda loc: loc.name)
        relays = location_relays(registry, place.id) if place is not None else []
        if not relays:
            st.info("No cabinet at this location has a board yet.")
        else:
            st.caption(f"{len(relays)} boards: every cabinet at this location that has one.")
        return relays
    labels = cabinet_labels(registry)
    options = board_choices(registry, resources.get_bus().relays_seen())
    if not options:
        st.info(
            "No board is known yet: boards appear here once they are heard on the bus "
            "or registered to a cabinet."
        )
        return []
    return st.multiselect(
        "Boards",
        options,
        format_func=lambda relay: f"{relay} · {labels[relay]}" if relay in labels else relay,
        placeholder="Choose one or more boards",
    )


# --- 2. change ------------------------------------------------------------------------


def choose_change(principal: Principal, relays: list[str]) -> BatchJob | None:
    st.subheader("2 · Change")
    kinds = [TEMPLATE, FIELD] + ([RESTART] if allowed(principal, Permission.RESTART_BOARD) else [])
    what = st.radio("What to do", kinds, horizontal=True)
    try:
        if what == RESTART:
            st.caption(
                "Each board drops off the bus for some seconds and is confirmed once it "
                "is heard again."
            )
            return BatchJob("restart", tuple(relays)) if relays else None
        if what == TEMPLATE:
            return _template_job(relays)
        return _field_job(relays)
    except InvalidInput as exc:
        st.error(escape_markdown(sentence(str(exc))))
        return None


def _template_job(relays: list[str]) -> BatchJob | None:
    templates = TemplateStore(resources.get_db(), resources.get_audit()).list()
    if not templates:
        st.info("No template yet: create one in the Templates tab, or change one field.")
        return None
    chosen = st.selectbox("Template", templates, format_func=lambda t: t.name)
    if chosen is None:
        return None
    st.caption(f"Sets {escape_markdown(chosen.describe())}")
    if not relays:
        return None
    return BatchJob("config", tuple(relays), chosen.comp, chosen.fields, f"template {chosen.name}")


def _field_job(relays: list[str]) -> BatchJob | None:
    left, mid, right = st.columns([1, 2, 2])
    comp = left.selectbox("Component", writable_components())
    specs = protocol.COMPONENTS[comp]
    spec = mid.selectbox("Field", specs, format_func=spec_label)
    if spec is None:
        return None
    with right:
        value = field_input(spec, key=f"batch_value_{comp}_{spec.name}")
    if not value.strip():
        st.caption("Type the new value.")
        return None
    protocol.validate_config(comp, {spec.name: value})  # a bad value shows even without boards
    if not relays:
        return None
    return BatchJob("config", tuple(relays), comp, {spec.name: value}, f"field {spec.name}")


# --- 3. confirm and start ---------------------------------------------------------------


def confirm_and_start(principal: Principal, job: BatchJob) -> None:
    st.subheader("3 · Check and start")
    settings = resources.get_settings()
    targets = targets_frame(
        job.relays, resources.get_registry(), resources.get_bus(), settings.offline_after_s
    )
    offline = int((targets["status"] == "offline").sum())
    if st.session_state.get(PENDING_KEY) != job:
        st.session_state.pop(PENDING_KEY, None)
        st.caption(f"{_verb(job)} {len(job.relays)} boards. Review the list before it starts.")
        if st.button("Review the batch", icon=":material/fact_check:"):
            st.session_state[PENDING_KEY] = job
            st.rerun()
        return
    with st.container(border=True):
        title = f"Confirm: {_verb(job).lower()} {len(job.relays)} boards"
        st.markdown(f":material/warning: **{title}**")
        source = f" · from {escape_markdown(job.label)}" if job.label else ""
        st.markdown(f"**Change:** {escape_markdown(job.describe())}{source}")
        st.dataframe(
            targets.style.map(_state_colour, subset=["status"]),
            hide_index=True,
            width="stretch",
            column_config=_TARGET_COLUMNS,
        )
        if offline:
            st.warning(
                f"{offline} of these boards look offline: nothing will be sent to them "
                "and they will be listed as offline."
            )
        buttons = st.container(horizontal=True)
        if buttons.button(f"Confirm and start on {len(job.relays)} boards", type="primary"):
            _start(principal, job)
        if buttons.button("Cancel"):
            st.session_state.pop(PENDING_KEY, None)
            st.rerun()


def _verb(job: BatchJob) -> str:
    return "Restart" if job.kind == "restart" else f"Write {job.comp} on"


def _start(principal: Principal, job: BatchJob) -> None:
    try:
        batch = submit_batch(job, principal, resources.get_batch_store(), resources.get_audit())
    except SmibError as exc:
        st.error(escape_markdown(sentence(str(exc))))
        return
    st.session_state.pop(PENDING_KEY, None)
    st.session_state[JOB_KEY] = batch.id
    st.rerun()


_TARGET_COLUMNS = {
    "relay": "Relay",
    "cabinet": "Cabinet",
    "location": "Location",
    "status": "Status",
    "last_heard": "Last heard",
}


# --- the batch's progress and outcome -------------------------------------------------


def show_batch(batch: Batch, principal: Principal) -> None:
    started = local_text(batch.created_at, resources.time_zone())
    st.subheader(f"{_verb_of(batch)} {len(batch.relays)} boards")
    source = f" · from {escape_markdown(batch.label)}" if batch.label else ""
    change, actor = escape_markdown(batch.change), escape_markdown(batch.actor)
    st.caption(f"{change}{source} · submitted by {actor} at {started} · batch {batch.id}")
    if batch.finished:
        outcome(batch)
    else:
        live_progress(batch.id)
    left, right = st.columns([1, 3])
    if left.button("Start a new batch", icon=":material/add:", disabled=not batch.finished):
        st.session_state.pop(JOB_KEY, None)
        st.rerun()
    if not batch.finished:
        _cancel_button(batch, principal, right)


def _verb_of(batch: Batch) -> str:
    return "Restart" if batch.kind == "restart" else f"Write {batch.comp} on"


def _cancel_button(batch: Batch, principal: Principal, where: DeltaGenerator) -> None:
    """Stop sending: boards already in progress finish, the others are left alone."""
    if batch.cancel_requested_by is not None:
        who = escape_markdown(batch.cancel_requested_by)
        where.info(f"Cancelled by {who}: the boards in progress finish.")
        return
    may = allowed(principal, batch.permission)
    if where.button(
        "Cancel the boards not started yet",
        icon=":material/cancel:",
        disabled=not may,
        help="Boards already being worked on finish; nothing is sent to the others."
        if may
        else "Your role may not run this kind of batch.",
    ):
        store = resources.get_batch_store()
        try:
            waiting = cancel_batch(store, batch.id, principal, resources.get_audit())
        except SmibError as exc:
            st.error(escape_markdown(sentence(str(exc))))
            return
        st.toast(f"Cancelled: {waiting} boards will not be sent anything.")
        st.rerun()


@live_section("1s")
def live_progress(batch_id: str) -> None:
    store = resources.get_batch_store()
    batch = store.get(batch_id)
    if batch is None:
        st.warning("This batch is not in the database.")
        return
    if batch.finished:
        st.rerun()  # once, to show the final outcome without polling
    boards = store.boards(batch.id)
    if batch.state == "queued" and store.worker_holder() is None:
        st.warning(
            "Waiting for a worker: no worker process is running batches right now. "
            "The batch starts as soon as one runs (`smib worker`, or `smib serve`)."
        )
    done = batch_progress.finished_count(boards)
    st.progress(batch_progress.fraction(boards), text=f"{done} of {len(boards)} boards done")
    _metrics(boards)
    _table(boards, final=False)
    st.caption(f"Working… last updated {local_text(time.time(), resources.time_zone(), CLOCK)}")


def outcome(batch: Batch) -> None:
    boards = resources.get_batch_store().boards(batch.id)
    counts = batch_progress.outcome_counts(boards)
    confirmed, total = counts["confirmed"], len(boards)
    if confirmed == total:
        st.success(f"All {total} boards confirmed.")
    elif batch.cancel_requested_by is not None:
        st.warning(
            f"Cancelled by {escape_markdown(batch.cancel_requested_by)}: {confirmed} of "
            f"{total} boards "
            f"confirmed, {counts['cancelled']} not sent anything."
        )
    else:
        st.warning(f"{confirmed} of {total} boards confirmed: look at the others below.")
    _metrics(boards)
    st.markdown("##### Outcome per board")
    frame = _table(boards, final=True)
    st.download_button(
        "Download the outcome (CSV)",
        csv_bytes(with_local_times(frame, resources.time_zone(), "updated")),
        file_name=f"batch-{batch.id}.csv",
        mime="text/csv",
        on_click="ignore",
    )


def _metrics(boards: list[BatchBoard]) -> None:
    counts = batch_progress.counts(boards)
    working = counts["queued"] + counts["sending"] + counts["waiting"]
    shown = [
        ("Confirmed", counts["confirmed"]),
        ("Not confirmed", counts["not_confirmed"]),
        ("Offline", counts["offline"]),
        ("Failed", counts["failed"]),
        ("In progress", working),
    ]
    if counts["cancelled"]:
        shown.append(("Cancelled", counts["cancelled"]))
    for col, (label, value) in zip(st.columns(len(shown)), shown, strict=True):
        col.metric(label, value)


def _table(boards: list[BatchBoard], final: bool) -> pd.DataFrame:
    names = cabinet_labels(resources.get_registry())
    frame = batch_progress.frame(boards, time.time(), names)
    st.dataframe(
        frame.style.map(_state_colour, subset=["state"]),
        hide_index=True,
        width="stretch",
        column_order=["relay", "cabinet", "state", "detail", "seconds"],
        column_config={
            "relay": "Relay",
            "cabinet": "Cabinet",
            "state": st.column_config.TextColumn("Outcome" if final else "State"),
            "detail": st.column_config.TextColumn("Detail", width="large"),
            "seconds": st.column_config.NumberColumn("Seconds", format="%.1f", width="small"),
        },
    )
    return frame


def _state_colour(state: object) -> str:
    colour = STATE_COLOURS.get(str(state))
    return f"background-color: {colour}" if colour else ""


def recent_batches() -> None:
    batches = resources.get_batch_store().recent()
    if not batches:
        return
    rows = [
        {
            "batch": batch.id,
            "change": batch.change,
            "boards": len(batch.relays),
            "by": batch.actor,
            "submitted": local(batch.created_at, resources.time_zone()),
            "state": batch.state,
            "outcome": batch.summary,
        }
        for batch in batches
    ]
    frame = pd.DataFrame(rows)
    submitted = resources.time_column("submitted", frame["submitted"])
    with st.expander(f"Recent batches ({len(rows)})"):
        st.dataframe(
            frame, hide_index=True, width="stretch", column_config={"submitted": submitted}
        )
