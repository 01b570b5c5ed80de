"""Registry use cases on the embedded database: the role is checked before the store."""

from __future__ import annotations

from typing import Any

import pytest

from smib_core.auth import Principal, Role
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.services import registry as service
from smib_core.store.audit import AuditTrail
from smib_core.store.registry import Registry

pytestmark = pytest.mark.integration

TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("max", Role.MANAGER)
RELAY = "e831cdfa8384"


@pytest.fixture
def registry(mongo_db: Any) -> Registry:
    return Registry(mongo_db)


def test_a_managers_forged_changes_are_refused_and_nothing_is_stored(
    registry: Registry, mongo_db: Any
) -> None:
    floor = registry.add_location("Main floor", "setup")
    with pytest.raises(PermissionDenied, match="manager role does not allow"):
        service.add_location(registry, MANAGER, "Terrace")
    with pytest.raises(PermissionDenied):
        service.adopt(
            registry, MANAGER, RELAY, name="Forged", denomination=0.01, location_id=floor.id
        )
    with pytest.raises(PermissionDenied, match="Sign in"):
        service.retire_location(registry, None, floor.id)
    assert [loc.name for loc in registry.locations()] == ["Main floor"]
    assert registry.cabinets() == []
    refused = AuditTrail(mongo_db).query()
    refused = refused[refused["outcome"] == "refused"]
    assert sorted(refused["actor"]) == ["(not signed in)", "max", "max"]
    assert sorted(refused["kind"]) == ["cabinet_add", "location_add", "location_retire"]


def test_a_technician_adopts_a_board_into_a_new_location(registry: Registry, mongo_db: Any) -> None:
    name = service.next_cabinet_name(registry)
    cabinet = service.adopt(
        registry, TECH, RELAY.upper(), name=name, denomination="0.25", new_location=" Terrace "
    )
    assert (cabinet.name, cabinet.relay, cabinet.denomination) == ("Cabinet 001", RELAY, 0.25)
    terrace = registry.location(cabinet.location_id)
    assert terrace.name == "Terrace"
    again = service.adopt(
        registry,
        TECH,
        "a0b1c2d3e4f5",
        name=service.next_cabinet_name(registry),
        denomination=0.01,
        new_location="terrace",
    )
    assert again.location_id == terrace.id and again.name == "Cabinet 002"
    kinds = AuditTrail(mongo_db).query(person="tina")["kind"].tolist()
    assert kinds == ["cabinet_add", "cabinet_add", "location_add"]


def test_bad_input_is_refused_before_anything_is_made(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="a number"):
        service.adopt(registry, TECH, RELAY, name="X", denomination="cheap", new_location="New")
    with pytest.raises(InvalidInput, match="not a relay id"):
        service.adopt(registry, TECH, "ab#", name="X", denomination=0.01, new_location="New")
    with pytest.raises(InvalidInput, match="choose a location"):
        service.adopt(registry, TECH, RELAY, name="X", denomination=0.01)
    assert registry.locations() == [] and registry.cabinets() == []


def test_edit_and_retire_through_the_service(registry: Registry) -> None:
    floor = service.add_location(registry, TECH, "Main floor", notes="ground level")
    cabinet = service.add_cabinet(
        registry, TECH, {"name": "Buffalo 7", "location_id": floor.id, "denomination": "0.05"}
    )
    service.update_cabinet(registry, TECH, cabinet.id, {"relay": RELAY, "game": "Buffalo"})
    assert registry.cabinet_for_relay(RELAY) == registry.cabinet(cabinet.id)
    with pytest.raises(InvalidInput, match="cabinet"):
        service.retire_location(registry, TECH, floor.id)
    table = service.locations_table(registry)
    assert table[["name", "cabinets", "notes"]].values.tolist() == [
        ["Main floor", 1, "ground level"]
    ]
    service.retire_cabinet(registry, TECH, cabinet.id)
    service.rename_location(registry, TECH, floor.id, "Old floor")
    service.retire_location(registry, TECH, floor.id)
    assert service.locations_table(registry).empty
    retired = service.locations_table(registry, include_retired=True)
    assert retired[["name", "cabinets", "retired"]].values.tolist() == [["Old floor", 0, True]]
    assert service.next_cabinet_name(registry) == "Cabinet 001"


@pytest.mark.parametrize(
    "value, choice",
    [
        (0.01, "0.01"),
        (0.1, "0.10"),
        (1.0, "1.00"),
        (0.03, "other"),
        (0.015, "other"),
        (5.0, "other"),
        (None, "0.01"),
    ],
)
def test_denomination_presets(value: float | None, choice: str) -> None:
    assert service.denomination_choice(value) == choice
    assert service.chosen_denomination(choice, "2.5") == ("2.5" if choice == "other" else choice)
