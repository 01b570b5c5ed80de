"""The fleet table from a fake bus and a registry frame: status, unassigned, filters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from smib_core.inbox import InboxEntry
from smib_core.protocol import ConfigReply, MeterReply
from smib_core.sas import MeterReading
from smib_core.services.fleet import (
    FLEET_COLUMNS,
    filter_fleet,
    fleet_table,
    latest_meter_replies,
    status_counts,
    unassigned_boards,
)

NOW = 1_750_000_000.0
R1, R2, R3, R4 = "e831cdfa8384", "a0b1c2d3e4f5", "0123456789ab", "ffeeddccbbaa"


@dataclass
class FakeBus:
    seen: dict[str, float] = field(default_factory=dict)
    config: dict[str, dict[str, tuple[Mapping[str, Any], float]]] = field(default_factory=dict)
    inboxes: dict[str, list[InboxEntry]] = field(default_factory=dict)

    def relays_seen(self) -> dict[str, float]:
        return dict(self.seen)

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        return self.config.get(relay, {})

    def inbox(self, relay: str) -> list[InboxEntry]:
        return self.inboxes.get(relay, [])


def registry_frame(*rows: tuple[str, str, str, str | None]) -> pd.DataFrame:
    """(id, name, location, relay) rows, as `Registry.frame()` gives them."""
    return pd.DataFrame(
        [
            {"id": i, "name": n, "location": loc, "relay": r, "retired": False}
            for i, n, loc, r in rows
        ],
        columns=["id", "name", "location", "relay", "retired"],
    )


def meter_reply(relay: str, ok: bool = True) -> MeterReply:
    reading = MeterReading(1, "6F", 0, ()) if ok else None
    failure, check = (None, None) if ok else ("crc: bad", "crc")
    return MeterReply(
        relay, "rsp", "sas/gy/server", reading=reading, failure=failure, failure_check=check
    )


@pytest.fixture
def bus() -> FakeBus:
    app = {"firmware": "cloudy", "version": "v0.0.2"}
    return FakeBus(
        seen={R1: NOW - 5, R2: NOW - 300, R3: NOW - 12},
        config={R1: {"app": (app, NOW - 60), "coms": ({"comsMode": 1}, NOW - 60)}},
    )


@pytest.fixture
def registry() -> pd.DataFrame:
    return registry_frame(
        ("c1", "Buffalo 7", "Main floor", R1),
        ("c2", "Cleopatra 2", "Terrace", R2),
        ("c4", "Dancing Drums", "Main floor", R4),
        ("c5", "No board yet", "Terrace", None),
    )


def table(registry: pd.DataFrame, bus: FakeBus, offline_after_s: float = 120) -> pd.DataFrame:
    return fleet_table(registry, bus, None, now=NOW, offline_after_s=offline_after_s)


def test_status_from_last_seen_and_the_threshold(registry: pd.DataFrame, bus: FakeBus) -> None:
    rows = table(registry, bus).set_index("relay")
    assert list(table(registry, bus).columns) == FLEET_COLUMNS
    assert rows.loc[R1, "status"] == "online" and rows.loc[R1, "seen"] == "5 s ago"
    assert rows.loc[R2, "status"] == "offline" and rows.loc[R2, "seen"] == "5 min ago"
    assert rows.loc[R1, ["firmware", "version", "comms"]].tolist() == [
        "cloudy",
        "v0.0.2",
        "non-SAS",
    ]

    def status(relay: str, after: float) -> str:
        return str(
            table(registry, bus, offline_after_s=after).set_index("relay").loc[relay, "status"]
        )

    assert status(R1, 4) == "offline"
    assert status(R2, 300) == "online"


def test_cabinets_never_heard_and_unassigned_boards(registry: pd.DataFrame, bus: FakeBus) -> None:
    rows = table(registry, bus)
    assert rows["cabinet"].tolist() == [
        "Buffalo 7",
        "Dancing Drums",
        "Cleopatra 2",
        "No board yet",
        "unassigned",
    ]
    never = rows[rows["status"] == "never heard"]
    assert never["cabinet"].tolist() == ["Dancing Drums", "No board yet"]
    assert never["seen"].tolist() == ["never", "never"] and never["last_seen"].isna().all()
    stray = unassigned_boards(rows)
    assert stray[["relay", "status", "location", "cabinet_id"]].values.tolist() == [
        [R3, "online", "", ""]
    ]
    assert status_counts(rows) == {"online": 2, "offline": 1, "never heard": 2, "unassigned": 1}


def test_retired_cabinets_are_left_out_and_free_their_board(bus: FakeBus) -> None:
    frame = registry_frame(("c1", "Old", "Main floor", R1))
    frame["retired"] = True
    rows = table(frame, bus)
    assert "Old" not in set(rows["cabinet"])
    assert set(rows["relay"]) == {R1, R2, R3} and set(rows["cabinet"]) == {"unassigned"}


def test_an_empty_registry_and_a_silent_bus_give_an_empty_table() -> None:
    empty = registry_frame()
    rows = fleet_table(empty, FakeBus(), None, now=NOW)
    assert rows.empty and list(rows.columns) == FLEET_COLUMNS
    assert status_counts(rows) == {"online": 0, "offline": 0, "never heard": 0, "unassigned": 0}
    assert filter_fleet(rows, ["Main floor"], ["online"], "x").empty


def test_last_meter_reading_is_the_newest_of_snapshots_and_the_bus(
    registry: pd.DataFrame, bus: FakeBus
) -> None:
    bus.inboxes[R1] = [
        InboxEntry(1, NOW - 50, meter_reply(R1)),
        InboxEntry(2, NOW - 40, meter_reply(R1, ok=False)),  # a failed read is no reading
        InboxEntry(3, NOW - 30, ConfigReply(R1, "cfg", "smib/config", "app", {})),
    ]
    bus.inboxes[R2] = [InboxEntry(4, NOW - 400, meter_reply(R2))]
    assert latest_meter_replies(bus, [R1, R2, R3]) == {
        R1: datetime.fromtimestamp(NOW - 50, UTC),
        R2: datetime.fromtimestamp(NOW - 400, UTC),
    }
    snapshots = {
        R1: datetime.fromtimestamp(NOW - 900, UTC),  # older than the bus's reply
        R2: datetime.fromtimestamp(NOW - 100, UTC).replace(tzinfo=None),  # naive: UTC
        R4: datetime.fromtimestamp(NOW - 7200, UTC),  # a board not heard since
    }
    rows = fleet_table(registry, bus, snapshots, now=NOW).set_index("relay")
    reading = rows["last_meter_reading"]
    assert reading[R1] == pd.Timestamp(NOW - 50, unit="s", tz="UTC")
    assert reading[R2] == pd.Timestamp(NOW - 100, unit="s", tz="UTC")
    assert reading[R4] == pd.Timestamp(NOW - 7200, unit="s", tz="UTC")
    assert pd.isna(reading[R3])


def test_filters_by_location_status_and_search(registry: pd.DataFrame, bus: FakeBus) -> None:
    rows = table(registry, bus)

    def names(**kwargs: Any) -> list[str]:
        return filter_fleet(rows, **kwargs)["cabinet"].tolist()

    assert names() == rows["cabinet"].tolist()
    assert names(locations=["Main floor"]) == ["Buffalo 7", "Dancing Drums"]
    assert names(statuses=["offline", "never heard"]) == [
        "Dancing Drums",
        "Cleopatra 2",
        "No board yet",
    ]
    assert names(statuses=["unassigned"]) == ["unassigned"]
    assert names(locations=["Terrace"], statuses=["never heard"]) == ["No board yet"]
    assert names(search="  CLEO ") == ["Cleopatra 2"]
    assert names(search="E831CD") == ["Buffalo 7"]
    assert names(search=R3[-4:]) == ["unassigned"]
    assert names(search="no such thing") == []
    assert names(search="[.*") == []  # searched as text, not as a pattern
