"""The fleet table: every cabinet and every board heard, joined, with status and freshness.

Contract: `fleet_table` joins the registry (`Registry.frame()`: active cabinets) with
what the bus heard (`live.boards_seen`). One row per active cabinet, plus one per board
heard that no cabinet claims (cabinet "unassigned"). Status is "online" when the board
was heard within `offline_after_s`, "offline" when it was heard before that, and "never
heard" for a cabinet whose board the bus does not know (or that has no board yet).
Pure pandas: the bus is read through a Protocol, so tests use a fake; the meter
readings come in as a mapping (`MeterStore.last_reading_times()`). `live_table` is
what the Fleet page builds every 2 seconds: the three reads and the join.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import pandas as pd

from smib_core.inbox import InboxEntry
from smib_core.protocol import MeterReply
from smib_core.services.live import LiveBus, boards_seen
from smib_core.store.documents import as_utc

UNASSIGNED = "unassigned"
NEVER_HEARD = "never heard"
STATUSES = ("online", "offline", NEVER_HEARD)
FILTERS = (*STATUSES, UNASSIGNED)  # what the status filter offers
FLEET_COLUMNS = [
    "cabinet",
    "location",
    "relay",
    "status",
    "last_seen",
    "seen",
    "firmware",
    "version",
    "comms",
    "last_meter_reading",
    "cabinet_id",
]


class FleetBus(LiveBus, Protocol):
    """What the fleet table reads from `smib_core.bus.DeviceBus`."""

    def inbox(self, relay: str) -> list[InboxEntry]: ...


class CabinetFrames(Protocol):
    """What the live table reads of `store.registry.Registry`."""

    def frame(self, include_retired: bool = False) -> pd.DataFrame: ...


class ReadingTimes(Protocol):
    """What the live table reads of `store.meters.MeterStore`."""

    def last_reading_times(self, ok_only: bool = True) -> dict[str, datetime]: ...


def live_table(
    registry: CabinetFrames, bus: FleetBus, meters: ReadingTimes, offline_after_s: float
) -> pd.DataFrame:
    """The Fleet page's table now: the registry, the bus's view and the newest good
    meter reading of every board (`smib bench fleet` times it for a large fleet)."""
    frame = registry.frame()
    return fleet_table(frame, bus, meters.last_reading_times(), offline_after_s=offline_after_s)


def fleet_table(
    registry_frame: pd.DataFrame,
    bus: FleetBus,
    last_meter_reading: Mapping[str, datetime] | None = None,
    now: float | None = None,
    offline_after_s: float = 120.0,
) -> pd.DataFrame:
    """One row per active cabinet and per unassigned board (`FLEET_COLUMNS`).

    `registry_frame` needs the columns id, name, location and relay (retired rows, if
    any, are left out). `last_meter_reading` maps relay -> time of its last good meter
    snapshot; the bus's latest meter reply counts too, whichever is newer. `now` is a
    `time.time()` value. Rows: cabinets by location and name, then unassigned boards.
    """
    now = time.time() if now is None else now
    boards = boards_seen(bus, offline_after_s, now)
    cabinets = _active(registry_frame)
    joined = cabinets.merge(boards, on="relay", how="outer")
    joined["cabinet"] = joined["cabinet"].fillna(UNASSIGNED)
    for column in ("cabinet_id", "location", "firmware", "version", "comms"):
        joined[column] = joined[column].fillna("")
    joined["status"] = joined["status"].fillna(NEVER_HEARD)
    joined["seen"] = joined["seen"].fillna("never")
    joined["last_seen"] = pd.to_datetime(joined["last_seen"], utc=True)
    readings = _newest(last_meter_reading or {}, latest_meter_replies(bus, boards["relay"]))
    joined["last_meter_reading"] = pd.to_datetime(joined["relay"].map(readings), utc=True)
    joined["_unassigned"] = joined["cabinet_id"].eq("")
    joined["_order"] = joined["cabinet"].str.lower()
    joined = joined.sort_values(["_unassigned", "location", "_order", "relay"], ignore_index=True)
    return joined[FLEET_COLUMNS]


def _active(registry_frame: pd.DataFrame) -> pd.DataFrame:
    frame = registry_frame
    if "retired" in frame.columns:
        frame = frame[~frame["retired"].fillna(False).astype(bool)]
    return pd.DataFrame(
        {
            "cabinet": frame["name"].astype(str),
            "cabinet_id": frame["id"].astype(str),
            "location": frame["location"].fillna("").astype(str),
            "relay": frame["relay"].fillna("").astype(str),
        }
    )


def _newest(*sources: Mapping[str, datetime]) -> dict[str, datetime]:
    newest: dict[str, datetime] = {}
    for source in sources:
        for relay, at in source.items():
            at = as_utc(at)
            if relay not in newest or at > newest[relay]:
                newest[relay] = at
    return newest


def latest_meter_replies(bus: FleetBus, relays: Iterable[str]) -> dict[str, datetime]:
    """relay -> when the bus last heard a meter reply that decoded (still in its inbox)."""
    found: dict[str, datetime] = {}
    for relay in relays:
        for entry in reversed(bus.inbox(relay)):
            message = entry.message
            if isinstance(message, MeterReply) and message.reading is not None:
                found[relay] = datetime.fromtimestamp(entry.at, UTC)
                break
    return found


def filter_fleet(
    table: pd.DataFrame,
    locations: Collection[str] = (),
    statuses: Collection[str] = (),
    search: str = "",
) -> pd.DataFrame:
    """Rows in any of `locations` (all when empty), with any of `statuses` (`FILTERS`:
    "unassigned" picks unassigned boards whatever their status), whose relay or cabinet
    name contains `search` (case-insensitive)."""
    keep = pd.Series(True, index=table.index)
    if locations:
        keep &= table["location"].isin(list(locations))
    if statuses:
        wanted = table["status"].isin(list(statuses))
        if UNASSIGNED in statuses:
            wanted |= table["cabinet_id"].eq("")
        keep &= wanted
    needle = search.strip().lower()
    if needle:
        in_relay = table["relay"].str.lower().str.contains(needle, regex=False)
        in_name = table["cabinet"].str.lower().str.contains(needle, regex=False)
        keep &= in_relay | in_name
    return table[keep].reset_index(drop=True)


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows are online, offline and never heard, and how many boards unassigned."""
    counts = {status: int(table["status"].eq(status).sum()) for status in STATUSES}
    counts[UNASSIGNED] = int(table["cabinet_id"].eq("").sum())
    return counts


def unassigned_boards(table: pd.DataFrame) -> pd.DataFrame:
    """The boards heard that no active cabinet claims, by relayId (a stable order to pick
    from while their last-seen times change)."""
    boards = table[table["cabinet_id"].eq("")]
    return boards.sort_values("relay", ignore_index=True)
