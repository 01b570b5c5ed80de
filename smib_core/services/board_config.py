"""One board's configuration: live cards, edit forms, a checked write, and its history.

The seed's "SMIB configuration hook" without SSE: `request_live_config` asks for every
component at once (one `cfg` read each, waiting at most a moment, so each read's audit
record settles: confirmed when answered, timed_out when not); the replies land in the
bus's per-relay `latest_config`, which a page fragment polls and turns into cards
(`config_cards`).
An edit (the seed's form fields, mapped and diffed by `services.config_forms`) goes
out through `write_and_confirm`: ONE partial `cfg` write of the changed fields (a board
answers nothing to it), then the read-back of `services.readback` that marks the change
confirmed or not. The write's audit
record carries the masked before/after values, so `config_history` can show who changed
what. No streamlit here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from smib_core import protocol
from smib_core.errors import RequestTimeout, SmibError
from smib_core.services.actions import BoardActions, compared_fields
from smib_core.services.config_forms import (
    FieldChange,
    diff,
    diff_table,
    field_label,
    form_values,
    join_uri,
    prepare_change,
    same_value,
    short_label,
    shown,
    split_uri,
)
from smib_core.services.live import ago
from smib_core.services.readback import Outcome, ReadBack, ReadBackTimings, read_back, reports
from smib_core.store.audit import AuditTrail

LIVE_COMPONENTS: tuple[str, ...] = ("net", "mqtt", "coms", "ota", "app")
EDITABLE_COMPONENTS: tuple[str, ...] = ("net", "mqtt", "coms", "ota")
COMPONENT_TITLES = {
    "net": "WiFi network",
    "mqtt": "MQTT broker",
    "coms": "Machine link (SAS)",
    "ota": "Firmware updates (OTA)",
    "app": "Firmware",
}
NOT_ANSWERED = "not answered yet"
STALE_S = 60.0  # what a board said this long ago is worth asking again on a page visit
# The form mapping lives in config_forms; these names are part of this module's API too.
__all__ = [
    "FieldChange",
    "diff",
    "diff_table",
    "form_values",
    "join_uri",
    "prepare_change",
    "split_uri",
]


class ConfigSource(Protocol):
    """What the cards need of `smib_core.bus.DeviceBus`."""

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


# --- live cards --------------------------------------------------------------------------


def request_live_config(
    actions: BoardActions,
    relay: str,
    comps: Iterable[str] = LIVE_COMPONENTS,
    timeout: float = 1.5,
) -> list[str]:
    """Ask the board for each component, all at once; returns the components asked.

    Each read is a `BoardActions.request` waiting at most `timeout` s, so its audit
    record settles (confirmed, or timed_out for a board that does not answer); the
    replies also land on the bus (`latest_config`) for the cards. Raises the error
    (BusError when the broker is unreachable, PermissionDenied) when no read was sent.
    """
    asked = list(comps)
    with ThreadPoolExecutor(max(1, len(asked))) as pool:
        futures = [
            pool.submit(actions.request, relay, protocol.config_read(comp), timeout)
            for comp in asked
        ]
    errors = [
        exc
        for exc in (f.exception() for f in futures)
        if exc is not None and not isinstance(exc, RequestTimeout)
    ]
    if asked and len(errors) == len(asked):
        raise errors[0]
    return asked


def worth_asking(
    latest: Mapping[str, tuple[Mapping[str, Any], float]],
    now: float,
    last_asked: float | None,
    stale_s: float = STALE_S,
    comps: Iterable[str] = LIVE_COMPONENTS,
) -> bool:
    """Whether a page should ask the board again: never asked in this session, or asked
    more than `stale_s` ago while a component is missing or older than that."""
    if last_asked is None:
        return True
    if now - last_asked < stale_s:
        return False
    return any(comp not in latest or now - latest[comp][1] >= stale_s for comp in comps)


def await_config(
    bus: ConfigSource,
    relay: str,
    comps: Iterable[str],
    since: float,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> set[str]:
    """Wait up to `timeout` s for each component to be heard after `since`; the heard ones.

    For a page opening: the edit forms are filled from what the board said, so it is
    worth a moment for the answers to the reads it just sent.
    """
    wanted = set(comps)
    deadline = clock() + timeout
    while True:
        heard = {c for c, (_, at) in bus.latest_config(relay).items() if at >= since}
        if wanted <= heard or clock() >= deadline:
            return heard & wanted
        sleep(0.05)


@dataclass(frozen=True, slots=True)
class ConfigCard:
    comp: str
    title: str
    fields: pd.DataFrame  # field, value (masked), heard
    heard_at: float | None  # time.time() of the component's latest reply; None: never
    age: str  # "12 s ago" or NOT_ANSWERED

    @property
    def answered(self) -> bool:
        return self.heard_at is not None


def config_cards(
    latest: Mapping[str, tuple[Mapping[str, Any], float]],
    now: float,
    comps: Sequence[str] = LIVE_COMPONENTS,
) -> dict[str, ConfigCard]:
    """comp -> its card: masked values and when they were heard, or NOT_ANSWERED."""
    cards = {}
    for comp in comps:
        fields, at = latest.get(comp, ({}, None))
        age = NOT_ANSWERED if at is None else ago(now - at)
        rows = [
            {"field": short_label(comp, name), "value": shown(name, value), "heard": age}
            for name, value in fields.items()
        ]
        frame = pd.DataFrame(rows, columns=["field", "value", "heard"])
        cards[comp] = ConfigCard(comp, COMPONENT_TITLES[comp], frame, at, age)
    return cards


# --- write, read back ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldCheck:
    field: str
    before: str  # masked
    after: str  # masked: what was written
    reported: str  # masked: what the board reported back ("" when it did not say)
    confirmed: bool


@dataclass(frozen=True, slots=True)
class ConfigChangeResult:
    relay: str
    comp: str
    outcome: Outcome
    checks: tuple[FieldCheck, ...]
    audit_id: str
    reason: str = ""

    @property
    def message(self) -> str:
        names = ", ".join(field_label(self.comp, c.field) for c in self.checks)
        if self.outcome == "confirmed":
            return f"Confirmed: the board reports the new {names}."
        if self.outcome == "timed_out":
            return f"Sent, but not confirmed: {self.reason}"
        differ = ", ".join(field_label(self.comp, c.field) for c in self.checks if not c.confirmed)
        return f"Not confirmed: the board reports other values for {differ}. {self.reason}".strip()

    def table(self) -> pd.DataFrame:
        rows = [
            {
                "field": field_label(self.comp, c.field),
                "before": c.before,
                "after": c.after,
                "reported": c.reported,
                "confirmed": c.confirmed,
            }
            for c in self.checks
        ]
        return pd.DataFrame(rows, columns=["field", "before", "after", "reported", "confirmed"])


def write_and_confirm(
    actions: BoardActions,
    relay: str,
    comp: str,
    changed: Sequence[FieldChange],
    timeout: float = 5.0,
    timings: ReadBackTimings | None = None,
) -> ConfigChangeResult:
    """One partial `cfg` write of the changed fields, then a read-back that confirms it.

    The write is published (a board answers nothing to it) and audited with the masked
    before/after values; `readback.read_back` then asks the component until it reports
    the new values, and the write's audit record is settled confirmed / not_confirmed /
    timed_out. Raises InvalidInput (nothing sent) for refused values, PermissionDenied,
    or BusError when not sent.
    """
    relay = protocol.normalize_relay_id(relay)
    command = protocol.config_write(comp, {c.field: c.after for c in changed})
    context = {
        "component": comp,
        "before": {c.field: shown(c.field, c.before) for c in changed},
        "after": {c.field: c.shown_after() for c in changed},
    }
    sent = actions.send_command([relay], command, context)
    # A board may hide or leave out a secret it was given: only the rest is compared.
    compared = compared_fields(command)
    try:
        back = read_back(actions, relay, comp, reports(compared), timeout, timings)
    except SmibError as exc:
        back = ReadBack("not_confirmed", {}, 0, f"the read-back failed: {exc}")
    reported = back.fields
    checks = tuple(
        FieldCheck(
            c.field,
            c.shown_before(),
            c.shown_after(),
            shown(c.field, reported[c.field]) if c.field in reported else "",
            back.confirmed
            if c.field not in compared
            else c.field in reported and same_value(reported[c.field], c.after),
        )
        for c in changed
    )
    outcome: Outcome = back.outcome
    reason = f"{back.reason}." if back.reason else ""
    differ = [c.field for c in checks if not c.confirmed]
    detail = {"differ": differ, "reason": reason} if outcome != "confirmed" else {}
    actions.settle(sent.audit_id, outcome, detail)
    return ConfigChangeResult(relay, comp, outcome, checks, sent.audit_id, reason)


# --- history -------------------------------------------------------------------------

HISTORY_COLUMNS = ["when", "who", "component", "field", "before", "after", "outcome"]
HISTORY_KINDS = ("config_write", "ota_url")


def _object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object (a dict), else empty: old records vary."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _history_rows(record: Mapping[Any, Any]) -> list[dict[str, Any]]:
    detail = _object(record.get("detail"))
    command = _object(detail.get("command"))
    comp = str(detail.get("component") or command.get("comp") or "")
    after = _object(detail.get("after"))
    if "after" not in detail:  # recorded without before/after (e.g. by an older version)
        after = {k: shown(k, v) for k, v in command.items() if k not in ("typ", "comp")}
    before = _object(detail.get("before"))
    return [
        {
            "when": record["at"],
            "who": record["actor"],
            "component": comp,
            "field": field_label(comp, name),
            "before": str(before.get(name, "–")),
            "after": str(value),
            "outcome": record["outcome"],
        }
        for name, value in after.items()
    ]


def config_history(audit: AuditTrail, relay: str, limit: int = 500) -> pd.DataFrame:
    """This board's configuration changes, one row per field, newest first."""
    frames = [audit.query(relay=relay, kind=kind, limit=limit) for kind in HISTORY_KINDS]
    rows = [
        row
        for frame in frames
        for record in frame.to_dict("records")
        for row in _history_rows(record)
    ]
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    if history.empty:
        return history
    return history.sort_values("when", ascending=False, kind="stable", ignore_index=True)
