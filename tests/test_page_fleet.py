"""The fleet page: empty fleet, an unassigned board adopted in two clicks, role checks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.inbox import InboxEntry
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.registry import Registry
from smib_core.ui import resources

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "fleet.py")
TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("max", Role.MANAGER)
RELAY = "e831cdfa8384"


@dataclass
class QuietBus:
    seen: dict[str, float] = field(default_factory=dict)

    def relays_seen(self) -> dict[str, float]:
        return dict(self.seen)

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        return {}

    def inbox(self, relay: str) -> list[InboxEntry]:
        return []


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch, who: Principal, bus: QuietBus) -> AppTest:
    audit = AuditTrail(mongo_db)
    registry = Registry(mongo_db, audit)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings(offline_after_s=60))
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "get_registry", lambda: registry)
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = who
    return app.run()


def metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def test_an_empty_fleet_says_what_to_do(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(mongo_db, monkeypatch, TECH, QuietBus())
    assert not app.exception
    assert "No cabinet is registered and no board has been heard" in app.info[0].value
    zero = {"Online": "0", "Offline": "0", "Never heard": "0", "Unassigned boards": "0"}
    assert metrics(app) == zero
    assert any("Every board the console hears belongs" in c.value for c in app.caption)
    assert any("last updated" in c.value for c in app.caption)


def test_a_technician_adopts_an_unassigned_board_in_two_clicks(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, TECH, QuietBus({RELAY: time.time()}))
    assert metrics(app)["Unassigned boards"] == "1" and metrics(app)["Online"] == "1"
    table = app.dataframe[0].value
    assert table[["cabinet", "relay", "status"]].values.tolist() == [
        ["unassigned", RELAY, "online"]
    ]
    pick = next(group for group in app.button_group if group.options == [RELAY])
    pick.set_value(RELAY).run()  # first click: the board
    adopt = next(b for b in app.button if b.label == "Adopt")
    adopt.click().run()  # second click: Adopt, with the pre-filled name and location
    assert not app.exception
    assert f"Board {RELAY} is now cabinet Cabinet 001 in Main floor." in app.success[0].value
    cabinet = Registry(mongo_db).cabinet_for_relay(RELAY)
    assert cabinet is not None and cabinet.name == "Cabinet 001" and cabinet.denomination == 0.01
    assert metrics(app)["Unassigned boards"] == "0"
    assert app.dataframe[0].value["cabinet"].tolist() == ["Cabinet 001"]


def test_a_manager_sees_unassigned_boards_but_cannot_adopt(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, MANAGER, QuietBus({RELAY: time.time() - 600}))
    assert not app.exception
    assert metrics(app)["Offline"] == "1"
    assert any("A technician can adopt them" in c.value for c in app.caption)
    assert all(group.options != [RELAY] for group in app.button_group)
    assert not [b for b in app.button if b.label == "Adopt"]


def test_a_role_without_the_permission_sees_nothing(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, Principal("ann", Role.ANALYST), QuietBus())
    assert "does not allow" in app.error[0].value
    assert not app.dataframe and not app.metric
