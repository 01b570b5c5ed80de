"""The cabinet page's read side: which board, its header, live config cards, meters and
the history of its configuration changes.

The seed's SSE stream becomes polling: the page asks the board for every component once
when it opens (`board_config.request_live_config`), and a fragment re-reads the bus's
per-relay `latest_config` every 2 seconds. Nothing here runs on the MQTT thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from smib_core import protocol, sas
from smib_core.auth import Principal
from smib_core.errors import InvalidInput, SmibError
from smib_core.services import board_config
from smib_core.services.board_config import LIVE_COMPONENTS
from smib_core.services.board_maintenance import coms_mode
from smib_core.services.live import ago, is_online
from smib_core.services.local_time import CLOCK, local_text, local_times
from smib_core.services.meters_view import meter_table, read_meters
from smib_core.store.registry import Cabinet
from smib_core.ui import resources
from smib_core.ui.feedback import sentence
from smib_core.ui.plain import escape_markdown

OPENED_KEY = "cabinet_opened"  # (relay, when) this session last asked for its config
FORMS_BUILT_KEY = "cabinet_forms_built"  # components the edit forms were filled from
OPEN_WAIT_S = 1.5


@dataclass(frozen=True, slots=True)
class Target:
    """What the page shows: a cabinet and/or a board."""

    relay: str | None
    cabinet: Cabinet | None
    location: str = ""

    @property
    def key(self) -> str:
        return f"relay:{self.relay}" if self.relay else f"cabinet:{self.cabinet_id}"

    @property
    def cabinet_id(self) -> str:
        return self.cabinet.id if self.cabinet else ""

    @property
    def name(self) -> str:
        return self.cabinet.name if self.cabinet else f"Board {self.relay}"

    @property
    def label(self) -> str:
        if self.cabinet is None:
            return f"Unassigned board · {self.relay}"
        return f"{self.cabinet.name} · {self.location} · {self.relay or 'no board'}"


def _targets() -> list[Target]:
    registry = resources.get_registry()
    places = {loc.id: loc.name for loc in registry.locations(include_retired=True)}
    cabinets = [Target(c.relay, c, places.get(c.location_id, "")) for c in registry.cabinets()]
    stray = registry.unassigned(resources.get_bus().relays_seen())
    return cabinets + [Target(relay, None) for relay in stray]


def _wanted(targets: list[Target]) -> tuple[str | None, list[Target]]:
    """The key the URL asks for (`?relay=` or `?cabinet=`), adding a board nobody heard."""
    raw_relay, raw_cabinet = st.query_params.get("relay"), st.query_params.get("cabinet")
    if raw_relay is not None:
        try:
            relay = protocol.normalize_relay_id(raw_relay)
        except InvalidInput as exc:
            st.error(escape_markdown(sentence(str(exc))))
            return None, targets
        if all(t.relay != relay for t in targets):
            targets = [*targets, Target(relay, None)]
        return f"relay:{relay}", targets
    if raw_cabinet is not None:
        if all(t.cabinet_id != raw_cabinet for t in targets):
            asked = escape_markdown(repr(raw_cabinet[:40]))
            st.error(f"There is no active cabinet {asked}: choose one below.")
            return None, targets
        target = next(t for t in targets if t.cabinet_id == raw_cabinet)
        return target.key, targets
    return None, targets


def choose_target() -> Target | None:
    """The cabinet or board from the URL, or picked here (the URL follows the pick)."""
    wanted, targets = _wanted(_targets())
    if not targets:
        st.info(
            "No cabinet is registered and no board has been heard yet. Register cabinets on "
            "the Registry page, or wait: boards appear as soon as they send anything."
        )
        return None
    by_key = {t.key: t for t in targets}
    keys = list(by_key)
    chosen = st.selectbox(
        "Cabinet or board",
        keys,
        index=keys.index(wanted) if wanted in by_key else None,
        format_func=lambda k: by_key[k].label,
        placeholder="Choose a cabinet or a board",
    )
    if chosen is None:
        st.info("Choose a cabinet or a board above to see its live configuration and meters.")
        return None
    if chosen != wanted:  # the person picked another one: the URL follows
        kind, _, value = chosen.partition(":")
        st.query_params.clear()
        st.query_params[kind] = value
        st.rerun()
    return by_key[chosen]


def header(target: Target) -> None:
    st.title(escape_markdown(target.name))
    cabinet = target.cabinet
    if cabinet is None:
        st.caption(
            f"Board `{target.relay}` belongs to no cabinet: adopt it on the Fleet page to "
            "give it a name, a location and a denomination (money per credit)."
        )
        return
    location = escape_markdown(target.location)
    parts = [location, f"board `{cabinet.relay}`" if cabinet.relay else "no board"]
    parts += [escape_markdown(p) for p in (cabinet.manufacturer, cabinet.game) if p]
    parts += [f"serial {escape_markdown(cabinet.serial)}"] if cabinet.serial else []
    parts += [f"denomination {cabinet.denomination:g} per credit"]
    parts += [f"par {cabinet.par:g}%"] if cabinet.par is not None else []
    st.caption(" · ".join(parts))


def open_board(principal: Principal, relay: str) -> None:
    """On opening a board (and on coming back once what it said is stale): ask it for
    every component, and give an online board a moment to answer so the edit forms start
    from its values."""
    asked_at = time.time()
    last = st.session_state.get(OPENED_KEY)
    last_asked = last[1] if last is not None and last[0] == relay else None
    latest = resources.get_bus().latest_config(relay)
    if not board_config.worth_asking(latest, asked_at, last_asked):
        return
    st.session_state[OPENED_KEY] = (relay, asked_at)
    try:
        board_config.request_live_config(resources.board_actions(principal), relay)
    except SmibError as exc:
        why = escape_markdown(sentence(str(exc)))
        st.warning(f"Could not ask the board for its configuration: {why}")
        return
    bus = resources.get_bus()
    if is_online(bus.last_seen(relay), asked_at, resources.get_settings().offline_after_s):
        board_config.await_config(bus, relay, LIVE_COMPONENTS, asked_at, OPEN_WAIT_S)


def _metric(column: DeltaGenerator, label: str, value: str, note: str, icon: str) -> None:
    column.metric(label, value, note, delta_color="off", delta_arrow="off", border=True, icon=icon)


def status_metrics(target: Target, relay: str) -> None:
    """Online status, firmware, comms mode and denomination: live, like the cards."""
    bus = resources.get_bus()
    now = time.time()
    last = bus.last_seen(relay)
    online = is_online(last, now, resources.get_settings().offline_after_s)
    status = "online" if online else ("never heard" if last is None else "offline")
    firmware = bus.firmware(relay)
    mode = coms_mode(bus.latest_config(relay))
    denomination = target.cabinet.denomination if target.cabinet else None
    left, mid, right, far = st.columns(4)
    heard = f"heard {ago(None if last is None else now - last)}"
    _metric(left, "Status", status, heard, ":material/wifi:" if online else ":material/wifi_off:")
    # A metric's value and note are Markdown too: what the board reports is escaped.
    version, product = (
        (escape_markdown(firmware[1]), escape_markdown(firmware[0]))
        if firmware
        else ("–", "not reported yet")
    )
    _metric(mid, "Firmware", version, product, ":material/memory:")
    comms = protocol.COMS_MODES.get(mode, "–") if mode is not None else "–"
    _metric(
        right,
        "Comms",
        comms,
        "not reported yet" if mode is None else f"comsMode {mode}",
        ":material/cable:",
    )
    money = f"{denomination:g}" if denomination else "–"
    _metric(
        far,
        "Denomination",
        money,
        "money per credit" if denomination else "no cabinet: credits only",
        ":material/payments:",
    )


def _card(card: board_config.ConfigCard) -> None:
    with st.container(border=True):
        st.markdown(f"**{card.title}** · `{card.comp}`")
        if not card.answered:
            st.caption(f":orange[{board_config.NOT_ANSWERED}]: the board has not reported it.")
            return
        st.caption(f"heard {card.age}")
        st.dataframe(
            card.fields,
            hide_index=True,
            width="stretch",
            column_config={
                "field": st.column_config.TextColumn("Field"),
                "value": st.column_config.TextColumn("Value"),
                "heard": st.column_config.TextColumn("Heard", width="small"),
            },
        )


def config_cards(principal: Principal, relay: str) -> None:
    """The five components as the board last reported them; asks again on request."""
    bus = resources.get_bus()
    cards = board_config.config_cards(bus.latest_config(relay), time.time())
    answered = {comp for comp, card in cards.items() if card.answered}
    if answered - set(st.session_state.get(FORMS_BUILT_KEY, ())):
        st.rerun(scope="app")  # a component arrived: fill the edit forms from it
    left, right = st.columns(2)
    with left:
        _card(cards["net"])
        _card(cards["mqtt"])
    with right:
        _card(cards["coms"])
        _card(cards["app"])
        _card(cards["ota"])
    note, button = st.columns([4, 1])
    note.caption(
        f"Refreshed every 2 seconds from what the board says · last updated "
        f"{local_text(time.time(), resources.time_zone(), CLOCK)}"
    )
    if button.button("Ask the board again", icon=":material/refresh:", width="stretch"):
        try:
            board_config.request_live_config(resources.board_actions(principal), relay)
        except SmibError as exc:
            st.error(escape_markdown(sentence(str(exc))))
        else:
            st.toast("Asked the board for its configuration; answers arrive within seconds.")


def mark_forms_built(relay: str) -> None:
    latest = resources.get_bus().latest_config(relay)
    st.session_state[FORMS_BUILT_KEY] = tuple(c for c in LIVE_COMPONENTS if c in latest)


# --- meters ------------------------------------------------------------------------------


def _meters_key(relay: str) -> str:
    return f"cabinet_meters_{relay}"


def meters(principal: Principal, target: Target, relay: str) -> None:
    st.subheader("Meters")
    st.caption("The machine's SAS meters (long poll 6F), read on request.")
    if st.button("Read meters now", icon=":material/speed:"):
        with st.spinner("Asking the machine for its meters…"):
            st.session_state[_meters_key(relay)] = read_meters(
                resources.board_actions(principal), relay
            )
    result = st.session_state.get(_meters_key(relay))
    if result is None:
        return
    reading, at = result
    if not isinstance(reading, sas.MeterReading):
        st.error(f"No meters: {escape_markdown(sentence(str(reading)))}")
        return
    denomination = target.cabinet.denomination if target.cabinet else None
    _reading(reading, at, denomination)


def _reading(reading: sas.MeterReading, at: datetime, denomination: float | None) -> None:
    table = meter_table(reading, denomination)
    money = "" if denomination is None else f" · money at {denomination:g} per credit"
    st.caption(
        f"Read at {local_text(at, resources.time_zone())} · "
        f"game {escape_markdown(reading.game)} · "
        f"SAS address {reading.address}{money}"
    )
    values = reading.values()
    cols = st.columns(3)
    for column, (code, label) in zip(
        cols, (("0000", "Coin in"), ("0024", "Drop"), ("0005", "Games played")), strict=True
    ):
        row = table[table["code"] == code]
        text = row["money_text"].iloc[0] if not row.empty else ""
        column.metric(label, text or (f"{values[code]:,}" if code in values else "–"))
    st.dataframe(
        table.drop(columns=["money"]),
        hide_index=True,
        width="stretch",
        column_config={
            "code": st.column_config.TextColumn("Code", width="small"),
            "meter": "Meter",
            "unit": "Unit",
            "value": st.column_config.NumberColumn("Credits / count", format="localized"),
            "money_text": st.column_config.TextColumn("Money"),
        },
    )


# --- history -----------------------------------------------------------------------------


def history(relay: str) -> None:
    st.subheader("Configuration history")
    table = board_config.config_history(resources.get_audit(), relay)
    if table.empty:
        st.caption("No configuration change has been recorded for this board yet.")
        return
    st.caption("Every change sent from the console or the CLI, newest first; secrets masked.")
    table = local_times(table, resources.time_zone(), "when")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "when": resources.time_column("When", table["when"]),
            "who": "Who",
            "component": "Component",
            "field": "Field",
            "before": "Before",
            "after": "After",
            "outcome": "Outcome",
        },
    )
