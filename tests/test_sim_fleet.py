"""The simulated fleet on a real Mosquitto, driven by a raw paho client as the server."""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from smib_core import protocol, sas
from smib_core.cli import main
from smib_core.errors import BusError
from smib_core.protocol import Topics
from smib_core.sim.board import Faults, Firmware
from smib_core.sim.fleet import Fleet
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.integration

Message = tuple[str, Any]  # (topic, decoded JSON, or the raw bytes when not JSON)


class Server:
    """A bare MQTT client playing the server: sends commands, collects what boards say."""

    def __init__(self, uri: str, topics: Topics) -> None:
        self.topics = topics
        self.inbox: queue.Queue[Message] = queue.Queue()
        client_id = f"test-server-{uuid.uuid4().hex[:6]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        port = int(uri.rsplit(":", 1)[1])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(t, 0) for t in topics.device_topics()])
        assert subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body: Any = json.loads(message.payload)
        except ValueError:
            body = bytes(message.payload)
        self.inbox.put((message.topic, body))

    def send(self, relay: str, payload: dict[str, Any] | protocol.Command) -> None:
        if isinstance(payload, protocol.Command):
            payload = dict(payload.payload)
        self.client.publish(self.topics.command_topic(relay), json.dumps(payload))

    def expect(self, match: Callable[[Any], bool], timeout: float = 3.0) -> Any:
        """The first message (decoded) matching `match`; others are dropped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, body = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(body, dict) and match(body):
                return body
        raise AssertionError("no matching message arrived")

    def ask_until(
        self, relay: str, comp: str, wanted: Callable[[Any], bool], timeout: float = 5.0
    ) -> Any:
        """Ask `comp` again and again until the board's answer is `wanted` (read-back)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send(relay, protocol.config_read(comp))
            try:
                answer = self.expect(is_(relay, "cfg", comp), timeout=0.3)
            except AssertionError:
                continue
            if wanted(answer):
                return answer
        raise AssertionError(f"{relay} never answered {comp} as wanted")

    def nothing(self, match: Callable[[Any], bool], within: float) -> None:
        with pytest.raises(AssertionError):
            self.expect(match, within)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def is_(relay: str, typ: str, comp: str | None = None) -> Callable[[Any], bool]:
    """Matches what `relay` says with this `typ` (and `comp`, when given)."""

    def match(m: Any) -> bool:
        return m.get("rly") == relay and m.get("typ") == typ and comp in (None, m.get("comp"))

    return match


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return Topics(
        pub=f"{topic_prefix}sas/relay/",
        cfg=f"{topic_prefix}smib/config",
        sub=f"{topic_prefix}sas/gy/server",
        gli=f"{topic_prefix}sas/gli/server/",
        server=f"{topic_prefix}sas/server",
    )


@pytest.fixture
def server(mosquitto: Mosquitto, topics: Topics) -> Iterator[Server]:
    srv = Server(mosquitto.uri, topics)
    yield srv
    srv.close()


@pytest.fixture
def make_fleet(
    mosquitto: Mosquitto, topics: Topics, server: Server
) -> Iterator[Callable[..., Fleet]]:
    """Start a fleet and wait until every board answers its `app` (strict boards announce
    nothing)."""
    started: list[Fleet] = []

    def make(**kwargs: Any) -> Fleet:
        options: dict[str, Any] = {
            "relays": 3,
            "seed": 1,
            "reboot_s": 0.5,
            "events_per_minute": 0.0,
            "ota_timeout_s": 3.0,
            **kwargs,
        }
        fleet = Fleet(mosquitto.uri, topics, **options)
        fleet.start()
        started.append(fleet)
        for relay in fleet.relay_ids:
            server.ask_until(relay, "app", lambda m: True)
        return fleet

    yield make
    for fleet in started:
        fleet.stop()


def test_config_read_write_round_trip(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet()
    relay = fleet.relay_ids[0]
    server.send(relay, protocol.config_read("coms"))
    coms = server.expect(is_(relay, "cfg", "coms"))
    assert coms["comsMode"] == 0 and set(coms) >= {"comsAddr", "comsRateMs", "comsGPC"}
    server.send(relay, protocol.config_write("coms", {"comsRateMs": 321}))
    server.nothing(is_(relay, "cfg"), within=0.5)  # strict: a write is not answered
    server.send(relay, protocol.config_read("coms"))
    assert server.expect(is_(relay, "cfg", "coms")) == {**coms, "comsRateMs": 321}
    server.send(relay, protocol.config_read("app"))
    app = server.expect(is_(relay, "cfg", "app"))
    assert app["firmware"] == "cloudy" and app["version"] == fleet.board(relay).version
    assert app["version"].startswith("v")


def test_meters_decode_and_advance(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(time_scale=3600.0)
    relay = fleet.relay_ids[1]
    readings = []
    for _ in range(2):
        server.send(relay, protocol.read_meters())
        reply = server.expect(is_(relay, "rsp"))
        assert reply["sta"] == ""
        readings.append(sas.decode_meter_reply(reply["pyd"]).values())
        time.sleep(0.5)
    first, second = readings
    assert list(first) == list(sas.STANDARD_METER_CODES)
    assert second["0005"] > first["0005"] and second["0000"] > first["0000"]
    assert second["0022"] == second["0001"] + second["0002"]


def test_events_arrive(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(events_per_minute=300.0)
    event = server.expect(lambda m: m.get("typ") == "exp", timeout=3.0)
    assert event["rly"] in fleet.relay_ids and event["pyd"] in sas.EVENT_CODES


def test_restart_goes_quiet_then_answers_again_without_announcing(
    server: Server, make_fleet: Callable[..., Fleet]
) -> None:
    fleet = make_fleet(reboot_s=1.0)
    relay = fleet.relay_ids[0]
    server.send(relay, protocol.restart())
    time.sleep(0.1)
    server.send(relay, protocol.config_read("net"))
    server.nothing(lambda m: m.get("rly") == relay, within=1.5)  # quiet, then no hello
    server.send(relay, protocol.config_read("net"))
    assert server.expect(is_(relay, "cfg", "net"))["netMode"] == 1


def test_firmware_variants_on_the_wire(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(reboot_s=0.5)
    acking, announcing, doubling = fleet.relay_ids
    fleet.set_firmware(acking, Firmware(ack_writes=True))
    fleet.set_firmware(announcing, Firmware(announce_on_boot=True))
    fleet.set_firmware(doubling, Firmware(duplicate_rate=1.0))
    server.send(acking, protocol.config_write("coms", {"comsRateMs": 321}))
    assert server.expect(is_(acking, "cfg", "coms"))["comsRateMs"] == 321
    server.send(announcing, protocol.restart())
    hello = server.expect(is_(announcing, "cfg", "app"), timeout=2.0)
    assert hello["version"] == fleet.board(announcing).version
    server.send(doubling, protocol.config_read("net"))
    server.expect(is_(doubling, "cfg", "net"))
    server.expect(is_(doubling, "cfg", "net"))  # the same answer, twice


@pytest.fixture
def firmware_site(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "cloudy_v1.5.0.bin").write_bytes(b"\xe9" + b"\x00" * 1023)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=tmp_path))
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_ota_success_and_404(
    server: Server, make_fleet: Callable[..., Fleet], firmware_site: str
) -> None:
    fleet = make_fleet()
    good, bad = fleet.relay_ids[:2]
    old = fleet.board(bad).version
    for relay in (good, bad):
        server.send(relay, protocol.set_ota_url(firmware_site))
        server.ask_until(relay, "ota", lambda m: m["otaURL"] == firmware_site)
    server.send(good, protocol.ota_start("cloudy_v1.5.0.bin"))
    server.send(bad, protocol.ota_start("missing_v9.9.9.bin"))
    server.ask_until(good, "app", lambda m: m["version"] == "v1.5.0")
    deadline = time.monotonic() + 5
    while fleet.stats().get("ota_failed", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # its reboot
    assert server.ask_until(bad, "app", lambda m: True)["version"] == old
    outcome = fleet.board(bad).last_ota
    assert outcome is not None and not outcome.ok
    assert fleet.stats()["ota_ok"] == fleet.stats()["ota_failed"] == 1


def test_nvs_clear_and_meter_reset(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(non_sas=1)
    non_sas = next(r for r in fleet.relay_ids if fleet.board(r).coms_mode != 0)
    sas_board = next(r for r in fleet.relay_ids if fleet.board(r).coms_mode == 0)
    server.send(sas_board, protocol.nvs_clear("door"))
    assert server.expect(is_(sas_board, "srsp"))["pyd"] == sas.NVS_OK

    def coin_in(relay: str) -> int:
        server.send(relay, protocol.read_meters())
        return sas.decode_meter_reply(server.expect(is_(relay, "rsp"))["pyd"]).values()["0000"]

    for relay in (sas_board, non_sas):
        assert coin_in(relay) > 0
        server.send(relay, protocol.meter_reset())
    assert server.expect(is_(non_sas, "exp"))["pyd"] == "7A"
    assert coin_in(non_sas) == 0
    assert coin_in(sas_board) > 0


def test_fault_injection(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(faults=Faults(error_rate=1.0))
    quiet, spoiled = fleet.relay_ids[1:3]
    fleet.set_faults(quiet, Faults(drop_rate=1.0))
    fleet.set_faults(spoiled, Faults(malformed_rate=1.0))
    relay = fleet.relay_ids[0]
    server.send(relay, protocol.read_meters())
    assert server.expect(is_(relay, "rsp"))["pyd"] == "-1"
    server.send(quiet, protocol.read_meters())
    server.nothing(is_(quiet, "rsp"), within=0.5)
    for _ in range(5):
        server.send(spoiled, protocol.read_meters())
    seen = 0
    deadline = time.monotonic() + 3
    while seen < 5 and time.monotonic() < deadline:
        topic, body = server.inbox.get(timeout=3)
        if topic != server.topics.sub:
            continue
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        parsed = protocol.parse_device_message(topic, payload, server.topics)
        if isinstance(parsed, protocol.MeterReply):
            assert parsed.failure_check == "crc"
        else:
            assert isinstance(parsed, protocol.Rejection)
        seen += 1
    assert seen == 5


def test_reply_delay(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(faults=Faults(reply_delay_s=0.3, jitter_s=0.1))
    relay = fleet.relay_ids[0]
    started = time.monotonic()
    server.send(relay, protocol.config_read("mqtt"))
    assert server.expect(is_(relay, "cfg", "mqtt"))["mqttSubTopic"] == server.topics.pub
    assert 0.3 <= time.monotonic() - started < 1.5


def test_offline_and_back(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet()
    relay = fleet.relay_ids[2]
    fleet.set_online(relay, False)
    server.send(relay, protocol.config_read("app"))
    server.nothing(is_(relay, "cfg"), within=0.4)
    fleet.set_online(relay, True)
    server.nothing(is_(relay, "cfg"), within=0.3)  # strict: nothing unprompted
    server.send(relay, protocol.config_read("app"))
    assert server.expect(is_(relay, "cfg", "app"))["rly"] == relay


def test_a_thousand_boards_answer_quickly(server: Server, make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(relays=1000, seed=7)
    started = time.monotonic()
    for relay in fleet.relay_ids:
        server.send(relay, protocol.read_meters())
    answered: set[str] = set()
    while len(answered) < 1000 and time.monotonic() - started < 10:
        _, body = server.inbox.get(timeout=10)
        if isinstance(body, dict) and body.get("typ") == "rsp":
            sas.decode_meter_reply(body["pyd"])
            answered.add(body["rly"])
    elapsed = time.monotonic() - started
    assert answered == set(fleet.relay_ids)
    print(f"1,000 meter reads answered in {elapsed:.2f} s")
    assert elapsed < 3.0, f"{elapsed:.2f} s for 1,000 meter reads"


def test_unreachable_broker_is_a_clear_error(topics: Topics) -> None:
    fleet = Fleet(f"mqtt://127.0.0.1:{free_port()}", topics, relays=1, connect_timeout_s=0.5)
    with pytest.raises(BusError, match="could not reach"):
        fleet.start()


def test_cli_runs_a_fleet(
    server: Server,
    mosquitto: Mosquitto,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MQTT_URI", mosquitto.uri)
    monkeypatch.setenv("MQTT_PUB_TOPIC", topics.pub)
    monkeypatch.setenv("MQTT_CFG_TOPIC", topics.cfg)
    variant = ["--announce-on-boot", "--ack-writes", "--duplicate-rate", "0.5"]
    variant += ["--reorder-rate", "0.5", "--ota-keeps-version"]
    assert (
        main(["sim", "--relays", "2", "--seed", "5", "--duration", "0.5", "--print-ids", *variant])
        == 0
    )
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2 and all(protocol.is_relay_id(r) for r in ids)
    hello = server.expect(lambda m: m.get("comp") == "app")
    assert hello["rly"] in ids


def test_cli_replays_meter_replies_late(
    server: Server, mosquitto: Mosquitto, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQTT_URI", mosquitto.uri)
    monkeypatch.setenv("MQTT_PUB_TOPIC", topics.pub)
    monkeypatch.setenv("MQTT_CFG_TOPIC", topics.cfg)
    monkeypatch.setenv("MQTT_SUB_TOPIC", topics.sub)
    monkeypatch.setenv("MQTT_GLI_TOPIC", topics.gli)
    relay = Fleet(mosquitto.uri, topics, relays=1, seed=6).relay_ids[0]
    argv = ["sim", "--relays", "1", "--seed", "6", "--duration", "4"]
    argv += ["--replay-rate", "1", "--replay-delay", "1-1.5"]
    runner = threading.Thread(target=main, args=(argv,))
    runner.start()
    try:
        reply = None
        for _ in range(10):  # until the fleet is up
            server.send(relay, protocol.read_meters())
            with contextlib.suppress(AssertionError):
                reply = server.expect(is_(relay, "rsp"), timeout=0.3)
                break
        assert reply is not None
        sent = time.monotonic()
        replay = server.expect(lambda m: m == reply, timeout=3.0)  # the same, again, later
        assert replay == reply and time.monotonic() - sent >= 0.7
    finally:
        runner.join(10)
    assert main(["sim", "--replay-rate", "1", "--replay-delay", "soon"]) == 1
