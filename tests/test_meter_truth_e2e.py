"""End to end, under faults: a real Mosquitto, the embedded database, simulated boards
that drop 20% of the commands (one of them answering after the timeout), and a replayer
publishing half of all meter replies again late. The collector's coin in, drop and games
must equal the simulator's true meters exactly, with no RAM clear booked or alerted and
no reading out of order (by slot, every good reading stamped after the one before).

Two runs: a fast one (3 s periods for 30 s, replays 0-9 s late: up to three periods) and
one in real time (20 s periods for 140 s, replays 0-90 s late) in which, half-way, the
collector is handed over to a replica whose clock runs 45 s behind, and that clock is
later stepped back 30 s more (an NTP step): readings are stamped in the database's time
all along."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from smib_core.analytics import meter_movement
from smib_core.bus import DeviceBus
from smib_core.services.collector import Collector, CollectorConfig
from smib_core.services.demo import register_demo_fleet
from smib_core.sim.board import Faults
from smib_core.sim.faults import Replayer, SkewedClock
from smib_core.sim.fleet import Fleet
from smib_core.store.alerts import AlertStore
from smib_core.store.clock import clock_checks
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
    run = Run(period_s=PERIOD_S, periods=PERIODS, timeout_s=0.5, late_reply_s=0.8)
    outcome = collect_under_faults(mosquitto, mongo_db, topic_prefix, run)
    check_truth(mongo_db, outcome)
    assert outcome.replays.get("replayed", 0) > 0 and outcome.late > 0


@pytest.mark.timeout(300)
def test_in_real_time_with_replays_up_to_90_s_late(
    mosquitto: Mosquitto, mongo_db: Any, topic_prefix: str
) -> None:
    run = Run(
        period_s=20.0,
        periods=7,
        timeout_s=2.0,
        late_reply_s=3.0,
        max_replay_s=90.0,
        time_scale=6,  # a busy machine
        replay_rate=1.0,
        relays=6,
        clock_skew=(50.0, -45.0),
        clock_step=(40.0, -30.0),
    )
    outcome = collect_under_faults(mosquitto, mongo_db, topic_prefix, run)
    check_truth(mongo_db, outcome)
    [check] = clock_checks(mongo_db)  # the replica's last check saw its clock stepped
    assert -76.0 < check["skew_s"] < -74.0
    replays = outcome.replays
    assert replays.get("replayed_30s_late", 0) > 0 and replays.get("replayed_60s_late", 0) > 0
    assert outcome.late > 0


@dataclass(frozen=True)
class Run:
    period_s: float
    periods: int
    timeout_s: float
    late_reply_s: float  # one board answers this long after a command (past the timeout)
    max_replay_s: float = 9.0
    clock_skew: tuple[float, float] | None = None  # (after s, skew s): a skewed one takes over
    clock_step: tuple[float, float] | None = None  # (after s more, step s) of the skewed clock
    time_scale: float = 60  # the machines' play runs this much faster than real time
    replay_rate: float = 0.5  # share of the meter replies published again
    relays: int = 4


@dataclass
class Outcome:
    collector: Collector
    relays: list[str]
    truth: dict[str, dict[str, int]]
    replays: dict[str, int]
    late: int = 0
    checks: dict[str, int] = field(default_factory=dict)


def collect_under_faults(
    mosquitto: Mosquitto, mongo_db: Any, topic_prefix: str, run: Run
) -> Outcome:
    topics = make_topics(topic_prefix)
    dropping = Faults(drop_rate=0.2)
    with (
        Fleet(
            mosquitto.uri,
            topics,
            relays=run.relays,
            seed=11,
            events_per_minute=0,
            time_scale=run.time_scale,
            faults=dropping,
        ) as fleet,
        DeviceBus(mosquitto.uri, topics, client_id_prefix="test-truth") as bus,
    ):
        assert bus.wait_connected(10)
        relays = fleet.relay_ids
        late = Faults(drop_rate=0.2, reply_delay_s=run.late_reply_s, jitter_s=0)
        fleet.set_faults(relays[0], late)
        register_demo_fleet(Registry(mongo_db), relays, actor="test")
        config = CollectorConfig(period_s=run.period_s, timeout_s=run.timeout_s)
        collector = Collector(bus, mongo_db, config)
        replayer = Replayer(
            mosquitto.uri, topics, replay_rate=run.replay_rate, max_delay_s=run.max_replay_s
        )
        replayer.start()
        collector.start()
        try:
            if run.clock_skew is not None:  # a replica whose clock runs behind takes over
                after, skew = run.clock_skew
                time.sleep(after)
                collector.stop()
                clock = SkewedClock(skew)
                collector = Collector(bus, mongo_db, config, clock=clock)
                collector.start()
                if run.clock_step is not None:
                    later, step = run.clock_step
                    time.sleep(later)
                    clock.step(step)
                    after += later
                time.sleep(run.period_s * run.periods - after)
            else:
                time.sleep(run.period_s * run.periods)
        finally:
            collector.stop()
            replayer.stop()
        for relay in relays:  # the boards behave again: one clean read ends the test
            fleet.set_faults(relay, Faults())
        time.sleep(1.0)
        for _ in range(3):  # a read refused by the rules (e.g. a suspect) is asked again
            final = collector.run_once()
            if all(r.ok for r in final):
                break
            print("final read not ok:", [(r.relay, r.failure) for r in final if not r.ok])
            time.sleep(1.0)
        assert all(r.ok for r in final)
        truth = {relay: fleet.board(relay).machine.values() for relay in relays}
        outcome = Outcome(collector, relays, truth, replayer.stats())
    failed = collector.store.failed_readings(*WIDE)
    counts = failed["failure_check"].value_counts() if not failed.empty else pd.Series()
    outcome.checks = {str(k): int(v) for k, v in counts.items()}
    outcome.late = mongo_db["meter_snapshots"].count_documents({"late": True})
    return outcome


def check_truth(mongo_db: Any, outcome: Outcome) -> None:
    """Counted = true for every cabinet; no RAM clear; no reading out of order."""
    collector = outcome.collector
    snapshots = collector.store.snapshots(*WIDE)
    movement = meter_movement(snapshots)
    report = []
    slots = {
        (d["relay"], d["at"]): d.get("slot")
        for d in mongo_db["meter_snapshots"].find({"ok": True}, {"relay": 1, "at": 1, "slot": 1})
    }
    for relay in outcome.relays:
        mine = snapshots[snapshots["relay"] == relay].sort_values("at")
        assert mine["at"].is_unique
        moved = movement[movement["relay"] == relay]
        first = mine.iloc[0]
        if moved["absurd"].any():  # shown whole before the assertion cuts it short
            print(moved[moved["absurd"]].to_dict("records"), mine.tail(4).to_dict("records"))
        assert not moved["absurd"].any(), moved[moved["absurd"]].to_dict("records")
        for code, name in CHECKED.items():
            counted = moved[name].sum()
            true_play = outcome.truth[relay][code] - int(first[code])
            report.append((relay, name, counted, true_play))
            assert counted == true_play, (relay, name, counted, true_play)
        for code in CHECKED:  # no good reading below the one before it
            assert mine[code].is_monotonic_increasing, (relay, code)
        by_slot = [
            slot
            for slot in (slots.get((relay, at.to_pydatetime())) for at in mine["at"])
            if slot is not None
        ]
        assert by_slot == sorted(by_slot), (relay, "a reading stamped before an earlier slot's")
    assert not movement["ram_clear"].any() and not movement["absurd"].any()
    assert [a for a in AlertStore(mongo_db).unacknowledged() if a.kind == "ram_clear"] == []
    print(
        f"\nreadings {len(snapshots)} good ({outcome.late} late), failed {outcome.checks}, "
        f"replays {outcome.replays}, verdicts {dict(collector.verdicts.counts)}"
    )
    for line in report:
        print(line)
