"""The import service on the embedded database: boards swapped between cabinets, a
stale preview refused, a role without the permission refused, an import killed midway
completed by importing the same file again, CSV files from Excel in other locales."""

from __future__ import annotations

from typing import Any

import pytest

from smib_core.auth import Principal, Role
from smib_core.csvsafe import neutralise_cell
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.services.cabinet_files import (
    cabinets_csv,
    cabinets_frame,
    read_cabinet_file,
    rows_of,
)
from smib_core.services.cabinet_import import ImportRejected, import_cabinets, plan_import
from smib_core.store.registry import Registry

pytestmark = pytest.mark.integration

TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("max", Role.MANAGER)


@pytest.fixture
def registry(mongo_db: Any) -> Registry:
    registry = Registry(mongo_db)
    floor = registry.add_location("Main floor", "setup")
    for n, relay in enumerate(("aa0000000001", "aa0000000002", "aa0000000003"), start=1):
        values = {"name": f"Slot {n}", "location_id": floor.id, "relay": relay}
        registry.add_cabinet({**values, "denomination": 0.01, "serial": f"S{n}"}, "setup")
    return registry


def relays(registry: Registry) -> dict[str, str | None]:
    return {c.name: c.relay for c in registry.cabinets()}


def test_boards_swap_between_cabinets_of_one_file(registry: Registry) -> None:
    swap = rows_of(
        [
            {"name": "Slot 1", "relay": "aa0000000002"},
            {"name": "Slot 2", "relay": "aa0000000001"},
            {"name": "Slot 4", "location": "Main floor", "denomination": "0.05", "relay": ""},
        ]
    )
    plan = import_cabinets(registry, TECH, swap)
    assert plan.summary() == "1 added, 2 updated, 0 unchanged"
    assert relays(registry) == {
        "Slot 1": "aa0000000002",
        "Slot 2": "aa0000000001",
        "Slot 3": "aa0000000003",
        "Slot 4": None,
    }


def test_a_board_kept_by_a_cabinet_outside_the_file_is_refused(registry: Registry) -> None:
    with pytest.raises(ImportRejected) as caught:
        plan_import(registry, rows_of([{"name": "Slot 1", "relay": "AA0000000003"}]))
    assert [str(p) for p in caught.value.problems] == [
        "row 2, relay: board aa0000000003 belongs to cabinet 'Slot 3', which this file does "
        "not change: retire it or give it another board first"
    ]


def test_serial_and_name_pointing_at_two_cabinets_is_refused(registry: Registry) -> None:
    with pytest.raises(ImportRejected, match=r"row 2, name: serial 'S1' is cabinet 'Slot 1'"):
        plan_import(registry, rows_of([{"name": "Slot 2", "serial": "S1"}]))


def test_a_stale_preview_is_not_applied(registry: Registry) -> None:
    changes = rows_of([{"name": "Slot 1", "par": "7.5"}])
    preview = import_cabinets(registry, TECH, changes, dry_run=True)
    assert preview.table().to_dict("records") == [
        {"row": 2, "action": "update", "cabinet": "Slot 1", "changes": "par (empty) -> 7.5"}
    ]
    slot = next(c for c in registry.cabinets() if c.name == "Slot 1")
    registry.update_cabinet(slot.id, {"par": 9}, "someone else")
    with pytest.raises(InvalidInput, match="the registry changed since this preview"):
        import_cabinets(registry, TECH, changes, expected=preview)
    assert registry.cabinet(slot.id).par == 9
    fresh = import_cabinets(registry, TECH, changes, dry_run=True)
    import_cabinets(registry, TECH, changes, expected=fresh)
    assert registry.cabinet(slot.id).par == 7.5


def test_a_manager_may_not_import(registry: Registry, mongo_db: Any) -> None:
    with pytest.raises(PermissionDenied):
        import_cabinets(registry, MANAGER, rows_of([{"name": "Slot 9"}]))
    refused = list(mongo_db["audit"].find({"kind": "cabinet_import"}))
    assert [(d["actor"], d["outcome"]) for d in refused] == [("max", "refused")]


def test_an_import_killed_midway_is_completed_by_importing_again(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"name": f"New {n}", "location": "Main floor", "denomination": "0.25", "serial": f"N{n}"}
        for n in range(6)
    ]
    file = rows_of(rows)
    real_add = registry.add_cabinet
    calls = []

    def dies_at_the_fourth(values: Any, actor: str, **kwargs: Any) -> Any:
        calls.append(values["name"])
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill would stop it: between two writes
        return real_add(values, actor, **kwargs)

    monkeypatch.setattr(registry, "add_cabinet", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        import_cabinets(registry, TECH, file)
    monkeypatch.setattr(registry, "add_cabinet", real_add)
    assert len([c for c in registry.cabinets() if c.name.startswith("New")]) == 3
    plan = import_cabinets(registry, TECH, file)
    assert plan.summary() == "3 added, 0 updated, 3 unchanged"
    names = sorted(c.name for c in registry.cabinets() if c.name.startswith("New"))
    assert names == [f"New {n}" for n in range(6)]


def test_csv_from_excel_in_another_locale_reads(registry: Registry) -> None:
    data = "Name;Location;Denomination;Par\r\nCafé 1;Main floor;0.10;9,5%\r\n".encode("cp1252")
    file = read_cabinet_file(data, "machines.CSV")
    assert file.columns == ("name", "location", "denomination", "par")
    with pytest.raises(ImportRejected, match="row 2, par: par must be a percentage"):
        plan_import(registry, file)
    fixed = read_cabinet_file(data.replace(b"9,5%", b"9.5%"), "machines.csv")
    plan = plan_import(registry, fixed)
    assert [(c.action, c.name, c.values["par"]) for c in plan.changes] == [("add", "Café 1", 9.5)]


def test_export_neutralises_formula_cells(registry: Registry) -> None:
    assert [neutralise_cell(t) for t in ("=1+1", "+1", "-1", "@x", "\tx", "\rx", "ok", "")] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@x",
        "'\tx",
        "'\rx",
        "ok",
        "",
    ]
    slot = registry.cabinets()[0]
    registry.update_cabinet(slot.id, {"game": "=cmd|' /C calc'!A0"}, "setup")
    text = cabinets_csv(cabinets_frame(registry)).decode("utf-8-sig")
    assert "'=cmd|' /C calc'!A0" in text
    again = plan_import(registry, read_cabinet_file(text.encode(), "back.csv"))
    assert {c.action for c in again.changes} == {"unchanged"}
