"""Every page shows times in the casino's local time with the zone named (SMIB_TIMEZONE
set to America/New_York, a zone with daylight saving): known UTC instants are shown at
the right local wall time, and headers and captions name the zone (AppTest, embedded
database). The expected local times are written out by hand, not computed by the code
under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Dataframe

from smib_core import sas
from smib_core.auth import Principal, Role
from smib_core.protocol import EventMessage
from smib_core.services.alerts import AlertEvaluator, apply_event_alerts
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.alerts import AlertStore
from smib_core.store.audit import AUDIT_COLUMNS, AuditTrail
from smib_core.store.batches import BatchStore
from smib_core.store.events import CabinetContext, EventRecord, EventStore
from smib_core.store.firmware import FirmwareLibrary
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from smib_core.store.rollouts import RolloutStore
from smib_core.store.templates import TemplateStore
from smib_core.ui import resources
from tests.servers import free_port
from tests.test_page_cabinet import FakeRegistry, SilentBus
from tests.test_page_rollouts import FakeBus as RolloutBus

pytestmark = pytest.mark.integration

PAGES = Path(__file__).resolve().parents[1] / "pages"
NY = "America/New_York"
SUMMER = datetime(2025, 7, 1, 12, 0, 5, tzinfo=UTC)  # 08:00:05 EDT
WINTER = datetime(2025, 1, 15, 12, 0, 5, tzinfo=UTC)  # 07:00:05 EST
LATE = datetime(2025, 7, 2, 2, 30, 5, tzinfo=UTC)  # 22:30:05 EDT on 1 July
R1 = "e831cdfa8384"
TECH = Principal("tina", Role.TECHNICIAN)
ADMIN = Principal("ada", Role.ADMIN)
CONTEXT = CabinetContext("c1", "Cabinet 001", "main", "Main floor")


@pytest.fixture(autouse=True)
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SMIB_TIMEZONE set; the settings read from the environment on every call (the
    real resource is cached for the process)."""
    monkeypatch.setenv("SMIB_TIMEZONE", NY)
    monkeypatch.setenv("FIRMWARE_PORT", str(free_port()))  # nothing answers there
    monkeypatch.setattr(resources, "get_settings", Settings.from_env)
    # The pages run alone, without app.py's gate: their principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    yield


def open_page(
    name: str, mongo_db: Any, monkeypatch: pytest.MonkeyPatch, who: Principal, **state: Any
) -> AppTest:
    audit = AuditTrail(mongo_db)
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "get_registry", lambda: Registry(mongo_db, audit))
    app = AppTest.from_file(str(PAGES / name), default_timeout=20)
    app.session_state["principal"] = who
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def set_times(collection: Any, **fields: Any) -> None:
    """Give every document of `collection` these times (the embedded database's `$set`
    stores a datetime as text, so each document is written again whole)."""
    for doc in list(collection.find({})):
        collection.delete_one({"_id": doc["_id"]})
        collection.insert_one(doc | fields)


def header(table: Dataframe, column: str) -> str:
    """The label the page gave a table column."""
    return str(json.loads(table.proto.columns)[column]["label"])


def wall(value: Any) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d %H:%M:%S}"


def table_with(app: AppTest, column: str) -> Dataframe:
    return next(t for t in app.dataframe if column in t.value.columns)


def now_in_new_york() -> str:
    """`EST (America/New_York)` or `EDT (...)`, as the zone database says for now."""
    return f"{datetime.now(ZoneInfo(NY)).tzname()} (America/New_York)"


# --- alerts ----------------------------------------------------------------------------


def test_alerts_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    AccountStore(mongo_db).create(TECH.name, TECH.role, "a long password 1", "test")
    store = AlertStore(mongo_db)
    store.raise_alert("ram_clear", R1, "meters fell", CONTEXT, SUMMER)
    # The history lists the last 30 days: times near now, their local time from zoneinfo.
    raised = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    acked = raised + timedelta(hours=1)
    done, _ = store.raise_alert("ram_clear", "e831cdfa8385", "meters fell", CONTEXT, raised)
    store.acknowledge(done.id, TECH)
    kept = mongo_db["alerts"].find_one({"_id": done.id})
    mongo_db["alerts"].delete_one({"_id": done.id})
    mongo_db["alerts"].insert_one(kept | {"acknowledged_at": acked})
    app = open_page("alerts.py", mongo_db, monkeypatch, TECH)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    card = app.markdown[0].value
    assert "since 2025-07-01 08:00 EDT (America/New_York)" in card
    history = table_with(app, "acknowledged_by")
    for column, at, label in (
        ("since", raised, "Raised"),
        ("acknowledged_at", acked, "Acknowledged"),
    ):
        local = at.astimezone(ZoneInfo(NY))
        assert wall(history.value[column].iloc[0]) == f"{local:%Y-%m-%d %H:%M:%S}"
        assert header(history, column) == f"{label} ({local.tzname()}, America/New_York)"
    assert any(
        c.value.startswith("last updated") and c.value.endswith(now_in_new_york())
        for c in app.caption
    )


def test_alert_texts_name_their_times_in_local_time(mongo_db: Any) -> None:
    store = AlertStore(mongo_db)
    door = EventMessage(R1, "exp", "sas/gy/server", code="11", name="Slot door opened")
    apply_event_alerts(store, [EventRecord(door, SUMMER, CONTEXT)], NY)
    assert store.active()[0].detail == "Slot door opened at 08:00:05 EDT (America/New_York)"

    class Heard:
        def relays_seen(self) -> dict[str, float]:
            return {"e831cdfa8386": WINTER.timestamp()}

    class Directory:
        def registered(self) -> dict[str, CabinetContext]:
            return {"e831cdfa8386": CONTEXT}

    evaluator = AlertEvaluator(Heard(), store, Directory(), 60, tz=NY)  # type: ignore[arg-type]
    evaluator.evaluate(now=WINTER.timestamp() + 600)
    offline = next(a for a in store.active() if a.relay == "e831cdfa8386")
    assert offline.detail == "not heard for 10 min (last at 07:00:05 EST (America/New_York))"


# --- events ----------------------------------------------------------------------------


def test_events_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    local = at.astimezone(ZoneInfo(NY))  # the zone database's answer, not the page's
    message = EventMessage(R1, "exp", "sas/gy/server", code="11", name="Slot door opened")
    EventStore(mongo_db).record_many([EventRecord(message, at, CONTEXT)])
    app = open_page("events.py", mongo_db, monkeypatch, Principal("mona", Role.MANAGER))
    assert not app.exception, app.exception and app.exception[0].stack_trace
    assert "Times in America/New_York." in app.caption[0].value
    table = table_with(app, "event")
    assert wall(table.value["at"].iloc[0]) == f"{local:%Y-%m-%d %H:%M:%S}"
    assert header(table, "at") == f"At ({local.tzname()}, America/New_York)"
    assert any(f"hours in {local.tzname()} (America/New_York)" in m.value for m in app.markdown)
    assert now_in_new_york() in app.subheader[0].value  # Arriving now · 0 since 10:20:00 EST …


# --- cabinet ---------------------------------------------------------------------------


class ChangedAudit:
    """One configuration change of the board, made at SUMMER."""

    def record(self, *args: Any, **kwargs: Any) -> str:
        return "0"

    def update_outcome(self, *args: Any, **kwargs: Any) -> None: ...

    def query(self, **filters: Any) -> pd.DataFrame:
        rows = []
        if filters.get("kind") == "config_write":
            detail = {"component": "net", "before": {"ssid": "old"}, "after": {"ssid": "new"}}
            rows = [[SUMMER, "tina", "config_write", [R1], "confirmed", detail, None, "a1"]]
        frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        return frame


def test_cabinet_page_in_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "get_registry", FakeRegistry)
    monkeypatch.setattr(resources, "get_bus", SilentBus)
    monkeypatch.setattr(resources, "get_audit", ChangedAudit)
    app = AppTest.from_file(str(PAGES / "cabinet.py"), default_timeout=20)
    app.session_state["principal"] = TECH
    app.session_state[f"cabinet_meters_{R1}"] = (sas.MeterReading(1, "6F", 0, ()), WINTER)
    app.query_params["relay"] = R1
    app.run()
    assert not app.exception, app.exception and app.exception[0].stack_trace
    captions = [c.value for c in app.caption]
    assert any("Read at 2025-01-15 07:00:05 EST (America/New_York)" in c for c in captions)
    assert any(c.endswith(now_in_new_york()) and "last updated" in c for c in captions)
    history = table_with(app, "component")
    assert wall(history.value["when"].iloc[0]) == "2025-07-01 08:00:05"
    assert header(history, "when") == "When (EDT, America/New_York)"


# --- fleet and bus status --------------------------------------------------------------


def test_fleet_page_names_the_zone(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    Registry(mongo_db).add_location("Main floor", "test")
    monkeypatch.setattr(resources, "get_bus", SilentBus)
    monkeypatch.setattr(resources, "get_meter_store", lambda: MeterStore(mongo_db))
    app = open_page("fleet.py", mongo_db, monkeypatch, TECH)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    assert any("last updated" in c.value and now_in_new_york() in c.value for c in app.caption)


def test_status_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from smib_core.bus import DeviceBus
    from smib_core.protocol import Topics

    MeterStore(mongo_db).insert_snapshot(R1, SUMMER, ok=False)
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", Topics())  # never started
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    app = open_page("status.py", mongo_db, monkeypatch, TECH)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    captions = [c.value for c in app.caption]
    assert "Last meter reading stored 2025-07-01 08:00:05 EDT (America/New_York)." in captions
    assert any("last updated" in c and c.endswith(now_in_new_york()) for c in captions)


# --- rollouts, batches and templates ---------------------------------------------------


def test_rollouts_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    firmware = FirmwareLibrary(mongo_db).add(
        b"\xe9" * 64, filename="a.bin", product="cloudy", version="v2.0.0", actor="test"
    )
    store = RolloutStore(mongo_db)
    rollout = store.create(
        firmware, [R1], batch_size=1, min_success_pct=80, timeout_s=60, principal=TECH
    )
    mongo_db["rollouts"].update_many({}, {"$set": {"created_at": SUMMER.timestamp()}})
    mongo_db["rollout_boards"].update_many(
        {}, {"$set": {"command_at": WINTER.timestamp(), "updated_at": SUMMER.timestamp()}}
    )
    monkeypatch.setattr(resources, "get_bus", RolloutBus)
    app = open_page("rollouts.py", mongo_db, monkeypatch, TECH)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    rollouts = table_with(app, "started_by")
    assert wall(rollouts.value["created_at"].iloc[0]) == "2025-07-01 08:00:05"
    assert header(rollouts, "created_at") == "Started (EDT, America/New_York)"
    boards = table_with(app, "from_version")
    assert wall(boards.value["command_at"].iloc[0]) == "2025-01-15 07:00:05"
    assert header(boards, "command_at") == "Commanded (EST, America/New_York)"
    assert header(boards, "updated_at") == "Last change (EDT, America/New_York)"
    chosen = next(s for s in app.selectbox if s.label == "Rollout")
    assert f"2025-07-01 08:00 EDT (America/New_York) · pending ({rollout.id})" in chosen.options[0]
    captions = [c.value.replace("\\", "") for c in app.caption]  # Markdown escapes
    assert any("on 2025-07-01 08:00 EDT (America/New_York)" in c for c in captions)


def test_batch_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_page_batch import FakeBus as BatchBus

    Registry(mongo_db).add_location("Main floor", "test")
    BatchStore(mongo_db).create("restart", [R1], principal=TECH)
    mongo_db["batches"].update_many({}, {"$set": {"created_at": SUMMER.timestamp()}})
    TemplateStore(mongo_db).save("Floor wifi", "net", {"netStaSSID": "floor"}, "tina")
    set_times(mongo_db["templates"], created_at=WINTER)
    bus = BatchBus()
    store = BatchStore(mongo_db)
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    monkeypatch.setattr(resources, "get_batch_store", lambda: store)
    app = open_page("batch.py", mongo_db, monkeypatch, TECH)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    recent = table_with(app, "submitted")
    assert wall(recent.value["submitted"].iloc[0]) == "2025-07-01 08:00:05"
    assert header(recent, "submitted") == "submitted (EDT, America/New_York)"
    templates = table_with(app, "created_by")
    assert wall(templates.value["created_at"].iloc[0]) == "2025-01-15 07:00:05"
    assert header(templates, "created_at") == "Created (EST, America/New_York)"


# --- audit, accounts, firmware ---------------------------------------------------------


def test_audit_page_in_local_days_and_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    AuditTrail(mongo_db).record("tina", "rst", [R1], {}, "confirmed", at=LATE)
    AuditTrail(mongo_db).record("tina", "rst", [R1], {}, "confirmed", at=LATE + timedelta(hours=2))
    app = open_page("audit.py", mongo_db, monkeypatch, ADMIN)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    assert "Times in America/New_York" in app.caption[0].value
    app.date_input[0].set_value((date(2025, 7, 1), date(2025, 7, 1))).run()
    assert not app.exception, app.exception and app.exception[0].stack_trace
    table = table_with(app, "actor")
    # 1 July in New York is 04:00 UTC on 1 July to 04:00 UTC on 2 July: only the first.
    assert [wall(t) for t in table.value["at"]] == ["2025-07-01 22:30:05"]
    assert header(table, "at") == "at (EDT, America/New_York)"


def test_accounts_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts = AccountStore(mongo_db, clock=lambda: SUMMER)
    accounts.create("ada", "admin", "a long password 1", "test")
    accounts.map_identity("ann@example.com", "analyst", "ada")
    set_times(mongo_db["accounts"], last_sign_in_at=WINTER)
    app = open_page("accounts.py", mongo_db, monkeypatch, ADMIN)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    table = table_with(app, "last sign-in")
    assert wall(table.value["created"].iloc[0]) == "2025-07-01 08:00:05"
    assert wall(table.value["last sign-in"].iloc[0]) == "2025-01-15 07:00:05"
    assert header(table, "created") == "created (EDT, America/New_York)"
    assert header(table, "last sign-in") == "last sign-in (EST, America/New_York)"
    mapped = table_with(app, "mapped at")
    assert wall(mapped.value["mapped at"].iloc[0]) == "2025-07-01 08:00:05"
    assert header(mapped, "mapped at") == "mapped at (EDT, America/New_York)"


def test_firmware_page_in_local_time(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    FirmwareLibrary(mongo_db).add(
        b"\xe9" * 64, filename="a.bin", product="cloudy", version="v2.0.0", actor="test"
    )
    set_times(mongo_db["firmware"], uploaded_at=WINTER)
    app = open_page("firmware.py", mongo_db, monkeypatch, TECH)
    assert not app.exception, app.exception and app.exception[0].stack_trace
    table = table_with(app, "uploaded_at")
    assert wall(table.value["uploaded_at"].iloc[0]) == "2025-01-15 07:00:05"
    assert header(table, "uploaded_at") == "Uploaded (EST, America/New_York)"
