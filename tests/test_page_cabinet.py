"""The cabinet page without a fleet: the empty state, a bad ?relay=, a cabinet with no
board, and a role that may not open it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.errors import RequestTimeout
from smib_core.store.audit import AUDIT_COLUMNS
from smib_core.store.registry import Cabinet, Location
from smib_core.ui import resources

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "cabinet.py")
TECH = Principal("tina", Role.TECHNICIAN)


class FakeRegistry:
    def __init__(self, cabinets: list[Cabinet] | None = None) -> None:
        self._cabinets = cabinets or []

    def locations(self, include_retired: bool = False) -> list[Location]:
        return [Location("floor", "Main floor")]

    def cabinets(self) -> list[Cabinet]:
        return self._cabinets

    def unassigned(self, relays_heard: Any) -> list[str]:
        return sorted(relays_heard)


class SilentBus:
    """A bus that heard nothing; what the page publishes is recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def relays_seen(self) -> dict[str, float]:
        return {}

    def last_seen(self, relay: str) -> float | None:
        return None

    def latest_config(self, relay: str) -> dict[str, Any]:
        return {}

    def firmware(self, relay: str) -> None:
        return None

    def send(self, relay: str, command: Any) -> None:
        self.sent.append((relay, dict(command.payload)))

    def request(self, relay: str, command: Any, timeout: float = 5.0) -> Any:
        self.send(relay, command)
        raise RequestTimeout(f"board {relay} did not answer")  # silent: heard nothing


class FakeAudit:
    def record(self, *args: Any, **kwargs: Any) -> str:
        return "0"

    def update_outcome(self, *args: Any, **kwargs: Any) -> None: ...

    def query(self, **filters: Any) -> pd.DataFrame:
        return pd.DataFrame(columns=AUDIT_COLUMNS)


def open_page(
    monkeypatch: pytest.MonkeyPatch, registry: FakeRegistry, who: Principal = TECH, **query: str
) -> tuple[AppTest, SilentBus]:
    bus = SilentBus()
    monkeypatch.setattr(resources, "get_registry", lambda: registry)
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    monkeypatch.setattr(resources, "get_audit", FakeAudit)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = who
    for name, value in query.items():
        app.query_params[name] = value
    return app.run(), bus


def page(monkeypatch: pytest.MonkeyPatch, registry: FakeRegistry, **query: str) -> AppTest:
    app, bus = open_page(monkeypatch, registry, **query)
    assert bus.sent == []
    return app


def test_no_cabinet_and_no_board_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(monkeypatch, FakeRegistry())
    assert not app.exception
    assert "No cabinet is registered and no board has been heard yet" in app.info[0].value
    assert not app.selectbox and not app.button


def test_an_invalid_relay_in_the_url_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    cabinet = Cabinet("c1", "Cabinet 001", "floor", None, 0.01)
    app = page(monkeypatch, FakeRegistry([cabinet]), relay="sas/relay/#")
    assert not app.exception
    assert "is not a relay id (12 hex digits" in app.error[0].value
    assert app.selectbox[0].value is None
    assert "Choose a cabinet or a board" in app.info[0].value


def test_a_cabinet_without_a_board(monkeypatch: pytest.MonkeyPatch) -> None:
    cabinet = Cabinet("c1", "Cabinet 001", "floor", None, 0.25, game="Cleopatra", par=8.5)
    app = page(monkeypatch, FakeRegistry([cabinet]), cabinet="c1")
    assert not app.exception
    assert app.title[0].value == "Cabinet 001"
    assert "Cleopatra · denomination 0.25 per credit · par 8.5%" in app.caption[0].value
    assert "This cabinet has no board yet" in app.info[0].value


def test_a_board_that_never_answered_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    app, bus = open_page(monkeypatch, FakeRegistry(), relay=" E831CDFA8384 ")
    assert not app.exception
    assert app.title[0].value == "Board e831cdfa8384"
    assert [payload for _, payload in bus.sent] == [
        {"typ": "cfg", "comp": comp} for comp in ("net", "mqtt", "coms", "ota", "app")
    ]
    assert {relay for relay, _ in bus.sent} == {"e831cdfa8384"}
    captions = " ".join(c.value for c in app.caption)
    assert captions.count("not answered yet") == 5
    assert "never heard" in [m.value for m in app.metric]
    assert len(app.info) == 4  # each edit tab: the form appears when the board answers
    assert "No configuration change has been recorded" in captions
    app.run()  # a rerun does not ask again
    assert len(bus.sent) == 5


def test_a_manager_sees_the_board_but_no_controls(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = Principal("max", Role.MANAGER)
    app, bus = open_page(monkeypatch, FakeRegistry(), manager, relay="e831cdfa8384")
    assert not app.exception
    headings = [h.value for h in app.subheader]
    assert "Live configuration" in headings and "Meters" in headings
    assert "Change the configuration" not in headings and "Maintenance" not in headings
    assert [b.label for b in app.button] == ["Ask the board again", "Read meters now"]
    assert len(bus.sent) == 5  # reading is allowed: the config reads went out


def test_a_role_without_fleet_access_sees_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "get_registry", FakeRegistry)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = Principal("ann", Role.ANALYST)
    app.run()
    assert "does not allow" in app.error[0].value
    assert not app.selectbox
