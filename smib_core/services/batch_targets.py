"""Which boards a batch reaches: a location's cabinets, or boards chosen one by one.

Pure use of the registry and of what the bus heard (through small Protocols), so the
page shows exactly the list the job will run on, with each board's status.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import pandas as pd

from smib_core.services.live import ago, is_online
from smib_core.store.registry import Cabinet, Location

TARGET_COLUMNS = ["relay", "cabinet", "location", "status", "last_heard"]


class CabinetSource(Protocol):
    """What these functions read of `smib_core.store.registry.Registry`."""

    def locations(self, include_retired: bool = False) -> list[Location]: ...

    def cabinets(
        self, location_id: str | None = None, include_retired: bool = False
    ) -> list[Cabinet]: ...


class SeenSource(Protocol):
    def last_seen(self, relay: str) -> float | None: ...


def location_relays(registry: CabinetSource, location_id: str) -> list[str]:
    """The boards of a location's active cabinets, in cabinet-name order."""
    return [c.relay for c in registry.cabinets(location_id=location_id) if c.relay]


def cabinet_labels(registry: CabinetSource) -> dict[str, str]:
    """relay -> 'Cabinet name (Location)' for every board an active cabinet holds."""
    places = {loc.id: loc.name for loc in registry.locations(include_retired=True)}
    return {
        c.relay: f"{c.name} ({places.get(c.location_id, '?')})"
        for c in registry.cabinets()
        if c.relay
    }


def board_choices(registry: CabinetSource, heard: Iterable[str]) -> list[str]:
    """Every board one could target: registered ones and ones heard on the bus."""
    registered = {c.relay for c in registry.cabinets() if c.relay}
    return sorted(registered | set(heard))


def targets_frame(
    relays: Sequence[str],
    registry: CabinetSource,
    bus: SeenSource,
    offline_after_s: float,
    now: float | None = None,
) -> pd.DataFrame:
    """The boards a batch would reach, each with its cabinet, location and status."""
    now = time.time() if now is None else now
    places = {loc.id: loc.name for loc in registry.locations(include_retired=True)}
    cabinets: Mapping[str, Cabinet] = {c.relay: c for c in registry.cabinets() if c.relay}
    rows = []
    for relay in relays:
        cabinet = cabinets.get(relay)
        last = bus.last_seen(relay)
        rows.append(
            {
                "relay": relay,
                "cabinet": cabinet.name if cabinet else "",
                "location": places.get(cabinet.location_id, "") if cabinet else "",
                "status": "online" if is_online(last, now, offline_after_s) else "offline",
                "last_heard": ago(None if last is None else now - last),
            }
        )
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)
