"""End to end, under faults: a real Mosquitto, the embedded database, simulated boards
that drop 20% of the commands (one of them answering after the timeout), and a replayer
publishing half of all meter replies again 0-9 s later (three periods of 3 s: as
harsh as 0-90 s on a 30 s period). The collector's coin in, drop and games must equal
the simulator's true meters exactly, with no RAM clear booked or alerted and no reading
out of order."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pytest

from smib_core.analytics import meter_movement
from smib_core.bus import DeviceBus
from smib_core.services.collector import Collector, CollectorConfig
from smib_core.services.demo import register_demo_fleet
from smib_core.sim.board import Faults
from smib_core.sim.faults import Replayer
from smib_core.sim.fleet import Fleet
from smib_core.store.alerts import AlertStore
from smib_core.store.registry import Registry
from tests.servers import Mosquitto
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration

PERIOD_S = 3.0
PERIODS = 10
WIDE = (pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
CHECKED = {"0000": "coin_in", "0024": "drop", "0005": "games_played"}


def test_counted_equals_the_simulators_truth_under_drops_replays_and_late_replies(
    mosquitto: Mosquitto, mongo_db: Any, topic_prefix: str
) -> None:
    topics = make_topics(topic_prefix)
    dropping = Faults(drop_rate=0.2)
    with (
        Fleet(
            mosquitto.uri,
            topics,
            relays=4,
            seed=11,
            events_per_minute=0,
            time_scale=60,
            faults=dropping,
        ) as fleet,
        DeviceBus(mosquitto.uri, topics, client_id_prefix="test-truth") as bus,
    ):
        assert bus.wait_connected(10)
        relays = fleet.relay_ids
        fleet.set_faults(relays[0], Faults(drop_rate=0.2, reply_delay_s=0.8, jitter_s=0))
        register_demo_fleet(Registry(mongo_db), relays, actor="test")
        config = CollectorConfig(period_s=PERIOD_S, timeout_s=0.5)
        collector = Collector(bus, mongo_db, config)
        replayer = Replayer(mosquitto.uri, topics, replay_rate=0.5, max_delay_s=3 * PERIOD_S)
        replayer.start()
        collector.start()
        try:
            time.sleep(PERIOD_S * PERIODS)
        finally:
            collector.stop()
            replayer.stop()
        for relay in relays:  # the boards behave again: one clean read ends the test
            fleet.set_faults(relay, Faults())
        time.sleep(1.0)
        final = collector.run_once()
        assert all(r.ok for r in final)
        truth = {relay: fleet.board(relay).machine.values() for relay in relays}
        replays = replayer.stats().get("replayed", 0)

    snapshots = collector.store.snapshots(*WIDE)
    failed = collector.store.failed_readings(*WIDE)
    movement = meter_movement(snapshots)
    report = []
    for relay in relays:
        mine = snapshots[snapshots["relay"] == relay].sort_values("at")
        assert mine["at"].is_monotonic_increasing and mine["at"].is_unique
        moved = movement[movement["relay"] == relay]
        first = mine.iloc[0]
        for code, name in CHECKED.items():
            counted = moved[name].sum()
            true_play = truth[relay][code] - int(first[code])
            report.append((relay, name, counted, true_play))
            assert counted == true_play, (relay, name, counted, true_play)
        for code in CHECKED:  # no good reading below the one before it
            assert mine[code].is_monotonic_increasing, (relay, code)
    assert not movement["ram_clear"].any() and not movement["absurd"].any()
    assert [a for a in AlertStore(mongo_db).unacknowledged() if a.kind == "ram_clear"] == []
    checks = failed["failure_check"].value_counts().to_dict() if not failed.empty else {}
    late = mongo_db["meter_snapshots"].count_documents({"late": True})
    print(
        f"\nreadings {len(snapshots)} good ({late} late), failed {checks}, "
        f"replays {replays}, verdicts {dict(collector.verdicts.counts)}"
    )
    for line in report:
        print(line)
    assert replays > 0 and late > 0
