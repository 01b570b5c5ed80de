"""The event recorder under kill -9 of its holder: another process takes over and
stores, from its standby buffer, the events the dead one had not stored; no event is
lost or stored twice. Two recorder processes, a real Mosquitto, the embedded database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from smib_core.store.db import client_for
from tests.servers import EmbeddedMongo, Mosquitto
from tests.test_bus import make_topics
from tests.test_collector_failover import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RELAYS = ["e831cdfa0001", "e831cdfa0002", "e831cdfa0003"]
CODES = ["11", "12", "13", "14", "4F", "28"]


def holder_pid(db: Any) -> int | None:
    doc = db.leases.find_one({"_id": "event-recorder"})
    if doc is None or float(doc["expires_at"]) < time.time():
        return None
    return int(str(doc["owner"]).split(":")[-2])  # events:host:pid:tag


def spawn(mosquitto: Mosquitto, prefix: str, mongo_uri: str, db: str, skew_s: float = 0) -> Any:
    args = [mosquitto.uri, prefix, mongo_uri, db, str(skew_s)]
    command = [sys.executable, "-m", "tests.event_recorder_process", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


SKEWS = [(0.0, 0.0), (0.0, -45.0)]  # the two recorders' clocks, seconds off the true one


@pytest.mark.parametrize("skews", SKEWS, ids=["same clocks", "one 45 s behind"])
def test_no_event_is_lost_or_stored_twice_when_the_holder_is_killed(
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    topic_prefix: str,
    skews: tuple[float, float],
) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = client_for(embedded_mongo.uri)
    db = client[name]
    topics = make_topics(topic_prefix)
    processes = [spawn(mosquitto, topic_prefix, embedded_mongo.uri, name, s) for s in skews]
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ev-{name}")
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    sent: Counter[tuple[str, str]] = Counter()
    try:
        for p in processes:
            assert p.stdout is not None and p.stdout.readline().strip() == b"started"
        wait_for(lambda: holder_pid(db) is not None, 20, "nobody holds the recorder lease")
        time.sleep(1.0)  # both subscribed
        killed = False
        for n in range(400):  # 20 s at 20 events a second
            relay, code = RELAYS[n % len(RELAYS)], CODES[n % len(CODES)]
            payload = json.dumps({"rly": relay, "typ": "exp", "pyd": code})
            publisher.publish(topics.sub, payload, qos=0).wait_for_publish(5)
            sent[(relay, code)] += 1
            if n == 100 and not killed:  # kill -9 of the holder, 5 s in
                pid = holder_pid(db)
                victim = next(p for p in processes if p.pid == pid)
                victim.kill()
                victim.wait(5)
                killed = True
            time.sleep(0.05)
        survivor = next(p for p in processes if p.poll() is None)
        wait_for(lambda: holder_pid(db) == survivor.pid, 15, "the survivor did not take over")
        wait_for(lambda: db.events.count_documents({}) >= sum(sent.values()), 15, "events missing")
        time.sleep(1.0)  # a double write would show now
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait(20)
    stored = Counter((d["relay"], d["code"]) for d in db.events.find({}))
    assert stored == sent
    client.drop_database(name)
    client.close()


def test_the_standby_buffer_keeps_only_what_was_not_stored() -> None:
    from datetime import UTC, datetime

    from smib_core.protocol import EventMessage
    from smib_core.services.events import unstored

    def event(code: str) -> EventMessage:
        return EventMessage(RELAYS[0], "exp", "t", code=code)

    def at(s: float) -> datetime:
        return datetime.fromtimestamp(s, UTC)

    buffered = [(event("11"), 100.0), (event("11"), 100.4), (event("12"), 101.0)]
    buffered += [(event("11"), 105.0)]
    # The dead holder stored the first 11 and the 12 (its stamps a few ms apart from ours).
    stored = [(RELAYS[0], "11", at(100.003)), (RELAYS[0], "12", at(100.998))]
    missing = unstored(buffered, stored)
    assert [(m.code, t) for m, t in missing] == [("11", 100.4), ("11", 105.0)]
    assert unstored(buffered, []) == sorted(buffered, key=lambda b: b[1])


def test_no_event_is_lost_or_stored_twice_when_the_database_is_killed_for_a_moment(
    mosquitto: Mosquitto, tmp_path: Path, topic_prefix: str
) -> None:
    """kill -9 of the database under a recording process (one only: no standby to
    hand over to); the database comes back on its port 6 s later."""
    from smib_core.bus import DeviceBus
    from smib_core.services.events import start_event_recording
    from smib_core.settings import Settings

    database = EmbeddedMongo(tmp_path)
    database.start()
    client = client_for(database.uri)
    db = client["events_outage"]
    topics = make_topics(topic_prefix)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ev-{uuid.uuid4().hex}")
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    sent: Counter[tuple[str, str]] = Counter()
    try:
        with DeviceBus(mosquitto.uri, topics, client_id_prefix="recorder") as bus:
            assert bus.wait_connected(10)
            recorder = start_event_recording(bus, db, Settings())
            try:
                wait_for(lambda: recorder.stats().recording, 20, "the recorder did not start")
                for n in range(300):  # 15 s at 20 events a second
                    relay, code = RELAYS[n % len(RELAYS)], CODES[n % len(CODES)]
                    payload = json.dumps({"rly": relay, "typ": "exp", "pyd": code})
                    publisher.publish(topics.sub, payload, qos=0).wait_for_publish(5)
                    sent[(relay, code)] += 1
                    if n == 60:
                        assert database.process is not None
                        database.process.kill()  # kill -9, 3 s in
                        database.process.wait(5)
                    if n == 180:  # 6 s later: back on its port, its files as they were
                        database.start()
                    time.sleep(0.05)
                total = sum(sent.values())
                wait_for(lambda: recorder.stats().stored >= total, 30, "events not stored")
                time.sleep(1.0)
                stats = recorder.stats()
            finally:
                recorder.stop()
        stored = Counter((d["relay"], d["code"]) for d in db.events.find({}))
        assert stored == sent
        assert stats.lost == 0 and stats.dropped == 0 and stats.stored == total
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        client.close()
        database.stop()
