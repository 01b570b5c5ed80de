"""Live sections and actions check the session first: an idle session or a disabled
account stops an auto-refreshing section before it draws or sends anything, and the
services refuse a disabled account whatever principal the session still holds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from smib_core import protocol
from smib_core.auth import Principal, Role
from smib_core.errors import PermissionDenied
from smib_core.services.actions import BoardActions
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore, refreshed_principal
from smib_core.store.alerts import AlertStore
from smib_core.store.audit import AuditTrail, utc_now
from smib_core.ui import resources

TECH = Principal("tina", Role.TECHNICIAN)
R1 = "e831cdfa8384"
CABINET = str(Path(__file__).resolve().parents[1] / "pages" / "cabinet.py")


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def record(self, *args: Any, **kwargs: Any) -> str:
        self.records.append(args)
        return str(len(self.records))

    def update_outcome(self, *args: Any, **kwargs: Any) -> None: ...


def _section() -> None:
    import streamlit as st

    from smib_core.ui.session import live_section

    @live_section("2s")
    def live() -> None:
        st.text("the section ran")

    live()


def _open(
    monkeypatch: pytest.MonkeyPatch, idle_min: float, account: Principal | None
) -> tuple[AppTest, Audit]:
    audit = Audit()
    monkeypatch.setattr(resources, "get_settings", lambda: Settings(session_idle_min=30))
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: account)
    app = AppTest.from_function(_section, default_timeout=20)
    app.session_state["principal"] = TECH
    app.session_state["last_activity"] = utc_now() - timedelta(minutes=idle_min)
    return app.run(), audit


def test_a_live_section_runs_for_a_live_session(monkeypatch: pytest.MonkeyPatch) -> None:
    app, audit = _open(monkeypatch, 5, TECH)
    assert [t.value for t in app.text] == ["the section ran"]
    assert app.session_state["principal"] == TECH and audit.records == []


def test_a_live_section_does_not_run_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, audit = _open(monkeypatch, 31, TECH)
    assert not app.exception and not app.text
    assert "principal" not in app.session_state
    assert "without activity" in app.session_state["session_notice"]
    assert audit.records == [("tina", "sign_out", [], {"reason": "idle for 30 min"}, "ok")]


def test_a_live_section_does_not_run_for_a_disabled_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = _open(monkeypatch, 1, None)
    assert not app.text and "principal" not in app.session_state


class SilentBus:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: {} if name == "latest_config" else None

    def send(self, relay: str, command: Any) -> None:
        self.sent.append((relay, command.kind))


def test_the_cabinet_page_sends_nothing_for_an_idle_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = SilentBus()
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings(session_idle_min=30))
    monkeypatch.setattr(resources, "get_audit", Audit)
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(CABINET, default_timeout=20)
    app.session_state["principal"] = TECH
    app.session_state["last_activity"] = utc_now() - timedelta(minutes=31)
    app.query_params["relay"] = R1
    app.run()
    assert bus.sent == []
    assert "principal" not in app.session_state


# --- the services check the account in the database ------------------------------------


@pytest.fixture
def accounts(mongo_db: Any) -> AccountStore:
    store = AccountStore(mongo_db, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    store.create("tina", Role.TECHNICIAN, "a long enough password", actor="test")
    store.create("root", Role.ADMIN, "a long enough password", actor="test")
    return store


class Bus:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, relay: str, command: Any) -> None:
        self.sent.append(command.kind)


@pytest.mark.integration
def test_board_actions_refuse_a_disabled_account_or_a_lowered_role(
    mongo_db: Any, accounts: AccountStore
) -> None:
    bus = Bus()
    audit = AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, TECH, recheck=accounts.current)  # type: ignore[arg-type]
    actions.send_command([R1], protocol.config_read("app"))
    accounts.set_role("tina", "analyst", actor="root")
    with pytest.raises(PermissionDenied, match="analyst role"):
        actions.send_command([R1], protocol.config_read("app"))
    accounts.set_role("tina", "technician", actor="root")
    accounts.disable("tina", actor="root")
    with pytest.raises(PermissionDenied, match="disabled"):
        actions.send_command([R1], protocol.config_read("app"))
    assert bus.sent == ["config_read"]
    outcomes = audit.query(kind="config_read")["outcome"].tolist()
    assert sorted(outcomes) == ["refused", "refused", "sent"]


@pytest.mark.integration
def test_an_alert_is_not_acknowledged_in_a_disabled_account_s_name(
    mongo_db: Any, accounts: AccountStore
) -> None:
    alerts = AlertStore(mongo_db)
    alert, _ = alerts.raise_alert("ram_clear", R1, "meters fell")
    accounts.disable("tina", actor="root")
    assert refreshed_principal(mongo_db, TECH) is None
    with pytest.raises(PermissionDenied, match="disabled"):
        alerts.acknowledge(alert.id, TECH)
    assert alerts.get(alert.id).acknowledged_at is None


def test_a_live_section_stops_when_the_role_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    lowered = Principal("tina", Role.ANALYST)
    app, _ = _open(monkeypatch, 1, lowered)
    assert not app.text  # the whole app reruns for the new role's navigation instead
    assert app.session_state["principal"] == lowered
