"""`smib bench ingest`: how fast device messages get through the broker into the bus.

Three figures, each beside a baseline measured in the same run:
- ingest rate: a burst of realistic device messages (meter replies with real SAS
  frames, config replies, events, from 1,000 boards) published by another process,
  received by the bus, against a raw paho client doing only `json.loads`;
- request -> reply latency (p50/p99) of `bus.request(meters)` against the simulator
  with 1,000 boards online (in its own process), beside a raw paho ping through the
  same broker;
- the bus process's RSS sampled through a flood of messages from 10,000 unknown relays.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import psutil

from smib_core import protocol, sas
from smib_core.bus import DeviceBus
from smib_core.protocol import Topics
from smib_core.settings import BrokerAddress


def _relay(n: int) -> str:
    return f"be{n:010x}"


def device_messages(count: int, relays: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """A realistic mix: 60% meter replies, 25% config replies, 15% events."""
    rng = random.Random(seed)
    topics = Topics()
    frames = [
        sas.encode_meter_reply(
            [sas.Meter(code, 5, rng.randrange(10**9)) for code in sas.STANDARD_METER_CODES]
        )
        .hex()
        .upper()
        for _ in range(64)
    ]
    for i in range(count):
        relay = _relay(rng.randrange(relays))
        pick = rng.random()
        if pick < 0.6:
            body: dict[str, Any] = {"rly": relay, "typ": "rsp", "sta": "", "pyd": frames[i % 64]}
            topic = topics.sub
        elif pick < 0.85:
            body = {
                "rly": relay,
                "typ": "cfg",
                "comp": "coms",
                "comsMode": 0,
                "comsAddr": 1,
                "comsRateMs": 200,
                "comsRTE": 0,
                "comsGPC": 0,
            }
            topic = topics.cfg
        else:
            body = {"rly": relay, "typ": "exp", "pyd": rng.choice(["7E", "7F", "4F", "11"])}
            topic = topics.sub
        yield topic, json.dumps(body, separators=(",", ":")).encode()


def _publish_burst(uri: str, count: int, relays: int, seed: int) -> None:
    """Child process: publish `count` messages as fast as paho allows (QoS 0)."""
    address = BrokerAddress.parse(uri)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{seed}")
    client.max_queued_messages_set(0)
    client.connect(address.host, address.port)
    client.loop_start()
    info = None
    for topic, payload in device_messages(count, relays, seed):
        info = client.publish(topic, payload, qos=0)
    if info is not None:
        info.wait_for_publish(timeout=300)  # everything written before disconnecting
    client.disconnect()
    client.loop_stop()


def _burst_in_child(uri: str, count: int, relays: int, seed: int) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(
        target=_publish_burst, args=(uri, count, relays, seed), daemon=True
    )
    process.start()
    return process


@dataclass(frozen=True, slots=True)
class Rate:
    received: int
    sent: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


class _Clock:
    """First/last arrival times and a count, safe to call from paho's thread."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()

    def tick(self) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.done.set()

    def rate(self) -> Rate:
        return Rate(self.count, self.expected, self.last - self.first)


def raw_baseline(uri: str, count: int, relays: int, timeout: float) -> Rate:
    """A bare paho client that only parses JSON: the ceiling for any MQTT consumer."""
    address = BrokerAddress.parse(uri)
    clock = _Clock(count)
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        json.loads(message.payload)
        clock.tick()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(address.host, address.port)
    client.subscribe([(t, 0) for t in Topics().device_topics()])
    client.loop_start()
    subscribed.wait(10)
    publisher = _burst_in_child(uri, count, relays, seed=1)
    clock.done.wait(timeout)
    publisher.join(30)
    client.disconnect()
    client.loop_stop()
    return clock.rate()


def bus_ingest(uri: str, count: int, relays: int, timeout: float) -> Rate:
    """The same burst through the DeviceBus: parse, decode SAS, route, count."""
    with DeviceBus(uri, Topics(), client_id_prefix="bench-bus") as bus:
        if not bus.wait_connected(10):
            raise RuntimeError("the bus did not connect")
        clock = _Clock(count)
        bus.add_listener(lambda _m: clock.tick())
        publisher = _burst_in_child(uri, count, relays, seed=1)
        clock.done.wait(timeout)
        publisher.join(30)
        return clock.rate()


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _run_fleet(uri: str, relays: int, ready: Any, stop: Any) -> None:
    from smib_core.sim.fleet import Fleet

    with Fleet(uri, relays=relays, seed=3, events_per_minute=0) as fleet:
        ready.put(fleet.relay_ids)
        stop.wait()


def request_latency(uri: str, boards: int, requests: int) -> tuple[list[float], list[float]]:
    """Milliseconds per `bus.request(meters)` to random boards of a simulated fleet, and
    per raw MQTT round trip (publish, the same client hears it back) as the baseline."""
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    fleet = ctx.Process(target=_run_fleet, args=(uri, boards, ready, stop), daemon=True)
    fleet.start()
    try:
        relays: list[str] = ready.get(timeout=120)
        rng = random.Random(7)
        with DeviceBus(uri, Topics(), client_id_prefix="bench-latency") as bus:
            if not bus.wait_connected(10):
                raise RuntimeError("the bus did not connect")
            command = protocol.read_meters()
            for relay in rng.sample(relays, min(20, len(relays))):  # warm up
                bus.request(relay, command, timeout=5)
            bus_ms = []
            for _ in range(requests):
                start = time.perf_counter()
                bus.request(rng.choice(relays), command, timeout=5)
                bus_ms.append((time.perf_counter() - start) * 1000)
        return bus_ms, _raw_round_trips(uri, requests)
    finally:
        stop.set()
        fleet.join(30)


def _raw_round_trips(uri: str, count: int) -> list[float]:
    address = BrokerAddress.parse(uri)
    heard = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ping")
    client.on_message = lambda *_: heard.set()
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(address.host, address.port)
    client.subscribe("bench/ping", 0)
    client.loop_start()
    subscribed.wait(10)
    samples = []
    for _ in range(count):
        heard.clear()
        start = time.perf_counter()
        client.publish("bench/ping", b'{"typ":"ping"}')
        heard.wait(5)
        samples.append((time.perf_counter() - start) * 1000)
    client.disconnect()
    client.loop_stop()
    return samples


def flood_rss(
    uri: str, count: int, relays: int, sample: Callable[[], float] | None = None
) -> list[tuple[int, float]]:
    """(messages received, RSS MiB) through a flood from `relays` unknown boards."""
    rss = sample or (lambda: psutil.Process().memory_info().rss / 2**20)
    points: list[tuple[int, float]] = []
    with DeviceBus(uri, Topics(), client_id_prefix="bench-flood") as bus:
        if not bus.wait_connected(10):
            raise RuntimeError("the bus did not connect")
        base = bus.stats().messages_in
        points.append((0, rss()))
        publisher = _burst_in_child(uri, count, relays, seed=2)
        step = max(1, count // 10)
        next_mark, last_progress, seen = step, time.monotonic(), 0
        while time.monotonic() - last_progress < 5.0:  # until 5 s without a message
            received = bus.stats().messages_in - base
            if received != seen:
                seen, last_progress = received, time.monotonic()
            if received >= next_mark:
                points.append((received, rss()))
                next_mark = received + step
            if received >= count:
                break
            time.sleep(0.05)
        publisher.join(30)
        points.append((bus.stats().messages_in - base, rss()))
    return points


def summarise(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.2f} ms, p99 {percentile(values, 99):.2f} ms, " + (
        f"mean {statistics.fmean(values):.2f} ms"
    )
