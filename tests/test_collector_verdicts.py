"""The collector applies the money rules (`analytics.verdicts`) to what the bus hands
it: a replayed old reply is read again and never booked, a real RAM clear is booked
after reading low twice, a stamp behind the cabinet's latest is refused and alerted
when it repeats. Fake bus, embedded database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from smib_core.protocol import DeviceMessage
from smib_core.services.collector import Collector
from smib_core.services.demo import register_demo_fleet
from smib_core.store.alerts import AlertStore
from smib_core.store.registry import Registry
from tests.test_collector import WIDE, FakeBus, meter_reply

RELAY = "aa0000000001"
START = datetime(2024, 5, 1, 10, 0, tzinfo=UTC).timestamp()

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(mongo_db: Any) -> Registry:
    registry = Registry(mongo_db)
    register_demo_fleet(registry, [RELAY], actor="test")
    return registry


def answers(*coin_in: int) -> Iterator[DeviceMessage]:
    return iter(meter_reply(RELAY, c) for c in coin_in)


def test_a_replayed_old_reply_is_read_again_and_never_booked(
    mongo_db: Any, registry: Registry
) -> None:
    bus, now = FakeBus(), [START]
    collector = Collector(bus, mongo_db, clock=lambda: now[0])
    # Reads at 0, 5, 10 min; at 10 min an old reply (50,000) answers first, then the true one.
    replies = answers(50_000, 60_000, 50_000, 61_000)
    bus.answers[RELAY] = lambda: next(replies)
    for minute in (0, 5, 10):
        now[0] = START + 60 * minute
        assert collector.run_once()[0].ok
    good = collector.store.snapshots(*WIDE)
    assert list(good["0000"]) == [50_000, 60_000, 61_000]
    assert bus.requests.count(RELAY) == 4  # the suspect reply was read again
    hourly = collector.store.rollups("h", *WIDE)
    assert list(hourly["coin_in"]) == [11_000] and list(hourly["ram_clear"]) == [0]
    assert AlertStore(mongo_db).unacknowledged() == []


def test_a_reread_that_answers_the_latest_meters_books_nothing_more(
    mongo_db: Any, registry: Registry
) -> None:
    bus, now = FakeBus(), [START]
    collector = Collector(bus, mongo_db, clock=lambda: now[0])
    replies = answers(50_000, 60_000, 50_000, 60_000)
    bus.answers[RELAY] = lambda: next(replies)
    for minute in (0, 5, 10):
        now[0] = START + 60 * minute
        collector.run_once()
    failed = collector.store.failed_readings(*WIDE)
    assert failed.empty  # the re-read repeated the latest reading: booked, moving 0
    assert list(collector.store.snapshots(*WIDE)["0000"]) == [50_000, 60_000, 60_000]
    assert AlertStore(mongo_db).unacknowledged() == []


def test_a_ram_clear_reads_low_twice_and_is_booked_once(mongo_db: Any, registry: Registry) -> None:
    bus, now = FakeBus(), [START]
    collector = Collector(bus, mongo_db, clock=lambda: now[0])
    replies = answers(50_000, 60_000, 200, 200, 700)
    bus.answers[RELAY] = lambda: next(replies)
    for minute in (0, 5, 10, 15):
        now[0] = START + 60 * minute
        assert collector.run_once()[0].ok
    assert list(collector.store.snapshots(*WIDE)["0000"]) == [50_000, 60_000, 200, 700]
    hourly = collector.store.rollups("h", *WIDE)
    assert list(hourly["coin_in"]) == [10_000 + 200 + 500] and list(hourly["ram_clear"]) == [1]
    assert [a.kind for a in AlertStore(mongo_db).unacknowledged()] == ["ram_clear"]


def test_a_stamp_behind_the_latest_reading_is_refused_and_alerted_when_it_repeats(
    mongo_db: Any, registry: Registry
) -> None:
    bus, now = FakeBus(), [START]
    collector = Collector(bus, mongo_db, clock=lambda: now[0])
    coin = iter(range(50_000, 60_000, 100))
    bus.answers[RELAY] = lambda: meter_reply(RELAY, next(coin))
    now[0] = START + 600
    assert collector.run_once()[0].ok
    now[0] = START + 200  # a clock stepped back 400 s
    for _ in range(3):
        [reading] = collector.run_once()
        assert not reading.ok and reading.failure_check == "clock_behind"
    assert len(collector.store.snapshots(*WIDE)) == 1
    failed = collector.store.failed_readings(*WIDE)
    assert list(failed["failure_check"]) == ["clock_behind"] * 3
    assert [a.kind for a in AlertStore(mongo_db).unacknowledged()] == ["clock_behind"]


def test_a_reply_after_the_timeout_is_stored_as_a_late_reading(
    mongo_db: Any, mosquitto: Any, topic_prefix: str
) -> None:
    import time

    from smib_core.bus import DeviceBus
    from smib_core.services.collector import CollectorConfig
    from smib_core.sim.board import Faults
    from smib_core.sim.fleet import Fleet
    from tests.test_bus import make_topics

    topics = make_topics(topic_prefix)
    slow = Faults(reply_delay_s=1.5, jitter_s=0)
    with (
        Fleet(mosquitto.uri, topics, relays=1, seed=9, events_per_minute=0, faults=slow) as fleet,
        DeviceBus(mosquitto.uri, topics, client_id_prefix="test-late") as bus,
    ):
        assert bus.wait_connected(10)
        register_demo_fleet(Registry(mongo_db), fleet.relay_ids, actor="test")
        collector = Collector(bus, mongo_db, CollectorConfig(timeout_s=0.5), alerts=False)
        [reading] = collector.run_once()
        assert not reading.ok and reading.failure_check == "timeout"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and collector.store.snapshots(*WIDE).empty:
            time.sleep(0.1)
    good = collector.store.snapshots(*WIDE)
    assert len(good) == 1
    raw = mongo_db["meter_snapshots"].find_one({"ok": True})
    assert raw is not None and raw.get("late") is True
    assert good["at"].iloc[0] > pd.Timestamp(reading.at)  # its real arrival time


def test_the_collector_measures_its_clock_against_the_databases(
    mongo_db: Any, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from smib_core.services.collector import CollectorConfig
    from smib_core.store.clock import database_clock_skew

    assert abs(database_clock_skew(mongo_db)) < 1.0  # one machine, one clock
    bus = FakeBus()
    bus.answers[RELAY] = lambda: meter_reply(RELAY, 1_000)
    slow = Collector(bus, mongo_db, CollectorConfig(period_s=60), clock=lambda: time.time() - 400)
    slow.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and slow.store.snapshots(*WIDE).empty:
            time.sleep(0.1)
    finally:
        slow.stop()
    skew = slow.stats().clock_skew_s
    assert skew is not None and -401 < skew < -399
    assert "400.0 s behind the database's" in caplog.text
    [stamp] = slow.store.snapshots(*WIDE)["at"]  # stamped in the database's time
    assert abs(stamp.timestamp() - time.time()) < 30
    from smib_core.store.clock import clock_checks

    [check] = clock_checks(mongo_db)  # for the Bus status page
    assert check["_id"] == "collector" and -401 < check["skew_s"] < -399


def test_a_clock_stepped_back_under_a_running_collector_is_caught_up_with(
    mongo_db: Any, registry: Registry
) -> None:
    import itertools
    import time

    from smib_core.services.collector import CollectorConfig
    from smib_core.sim.faults import SkewedClock
    from smib_core.store.clock import clock_checks

    bus, clock = FakeBus(), SkewedClock()
    coin = itertools.count(50_000, 100)
    bus.answers[RELAY] = lambda: meter_reply(RELAY, next(coin))
    collector = Collector(bus, mongo_db, CollectorConfig(period_s=2), clock=clock, alerts=False)
    collector.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(collector.store.snapshots(*WIDE)) < 2:
            time.sleep(0.1)
        clock.step(-400)  # an NTP step, between two checks
        stepped, deadline = time.time(), time.monotonic() + 30
        while time.monotonic() < deadline:
            stamps = collector.store.snapshots(*WIDE)["at"]
            if sum(s.timestamp() > stepped for s in stamps) >= 3:
                break
            time.sleep(0.2)
    finally:
        collector.stop()
    stamps = collector.store.snapshots(*WIDE)["at"]
    assert stamps.is_monotonic_increasing and stamps.is_unique
    assert sum(s.timestamp() > stepped for s in stamps) >= 3  # stamped in the database's time
    assert abs(stamps.iloc[-1].timestamp() - time.time()) < 10
    [check] = clock_checks(mongo_db)
    assert -401 < check["skew_s"] < -399


def test_a_history_the_database_cannot_give_judges_nothing(
    mongo_db: Any, registry: Registry
) -> None:
    from pymongo.errors import AutoReconnect

    bus, now = FakeBus(), [START]
    first = Collector(bus, mongo_db, clock=lambda: now[0])
    replies = answers(50_000, 60_000)
    bus.answers[RELAY] = lambda: next(replies)
    for minute in (0, 5):
        now[0] = START + 60 * minute
        assert first.run_once()[0].ok
    second = Collector(bus, mongo_db, clock=lambda: now[0])  # a new holder
    real, failures = second.store.previous_snapshots, iter([AutoReconnect("away")])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if (failure := next(failures, None)) is not None:
            raise failure  # the first read of the cabinet's history fails
        return real(*args, **kwargs)

    second.store.previous_snapshots = flaky  # type: ignore[method-assign]
    replies = answers(50_000, 61_000)  # a replay of the first reply, then the truth
    bus.answers[RELAY] = lambda: next(replies)
    now[0] = START + 600
    [unjudged] = second.run_once()
    assert not unjudged.ok and unjudged.failure_check == "unjudged"
    now[0] = START + 900
    assert second.run_once()[0].ok
    assert list(second.store.snapshots(*WIDE)["0000"]) == [50_000, 60_000, 61_000]
    assert list(second.store.rollups("h", *WIDE)["coin_in"]) == [11_000]
    assert AlertStore(mongo_db).unacknowledged() == []


def test_one_process_reads_at_a_time_and_each_reads_what_the_other_stored(
    mongo_db: Any, registry: Registry
) -> None:
    from smib_core.services.collector import CollectorBusy

    bus, now = FakeBus(), [START]
    coin = iter([50_000, 55_000, 56_000, 60_000, 61_000])
    bus.answers[RELAY] = lambda: meter_reply(RELAY, next(coin))
    holder = Collector(bus, mongo_db, clock=lambda: now[0])
    other = Collector(bus, mongo_db, clock=lambda: now[0])  # `smib collect --once` beside it
    for minute, who in ((50, holder), (56, holder), (59, other), (61, holder), (66, holder)):
        now[0] = START + 60 * minute
        assert who.run_once()[0].ok
    hourly = holder.store.rollups("h", *WIDE)
    assert list(hourly["coin_in"]) == [6_000, 5_000]  # 10:56-10:59 counted once, in 10:00
    assert holder.lease.try_acquire()  # a holder's loop, say
    with pytest.raises(CollectorBusy, match="another process collects"):
        other.run_once()
    holder.lease.release()


def test_a_meter_of_more_than_18_digits_is_refused_and_jams_nothing(
    mongo_db: Any, registry: Registry
) -> None:
    from smib_core import sas
    from smib_core.protocol import MeterReply

    def reply(coin_in: int, size: int = 4) -> MeterReply:
        meters = (sas.Meter("0000", size, coin_in), sas.Meter("0005", 4, coin_in // 100))
        return MeterReply(RELAY, "rsp", "t", reading=sas.MeterReading(1, "6F", 0, meters))

    bus, now = FakeBus(), [START]
    collector = Collector(bus, mongo_db, clock=lambda: now[0])
    replies = iter([reply(50_000), reply(10**20 - 1, size=10), reply(51_000), reply(52_000)])
    bus.answers[RELAY] = lambda: next(replies)
    checks = []
    for minute in (0, 5, 10, 15):
        now[0] = START + 60 * minute
        checks.append(collector.run_once()[0].failure_check)
    assert checks == [None, "too_large", None, None]
    assert list(collector.store.snapshots(*WIDE)["0000"]) == [50_000, 51_000, 52_000]
    assert collector.stats().store_errors == 0 and collector.stats().backlog == 0
