"""The collector under kill -9: of the lease holder (another process takes over within
10 s, and every slot has exactly one record) and of the embedded database (restarted on
its port by the supervisor; readings taken meanwhile are kept and written)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from smib_core import embedded
from smib_core.services.collector import (
    FELL_BEHIND,
    NOT_READ,
    STILL_READING,
    Collector,
    CollectorConfig,
)
from smib_core.services.demo import register_demo_fleet
from smib_core.settings import Settings
from smib_core.sim.fleet import Fleet
from smib_core.slots import audit_slots
from smib_core.store.db import client_for
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from tests.servers import EmbeddedMongo, Mosquitto
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
WIDE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
PERIOD = 2.0


def lease_owner(db: Any) -> str | None:
    doc = db.leases.find_one({"_id": "collector"})
    if doc is None or float(doc["expires_at"]) < time.time():
        return None
    return str(doc["owner"])


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def assert_one_record_per_slot(store: MeterStore, cabinets: int, span_s: float) -> None:
    docs = store.scheduled_snapshots(*WIDE, period_s=PERIOD)
    report = audit_slots(docs, PERIOD)
    assert len(report) == cabinets
    for audit in report.values():
        assert audit.complete, audit
        assert audit.last - audit.first + 1 >= span_s / PERIOD - 2, audit


@pytest.fixture
def fleet(mosquitto: Mosquitto, topic_prefix: str) -> Iterator[Fleet]:
    with Fleet(
        mosquitto.uri, make_topics(topic_prefix), relays=6, seed=11, events_per_minute=0
    ) as fleet:
        yield fleet


def spawn(mosquitto: Mosquitto, prefix: str, mongo_uri: str, db: str, owner: str) -> Any:
    args = [mosquitto.uri, prefix, mongo_uri, db, owner, str(PERIOD)]
    command = [sys.executable, "-m", "tests.collector_process", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def test_a_killed_holder_is_replaced_within_10_s_and_no_slot_is_lost_or_doubled(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, topic_prefix: str, fleet: Fleet
) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = client_for(embedded_mongo.uri)
    db = client[name]
    register_demo_fleet(Registry(db), fleet.relay_ids, actor="test")
    one = spawn(mosquitto, topic_prefix, embedded_mongo.uri, name, "one")
    two = None
    try:
        wait_for(lambda: lease_owner(db) == "one", 20, "the first collector holds no lease")
        started = time.time()  # slots count from here (a process starts slowly on a busy host)
        two = spawn(mosquitto, topic_prefix, embedded_mongo.uri, name, "two")
        time.sleep(3 * PERIOD)
        assert lease_owner(db) == "one"
        one.kill()  # kill -9
        one.wait(5)
        took = wait_for(lambda: lease_owner(db) == "two", 12, "nobody took over")
        assert took < 10, f"took over after {took:.1f} s"
        time.sleep(3 * PERIOD)
        two.terminate()
        assert two.wait(20) == 0
    finally:
        for process in (one, two):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(5)
    store = MeterStore(db)
    assert_one_record_per_slot(store, len(fleet.relay_ids), time.time() - started - 2 * PERIOD)
    missed = [d for d in store.scheduled_snapshots(*WIDE) if d["failure_check"] == "missed"]
    assert missed, "the takeover gap is recorded"
    reasons = {d["failure"] for d in db.meter_snapshots.find({"failure_check": "missed"})}
    assert NOT_READ in reasons and reasons <= {NOT_READ, STILL_READING, FELL_BEHIND}
    client.drop_database(name)
    client.close()


def test_a_killed_database_comes_back_and_no_reading_is_lost(
    tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str, fleet: Fleet
) -> None:
    from smib_core.bus import DeviceBus

    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, mqtt_uri=mosquitto.uri)
    supervisor = embedded.EmbeddedSupervisor(settings, every_s=0.5)
    client = client_for(embedded.ensure_database(data_dir))
    db = client["smib"]
    register_demo_fleet(Registry(db), fleet.relay_ids, actor="test")
    config = CollectorConfig(period_s=PERIOD, timeout_s=0.5, concurrency=4)
    try:
        with DeviceBus(mosquitto.uri, make_topics(topic_prefix), client_id_prefix="dbkill") as bus:
            assert bus.wait_connected(10)
            collector = Collector(bus, db, config, alerts=False)
            started = time.time()
            collector.start()
            try:
                time.sleep(3 * PERIOD)
                pid = int(embedded.status(data_dir)["database"]["pid"])  # type: ignore[call-overload]
                psutil.Process(pid).kill()  # kill -9
                killed = time.time()
                wait_for(lambda: collector.stats().backlog >= 3, 10, "no reading waited")
                # Away longer than the lease lives: the holder keeps reading all along.
                time.sleep(max(0.0, killed + config.lease_ttl_s + 1 - time.time()))
                assert collector.stats().holding_lease
                supervisor.start()
                wait_for(lambda: supervisor.restarts == 1, 15, "the database was not restarted")
                wait_for(lambda: collector.stats().backlog == 0, 2 * PERIOD + 5, "backlog kept")
                resumed = time.time()
                time.sleep(3 * PERIOD)
                assert collector.stats().holding_lease
            finally:
                collector.stop()
    finally:
        supervisor.stop()
    store = MeterStore(db)
    assert_one_record_per_slot(store, len(fleet.relay_ids), time.time() - started - 2 * PERIOD)
    during = [
        d
        for d in store.scheduled_snapshots(*WIDE)
        if killed <= d["at"].timestamp() < resumed and d["ok"]
    ]
    assert len(during) >= len(fleet.relay_ids) * 3, "readings taken while it was away are kept"
    assert collector.stats().dropped == 0
    client.close()
    embedded.stop(data_dir)
