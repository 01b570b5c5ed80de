"""Network faults the boards do not make: old meter replies delivered again, late.

A `Replayer` is a separate MQTT client on the broker (not a board): it hears every
meter reply the boards publish on the meter topic (`Topics.sub`) and publishes a share
of them (`replay_rate`) again, unchanged, `min_delay_s` to `max_delay_s` later, as a
flaky network, a bridge or a board's retry would. The protocol gives a reply no
correlation id and no time (PROTOCOL.md), so a replay looks exactly like a fresh reply:
this is what the collector's money rules (`analytics.verdicts`) must see through.

It keeps away from the boards' own behaviour (`sim/board.py`, `sim/fleet.py`): a fleet
with `Faults(reply_delay_s=...)` gives replies after the timeout; this adds replays.
A `SkewedClock` is the console's clock going wrong (a replica running behind, an NTP
step back): the boards have none (PROTOCOL.md), the collector stamps every reply.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt

from smib_core.errors import BusError, InvalidInput
from smib_core.protocol import Topics
from smib_core.settings import BrokerAddress
from smib_core.sim.scheduler import Scheduler

log = logging.getLogger(__name__)


class Replayer:
    """Republishes captured meter replies late; start once, stop once. Thread-safe."""

    def __init__(
        self,
        broker_uri: str,
        topics: Topics | None = None,
        *,
        replay_rate: float = 1.0,
        min_delay_s: float = 0.0,
        max_delay_s: float = 90.0,
        seed: int = 0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not 0.0 <= replay_rate <= 1.0:
            raise InvalidInput("the replay rate must be between 0 and 1")
        if not 0.0 <= min_delay_s <= max_delay_s:
            raise InvalidInput("replay delays: 0 <= minimum <= maximum")
        self.address = BrokerAddress.parse(broker_uri)
        self.topics = topics or Topics()
        self.replay_rate = replay_rate
        self.min_delay_s = min_delay_s
        self.max_delay_s = max_delay_s
        self._rng = random.Random(f"{seed}-replays")
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._mine: set[bytes] = set()  # payloads in flight from us: not captured again
        self._subscribed = threading.Event()
        self._scheduler = Scheduler("smib-sim-replayer")
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"smib-replayer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if self.address.username:
            self._client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self._client.tls_set_context(tls_context or ssl.create_default_context())
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        self._scheduler.start()
        self._client.connect_async(self.address.host, self.address.port, 60)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise BusError(f"the replayer could not subscribe at {self.address.uri()}")

    def stop(self, timeout: float = 10.0) -> None:
        self._scheduler.stop(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Replayer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """captured (meter replies heard), replayed (published again), and the replays
        by how late: replayed_0s_late (under 30 s), replayed_30s_late, replayed_60s_late
        (60 s or more)."""
        with self._lock:
            return dict(self._stats)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        client.subscribe(self.topics.sub, 0)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        with self._lock:
            if payload in self._mine:  # our own replay coming back
                self._mine.discard(payload)
                return
        try:
            is_meter_reply = json.loads(payload).get("typ") == "rsp"
        except (ValueError, AttributeError):
            return
        if not is_meter_reply:
            return
        with self._lock:
            self._stats["captured"] += 1
            if self._rng.random() >= self.replay_rate:
                return
            delay = self._rng.uniform(self.min_delay_s, self.max_delay_s)
        topic = message.topic
        self._scheduler.call_later(delay, lambda: self._replay(topic, payload, delay))

    def _replay(self, topic: str, payload: bytes, delay: float) -> None:
        with self._lock:
            self._mine.add(payload)
            self._stats["replayed"] += 1
            self._stats[f"replayed_{min(int(delay // 30) * 30, 60)}s_late"] += 1
        self._client.publish(topic, payload, qos=0)


class SkewedClock:
    """A process clock off the true one by `offset_s`, which `step` moves (an NTP step,
    a replica whose clock runs behind): pass it as a collector's `clock` to see its
    readings stamped at or before a cabinet's latest refused as `clock behind`."""

    def __init__(self, offset_s: float = 0.0, true_clock: Callable[[], float] = time.time):
        self._true = true_clock
        self._lock = threading.Lock()
        self._offset = float(offset_s)

    def __call__(self) -> float:
        with self._lock:
            return self._true() + self._offset

    def step(self, seconds: float) -> None:
        """Move the clock by `seconds` (negative: back)."""
        with self._lock:
            self._offset += float(seconds)

    @property
    def offset_s(self) -> float:
        with self._lock:
            return self._offset
