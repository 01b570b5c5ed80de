"""`smib worker`: background work runs from the start with no page ever opened, and a
worker killed with kill -9 is replaced, lease by lease, within 10 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pymongo import MongoClient

from smib_core.protocol import Topics
from smib_core.services.demo import register_demo_fleet
from smib_core.sim.fleet import Fleet
from smib_core.store.leases import LEASE_TTL_S
from smib_core.store.registry import Registry
from tests.servers import EmbeddedMongo, Mosquitto, free_port
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration

LEASES = (
    "firmware-server",
    "presence",
    "event-recorder",
    "collector",
    "rollout-runner",
    "batches",
    "audit-sweeper",
)


@dataclass
class Deployment:
    """A private broker, a database on the embedded server and a registered fleet."""

    broker: Mosquitto
    mongo_uri: str
    db_name: str
    topics: Topics
    fleet: Fleet
    folder: Path
    firmware_port: int

    def db(self) -> Any:
        return MongoClient(self.mongo_uri, tz_aware=True)[self.db_name]

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            MQTT_URI=self.broker.uri,
            MONGO_URI=self.mongo_uri,
            MONGO_DB=self.db_name,
            SMIB_DATA_DIR=str(self.folder),
            FIRMWARE_PORT=str(self.firmware_port),
            MQTT_PUB_TOPIC=self.topics.pub,
            MQTT_CFG_TOPIC=self.topics.cfg,
            MQTT_SUB_TOPIC=self.topics.sub,
            MQTT_GLI_TOPIC=self.topics.gli,
            SMIB_COLLECT_PERIOD_S="3",
            SMIB_HEARTBEAT_S="3",
        )

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "smib_core", "-v", "worker"]
        return subprocess.Popen(
            command, cwd=self.folder, env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )

    def holders(self) -> dict[str, tuple[int, float]]:
        """lease -> (holder's pid, expiry) of the leases alive now."""
        client = MongoClient(self.mongo_uri, tz_aware=True)
        try:
            docs = list(client[self.db_name]["leases"].find())
        finally:
            client.close()
        now = time.time()
        return {
            str(d["_id"]): (int(str(d["owner"]).split(":")[-2]), float(d["expires_at"]))
            for d in docs
            if float(d["expires_at"]) >= now
        }


@pytest.fixture
def deployment(
    own_mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path: Path, topic_prefix: str
) -> Iterator[Deployment]:
    topics = make_topics(topic_prefix)
    db_name = f"worker_{uuid.uuid4().hex[:8]}"
    with Fleet(own_mosquitto.uri, topics, relays=3, seed=5, events_per_minute=0) as fleet:
        client: MongoClient[Any] = MongoClient(embedded_mongo.uri, tz_aware=True)
        register_demo_fleet(Registry(client[db_name]), fleet.relay_ids, actor="test")
        client.close()
        yield Deployment(
            own_mosquitto, embedded_mongo.uri, db_name, topics, fleet, tmp_path, free_port()
        )


def _wait_for(what: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(step)
    return what()


class CommandSpy:
    """Hears every command published to the boards (what presence asks)."""

    def __init__(self, broker: Mosquitto, topics: Topics) -> None:
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._heard
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe(f"{topics.pub}#")
        self._client.loop_start()

    def _heard(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.asked.append((message.topic.rsplit("/", 1)[-1], json.loads(message.payload)))

    def app_reads(self) -> set[str]:
        with self._lock:
            return {r for r, p in self.asked if p.get("typ") == "cfg" and p.get("comp") == "app"}

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


def test_a_worker_alone_does_the_background_work_with_no_page(deployment: Deployment) -> None:
    spy = CommandSpy(deployment.broker, deployment.topics)
    worker = deployment.start_worker("worker")
    relays = set(deployment.fleet.relay_ids)
    db = deployment.db()
    try:
        held = _wait_for(lambda: set(LEASES) <= deployment.holders().keys(), 30)
        assert held, f"leases held: {deployment.holders()}"
        assert {pid for pid, _ in deployment.holders().values()} == {worker.pid}
        assert _wait_for(lambda: relays <= spy.app_reads(), 15), spy.app_reads()

        def snapshots() -> set[str]:
            return {d["relay"] for d in db["meter_snapshots"].find({"ok": True})}

        assert _wait_for(lambda: relays <= snapshots(), 20), snapshots()
        page = f"http://127.0.0.1:{deployment.firmware_port}/firmwares/"
        from smib_core.services.rollout_plan import http_status

        assert http_status(page) == 404, "the firmware server answers (no such file: 404)"
    finally:
        spy.close()
        code = _stop(worker)
        db.client.close()
    assert code == 0
    log = (deployment.folder / "worker.log").read_text()
    assert "Traceback" not in log, log
    assert deployment.holders() == {}, "a worker that stops gives its leases up"


def test_kill_9_of_the_holder_the_other_worker_takes_every_lease_within_10_s(
    deployment: Deployment,
) -> None:
    first = deployment.start_worker("first")
    second: subprocess.Popen[bytes] | None = None
    try:
        assert _wait_for(lambda: set(LEASES) <= deployment.holders().keys(), 30)
        assert {pid for pid, _ in deployment.holders().values()} == {first.pid}
        second = deployment.start_worker("second")
        time.sleep(5)  # the second is up, standing by
        assert second.poll() is None
        assert {pid for pid, _ in deployment.holders().values()} == {first.pid}
        first.kill()
        killed_at = time.monotonic()
        first.wait(10)
        taken: dict[str, float] = {}
        while len(taken) < len(LEASES) and time.monotonic() - killed_at < 15:
            for name, (pid, _) in deployment.holders().items():
                if pid == second.pid and name not in taken:
                    taken[name] = time.monotonic() - killed_at
            time.sleep(0.1)
        print("takeover after kill -9 (s):", taken)
        assert taken.keys() == set(LEASES), taken
        assert max(taken.values()) <= 10.0, taken
        assert min(taken.values()) >= LEASE_TTL_S - 3.0, taken  # taken over, not stolen
        port = deployment.firmware_port
        from smib_core.services.rollout_plan import http_status

        assert _wait_for(lambda: http_status(f"http://127.0.0.1:{port}/firmwares/") == 404, 5)
    finally:
        if first.poll() is None:
            first.kill()
        if second is not None:
            assert _stop(second) == 0


def test_a_worker_started_before_its_database_waits_for_it(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    late = EmbeddedMongo(tmp_path_factory.mktemp("late-nx"))
    deployment.mongo_uri = late.uri  # nothing listens there yet
    worker = deployment.start_worker("early")
    try:
        log = deployment.folder / "early.log"
        assert _wait_for(lambda: "no database yet" in log.read_text(), 30)  # 10 s a try
        assert worker.poll() is None, "a worker waits for its database, it does not exit"
        late.start()
        assert _wait_for(lambda: set(LEASES) <= deployment.holders().keys(), 45)
    finally:
        code = _stop(worker)
        late.stop()
    assert code == 0
