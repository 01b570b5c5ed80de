"""Presence: heartbeats keep boards' last-seen and firmware current; one sender per deployment."""

from __future__ import annotations

import time
from typing import Any

import pytest

from smib_core.bus import DeviceBus
from smib_core.protocol import Topics
from smib_core.services.presence import PresencePoller
from smib_core.sim.fleet import Fleet
from smib_core.store.leases import Lease
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


def _topics(prefix: str) -> Topics:
    return Topics(
        pub=f"{prefix}sas/relay/",
        cfg=f"{prefix}smib/config",
        sub=f"{prefix}sas/gy/server",
        gli=f"{prefix}sas/gli/server/",
    )


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_heartbeat_makes_silent_boards_known(mosquitto: Mosquitto, topic_prefix: str) -> None:
    topics = _topics(topic_prefix)
    with DeviceBus(mosquitto.uri, topics) as bus:
        assert bus.wait_connected(10)
        with Fleet(mosquitto.uri, topics, relays=3, seed=21, events_per_minute=0) as fleet:
            time.sleep(0.5)
            first_seen = dict(bus.relays_seen())
            assert first_seen == {}  # strict boards say nothing unprompted
            poller = PresencePoller(bus, lambda: fleet.relay_ids, heartbeat_s=1.0)
            assert poller.run_cycle() == 3
            assert _wait(
                lambda: all(
                    bus.relays_seen().get(r, 0) > first_seen.get(r, 0) for r in fleet.relay_ids
                )
            )
            for relay in fleet.relay_ids:
                assert bus.firmware(relay) == (
                    fleet.board(relay).firmware,
                    fleet.board(relay).version,
                )
                assert _wait(lambda r=relay: "coms" in bus.latest_config(r))


class CountingBus:
    """Counts the `app` reads sent, and when."""

    connected = True

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    def relays_seen(self) -> dict[str, float]:
        return {}

    def send(self, relay: str, command: Any) -> None:
        if command.payload.get("comp") == "app":
            self.asked.append((relay, time.monotonic()))


def test_the_first_cycle_asks_every_board_quickly_the_next_ones_spread_out() -> None:
    relays = [f"e831cd{n:06x}" for n in range(10)]
    bus = CountingBus()
    poller = PresencePoller(bus, lambda: relays, heartbeat_s=60.0, first_spread_s=0.3)  # type: ignore[arg-type]
    began = time.monotonic()
    assert poller.run_cycle() == 10
    assert time.monotonic() - began < 2.0 and {r for r, _ in bus.asked} == set(relays)
    poller.start()  # the second cycle: one board every 6 s
    time.sleep(0.5)
    poller.stop()
    assert len(bus.asked) <= 11


def test_only_the_lease_holder_sends(
    mosquitto: Mosquitto, topic_prefix: str, mongo_db: Any
) -> None:
    topics = _topics(topic_prefix)
    Lease(mongo_db, "presence", "someone-else", ttl_s=60).acquire()
    with DeviceBus(mosquitto.uri, topics) as bus:
        assert bus.wait_connected(10)
        lease = Lease(mongo_db, "presence", "me", ttl_s=60)
        poller = PresencePoller(bus, lambda: ["0123456789ab"], heartbeat_s=1.0, lease=lease)
        poller.start()
        time.sleep(1.5)
        poller.stop()
        assert poller.cycles == 0 and bus.stats().messages_out == 0
