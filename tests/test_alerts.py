"""Alerts on the embedded database: raised by events and silence, deduped, resolved,
acknowledged (who and when, audited) only by a role that may."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher

from smib_core.auth import Principal, Role
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.protocol import EventMessage
from smib_core.services.alerts import (
    AlertEvaluator,
    CabinetDirectory,
    apply_event_alerts,
    offline_alert_after_s,
    raise_alert,
)
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.alerts import AlertStore, alerts_frame
from smib_core.store.audit import AuditTrail
from smib_core.store.events import CabinetContext, EventRecord
from smib_core.store.registry import Registry

pytestmark = pytest.mark.integration

R1, R2, R3 = "e831cdfa8384", "e831cdfa8385", "e831cdfa8386"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TECH = Principal("tina", Role.TECHNICIAN)
MAIN = CabinetContext("c1", "Cabinet 001", "main", "Main floor")


def records(*steps: tuple[str, str, int]) -> list[EventRecord]:
    """(relay, code, seconds after T0) -> records as the recorder hands them over."""
    return [
        EventRecord(
            EventMessage(relay, "exp", "t", code=code, name=_name(code)),
            T0 + timedelta(seconds=s),
            MAIN,
        )
        for relay, code, s in steps
    ]


def _name(code: str) -> str:
    from smib_core.sas import event_name

    return event_name(code)


@pytest.fixture
def store(mongo_db: Any) -> AlertStore:
    accounts = AccountStore(
        mongo_db, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    accounts.create("tina", Role.TECHNICIAN, "a long enough password", actor="test")
    accounts.create("mona", Role.MANAGER, "a long enough password", actor="test")
    return AlertStore(mongo_db)


def test_a_door_opened_raises_and_the_close_resolves(store: AlertStore) -> None:
    changes = apply_event_alerts(store, records((R1, "11", 0), (R1, "13", 1)))
    assert (changes.raised, changes.resolved) == (2, 0)
    active = store.active()
    assert sorted(a.kind for a in active) == ["drop_door_open", "slot_door_open"]
    slot = next(a for a in active if a.kind == "slot_door_open")
    assert (slot.cabinet, slot.location, slot.raised_at) == ("Cabinet 001", "Main floor", T0)
    assert slot.detail == "Slot door opened at 12:00:00 UTC"

    changes = apply_event_alerts(store, records((R1, "12", 30)))
    assert (changes.raised, changes.resolved) == (0, 1)
    assert [a.kind for a in store.active()] == ["drop_door_open"]
    resolved = store.get(slot.id)
    assert resolved.status == "resolved"
    assert resolved.resolved_at == T0 + timedelta(seconds=30)
    assert resolved.resolution == "Slot door closed at 12:00:30 UTC"
    # Kept until acknowledged, listed after the active ones.
    assert [a.status for a in store.unacknowledged()] == ["active", "resolved"]


def test_ac_power_lost_and_cashbox_door(store: AlertStore) -> None:
    apply_event_alerts(store, records((R2, "18", 0), (R2, "19", 1)))
    assert {a.label for a in store.active()} == {"AC power lost", "Cashbox door open"}
    apply_event_alerts(store, records((R2, "17", 60), (R2, "1A", 61)))
    assert store.active() == []


def test_one_alert_per_relay_and_kind(store: AlertStore) -> None:
    apply_event_alerts(store, records((R1, "11", 0), (R1, "11", 5), (R2, "11", 6)))
    active = store.active()
    assert sorted((a.relay, a.count) for a in active) == [(R1, 2), (R2, 1)]
    mine = next(a for a in active if a.relay == R1)
    assert mine.last_at == T0 + timedelta(seconds=5)
    assert mine.raised_at == T0


def test_acknowledge_records_who_and_when(mongo_db: Any, store: AlertStore) -> None:
    apply_event_alerts(store, records((R1, "11", 0)))
    alert = store.active()[0]
    with pytest.raises(PermissionDenied):
        store.acknowledge(alert.id, Principal("mona", Role.MANAGER))
    with pytest.raises(PermissionDenied):
        store.acknowledge(alert.id, None)
    before = datetime.now(UTC)
    done = store.acknowledge(alert.id, TECH)
    assert done.acknowledged_by == "tina" and done.status == "acknowledged"
    assert done.acknowledged_at is not None and done.acknowledged_at >= before - timedelta(
        seconds=1
    )
    assert store.active() == [] and store.unacknowledged() == []
    assert [a.id for a in store.acknowledged()] == [alert.id]
    with pytest.raises(InvalidInput, match="acknowledged already by tina"):
        store.acknowledge(alert.id, TECH)
    with pytest.raises(InvalidInput, match="no alert"):
        store.acknowledge("nope", TECH)
    audit = AuditTrail(mongo_db).query(kind="alert_ack")
    assert audit[["actor", "relays", "outcome"]].values.tolist() == [["tina", R1, "ok"]]
    history = alerts_frame(store.acknowledged())
    assert history[["alert", "acknowledged_by", "status"]].values.tolist() == [
        ["Slot door open", "tina", "acknowledged"]
    ]
    # The door closes later: the acknowledged alert is resolved too, nothing new is raised.
    apply_event_alerts(store, records((R1, "12", 60)))
    assert store.get(alert.id).resolved_at is not None
    assert store.unacknowledged() == []


def test_a_repeat_after_acknowledgement_is_a_new_alert(mongo_db: Any, store: AlertStore) -> None:
    first = raise_alert(mongo_db, "ram_clear", R1, "meters fell on 2025-03-01")
    assert raise_alert(mongo_db, "ram_clear", R1.upper(), "again").id == first.id
    store.acknowledge(first.id, TECH)
    second = raise_alert(mongo_db, "ota_failure", R1, "still on v1.4.2 after cloudy_v1.5.0.bin")
    third = raise_alert(mongo_db, "ram_clear", R1, "meters fell again")
    assert third.id != first.id and third.count == 1
    assert {a.id for a in store.active()} == {second.id, third.id}
    with pytest.raises(InvalidInput, match="unknown alert kind"):
        raise_alert(mongo_db, "fire", R1, "smoke")
    with pytest.raises(InvalidInput):
        raise_alert(mongo_db, "ram_clear", "not-a-relay", "x")


class FakeBus:
    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def relays_seen(self) -> dict[str, float]:
        return dict(self.seen)


def test_offline_raised_after_the_threshold_and_resolved_on_return(
    mongo_db: Any, store: AlertStore
) -> None:
    registry = Registry(mongo_db)
    main = registry.add_location("Main floor", "admin")
    for number, relay in enumerate((R1, R2, R3), start=1):
        values = {
            "name": f"Cabinet {number:03d}",
            "location_id": main.id,
            "relay": relay,
            "denomination": 0.01,
        }
        registry.add_cabinet(values, "admin")
    bus = FakeBus()
    start = T0.timestamp()
    evaluator = AlertEvaluator(
        bus, store, CabinetDirectory(registry, ttl_s=0), 240.0, started_at=start
    )
    bus.seen = {R1: start + 10, R2: start + 200}  # R3: never heard

    assert evaluator.evaluate(now=start + 200).raised == 0  # nobody silent for 240 s yet
    changes = evaluator.evaluate(now=start + 300)
    assert changes.raised == 2  # R1 silent 290 s, R3 never heard for 300 s; R2 only 100 s
    active = {a.relay: a for a in store.active()}
    assert set(active) == {R1, R3}
    assert active[R1].kind == "board_offline" and active[R1].cabinet == "Cabinet 001"
    assert active[R1].location == "Main floor"
    assert active[R1].detail.startswith("not heard for 5 min (last at 12:00:10 UTC)")
    assert active[R3].detail == "not heard since the console started 5 min ago"
    assert evaluator.evaluate(now=start + 310).raised == 0  # deduped, not counted up

    store.acknowledge(active[R3].id, TECH)  # acknowledged while still offline:
    assert evaluator.evaluate(now=start + 320).raised == 0  # not raised again
    bus.seen[R1] = start + 330  # R1 talks again
    changes = evaluator.evaluate(now=start + 331)
    assert (changes.raised, changes.resolved) == (0, 1)
    assert store.get(active[R1].id).resolution == "heard again at 12:05:30 UTC"
    assert store.active() == []

    r3 = registry.cabinet_for_relay(R3)
    assert r3 is not None
    registry.retire_cabinet(r3.id, "admin")  # held by the acknowledged alert: released
    assert evaluator.evaluate(now=start + 340).resolved == 1
    assert store.held_relays("board_offline") == set()


def test_offline_threshold_setting() -> None:
    assert offline_alert_after_s(Settings(offline_after_s=120)) == 240
    assert offline_alert_after_s(Settings(offline_after_s=120, alert_offline_s=600)) == 600
    assert Settings.from_env({"SMIB_ALERT_OFFLINE_S": "90"}).alert_offline_s == 90
