"""The registry on the embedded database: locations, cabinets, adoption, audit."""

from __future__ import annotations

from typing import Any

import pytest

from smib_core.errors import InvalidInput
from smib_core.services.demo import DEMO_LOCATIONS, register_demo_fleet
from smib_core.store.audit import AuditTrail
from smib_core.store.registry import Registry, parse_denomination

pytestmark = pytest.mark.integration
RELAY = "e831cdfa8384"


@pytest.fixture
def registry(mongo_db: Any) -> Registry:
    return Registry(mongo_db)


def test_add_edit_retire_cabinet_is_audited(registry: Registry, mongo_db: Any) -> None:
    floor = registry.add_location("Main floor", "alice")
    cab = registry.add_cabinet(
        {
            "name": "Buffalo 7",
            "location_id": floor.id,
            "relay": " E831CDFA8384 ",
            "denomination": "0.25",
            "serial": "SN1",
        },
        "alice",
    )
    assert cab.relay == RELAY and cab.denomination == 0.25
    assert registry.cabinet_for_relay(RELAY) == cab
    edited = registry.update_cabinet(cab.id, {"game": "Buffalo Gold"}, "bob")
    assert edited.game == "Buffalo Gold" and edited.updated_at is not None
    registry.retire_cabinet(cab.id, "bob")
    assert registry.cabinets() == [] and registry.cabinet_for_relay(RELAY) is None
    kinds = list(AuditTrail(mongo_db).query()["kind"])
    assert kinds == ["cabinet_retire", "cabinet_edit", "cabinet_add", "location_add"]
    edit = mongo_db["audit"].find_one({"kind": "cabinet_edit"})
    assert edit["detail"]["before"] == {"game": ""}
    assert edit["detail"]["after"] == {"game": "Buffalo Gold"}


def test_a_relay_belongs_to_one_active_cabinet(registry: Registry) -> None:
    floor = registry.add_location("Floor", "a")
    first = registry.adopt(RELAY, "One", floor.id, 0.01, "a")
    with pytest.raises(InvalidInput, match="already belongs to One"):
        registry.adopt(RELAY, "Two", floor.id, 0.01, "a")
    registry.retire_cabinet(first.id, "a")
    assert registry.adopt(RELAY, "Two", floor.id, 0.01, "a").name == "Two"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"name": ""}, "name is required"),
        ({"relay": "ab#"}, "not a relay id"),
        ({"denomination": "0"}, "above 0"),
        ({"denomination": "cheap"}, "a number"),
        ({"location_id": "nowhere"}, "no location"),
    ],
)
def test_bad_values_are_refused(registry: Registry, values: dict[str, Any], message: str) -> None:
    floor = registry.add_location("Floor", "a")
    good = {"name": "X", "location_id": floor.id, "relay": RELAY, "denomination": 0.01}
    with pytest.raises(InvalidInput, match=message):
        registry.add_cabinet({**good, **values}, "a")
    assert registry.cabinets() == []


def test_unassigned_and_frame(registry: Registry) -> None:
    floor = registry.add_location("Floor", "a")
    registry.adopt(RELAY, "One", floor.id, 0.05, "a")
    assert registry.unassigned([RELAY, "0123456789ab"]) == ["0123456789ab"]
    frame = registry.frame()
    assert list(frame["location"]) == ["Floor"] and list(frame["relay"]) == [RELAY]


def test_retire_location_needs_it_empty(registry: Registry) -> None:
    floor = registry.add_location("Floor", "a")
    cab = registry.adopt(RELAY, "One", floor.id, 0.05, "a")
    with pytest.raises(InvalidInput, match="cabinet"):
        registry.retire_location(floor.id, "a")
    registry.retire_cabinet(cab.id, "a")
    registry.retire_location(floor.id, "a")
    assert registry.locations() == []


def test_demo_fleet_registers_each_relay_once(registry: Registry) -> None:
    relays = [f"{n:012x}" for n in range(1, 8)]
    own = {relays[0]: 0.02}
    assert register_demo_fleet(registry, relays, "demo", denominations=own) == 7
    assert register_demo_fleet(registry, relays, "demo") == 0
    assert {loc.name for loc in registry.locations()} == set(DEMO_LOCATIONS)
    assert sorted(c.relay for c in registry.cabinets() if c.relay) == relays
    assert len(registry.demo_cabinets()) == 7 and not registry.holds_real_cabinets()
    first = registry.cabinet_for_relay(relays[0])
    assert first is not None and first.denomination == 0.02


def test_parse_denomination() -> None:
    assert parse_denomination("$1") == 1.0 and parse_denomination(0.01) == 0.01
    with pytest.raises(InvalidInput):
        parse_denomination(True)
