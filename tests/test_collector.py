"""The meter collector: offsets and failures with a fake bus; a simulated fleet on a real
Mosquitto with the embedded database for reads, rollups, restarts and the lease."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from pymongo.errors import AutoReconnect

from smib_core import protocol, sas
from smib_core.analytics import meter_movement, rollup
from smib_core.bus import DeviceBus
from smib_core.errors import BusError, InvalidInput, RequestTimeout
from smib_core.protocol import Command, DeviceMessage, MeterReply, Topics
from smib_core.services.collector import Collector, CollectorConfig, offset_s
from smib_core.services.demo import register_demo_fleet
from smib_core.settings import Settings
from smib_core.sim.board import Faults
from smib_core.sim.fleet import Fleet
from smib_core.slots import audit_slots, slot_due, slot_of
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from smib_core.store.rollups import location_hourly_frame
from tests.servers import Mosquitto
from tests.test_bus import make_topics

RELAYS = ["aa0000000001", "aa0000000002", "aa0000000003"]
WIDE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def meter_reply(relay: str, coin_in: int) -> MeterReply:
    meters = (sas.Meter("0000", 4, coin_in), sas.Meter("0005", 4, coin_in // 100))
    reading = sas.MeterReading(1, "6F", 0, meters)
    return MeterReply(relay, "rsp", "t", reading=reading)


class FakeBus:
    """Answers meter requests from `answers` (a value, an exception, or a reply)."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[], DeviceMessage]] = {}
        self.config: dict[str, dict[str, tuple[Mapping[str, Any], float]]] = {}
        self.requests: list[str] = []

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        self.requests.append(relay)
        return self.answers[relay]()

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        return self.config.get(relay, {})


# --- pure -----------------------------------------------------------------------------


def test_offsets_are_stable_spread_and_within_the_period() -> None:
    relays = [f"e831cdfa{n:04x}" for n in range(200)]
    offsets = [offset_s(r, 300) for r in relays]
    assert all(0 <= o < 300 for o in offsets) and len(set(offsets)) == len(offsets)
    assert offsets == [offset_s(r, 300) for r in relays], "the same relay, the same moment"
    per_minute = pd.Series(offsets).floordiv(60).value_counts()
    assert len(per_minute) == 5 and per_minute.min() >= 25, "no minute left empty or crowded"


def test_config_is_checked_and_taken_from_the_settings() -> None:
    settings = Settings(collect_period_s=120, gaming_day_start_hour=6)
    config = CollectorConfig.from_settings(settings, concurrency=3, timeout_s=None)
    assert (config.period_s, config.concurrency, config.timeout_s) == (120, 3, 5.0)
    assert config.gaming_day_start_hour == 6
    for bad in ({"period_s": 0}, {"concurrency": 0}, {"timeout_s": 0}, {"lease_ttl_s": 1}):
        with pytest.raises(InvalidInput):
            CollectorConfig(**bad)


# --- fake bus, embedded database ------------------------------------------------------


@pytest.fixture
def registry(mongo_db: Any) -> Registry:
    registry = Registry(mongo_db)
    register_demo_fleet(registry, RELAYS, actor="test")
    return registry


@pytest.mark.integration
def test_every_failure_is_stored_with_its_reason(mongo_db: Any, registry: Registry) -> None:
    bus = FakeBus()

    def timeout() -> DeviceMessage:
        raise RequestTimeout("no answer")

    def offline() -> DeviceMessage:
        raise BusError("not connected to the broker")

    bus.answers = {
        RELAYS[0]: timeout,
        RELAYS[1]: offline,
        RELAYS[2]: lambda: MeterReply(
            RELAYS[2], "rsp", "t", failure="bad crc", failure_check="crc"
        ),
    }
    collector = Collector(bus, mongo_db, CollectorConfig(timeout_s=0.5))
    readings = collector.run_once()
    assert [r.ok for r in readings] == [False, False, False]
    failed = collector.store.failed_readings(*WIDE)
    assert sorted(failed["failure_check"]) == ["crc", "timeout", "timeout"]
    assert "no reply within 0.5 s" in set(failed["failure"])
    assert "not connected to the broker" in set(failed["failure"])
    assert collector.store.snapshots(*WIDE).empty


@pytest.mark.integration
def test_non_sas_boards_are_skipped_and_relays_can_be_named(
    mongo_db: Any, registry: Registry
) -> None:
    bus = FakeBus()
    bus.answers = {r: (lambda r=r: meter_reply(r, 1_000)) for r in RELAYS}
    bus.config[RELAYS[1]] = {"coms": ({"comsMode": 1}, 0.0)}
    collector = Collector(bus, mongo_db)
    assert [r.relay for r in collector.run_once()] == [RELAYS[0], RELAYS[2]]
    assert [r.relay for r in collector.run_once(["AA0000000003", RELAYS[1]])] == [RELAYS[2]]
    assert bus.requests.count(RELAYS[1]) == 0


@pytest.mark.integration
def test_a_ram_clear_raises_an_alert_and_counts_the_play_since(
    mongo_db: Any, registry: Registry
) -> None:
    from smib_core.store.alerts import AlertStore

    bus = FakeBus()
    start = datetime(2024, 5, 1, 10, 0, tzinfo=UTC).timestamp()
    now = [start]
    collector = Collector(bus, mongo_db, clock=lambda: now[0])
    for step, coin_in in enumerate((50_000, 60_000, 200, 700)):
        now[0] = start + 300 * step
        bus.answers[RELAYS[0]] = lambda c=coin_in: meter_reply(RELAYS[0], c)
        assert collector.run_once([RELAYS[0]])[0].ok
    hourly = collector.store.rollups("h", *WIDE)
    assert list(hourly["coin_in"]) == [10_000 + 200 + 500] and list(hourly["ram_clear"]) == [1]
    daily = collector.store.rollups("D", *WIDE)
    assert list(daily["coin_in"]) == [10_700] and list(daily["intervals"]) == [3]
    alerts = AlertStore(mongo_db).unacknowledged()
    assert [(a.kind, a.relay) for a in alerts] == [("ram_clear", RELAYS[0])]


# --- simulated fleet on a real broker -------------------------------------------------


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return make_topics(topic_prefix)


@pytest.fixture
def fleet(mosquitto: Mosquitto, topics: Topics) -> Iterator[Fleet]:
    with Fleet(
        mosquitto.uri, topics, relays=4, seed=5, events_per_minute=0, time_scale=600, reboot_s=0.5
    ) as fleet:
        yield fleet


@pytest.fixture
def bus(mosquitto: Mosquitto, topics: Topics) -> Iterator[DeviceBus]:
    with DeviceBus(mosquitto.uri, topics, client_id_prefix="test-collector") as bus:
        assert bus.wait_connected(10)
        yield bus


@pytest.fixture
def fleet_registry(mongo_db: Any, fleet: Fleet) -> Registry:
    registry = Registry(mongo_db)
    register_demo_fleet(registry, fleet.relay_ids, actor="test")
    return registry


def coin_in_of(fleet: Fleet, relay: str) -> int:
    board = fleet.board(relay)
    with fleet.lock:
        return board.meter_values(time.time())["0000"]


@pytest.mark.integration
def test_once_reads_every_board_and_keeps_the_rollups_right(
    mongo_db: Any, fleet: Fleet, bus: DeviceBus, fleet_registry: Registry
) -> None:
    faulty, silent = fleet.relay_ids[1], fleet.relay_ids[2]
    collector = Collector(bus, mongo_db, CollectorConfig(timeout_s=1.0))
    first = collector.run_once()
    assert [r.ok for r in first] == [True] * 4 and all(r.meters >= 9 for r in first)
    fleet.set_faults(faulty, Faults(error_rate=1.0))
    fleet.set_online(silent, False)
    second = {r.relay: r for r in collector.run_once()}
    assert second[faulty].failure_check == "device_error"
    assert second[silent].failure_check == "timeout"
    fleet.set_faults(faulty, None)
    fleet.set_online(silent, True)
    time.sleep(0.3)
    assert all(r.ok for r in collector.run_once())

    store = MeterStore(mongo_db)
    snapshots = store.snapshots(*WIDE)
    assert len(snapshots) == 4 + 2 + 4 and len(store.failed_readings(*WIDE)) == 2
    by_id = snapshots.assign(cabinet=snapshots["cabinet_id"])
    for freq in ("h", "D"):
        expected = rollup(meter_movement(by_id), freq).set_index(["cabinet", "bucket"]).sort_index()
        stored = store.rollups(freq, *WIDE).set_index(["cabinet_id", "bucket"]).sort_index()
        assert len(stored) == len(expected)
        for column in ("coin_in", "games_played", "intervals", "coin_in_money"):
            assert list(stored[column]) == pytest.approx(list(expected[column]))
    gap = snapshots[snapshots["relay"] == silent]["0000"]
    moved = store.rollups("h", *WIDE, cabinet_ids=[fleet_registry.cabinet_for_relay(silent).id])
    assert moved["coin_in"].sum() == gap.iloc[-1] - gap.iloc[0] > 0, "the gap is counted"
    assert_location_hours_match(store)
    assert_daily_digests_match(store)


def assert_daily_digests_match(store: MeterStore) -> None:
    """The daily digests hold the daily rollup rows, every day of them."""
    daily = store.rollups("D", *WIDE)
    assert len(daily) > 0
    pd.testing.assert_frame_equal(store.daily_digest(*WIDE), daily)


def assert_location_hours_match(store: MeterStore) -> None:
    """The location-hourly rows say what the hourly rollups say, location by hour."""
    hourly = store.rollups("h", *WIDE)
    places = store.location_hourly(*WIDE)
    expected = location_hourly_frame(hourly)
    assert len(places) == len(expected) > 0
    assert list(places["location_id"]) == list(expected["location_id"])
    assert list(places["bucket"]) == list(expected["bucket"])
    assert list(places["cabinets"]) == list(expected["cabinets"])
    assert list(places["coin_in_money"]) == pytest.approx(list(expected["coin_in_money"]))


@pytest.mark.integration
def test_a_restart_leaves_no_hole_in_movement(
    mongo_db: Any, fleet: Fleet, bus: DeviceBus, fleet_registry: Registry
) -> None:
    relay = fleet.relay_ids[0]
    collector = Collector(bus, mongo_db, CollectorConfig(timeout_s=0.3))
    before = collector.run_once([relay])[0]
    bus.send(relay, protocol.restart())
    time.sleep(0.1)
    assert collector.run_once([relay])[0].failure_check == "timeout"
    time.sleep(0.6)
    after = collector.run_once([relay])[0]
    assert before.ok and after.ok
    snapshots = MeterStore(mongo_db).snapshots(*WIDE)
    counted = MeterStore(mongo_db).rollups("h", *WIDE)["coin_in"].sum()
    assert counted == snapshots["0000"].iloc[-1] - snapshots["0000"].iloc[0] > 0


@pytest.mark.integration
def test_only_the_lease_holder_reads_on_its_schedule(
    mongo_db: Any, fleet: Fleet, bus: DeviceBus, fleet_registry: Registry
) -> None:
    config = CollectorConfig(period_s=2, timeout_s=0.5, lease_ttl_s=3)
    one = Collector(bus, mongo_db, config, owner="one")
    two = Collector(bus, mongo_db, config, owner="two")
    one.start()
    time.sleep(0.2)
    two.start()
    try:
        time.sleep(2.5)
        assert one.stats().holding_lease and not two.stats().holding_lease
        assert one.stats().reads >= 4 and two.stats().reads == 0
        one.stop()
        deadline = time.monotonic() + 6  # a period after it takes the lease, and some
        while two.stats().reads == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert two.stats().holding_lease and two.stats().reads > 0, "the other took over"
    finally:
        one.stop()
        two.stop()
    store = MeterStore(mongo_db)
    snapshots = store.snapshots(*WIDE)
    assert set(snapshots["relay"]) == set(fleet.relay_ids)
    scheduled = store.scheduled_snapshots(*WIDE)
    assert len(scheduled) == len(snapshots) + len(store.failed_readings(*WIDE))
    for doc in scheduled:  # never before its slot is due, at most a period after
        after_due = doc["at"].timestamp() - slot_due(doc["relay"], doc["slot"], 2)
        assert -0.01 <= after_due < 2 + 0.5, (doc, after_due)
    report = audit_slots(scheduled, 2)
    assert set(report) == {c.id for c in fleet_registry.cabinets()}
    assert all(audit.complete for audit in report.values()), report
    late = [
        (at.timestamp() - offset_s(relay, 2)) % 2
        for relay, at in zip(snapshots["relay"], snapshots["at"], strict=True)
    ]
    # On taking the lease a board whose current slot has no record is read at once
    # (once per board and holder); the others are read on time.
    assert sum(lag < 0.8 for lag in late) >= len(late) / 2
    assert_location_hours_match(MeterStore(mongo_db))  # flushed on start and stop
    assert_daily_digests_match(MeterStore(mongo_db))


# --- slots, gaps and the backlog (fake bus, embedded database) ------------------------


class FlakyStore(MeterStore):
    """A meter store whose database can be made to "go away" (AutoReconnect)."""

    down = False

    def store_snapshots(self, docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self.down:
            raise AutoReconnect("connection refused")
        return super().store_snapshots(docs)


@pytest.mark.integration
def test_readings_wait_for_the_database_and_dropped_ones_are_recorded_missed(
    mongo_db: Any, registry: Registry
) -> None:
    bus = FakeBus()
    coin = iter(range(1_000, 10**9, 1_000))
    bus.answers = {r: (lambda r=r: meter_reply(r, next(coin))) for r in RELAYS}
    store = FlakyStore(mongo_db)
    now = [datetime(2024, 5, 1, 10, 0, tzinfo=UTC).timestamp()]
    config = CollectorConfig(period_s=60, backlog_max=4)
    collector = Collector(bus, mongo_db, config, store=store, clock=lambda: now[0])
    target = next(t for t in collector.targets() if t.relay == RELAYS[0])
    store.down = True
    for slot in range(100, 106):  # six readings, room for four
        now[0] += 60
        assert collector.read(target, slot).ok
    assert collector.stats().backlog == 4 and collector.stats().dropped == 2
    assert mongo_db.meter_snapshots.count_documents({}) == 0
    assert not collector.drain()

    store.down = False
    assert collector.drain()
    docs = {d["slot"]: d for d in mongo_db.meter_snapshots.find()}
    assert sorted(docs) == list(range(100, 106)), "every slot has its record"
    assert [docs[k]["failure_check"] for k in (100, 101)] == ["missed", "missed"]
    assert "backlog" in docs[100]["failure"] and "database" in docs[100]["failure"]
    assert all(docs[k]["ok"] for k in range(102, 106))
    assert [docs[k]["meters"]["0000"] for k in range(102, 106)] == [3_000, 4_000, 5_000, 6_000]
    hourly = store.rollups("h", *WIDE)
    assert hourly["coin_in"].sum() == 3_000, "the rollups count the written backlog"
    assert collector.drain() and collector.stats().backlog == 0
    assert mongo_db.meter_snapshots.count_documents({}) == 6


@pytest.mark.integration
def test_a_new_holder_records_the_slots_nobody_read_and_reads_at_once(
    mongo_db: Any, registry: Registry
) -> None:
    bus = FakeBus()
    bus.answers = {r: (lambda r=r: meter_reply(r, 5_000)) for r in RELAYS}
    period = 3600.0  # one day is 24 slots: an older gap becomes one record
    store = MeterStore(mongo_db)
    now = time.time()
    cabinets = {c.relay: c.id for c in registry.cabinets()}
    recorded = {
        r: slot_of(r, now, period) - back for r, back in zip(RELAYS, (1, 3, 30), strict=True)
    }
    for relay, slot in recorded.items():
        fields = {"slot": slot, "period_s": period, "cabinet_id": cabinets[relay]}
        store.insert_snapshot(relay, datetime.now(UTC), meters={"0000": 1}, **fields)

    collector = Collector(bus, mongo_db, CollectorConfig(period_s=period, lease_ttl_s=3))
    collector.start()
    try:
        deadline = time.monotonic() + 10
        while collector.stats().reads < 3 or collector.stats().missed < 27:
            assert time.monotonic() < deadline, collector.stats()
            time.sleep(0.1)
    finally:
        collector.stop()
    docs = store.scheduled_snapshots(*WIDE, period_s=period)
    report = audit_slots(docs, period)
    for relay in RELAYS:
        audit = report[cabinets[relay]]
        assert audit.complete and audit.last == slot_of(relay, time.time(), period), audit
    missed = [d for d in docs if d["failure_check"] == "missed"]
    assert len(missed) == 0 + 2 + 24 + 1
    assert [d["slot_to"] - d["slot_from"] for d in missed if "slot_to" in d] == [29 - 24 - 1]
    assert {d["relay"] for d in docs if d["ok"]} == set(RELAYS)


@pytest.mark.integration
def test_a_holder_with_nothing_to_read_idles(mongo_db: Any) -> None:
    import psutil

    collector = Collector(FakeBus(), mongo_db, CollectorConfig(period_s=2, lease_ttl_s=3))
    collector.start()
    try:
        deadline = time.monotonic() + 5
        while not collector.stats().holding_lease:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = psutil.Process().cpu_times()
        time.sleep(2)
        after = psutil.Process().cpu_times()
    finally:
        collector.stop()
    busy = (after.user - before.user) + (after.system - before.system)
    assert busy < 0.5, f"{busy:.2f} s of CPU in 2 s with no board to read"


@pytest.mark.integration
def test_a_slot_whose_board_is_still_being_read_is_recorded_missed(
    mongo_db: Any, registry: Registry
) -> None:
    from smib_core.services.collector import STILL_READING

    bus = FakeBus()
    slow = RELAYS[0]

    def slow_reply() -> DeviceMessage:
        time.sleep(4.5)  # longer than two periods: the next slot cannot be read
        return meter_reply(slow, 1_000)

    bus.answers = {r: (lambda r=r: meter_reply(r, 1_000)) for r in RELAYS} | {slow: slow_reply}
    collector = Collector(bus, mongo_db, CollectorConfig(period_s=2, lease_ttl_s=3))
    collector.start()
    try:
        time.sleep(7)
    finally:
        collector.stop()
    docs = MeterStore(mongo_db).scheduled_snapshots(*WIDE, period_s=2)
    report = audit_slots(docs, 2)
    assert all(audit.complete for audit in report.values()), report
    slow_docs = sorted((d for d in docs if d["relay"] == slow), key=lambda d: d["slot"])
    reasons = [d.get("failure") for d in slow_docs]
    assert STILL_READING in reasons and None in reasons, reasons
    fast = [d for d in docs if d["relay"] != slow]
    assert fast and all(d["ok"] for d in fast)
