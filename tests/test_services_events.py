"""The event recorder: a simulated fleet's events land in the store with their names and
cabinets; a flood into a tiny queue is dropped and counted without ever blocking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest

from smib_core.bus import DeviceBus
from smib_core.sas import EVENT_CODES
from smib_core.services.alerts import CabinetDirectory
from smib_core.services.events import LEASE_NAME, EventRecorder
from smib_core.sim.fleet import Fleet
from smib_core.store.alerts import AlertStore
from smib_core.store.events import EventRecord, EventStore
from smib_core.store.leases import Lease
from smib_core.store.registry import Registry
from tests.servers import Mosquitto
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration


def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_fleet_events_are_recorded_with_names_and_cabinets(
    mosquitto: Mosquitto, mongo_db: Any, topic_prefix: str
) -> None:
    topics = make_topics(topic_prefix)
    registry = Registry(mongo_db)
    events, alerts = EventStore(mongo_db), AlertStore(mongo_db)
    fleet = Fleet(mosquitto.uri, topics, relays=4, seed=5, events_per_minute=600)
    floor = registry.add_location("Main floor", "admin")
    values = {
        "name": "Cabinet 001",
        "location_id": floor.id,
        "relay": fleet.relay_ids[0],
        "denomination": 0.01,
    }
    registry.add_cabinet(values, "admin")
    with DeviceBus(mosquitto.uri, topics) as bus:
        assert bus.wait_connected(10)
        recorder = EventRecorder(bus, events, CabinetDirectory(registry), alerts)
        recorder.start()
        try:
            with fleet:
                wait_until(lambda: recorder.stats().stored >= 40)
                door = {"rly": fleet.relay_ids[0], "typ": "exp", "pyd": "11"}
                bus.handle_payload(topics.sub, json.dumps(door).encode())  # as if heard
                wait_until(lambda: any(a.kind == "slot_door_open" for a in alerts.active()))
        finally:
            recorder.stop()
    stored = events.query()
    stats = recorder.stats()
    assert len(stored) == stats.stored == stats.received
    assert stats.dropped == stats.lost == 0
    assert set(stored["relay"]) <= set(fleet.relay_ids)
    assert set(stored["event"]) <= set(EVENT_CODES.values())  # every simulated code named
    assert (stored["event"] == stored["code"].map(EVENT_CODES)).all()
    mine = stored[stored["relay"] == fleet.relay_ids[0]]
    assert set(mine["cabinet"]) == {"Cabinet 001"} and set(mine["location"]) == {"Main floor"}
    assert set(stored[stored["relay"] != fleet.relay_ids[0]]["cabinet"]) <= {""}
    door_alert = next(a for a in alerts.unacknowledged() if a.relay == fleet.relay_ids[0])
    assert (door_alert.cabinet, door_alert.location) == ("Cabinet 001", "Main floor")
    assert stats.alerts_raised >= 1


class BlockingStore(EventStore):
    """Holds the worker inside its first write until released: a database that hangs."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.release = threading.Event()

    def record_many(self, records: Iterable[EventRecord]) -> int:
        self.release.wait(10)
        return super().record_many(records)


def test_a_flood_into_a_tiny_queue_is_dropped_and_counted_never_blocking(
    mongo_db: Any, topic_prefix: str
) -> None:
    topics = make_topics(topic_prefix)
    bus = DeviceBus("mqtt://127.0.0.1:1", topics)  # never started: fed by hand
    store = BlockingStore(mongo_db)
    recorder = EventRecorder(
        bus, store, CabinetDirectory(Registry(mongo_db)), queue_size=5, batch_size=2
    )
    recorder.start()
    try:
        payload = json.dumps({"rly": "e831cdfa8384", "typ": "exp", "pyd": "7E"}).encode()
        started = time.perf_counter()
        for _ in range(5_000):
            bus.handle_payload(topics.sub, payload)
        elapsed = time.perf_counter() - started
        bus.handle_payload(topics.cfg, b'{"rly":"e831cdfa8384","typ":"cfg","comp":"app"}')
        stats = recorder.stats()
        assert elapsed < 5.0, f"the listener blocked: {elapsed:.2f} s for 5,000 messages"
        assert stats.received == 5_000
        # The worker holds one batch (1 or 2) in the hung write; the queue holds 5.
        assert 5_000 - 5 - 2 <= stats.dropped <= 5_000 - 5 - 1
        assert bus.stats().listener_errors == 0
    finally:
        store.release.set()
        recorder.stop()
    final = recorder.stats()
    assert final.stored == 5_000 - final.dropped and final.queued == 0
    assert len(store.query()) == final.stored


def test_with_a_shared_lease_each_event_is_stored_once(mongo_db: Any, topic_prefix: str) -> None:
    topics = make_topics(topic_prefix)
    bus = DeviceBus("mqtt://127.0.0.1:1", topics)  # two processes hearing the same traffic
    store = EventStore(mongo_db)
    directory = CabinetDirectory(Registry(mongo_db))
    first, second = (
        EventRecorder(
            bus,
            store,
            directory,
            evaluate_every_s=0.1,
            lease=Lease(mongo_db, LEASE_NAME, owner, ttl_s=5),
        )
        for owner in ("first", "second")
    )
    payload = json.dumps({"rly": "e831cdfa8384", "typ": "exp", "pyd": "4F"}).encode()
    first.start()
    wait_until(lambda: first.stats().recording)
    second.start()
    try:
        for _ in range(10):
            bus.handle_payload(topics.sub, payload)
        wait_until(lambda: first.stats().stored == 10 and second.stats().standby == 10)
        assert not second.stats().recording
        first.stop()  # gives the lease up: the other takes over
        wait_until(lambda: second.stats().recording)
        for _ in range(5):
            bus.handle_payload(topics.sub, payload)
        wait_until(lambda: second.stats().stored == 5)
    finally:
        first.stop()
        second.stop()
    assert len(store.query()) == 15
