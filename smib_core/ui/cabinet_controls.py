"""The cabinet page's acting side: edit forms with a diff preview, restart with the seed's
15-second countdown, NVS clears and meter reset, each behind a confirmation.

Controls a role lacks are not shown; every action still goes through `BoardActions`,
which checks the role again. A form's values stay on the server: passwords are never
put into a widget, and a change is kept in the session only until it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import streamlit as st

from smib_core import sas
from smib_core.auth import Permission, Principal
from smib_core.errors import InvalidInput, SmibError
from smib_core.services import board_maintenance as care
from smib_core.services.board_config import (
    COMPONENT_TITLES,
    ConfigChangeResult,
    request_live_config,
    write_and_confirm,
)
from smib_core.services.config_forms import (
    FieldChange,
    FormField,
    diff_table,
    form_fields,
    form_values,
    prepare_change,
    shown,
)
from smib_core.ui import resources
from smib_core.ui.feedback import sentence
from smib_core.ui.plain import escape_markdown
from smib_core.ui.session import live_section

EDIT_TABS = {"net": "WiFi", "mqtt": "MQTT", "coms": "Machine link", "ota": "OTA"}
RESTART_KEY = "cabinet_restart"  # (relay, time the restart was sent, the watch's Future)
NOTICE_KEY = "cabinet_notice"  # (ok, sentence) shown once after a rerun
WRITE_TIMEOUT_S = 5.0


def _key(what: str, relay: str, comp: str = "") -> str:
    return f"cabinet_{what}_{relay}_{comp}"


def notice(ok: bool, text: str) -> None:
    st.session_state[NOTICE_KEY] = (ok, text)


def show_notice() -> None:
    shown_once = st.session_state.pop(NOTICE_KEY, None)
    if shown_once is not None:
        ok, text = shown_once
        (st.success if ok else st.warning)(escape_markdown(text))


# --- editing -----------------------------------------------------------------------------


def edit_forms(principal: Principal, relay: str) -> None:
    st.subheader("Change the configuration")
    st.caption(
        "Only the fields you change are sent, in one partial write; then the board is asked "
        "for the component again to confirm it. Passwords are never shown: leave a password "
        "blank to keep it."
    )
    latest = resources.get_bus().latest_config(relay)
    tabs = st.tabs(list(EDIT_TABS.values()), key="cabinet_edit_tab", on_change="rerun")
    for tab, comp in zip(tabs, EDIT_TABS, strict=True):
        with tab:
            heard = latest.get(comp)
            if heard is None:
                st.info(
                    f"The board has not reported its {COMPONENT_TITLES[comp]} settings yet: "
                    "the form appears as soon as it answers."
                )
                continue
            _editor(principal, relay, comp, dict(heard[0]))


def _input(field: FormField, value: Any, key: str) -> Any:
    help_text = f"`{field.name}`" + (f" · {field.help}" if field.help else "")
    if field.kind == "password":
        return st.text_input(
            field.label,
            "",
            type="password",
            placeholder="unchanged",
            help=help_text,
            key=key,
            autocomplete="new-password",
        )
    if field.kind == "int":
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        return st.number_input(field.label, value=number, step=1, help=help_text, key=key)
    if field.kind == "choice":
        options = list(field.choices) + ([value] if value not in field.choices else [])
        return st.selectbox(
            field.label,
            options,
            index=options.index(value),
            help=help_text,
            format_func=lambda v: shown(field.name, v),
            key=key,
        )
    return st.text_input(field.label, "" if value is None else str(value), help=help_text, key=key)


def _editor(principal: Principal, relay: str, comp: str, current: Mapping[str, Any]) -> None:
    rev = st.session_state.get(_key("rev", relay), 0)
    values = form_values(comp, current)
    with st.form(f"cabinet_form_{relay}_{comp}_{rev}"):
        columns = st.columns(2)
        form = {}
        for index, field in enumerate(form_fields(comp)):
            with columns[index % 2]:
                form[field.name] = _input(
                    field, values.get(field.name), f"{comp}_{rev}_{field.name}"
                )
        submitted = st.form_submit_button("Preview the change", icon=":material/difference:")
    if submitted:
        st.session_state.pop(_key("pending", relay, comp), None)
        st.session_state.pop(_key("result", relay, comp), None)
        try:
            changes = prepare_change(comp, form, current)
        except InvalidInput as exc:
            st.error(f"{escape_markdown(sentence(str(exc)))} Nothing was sent.")
            return
        if not changes:
            st.info("Nothing changed: every field already has the board's value.")
            return
        st.session_state[_key("pending", relay, comp)] = changes
    _pending(principal, relay, comp)
    _result(st.session_state.get(_key("result", relay, comp)))


def _pending(principal: Principal, relay: str, comp: str) -> None:
    changes: list[FieldChange] | None = st.session_state.get(_key("pending", relay, comp))
    if not changes:
        return
    with st.container(border=True):
        st.markdown("**Check the change before sending it**")
        st.dataframe(
            diff_table(comp, changes),
            hide_index=True,
            width="stretch",
            column_config={"field": "Field", "before": "Now", "after": "After the change"},
        )
        buttons = st.container(horizontal=True)
        if buttons.button("Send to the board", type="primary", key=_key("send", relay, comp)):
            with st.spinner("Writing the change and reading it back…"):
                try:
                    result = write_and_confirm(
                        resources.board_actions(principal), relay, comp, changes, WRITE_TIMEOUT_S
                    )
                except SmibError as exc:
                    st.error(escape_markdown(sentence(str(exc))))
                    return
            st.session_state.pop(_key("pending", relay, comp), None)
            st.session_state[_key("result", relay, comp)] = result
            st.session_state[_key("rev", relay)] = st.session_state.get(_key("rev", relay), 0) + 1
            st.rerun()
        if buttons.button("Discard", key=_key("discard", relay, comp)):
            st.session_state.pop(_key("pending", relay, comp), None)
            st.rerun()


def _result(result: ConfigChangeResult | None) -> None:
    if result is None:
        return
    if result.outcome == "confirmed":
        st.success(escape_markdown(result.message), icon=":material/task_alt:")
    else:
        st.warning(escape_markdown(result.message), icon=":material/help:")
    st.dataframe(
        result.table(),
        hide_index=True,
        width="stretch",
        column_config={"reported": "Board reports", "confirmed": "Confirmed"},
    )


# --- restart -----------------------------------------------------------------------------


@st.cache_resource
def _restart_watchers() -> ThreadPoolExecutor:
    """Threads that follow a restart until the board answers again (a page rerun or a
    closed tab does not stop them: the audit record is settled either way)."""
    return ThreadPoolExecutor(max_workers=4)


@st.dialog("Restart the board?")
def _confirm_restart(principal: Principal, name: str, relay: str) -> None:
    st.write(
        f"**{name}** (board `{relay}`) drops off the network and comes back some seconds "
        "later. The machine keeps running, but the console hears nothing from it meanwhile."
    )
    if st.button("Restart now", type="primary", icon=":material/restart_alt:"):
        actions = resources.board_actions(principal)
        sent_at = time.time()
        try:
            sent = care.restart(actions, relay)
        except SmibError as exc:
            st.error(escape_markdown(sentence(str(exc))))
            return
        watch = _restart_watchers().submit(care.confirm_restart, actions, relay, sent, sent_at)
        st.session_state[RESTART_KEY] = (relay, sent_at, watch)
        st.rerun()


def restart_countdown(principal: Principal, relay: str) -> None:
    """While a restart of this board is under way: the countdown until it answers again."""
    state = st.session_state.get(RESTART_KEY)
    if state is not None and state[0] == relay:
        _countdown(principal, relay, state[1], state[2])


@live_section("1s")
def _countdown(principal: Principal, relay: str, started: float, watch: Future[Any]) -> None:
    if not watch.done():
        left = care.countdown(started, time.time())
        with st.container(border=True):
            st.markdown(f":material/restart_alt: **Restarting board `{relay}`**")
            text = (
                f"It drops off and comes back; it is asked again from {left:.0f} s on."
                if left > 0
                else "Waiting for the board to answer again…"
            )
            st.progress(1 - left / care.RESTART_COUNTDOWN_S, text=text)
        return
    st.session_state.pop(RESTART_KEY, None)
    try:
        outcome: care.RestartOutcome = watch.result()
    except SmibError as exc:
        notice(False, sentence(str(exc)))
        st.rerun(scope="app")
        return
    if outcome.ok:
        try:
            request_live_config(resources.board_actions(principal), relay)
        except SmibError as exc:
            notice(False, f"{outcome.message} It could not be asked for its settings: {exc}")
            st.rerun(scope="app")
            return
    notice(outcome.ok, outcome.message)
    st.rerun(scope="app")


# --- NVS and meters ----------------------------------------------------------------------


@st.dialog("Clear the board's stored data?")
def _confirm_nvs(principal: Principal, name: str, relay: str, kind: sas.NvsClear) -> None:
    title, erased = care.NVS_CLEARS[kind]
    st.warning(f"This erases {erased}", icon=":material/warning:")
    st.markdown(f"Board `{relay}` of **{escape_markdown(name)}**. It cannot be undone.")
    if st.button(f"Clear: {title.lower()}", type="primary", icon=":material/delete_forever:"):
        with st.spinner("Clearing and waiting for the board's answer…"):
            try:
                outcome = care.clear_nvs(resources.board_actions(principal), relay, kind)
            except SmibError as exc:
                st.error(escape_markdown(sentence(str(exc))))
                return
        notice(outcome.ok, outcome.message)
        st.rerun()


@st.dialog("Reset the meters?")
def _confirm_meter_reset(principal: Principal, name: str, relay: str) -> None:
    st.warning(
        f"This sets the meters of **{name}** (a non-SAS machine, board `{relay}`) back to "
        "zero. Readings already stored stay; the next reading starts a new baseline.",
        icon=":material/warning:",
    )
    if st.button("Reset the meters", type="primary", icon=":material/restart_alt:"):
        latest = resources.get_bus().latest_config(relay)
        try:
            care.reset_meters(resources.board_actions(principal), relay, latest)
        except SmibError as exc:
            st.error(escape_markdown(sentence(str(exc))))
            return
        notice(True, "Meter reset sent: the board reports event 7A (soft meters reset).")
        st.rerun()


def maintenance(principal: Principal, name: str, relay: str) -> None:
    can_restart = principal.can(Permission.RESTART_BOARD)
    can_clear = principal.can(Permission.NVS_CLEAR)
    if not (can_restart or can_clear):
        return
    st.subheader("Maintenance")
    st.caption("Each asks for confirmation first and is recorded in the audit trail.")
    restart_col, nvs_col, reset_col = st.columns(3)
    if can_restart:
        with restart_col.container(border=True, height="stretch"):
            st.markdown("**Restart the board**")
            st.caption("A 15-second countdown follows, then its configuration is read again.")
            if st.button("Restart…", icon=":material/restart_alt:"):
                _confirm_restart(principal, name, relay)
    if not can_clear:
        return
    with nvs_col.container(border=True, height="stretch"):
        st.markdown("**Clear stored data (NVS)**")
        kind = st.selectbox(
            "What to clear", list(care.NVS_CLEARS), format_func=lambda k: care.NVS_CLEARS[k][0]
        )
        if st.button("Clear…", icon=":material/delete:"):
            _confirm_nvs(principal, name, relay, kind)
    with reset_col.container(border=True, height="stretch"):
        st.markdown("**Reset meters** (non-SAS boards)")
        refusal = care.meter_reset_refusal(care.coms_mode(resources.get_bus().latest_config(relay)))
        st.caption(refusal or "The board keeps the meters of a non-SAS machine itself.")
        if refusal is None and st.button("Reset meters…", icon=":material/exposure_zero:"):
            _confirm_meter_reset(principal, name, relay)
