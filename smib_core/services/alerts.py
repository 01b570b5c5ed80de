"""When to raise and resolve alerts: from machine events, from silence, from other services.

- Event-driven (`apply_event_alerts`, called by the event recorder on each batch): a
  door opened (11 slot, 13 drop, 19 cashbox) raises its door alert and the matching
  close (12, 14, 1A) resolves it; AC power lost (18) raises, AC power applied (17)
  resolves; soft meters reset (7A) raises a RAM clear alert.
- Silence (`AlertEvaluator.evaluate`, every few seconds): a registered cabinet's board
  not heard for longer than `offline_alert_after_s` raises board_offline; hearing it
  again resolves it. A board never heard counts from when the evaluator started, so
  restarting the console does not raise an alert for every board at once.
- Other services (`raise_alert`): the meter analytics flag a RAM clear from falling
  meters, the rollout engine an OTA failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo.database import Database

from smib_core.protocol import normalize_relay_id
from smib_core.services.local_time import CLOCK, local_text
from smib_core.settings import Settings
from smib_core.store.alerts import Alert, AlertStore
from smib_core.store.events import CabinetContext, EventRecord
from smib_core.store.registry import Registry

log = logging.getLogger(__name__)

OFFLINE = "board_offline"
RAISED_BY_EVENT: dict[str, str] = {
    "11": "slot_door_open",
    "13": "drop_door_open",
    "19": "cashbox_door_open",
    "18": "ac_power_lost",
    "7A": "ram_clear",
}
RESOLVED_BY_EVENT: dict[str, str] = {
    "12": "slot_door_open",
    "14": "drop_door_open",
    "1A": "cashbox_door_open",
    "17": "ac_power_lost",
}


def offline_alert_after_s(settings: Settings) -> float:
    """SMIB_ALERT_OFFLINE_S when set, else twice the time after which a board shows offline."""
    return (
        settings.alert_offline_s if settings.alert_offline_s > 0 else 2 * settings.offline_after_s
    )


def clock_text(at: datetime, tz: str = "UTC") -> str:
    """`08:03:00 EDT (America/New_York)`: a time an alert's text names, in local time."""
    return local_text(at, tz, CLOCK)


class CabinetDirectory:
    """relay -> where it is installed, from the registry, re-read at most every `ttl_s`.

    The recorder looks up every event's relay; one registry read per `ttl_s` instead of
    one per event keeps the write path cheap. Thread-safe.
    """

    def __init__(
        self, registry: Registry, ttl_s: float = 15.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._by_relay: dict[str, CabinetContext] = {}

    def registered(self) -> dict[str, CabinetContext]:
        """Every relay an active cabinet claims, with its cabinet and location."""
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= self._ttl_s:
                self._by_relay = _load(self._registry)
                self._loaded_at = now
            return dict(self._by_relay)

    def context(self, relay: str) -> CabinetContext:
        return self.registered().get(relay, CabinetContext())


def _load(registry: Registry) -> dict[str, CabinetContext]:
    frame = registry.frame()
    return {
        str(row.relay): CabinetContext(
            str(row.id), str(row.name), str(row.location_id), str(row.location)
        )
        for row in frame.itertuples()
        if row.relay
    }


@dataclass(frozen=True, slots=True)
class AlertChanges:
    raised: int = 0
    resolved: int = 0


def apply_event_alerts(
    store: AlertStore, records: Iterable[EventRecord], tz: str = "UTC"
) -> AlertChanges:
    """Raise and resolve the alerts these events imply, in the order they arrived (the
    texts name their times in the zone `tz`)."""
    raised = resolved = 0
    for record in records:
        message, at = record.message, record.received_at
        code = message.code.strip().upper()
        if code in RAISED_BY_EVENT:
            detail = f"{message.name} at {clock_text(at, tz)}"
            _, new = store.raise_alert(
                RAISED_BY_EVENT[code], message.relay, detail, record.context, at
            )
            raised += new
        elif code in RESOLVED_BY_EVENT:
            text = f"{message.name} at {clock_text(at, tz)}"
            done = store.resolve(RESOLVED_BY_EVENT[code], message.relay, text, at)
            resolved += done is not None
    return AlertChanges(raised, resolved)


class SeenBus(Protocol):
    def relays_seen(self) -> dict[str, float]: ...


class AlertEvaluator:
    """Raises and resolves board_offline alerts from what the bus heard and the registry."""

    def __init__(
        self,
        bus: SeenBus,
        store: AlertStore,
        directory: CabinetDirectory,
        offline_after_s: float,
        *,
        started_at: float | None = None,
        clock: Callable[[], float] = time.time,
        tz: str = "UTC",
    ) -> None:
        self.bus = bus
        self.store = store
        self.directory = directory
        self.offline_after_s = offline_after_s
        self._clock = clock
        self.tz = tz  # the zone an alert's text names its times in
        self.started_at = clock() if started_at is None else started_at

    def evaluate(self, now: float | None = None) -> AlertChanges:
        now = self._clock() if now is None else now
        registered = self.directory.registered()
        seen = self.bus.relays_seen()
        held = self.store.held_relays(OFFLINE)
        raised = resolved = 0
        for relay, context in registered.items():
            last = seen.get(relay)
            silent = now - (last if last is not None else self.started_at)
            if silent > self.offline_after_s and relay not in held:
                detail = _silence(last, silent, self.tz)
                raised += self.store.raise_alert(OFFLINE, relay, detail, context, _dt(now))[1]
            elif last is not None and silent <= self.offline_after_s and relay in held:
                heard = f"heard again at {clock_text(_dt(last), self.tz)}"
                resolved += self.store.resolve(OFFLINE, relay, heard, _dt(now)) is not None
        for relay in held - registered.keys():
            gone = "no cabinet uses this board any more"
            resolved += self.store.resolve(OFFLINE, relay, gone, _dt(now)) is not None
        return AlertChanges(raised, resolved)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def duration_text(seconds: float) -> str:
    """'40 s', '4 min', '2.5 h': how long a silence lasted or a threshold is."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def _silence(last: float | None, silent: float, tz: str) -> str:
    if last is None:
        return f"not heard since the console started {duration_text(silent)} ago"
    return f"not heard for {duration_text(silent)} (last at {clock_text(_dt(last), tz)})"


def context_for(registry: Registry, relay: str) -> CabinetContext:
    cabinet = registry.cabinet_for_relay(relay)
    if cabinet is None:
        return CabinetContext()
    try:
        location = registry.location(cabinet.location_id).name
    except ValueError:
        location = ""
    return CabinetContext(cabinet.id, cabinet.name, cabinet.location_id, location)


def raise_alert(
    db: Database[Any], kind: str, relay: str, detail: str, at: datetime | None = None
) -> Alert:
    """Raise (or repeat) an alert from another service: kind "ram_clear" from the meter
    analytics, "ota_failure" from the rollout engine. At most one unacknowledged alert
    per (kind, relay): a repeat bumps its count. InvalidInput for an unknown kind or relay.
    """
    relay = normalize_relay_id(relay)
    context = context_for(Registry(db), relay)
    alert, _ = AlertStore(db).raise_alert(kind, relay, detail, context, at)
    return alert
