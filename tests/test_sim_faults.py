"""The replayer (`sim/faults.py`) on a real Mosquitto: meter replies published again,
unchanged, within the delay window; other messages left alone."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from smib_core import protocol
from smib_core.bus import DeviceBus
from smib_core.errors import InvalidInput
from smib_core.protocol import MeterReply, Topics
from smib_core.sim.faults import Replayer
from smib_core.sim.fleet import Fleet
from tests.servers import Mosquitto
from tests.test_bus import make_topics


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return make_topics(topic_prefix)


@pytest.fixture
def bus(mosquitto: Mosquitto, topics: Topics) -> Iterator[DeviceBus]:
    with DeviceBus(mosquitto.uri, topics, client_id_prefix="test-replayer") as bus:
        assert bus.wait_connected(10)
        yield bus


def test_every_meter_reply_is_replayed_unchanged_within_the_window(
    mosquitto: Mosquitto, topics: Topics, bus: DeviceBus
) -> None:
    with (
        Fleet(mosquitto.uri, topics, relays=2, seed=3, events_per_minute=0) as fleet,
        Replayer(mosquitto.uri, topics, replay_rate=1.0, min_delay_s=0.4, max_delay_s=0.8),
    ):
        relay = fleet.relay_ids[0]
        asked = time.time()
        reply = bus.request(relay, protocol.read_meters(), 5)
        assert isinstance(reply, MeterReply) and reply.reading is not None
        bus.request(relay, protocol.config_read("app"), 5)  # a config reply: never replayed
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            meters = [e for e in bus.inbox(relay) if isinstance(e.message, MeterReply)]
            if len(meters) >= 2:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # nothing more: a replay is not replayed again
        meters = [e for e in bus.inbox(relay) if isinstance(e.message, MeterReply)]
        assert [m.message.pyd for m in meters if isinstance(m.message, MeterReply)] == [
            reply.pyd,
            reply.pyd,
        ]
        assert 0.4 <= meters[1].at - meters[0].at <= 1.5
        assert meters[0].at >= asked
        configs = [e for e in bus.inbox(relay) if e.message.typ == "cfg"]
        assert len(configs) == 1


def test_rates_and_delays_are_checked() -> None:
    with pytest.raises(InvalidInput):
        Replayer("mqtt://127.0.0.1:1", replay_rate=1.5)
    with pytest.raises(InvalidInput):
        Replayer("mqtt://127.0.0.1:1", min_delay_s=5, max_delay_s=1)
