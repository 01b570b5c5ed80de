"""`smib collect` end to end: real broker, simulated boards, embedded database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from smib_core.cli import main
from smib_core.services.demo import register_demo_fleet
from smib_core.sim.board import Faults
from smib_core.sim.fleet import Fleet
from smib_core.store.registry import Registry
from tests.servers import EmbeddedMongo, Mosquitto
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Fleet, Any]]:
    topics = make_topics(topic_prefix)
    db_name = f"collect_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", db_name)
    monkeypatch.setenv("MQTT_URI", mosquitto.uri)
    for name, topic in (("PUB", topics.pub), ("CFG", topics.cfg), ("SUB", topics.sub)):
        monkeypatch.setenv(f"MQTT_{name}_TOPIC", topic)
    monkeypatch.setenv("MQTT_GLI_TOPIC", topics.gli)
    client: MongoClient[dict[str, Any]] = MongoClient(embedded_mongo.uri, tz_aware=True)
    db = client[db_name]
    with Fleet(mosquitto.uri, topics, relays=3, seed=8, events_per_minute=0) as fleet:
        register_demo_fleet(Registry(db), fleet.relay_ids[:2], actor="test")
        yield fleet, db
    client.close()


def test_once_exits_0_when_every_board_was_read(setup: Any, capsys: Any) -> None:
    fleet, db = setup
    assert main(["collect", "--once", "--timeout", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") == 2 and "2 of 2 boards read" in out
    assert db["meter_snapshots"].count_documents({"ok": True}) == 2
    assert db["rollups_hourly"].count_documents({}) == 0, "one reading moves nothing yet"
    assert main(["collect", "--once", "--relay", fleet.relay_ids[0].upper()]) == 0
    assert db["rollups_hourly"].count_documents({}) == 1


def test_once_exits_1_on_a_failed_or_unknown_board(setup: Any, capsys: Any) -> None:
    fleet, db = setup
    fleet.set_faults(fleet.relay_ids[1], Faults(error_rate=1.0))
    assert main(["collect", "--once", "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert "failed  device_error" in out and "1 of 2 boards read" in out
    assert db["meter_snapshots"].count_documents({"ok": False}) == 1
    assert main(["collect", "--once", "--relay", fleet.relay_ids[2]]) == 1
    assert "not a registered SAS board" in capsys.readouterr().out
    assert main(["collect", "--relay", fleet.relay_ids[0]]) == 1
    assert "--relay goes with --once" in capsys.readouterr().err
    assert main(["collect", "--once", "--relay", "nope!"]) == 1


def test_collect_runs_until_stopped(setup: Any) -> None:
    _, db = setup
    command = [sys.executable, "-m", "smib_core", "collect", "--period", "1", "--timeout", "0.5"]
    process = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while db["meter_snapshots"].count_documents({}) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "collecting every 1 s" in out and "stopped:" in out
    assert db["meter_snapshots"].count_documents({"ok": True}) >= 2
    assert db["leases"].count_documents({"_id": "collector"}) == 0, "the lease was released"
