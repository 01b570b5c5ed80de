"""The registry page: empty registry, add through the forms, bad input, role checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.registry import Registry
from smib_core.ui import resources
from smib_core.ui.plain import escape_markdown
from tests.test_page_fleet import QuietBus

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "registry.py")
TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("max", Role.MANAGER)


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch, who: Principal) -> AppTest:
    audit = AuditTrail(mongo_db)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings())
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "get_registry", lambda: Registry(mongo_db, audit))
    monkeypatch.setattr(resources, "get_bus", QuietBus)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = who
    return app.run()


def submit(app: AppTest, label: str) -> AppTest:
    return next(b for b in app.button if b.label == label).click().run()


def test_an_empty_registry_says_what_to_do(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(mongo_db, monkeypatch, TECH)
    assert not app.exception
    assert [t.label for t in app.tabs] == ["Locations", "Cabinets", "Import and export"]
    infos = [i.value for i in app.info]
    assert any("No location yet" in text and "Add the first one" in text for text in infos)
    assert any("Add a location first" in text for text in infos)


def test_add_a_location_then_a_cabinet_with_another_denomination(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, TECH)
    next(t for t in app.text_input if t.label == "Name").input("Main floor")
    app = submit(app, "Add the location")
    assert not app.exception
    assert app.success[0].value == "Location Main floor added."
    assert app.dataframe[0].value["name"].tolist() == ["Main floor"]

    fields = {t.label: t for t in app.text_input}
    fields["Cabinet name"].input("Buffalo 7")
    fields["Board (relayId)"].input(" E831CDFA8384 ")
    fields["Other denomination"].input("2.50")
    next(s for s in app.selectbox if s.label == "Denomination").set_value("other")
    next(n for n in app.number_input if n.label == "Par (%)").set_value(8.5)
    app = submit(app, "Add the cabinet")
    assert not app.exception
    assert app.success[0].value == "Cabinet Buffalo 7 added."
    cabinet = Registry(mongo_db).cabinet_for_relay("e831cdfa8384")
    assert cabinet is not None
    assert (cabinet.name, cabinet.denomination, cabinet.par) == ("Buffalo 7", 2.5, 8.5)


def test_bad_input_shows_a_sentence_and_stores_nothing(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(mongo_db).add_location("Main floor", "setup")
    app = page(mongo_db, monkeypatch, TECH)
    fields = {t.label: t for t in app.text_input}
    fields["Cabinet name"].input("Buffalo 7")
    fields["Board (relayId)"].input("not-a-board")
    app = submit(app, "Add the cabinet")
    assert not app.exception
    assert any("relay id" in e.value and e.value.endswith(".") for e in app.error)
    assert Registry(mongo_db).cabinets() == []
    assert {t.label: t.value for t in app.text_input}["Cabinet name"] == "Buffalo 7"


def test_a_manager_reads_but_gets_no_forms(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    Registry(mongo_db).add_location("Main floor", "setup")
    app = page(mongo_db, monkeypatch, MANAGER)
    assert not app.exception
    assert app.dataframe[0].value["name"].tolist() == ["Main floor"]
    assert not app.text_input and not [b for b in app.button if b.label == "Retire"]
    assert any("a technician or an administrator changes" in c.value for c in app.caption)


def test_a_role_without_the_permission_sees_nothing(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, Principal("ann", Role.ANALYST))
    assert "does not allow" in app.error[0].value
    assert not app.dataframe and not app.tabs


MACHINES = b"""name,location,relay,denomination,serial,par
Buffalo 7,Main floor,e831cdfa8384,0.01,SN-1,8.5
Cleo 2,Terrace,,0.25,SN-2,
"""


def upload(app: AppTest, name: str, data: bytes) -> AppTest:
    app.file_uploader[0].set_value((name, data, "text/csv"))
    return app.run()


def test_import_shows_the_changes_then_applies_them_on_confirm(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(mongo_db)
    floor = registry.add_location("Main floor", "setup")
    registry.add_cabinet(
        {"name": "Buffalo 7", "location_id": floor.id, "denomination": 0.05, "serial": "SN-1"},
        "setup",
    )
    app = page(mongo_db, monkeypatch, TECH)
    app = upload(app, "machines.csv", MACHINES)
    assert not app.exception
    assert any("there is no location 'Terrace'" in str(d.value) for d in app.dataframe)
    assert any("nothing will be imported" in e.value for e in app.error)

    next(c for c in app.checkbox if c.label.startswith("Create the locations")).check()
    app = app.run()
    plan = app.dataframe[-1].value
    assert plan.to_dict("records") == [
        {
            "row": 2,
            "action": "update",
            "cabinet": "Buffalo 7",
            "changes": "relay (empty) -> e831cdfa8384; denomination 0.05 -> 0.01; "
            "par (empty) -> 8.5",
        },
        {
            "row": 3,
            "action": "add",
            "cabinet": "Cleo 2",
            "changes": "name Cleo 2; location Terrace; denomination 0.25; serial SN-2",
        },
    ]
    assert len(Registry(mongo_db).cabinets()) == 1  # a preview writes nothing
    app = submit(app, "Import these changes")
    assert not app.exception
    assert app.success[0].value == escape_markdown(  # the file name came from the user
        "Imported machines.csv: 1 added, 1 updated, 0 unchanged; new locations: Terrace."
    )
    cabinets = {c.name: c for c in Registry(mongo_db).cabinets()}
    assert (cabinets["Buffalo 7"].relay, cabinets["Buffalo 7"].par) == ("e831cdfa8384", 8.5)
    assert cabinets["Cleo 2"].denomination == 0.25
    assert not app.file_uploader[0].value  # the uploader comes back empty
    kinds = [d["kind"] for d in mongo_db["audit"].find({"actor": "tina"})]
    assert sorted(kinds) == ["cabinet_add", "cabinet_edit", "cabinet_import", "location_add"]


def test_a_bad_file_lists_each_problem_and_offers_no_import(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(mongo_db).add_location("Main floor", "setup")
    app = page(mongo_db, monkeypatch, TECH)
    bad = MACHINES.replace(b"0.01", b"free").replace(b"Terrace", b"Main floor")
    app = upload(app, "machines.csv", bad)
    assert not app.exception
    problems = app.dataframe[-1].value
    assert list(problems.itertuples(index=False, name=None)) == [
        (2, "denomination", "the denomination must be a number such as 0.01")
    ]
    assert not [b for b in app.button if b.label == "Import these changes"]
    assert Registry(mongo_db).cabinets() == []


def test_a_manager_can_download_but_not_import(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, MANAGER)
    assert [b.label for b in app.get("download_button")] == [
        "Download the cabinets (Excel)",
        "Download the cabinets (CSV)",
    ]
    assert not app.file_uploader
