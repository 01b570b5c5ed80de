"""The device bus against a real Mosquitto, with a raw paho client playing the boards."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from smib_core import protocol, sas
from smib_core.bus import DeviceBus
from smib_core.errors import BusError, InvalidInput, RequestTimeout
from smib_core.protocol import ConfigReply, DeviceMessage, MeterReply, Topics
from tests.servers import Mosquitto, free_port

R1, R2 = "e831cdfa8384", "e831cdfa8385"
Reply = tuple[str, Mapping[str, Any]]  # topic, JSON object
Responder = Callable[[str, Mapping[str, Any]], list[Reply]]


def make_topics(prefix: str) -> Topics:
    return Topics(
        pub=prefix + "sas/relay/",
        cfg=prefix + "smib/config",
        sub=prefix + "sas/gy/server",
        gli=prefix + "sas/gli/server/",
        server=prefix + "sas/server",
    )


def meter_reply_hex() -> str:
    meters = [sas.Meter("0000", 5, 123_456), sas.Meter("0005", 4, 789), sas.Meter("000C", 4, 50)]
    return sas.encode_meter_reply(meters).hex().upper()


CONFIG: dict[str, dict[str, Any]] = {
    "net": {"netMode": 1, "netStaSSID": "floor", "netStaPwd": "s3cret-pw", "netStaChan": 6},
    "mqtt": {"mqttQOS": 0},
    "app": {"firmware": "cloudy", "version": "v0.0.1"},
}


def honest_board(topics: Topics) -> Responder:
    """Answers like a board: config on the cfg topic, meters on the data topic."""

    def respond(relay: str, cmd: Mapping[str, Any]) -> list[Reply]:
        if cmd["typ"] == "cfg":
            comp = cmd["comp"]
            return [
                (topics.cfg, {"rly": relay, "typ": "cfg", "comp": comp, **CONFIG.get(comp, {})})
            ]
        if cmd["typ"] == "cmd" and "pyd" in cmd:
            return [(topics.sub, {"rly": relay, "typ": "rsp", "sta": "", "pyd": meter_reply_hex()})]
        return []

    return respond


@contextmanager
def raw_client(broker: Mosquitto, subscribe: tuple[str, ...] = ()) -> Iterator[mqtt.Client]:
    """A plain paho client, connected (and subscribed) before the block starts."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        if subscribe:
            client.subscribe([(t, 0) for t in subscribe])
            assert subscribed.wait(5), "the broker did not confirm the subscription"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def fake_board(broker: Mosquitto, topics: Topics, respond: Responder) -> Iterator[list[Reply]]:
    """Boards on the broker: every command heard is answered by `respond`; yields the log."""
    heard: list[Reply] = []
    with raw_client(broker) as client:

        def on_command(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            relay = msg.topic.rsplit("/", 1)[-1]
            cmd = protocol.parse_command(bytes(msg.payload))
            assert cmd is not None
            heard.append((relay, cmd))
            for topic, obj in respond(relay, cmd):
                client.publish(topic, json.dumps(obj))

        client.on_message = on_command
        subscribed = threading.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe(topics.pub + "+")
        assert subscribed.wait(5)
        yield heard


@contextmanager
def running_bus(broker: Mosquitto, topics: Topics, **options: Any) -> Iterator[DeviceBus]:
    with DeviceBus(broker.uri, topics, client_id_prefix="test-bus", **options) as bus:
        assert bus.wait_connected(10), "the bus did not connect"
        yield bus


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return make_topics(topic_prefix)


@pytest.fixture
def bus(mosquitto: Mosquitto, topics: Topics) -> Iterator[DeviceBus]:
    with running_bus(mosquitto, topics) as bus:
        yield bus


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- without a broker ----------------------------------------------------------------


def test_the_broker_uri_is_parsed_and_shown_without_its_password() -> None:
    bus = DeviceBus("mqtts://ops:hunter22@broker.example:8883", Topics())
    stats = bus.stats()
    assert stats.broker == "mqtts://ops:••••••@broker.example:8883"
    assert "hunter22" not in repr(stats) and not stats.connected
    with pytest.raises(InvalidInput):
        DeviceBus("http://broker.example", Topics())
    with pytest.raises(InvalidInput):
        DeviceBus("mqtt://broker.example", Topics(), qos=3)


def test_commands_are_refused_while_not_connected() -> None:
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", Topics())
    with pytest.raises(BusError, match="not connected to the broker"):
        bus.send(R1, protocol.restart())
    with pytest.raises(BusError):
        bus.request(R1, protocol.config_read("net"), timeout=0.1)
    assert bus.stats().pending_requests == 0
    with pytest.raises(InvalidInput, match="send it instead"):
        bus.request(R1, protocol.restart())


def test_stop_joins_the_loop_thread_while_the_broker_is_unreachable() -> None:
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", Topics(), client_id_prefix="lonely")
    bus.start()
    bus.start()  # idempotent
    assert not bus.wait_connected(0.3)
    bus.stop()
    bus.stop()
    assert not any(t.name.startswith("paho-mqtt-client-lonely") for t in threading.enumerate())
    with pytest.raises(BusError, match="stopped"):
        bus.start()


# --- against Mosquitto ----------------------------------------------------------------


@pytest.mark.integration
def test_a_config_request_returns_the_reply_for_its_relay_and_component(
    mosquitto: Mosquitto, topics: Topics, bus: DeviceBus
) -> None:
    def decoys_first(relay: str, cmd: Mapping[str, Any]) -> list[Reply]:
        other_relay = {"rly": R2, "typ": "cfg", "comp": "net", "netMode": 0}
        other_comp = {"rly": relay, "typ": "cfg", "comp": "mqtt", "mqttQOS": 0}
        return [
            (topics.cfg, other_relay),
            (topics.cfg, other_comp),
            *honest_board(topics)(relay, cmd),
        ]

    heard_by_listener: list[DeviceMessage] = []
    bus.add_listener(heard_by_listener.append)
    with fake_board(mosquitto, topics, decoys_first) as heard:
        reply = bus.request(R1.upper(), protocol.config_read("net"), timeout=5)
    assert bus.wait_for_messages(3, timeout=5)  # the request may wake before listeners ran
    assert isinstance(reply, ConfigReply)
    assert (reply.relay, reply.comp, reply.fields["netStaSSID"]) == (R1, "net", "floor")
    assert heard == [(R1, {"typ": "cfg", "comp": "net"})]
    assert set(bus.latest_config(R1)) == {"mqtt", "net"}
    assert set(bus.relays_seen()) == {R1, R2}
    assert [e.message.comp for e in bus.inbox(R1)] == ["mqtt", "net"]
    first = bus.inbox(R1)[0].seq
    assert [e.message.comp for e in bus.messages_since(R1, first)] == ["net"]
    assert len(heard_by_listener) == 3
    stats = bus.stats()
    assert stats.messages_out == 1 and stats.messages_in == 3 and stats.pending_requests == 0
    assert stats.latency_p50_ms is not None and stats.latency_p50_ms > 0


@pytest.mark.integration
def test_meter_requests_return_the_reply_even_when_it_failed_a_check(
    mosquitto: Mosquitto, topics: Topics, bus: DeviceBus
) -> None:
    answers = iter([meter_reply_hex(), meter_reply_hex()[:-4] + "0000", "-1"])

    def meters(relay: str, cmd: Mapping[str, Any]) -> list[Reply]:
        return [(topics.sub, {"rly": relay, "typ": "rsp", "sta": "", "pyd": next(answers)})]

    with fake_board(mosquitto, topics, meters):
        good, bad_crc, device_error = (bus.request(R1, protocol.read_meters()) for _ in range(3))
    assert isinstance(good, MeterReply) and good.reading is not None
    assert good.reading.values() == {"0000": 123_456, "0005": 789, "000C": 50}
    assert isinstance(bad_crc, MeterReply) and bad_crc.failure_check == "crc"
    assert isinstance(device_error, MeterReply) and device_error.failure_check == "device_error"
    # A frame that failed a check is refused bytes; "-1" is a board's honest answer.
    assert bus.stats().rejections == {"meter_crc": 1}


@pytest.mark.integration
def test_a_request_answered_only_for_other_relays_and_components_times_out(
    mosquitto: Mosquitto, topics: Topics, bus: DeviceBus
) -> None:
    def wrong_answers(relay: str, cmd: Mapping[str, Any]) -> list[Reply]:
        return [
            (topics.cfg, {"rly": R2, "typ": "cfg", "comp": "net"}),
            (topics.cfg, {"rly": relay, "typ": "cfg", "comp": "coms"}),
            (topics.sub, {"rly": relay, "typ": "rsp", "sta": "", "pyd": "-1"}),
        ]

    with fake_board(mosquitto, topics, wrong_answers):
        with pytest.raises(RequestTimeout) as caught:
            bus.request(R1, protocol.config_read("net"), timeout=0.5)
        assert bus.wait_for_messages(3, timeout=5)
    assert str(caught.value) == f"board {R1} did not answer 'cfg net' within 0.5 s"
    assert bus.stats().pending_requests == 0


@pytest.mark.integration
@pytest.mark.parametrize("bad", ["ab#", "+", "a/b", "e831cdfa838", "e831cdfa838\x00", "#", ""])
def test_invalid_relay_ids_publish_nothing(
    mosquitto: Mosquitto, topics: Topics, topic_prefix: str, bus: DeviceBus, bad: str
) -> None:
    seen: list[str] = []
    with raw_client(mosquitto, subscribe=(topic_prefix + "#",)) as spy:
        spy.on_message = lambda client, userdata, msg: seen.append(msg.topic)
        with pytest.raises(InvalidInput):
            bus.send(bad, protocol.restart())
        with pytest.raises(InvalidInput):
            bus.request(bad, protocol.config_read("net"), timeout=0.5)
        # A valid command from the same client afterwards: once the spy has it, anything
        # published before it would have arrived too.
        bus.send(f" {R1.upper()} ", protocol.restart())
        assert wait_until(lambda: len(seen) >= 1, timeout=5)
        time.sleep(0.05)
    assert seen == [topics.pub + R1]
    assert bus.stats().messages_out == 1 and bus.stats().pending_requests == 0


def fuzz_cases(topics: Topics) -> list[tuple[str, bytes, str]]:
    """(topic, payload, the reason it must be refused for)."""
    rng = random.Random(20240501)
    gli_r1 = topics.gli_prefix() + R1

    def obj(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    device_topics = (topics.cfg, topics.sub, topics.server, gli_r1)
    cases = [
        (rng.choice(device_topics), b"\xff" + rng.randbytes(rng.randint(0, 300)), "not_utf8")
        for _ in range(40)
    ]
    cases += [
        (topics.sub, b"", "not_json"),
        (topics.sub, b"{'rly': 'single quotes'}", "not_json"),
        (topics.cfg, b'{"rly":"e831cdfa8384","typ":"cfg"', "not_json"),
        (topics.server, "plain text ü".encode(), "not_json"),
        (topics.sub, b"[1, 2, 3]", "not_object"),
        (topics.sub, b"null", "not_object"),
        (topics.sub, b"{" * (256 * 1024 + 1), "oversize"),
        (topics.sub, obj(rly=R1, typ="exp", pyd="7" * (300 * 1024)), "oversize"),
        (topics.sub, obj(rly="ab#", typ="exp", pyd="7E"), "bad_relay"),
        (topics.sub, obj(rly="+", typ="exp", pyd="7E"), "bad_relay"),
        (topics.sub, obj(rly="e831cdfa/384", typ="exp", pyd="7E"), "bad_relay"),
        (topics.sub, obj(rly=12345, typ="exp", pyd="7E"), "bad_relay"),
        (topics.sub, obj(typ="exp", pyd="7E"), "bad_relay"),
        (topics.gli_prefix() + "not a relay", obj(typ="exp", pyd="7E"), "bad_relay"),
        (topics.cfg, obj(rly=R1, typ="cfg", comp=5), "bad_field"),
        (topics.cfg, obj(rly=R1, typ="cfg", comp="wifi"), "bad_field"),
        (topics.sub, obj(rly=R1, typ="rsp", pyd=12), "bad_field"),
        (topics.sub, obj(rly=R1, typ="srsp", pyd=None), "bad_field"),
        (topics.sub, obj(rly=R1, typ="exp", pyd=""), "bad_field"),
        (topics.sub, obj(rly=R1, typ=7), "missing_typ"),
        (topics.sub, obj(rly=R1), "missing_typ"),
        (gli_r1, obj(typ="hello"), "unknown_typ"),
        (topics.sub, obj(rly=R1, typ="rsp", pyd=meter_reply_hex()[:-4] + "0000"), "meter_crc"),
        (topics.sub, obj(rly=R1, typ="rsp", pyd="ABC"), "meter_hex"),
        (topics.sub, obj(rly=R1, typ="rsp", pyd=meter_reply_hex()[:6]), "meter_length"),
    ]
    rng.shuffle(cases)
    return cases


@pytest.mark.integration
def test_a_fuzzed_stream_is_counted_by_reason_and_the_bus_keeps_working(
    mosquitto: Mosquitto, topics: Topics, bus: DeviceBus
) -> None:
    cases = fuzz_cases(topics)
    with raw_client(mosquitto) as device:
        for topic, payload, _ in cases:
            device.publish(topic, payload, qos=1)
        assert bus.wait_for_messages(len(cases), timeout=10)
    stats = bus.stats()
    assert stats.rejections == Counter(reason for _, _, reason in cases)
    assert stats.connected and stats.messages_in == len(cases)
    assert len(stats.recent_rejections) == len(cases)
    assert bus.last_seen(R1) is not None  # refused messages naming R1 still prove it alive
    with fake_board(mosquitto, topics, honest_board(topics)):
        reply = bus.request(R1, protocol.config_read("app"), timeout=5)
    assert bus.firmware(R1) == ("cloudy", "v0.0.1")
    assert isinstance(reply, ConfigReply)


@pytest.mark.integration
def test_a_flood_of_unknown_relays_keeps_memory_bounded(
    mosquitto: Mosquitto, topics: Topics
) -> None:
    with running_bus(mosquitto, topics, max_relays=500, inbox_size=5) as bus:
        with raw_client(mosquitto) as device:
            for n in range(10_000):
                event = {"rly": f"{n:012x}", "typ": "exp", "pyd": "7E"}
                device.publish(topics.sub, json.dumps(event), qos=1)
            for _ in range(50):
                device.publish(
                    topics.sub, json.dumps({"rly": R1, "typ": "exp", "pyd": "7F"}), qos=1
                )
            assert bus.wait_for_messages(10_050, timeout=20)
        stats = bus.stats()
        assert stats.relays_known == 500 and len(bus.relays_seen()) == 500
        assert stats.relays_evicted == 10_001 - 500
        assert len(bus.inbox(R1)) == 5 and stats.dropped == 45
        assert max(len(bus.inbox(r)) for r in bus.relays_seen()) == 5
        assert bus.last_seen(f"{0:012x}") is None  # the stalest was forgotten


@pytest.mark.integration
def test_the_bus_reconnects_and_resubscribes_after_the_broker_restarts(
    own_mosquitto: Mosquitto, topics: Topics
) -> None:
    options = {"reconnect_min_delay": 1, "reconnect_max_delay": 2}
    with running_bus(own_mosquitto, topics, **options) as bus:
        with fake_board(own_mosquitto, topics, honest_board(topics)):
            assert isinstance(bus.request(R1, protocol.config_read("net")), ConfigReply)
        own_mosquitto.stop()
        assert wait_until(lambda: not bus.connected, timeout=5)
        with pytest.raises(BusError, match="not connected"):
            bus.request(R1, protocol.config_read("net"))
        own_mosquitto.start()
        assert wait_until(lambda: bus.connected, timeout=15)
        assert bus.stats().reconnects == 1
        # The restarted broker kept no session: a reply now proves the bus resubscribed.
        with fake_board(own_mosquitto, topics, honest_board(topics)):
            reply = bus.request(R1, protocol.read_meters())
        assert isinstance(reply, MeterReply) and reply.reading is not None
