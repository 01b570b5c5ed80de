"""The events and alerts pages (AppTest, embedded database): empty states, the tables,
acknowledging as a technician, and a manager who may look but not acknowledge."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.protocol import EventMessage
from smib_core.services.alerts import apply_event_alerts
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.alerts import AlertStore
from smib_core.store.audit import AuditTrail
from smib_core.store.events import CabinetContext, EventRecord, EventStore
from smib_core.store.registry import Registry
from smib_core.ui import resources

pytestmark = pytest.mark.integration

PAGES = Path(__file__).resolve().parents[1] / "pages"
TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("mona", Role.MANAGER)
R1 = "e831cdfa8384"


def open_page(name: str, mongo_db: Any, monkeypatch: pytest.MonkeyPatch, who: Principal) -> AppTest:
    audit = AuditTrail(mongo_db)
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings(offline_after_s=120))
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "get_registry", lambda: Registry(mongo_db, audit))
    with_account(mongo_db, who)
    app = AppTest.from_file(str(PAGES / name), default_timeout=20)
    app.session_state["principal"] = who
    return app.run()


def with_account(mongo_db: Any, who: Principal) -> None:
    """The principal's account exists: sections and actions check it in the database."""
    accounts = AccountStore(
        mongo_db, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    if accounts.get(who.name) is None:
        accounts.create(who.name, who.role, "a long enough password", actor="test")


def door_opened(mongo_db: Any) -> None:
    message = EventMessage(R1, "exp", "sas/gy/server", code="11", name="Slot door opened")
    record = EventRecord(
        message, datetime.now(UTC), CabinetContext("c1", "Cabinet 001", "main", "Main floor")
    )
    EventStore(mongo_db).record_many([record])
    apply_event_alerts(AlertStore(mongo_db), [record])


def test_events_page_empty(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = open_page("events.py", mongo_db, monkeypatch, MANAGER)
    assert not app.exception
    assert app.title[0].value == "Machine events"
    assert "No event matches these filters in the last 24 hours" in app.info[0].value
    assert any("Nothing new since then" in c.value for c in app.caption)
    assert [s.label for s in app.multiselect] == ["Location", "Cabinet", "Kind"]


def test_events_page_shows_stored_events(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    door_opened(mongo_db)
    app = open_page("events.py", mongo_db, monkeypatch, MANAGER)
    assert not app.exception
    table = app.dataframe[-1].value
    assert table[["cabinet", "event"]].values.tolist() == [["Cabinet 001", "Slot door opened"]]
    assert {m.label: m.value for m in app.metric}["Doors opened"] == "1"
    app.multiselect[2].select("bill").run()
    assert "No event matches" in app.info[0].value


def test_events_page_refuses_an_analyst(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = open_page("events.py", mongo_db, monkeypatch, Principal("ann", Role.ANALYST))
    assert "does not allow" in app.error[0].value


def test_alerts_page_empty(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = open_page("alerts.py", mongo_db, monkeypatch, TECH)
    assert not app.exception
    assert "No open alert" in app.success[0].value
    assert "not heard for 4 min" in app.caption[0].value
    assert any("No alert raised in the last 30 days" in c.value for c in app.caption)


def test_alerts_page_acknowledge(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    door_opened(mongo_db)
    manager = open_page("alerts.py", mongo_db, monkeypatch, MANAGER)
    assert not manager.exception
    assert "Slot door open" in manager.markdown[0].value
    assert manager.button(key=next(b.key for b in manager.button)).disabled

    app = open_page("alerts.py", mongo_db, monkeypatch, TECH)
    ack = next(b for b in app.button if b.label == "Acknowledge")
    assert not ack.disabled
    ack.click().run()
    assert not app.exception
    assert "Slot door open on Cabinet 001 acknowledged." in app.success[0].value
    history = app.dataframe[-1].value
    assert history[["alert", "acknowledged_by"]].values.tolist() == [["Slot door open", "tina"]]
    assert AlertStore(mongo_db).active() == []


def test_a_disabled_account_acknowledges_nothing(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`smib user disable` while the page is open: the next click ends the session."""
    door_opened(mongo_db)
    app = open_page("alerts.py", mongo_db, monkeypatch, TECH)
    with_account(mongo_db, Principal("root", Role.ADMIN))
    AccountStore(mongo_db).disable("tina", actor="root")
    next(b for b in app.button if b.label == "Acknowledge").click().run()
    assert not app.exception
    assert "principal" not in app.session_state
    assert [a.acknowledged_by for a in AlertStore(mongo_db).unacknowledged()] == [""]
    audit = AuditTrail(mongo_db).query(kind="alert_ack")
    assert audit.empty


def _banner() -> None:
    from smib_core.ui.alerts_banner import render_active_alerts

    render_active_alerts(limit=1)


def test_the_banner_lists_active_alerts(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    with_account(mongo_db, MANAGER)
    quiet = AppTest.from_function(_banner, default_timeout=20)
    quiet.session_state["principal"] = MANAGER
    quiet.run()
    assert not quiet.exception and not quiet.markdown  # nothing active: nothing shown
    door_opened(mongo_db)
    AlertStore(mongo_db).raise_alert("ram_clear", "e831cdfa8385", "meters fell")
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_function(_banner, default_timeout=20)
    app.session_state["principal"] = MANAGER
    app.run()
    assert not app.exception
    text = app.markdown[0].value
    assert "2 active alerts" in text and "RAM clear" in text and "and 1 more" in text
