"""The demo's simulated past on the embedded database: seeded only into a fresh
embedded database, once; readings that lead up to the live simulator's meters, rollups
equal to the collector's, events and alerts, all marked as demo data; a dashboard
with numbers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from smib_core.services.dashboard import build_dashboard, coin_in_heatmap
from smib_core.services.demo import register_demo_fleet
from smib_core.services.demo_history import SEED_COLLECTION, seed_if_allowed
from smib_core.services.meter_report import report_period
from smib_core.services.meter_rollups import refresh_rollups
from smib_core.settings import Settings
from smib_core.sim.board import make_boards
from smib_core.sim.meters import Machine
from smib_core.store.meters import SNAPSHOTS, MeterStore
from smib_core.store.registry import Registry

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 12, 15, 7, 30, tzinfo=UTC)
EMBEDDED = Settings(data_dir=Path("data"))


def fleet(registry: Registry, count: int = 3) -> dict[str, Machine]:
    boards = make_boards(count + 1, seed=1)
    own = {b.relay: b.machine.profile.denom_cents / 100 for b in boards}
    register_demo_fleet(registry, [b.relay for b in boards[:count]], "demo", denominations=own)
    return {b.relay: b.machine for b in boards}


def test_a_database_with_real_data_is_never_seeded(mongo_db: Any) -> None:
    registry = Registry(mongo_db)
    machines = fleet(registry)
    configured = Settings(mongo_uri="mongodb://db.casino.example/")
    refused = seed_if_allowed(configured, mongo_db, registry, machines, 2, now=NOW)
    assert refused.message() == (
        "demo history not seeded: MONGO_URI is set (demo data goes only into the embedded database)"
    )
    floor = registry.locations()[0]
    real = registry.add_cabinet({"name": "Real 1", "location_id": floor.id, "denomination": 1}, "x")
    refused = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW)
    assert refused.reason == "the database holds cabinets that are not demo ones"
    registry.retire_cabinet(real.id, "x")  # retired: still real data
    assert seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW).reason
    assert mongo_db[SNAPSHOTS].count_documents({}) == 0
    assert mongo_db[SEED_COLLECTION].count_documents({}) == 0


def test_a_database_with_readings_is_never_seeded(mongo_db: Any) -> None:
    registry = Registry(mongo_db)
    machines = fleet(registry)
    MeterStore(mongo_db).insert_snapshots([{"relay": "ab0000000001", "at": NOW, "meters": {}}])
    refused = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW)
    assert refused.reason == "the database holds meter readings already"
    assert mongo_db[SNAPSHOTS].count_documents({}) == 1


def test_seeding_once_then_never_again(mongo_db: Any) -> None:
    registry = Registry(mongo_db)
    machines = fleet(registry)
    seeded = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW)
    assert not seeded.reason and seeded.cabinets == 3 and seeded.alerts == 3
    counts = {name: mongo_db[name].count_documents({}) for name in ("meter_snapshots", "events")}
    again = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW)
    assert again.reason.startswith("it was seeded already (")
    assert {n: mongo_db[n].count_documents({}) for n in counts} == counts

    mongo_db[SEED_COLLECTION].update_one({}, {"$unset": {"finished_at": ""}})  # as if killed
    interrupted = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW)
    assert "was interrupted; remove the data folder (data)" in interrupted.reason


def test_the_seeded_past_is_what_the_collector_would_have_stored(mongo_db: Any) -> None:
    registry = Registry(mongo_db)
    machines = fleet(registry)
    seeded = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 2, now=NOW)
    cabinets = registry.demo_cabinets()
    assert seeded.cabinets == len(cabinets) == 3

    # Readings: 5-minute for the last day, hourly before; all marked; the newest of each
    # cabinet is its simulated board's meters right now, so live readings go on from it.
    snaps = list(mongo_db[SNAPSHOTS].find({}))
    assert len(snaps) == seeded.snapshots and all(d["demo"] is True for d in snaps)
    end = datetime(2024, 6, 12, 15, 5, 7, tzinfo=UTC)  # 7 s past, like the collector
    first = datetime(2024, 6, 10, 0, 0, 7, tzinfo=UTC)  # the gaming day two days back
    for cabinet in cabinets:
        times = sorted(d["at"] for d in snaps if d["cabinet_id"] == cabinet.id)
        assert times[0] == first + timedelta(minutes=55) and times[-1] == end
        recent = [t for t in times if t >= end - timedelta(hours=24)]
        assert len(recent) == 289 and all(t.minute == 55 for t in times if t not in recent)
        last = max((d for d in snaps if d["cabinet_id"] == cabinet.id), key=lambda d: d["at"])
        live = machines[str(cabinet.relay)].sas_meters(sorted(last["meters"]))
        assert last["meters"] == {m.code: m.value for m in live}

    # Rollups: each hour equals what the collector computes from the stored readings,
    # an hour of the 5-minute day and an hour of the hourly past alike (that one from a
    # single interval: the readings between were not kept).
    store = MeterStore(mongo_db)
    for hour in (datetime(2024, 6, 12, 9, tzinfo=UTC), datetime(2024, 6, 10, 20, tzinfo=UTC)):
        span = (hour, hour + timedelta(hours=1))
        stored = store.rollups("h", *span).sort_values("cabinet_id").reset_index(drop=True)
        for cabinet in cabinets:
            refresh_rollups(store, cabinet.id, hour + timedelta(hours=1))
        again = store.rollups("h", *span).sort_values("cabinet_id").reset_index(drop=True)
        assert len(stored) == 3 and stored["coin_in"].gt(0).all()
        assert stored["intervals"].tolist() == [12, 12, 12]
        if hour.day == 10:
            assert again["intervals"].tolist() == [1, 1, 1]
            stored, again = stored.drop(columns="intervals"), again.drop(columns="intervals")
        pd.testing.assert_frame_equal(stored, again)

    # Events and alerts, marked as demo data.
    events = list(mongo_db["events"].find({}))
    assert len(events) == seeded.events > 0 and all(d["demo"] for d in events)
    assert {d["cabinet_id"] for d in events} <= {c.id for c in cabinets}
    alerts = {d["kind"]: d for d in mongo_db["alerts"].find({})}
    assert sorted(alerts) == ["board_offline", "ram_clear", "slot_door_open"]
    assert all(d["demo"] for d in alerts.values())
    assert alerts["ram_clear"]["resolved_at"] is None
    assert alerts["slot_door_open"]["resolution"] == "door closed"

    # The dashboard and the heatmap have numbers at once.
    period = report_period("last_7_days", pd.Timestamp(NOW))
    board = build_dashboard(store, registry.frame(), period)
    assert board.kpis["cabinets"] == 3 and board.kpis["coin_in"] > 0
    assert coin_in_heatmap(store, period).to_numpy().sum() > 0


def test_seed_demo_as_serve_calls_it(mongo_db: Any, embedded_mongo: Any) -> None:
    """The glue `smib serve --sim` calls: the simulated fleet's machines, the guard."""
    from smib_core.services.demo_history import seed_demo

    settings = Settings(mongo_uri=embedded_mongo.uri, mongo_db=mongo_db.name)
    assert seed_demo(settings, 3, seed=1, days=0).message() == (
        "demo history not seeded: --history-days is 0"
    )
    assert seed_demo(settings, 3, seed=1).reason.startswith("MONGO_URI is set")
    assert mongo_db[SNAPSHOTS].count_documents({}) == 0


SEEDER = """
import sys
from pymongo import MongoClient
from smib_core.services.demo_history import seed_history
from smib_core.sim.board import make_boards
from smib_core.store.registry import Registry
from tests.test_demo_history import NOW
db = MongoClient(sys.argv[1], tz_aware=True)[sys.argv[2]]
registry = Registry(db)
machines = {b.relay: b.machine for b in make_boards(4, seed=1)}
seed_history(db, registry, registry.demo_cabinets(), machines, 30, now=NOW)
"""


def test_a_seeding_killed_midway_is_never_taken_for_a_finished_one(
    mongo_db: Any, embedded_mongo: Any
) -> None:
    registry = Registry(mongo_db)
    machines = fleet(registry)
    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-c", SEEDER, embedded_mongo.uri, mongo_db.name]
    proc = subprocess.Popen(argv, cwd=root, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while mongo_db[SNAPSHOTS].count_documents({}) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert mongo_db[SNAPSHOTS].count_documents({}) > 0
    again = seed_if_allowed(EMBEDDED, mongo_db, registry, machines, 30, now=NOW)
    assert "was interrupted; remove the data folder" in again.reason


def test_gaming_days_follow_the_casinos_time_zone(mongo_db: Any) -> None:
    registry = Registry(mongo_db)
    machines = fleet(registry, count=1)
    local = Settings(data_dir=Path("data"), timezone="America/New_York", gaming_day_start_hour=6)
    assert not seed_if_allowed(local, mongo_db, registry, machines, 2, now=NOW).reason
    store = MeterStore(mongo_db)
    daily = store.rollups("D", NOW - timedelta(days=5), NOW + timedelta(days=1))
    starts = {pd.Timestamp(b).tz_convert("America/New_York").hour for b in daily["bucket"]}
    assert starts == {6} and len(daily) == 3  # two whole gaming days and the running one
    cabinet = registry.demo_cabinets()[0]
    hour = datetime(2024, 6, 12, 9, tzinfo=UTC)
    span = (hour, hour + timedelta(hours=1))
    stored = store.rollups("h", *span)
    refresh_rollups(
        store,
        cabinet.id,
        hour + timedelta(hours=1),
        gaming_day_start_hour=6,
        tz="America/New_York",
    )
    pd.testing.assert_frame_equal(stored, store.rollups("h", *span))
