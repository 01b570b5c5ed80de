"""`smib meters|config|version|restart` end to end: real broker, simulated boards, audit."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pymongo import MongoClient

from smib_core.cli import main
from smib_core.protocol import Topics
from smib_core.sim.board import Faults
from smib_core.sim.fleet import Fleet
from smib_core.store.audit import AuditTrail
from tests.servers import EmbeddedMongo, Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Fleet, str]]:
    topics = Topics(
        pub=f"{topic_prefix}sas/relay/",
        cfg=f"{topic_prefix}smib/config",
        sub=f"{topic_prefix}sas/gy/server",
        gli=f"{topic_prefix}sas/gli/server/",
    )
    monkeypatch.setenv("MQTT_URI", mosquitto.uri)
    monkeypatch.setenv("MQTT_PUB_TOPIC", topics.pub)
    monkeypatch.setenv("MQTT_CFG_TOPIC", topics.cfg)
    monkeypatch.setenv("MQTT_SUB_TOPIC", topics.sub)
    monkeypatch.setenv("MQTT_GLI_TOPIC", topics.gli)
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    db_name = f"cli_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGO_DB", db_name)
    with Fleet(mosquitto.uri, topics, relays=3, seed=5, reboot_s=1.0, events_per_minute=0) as fleet:
        yield fleet, db_name


class Spy:
    """A raw subscriber on every command topic: what did the CLI publish?"""

    def __init__(self, uri: str, pattern: str) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(pattern)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = lambda _c, _u, m: self.seen.append((m.topic, m.payload))
        port = int(uri.rsplit(":", 1)[1])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_meters_json_has_the_standard_meters(cli_env: Any, capsys: Any) -> None:
    fleet, _ = cli_env
    code, out, _ = run(capsys, "meters", fleet.relay_ids[0], "--json")
    assert code == 0
    reading = json.loads(out)
    assert (reading["address"], reading["command"], reading["game"]) == (1, "6F", 0)
    values = {m["code"]: m["value"] for m in reading["meters"]}
    assert set(values) == {
        "0000",
        "0001",
        "0004",
        "0003",
        "0022",
        "0024",
        "0002",
        "000C",
        "0005",
        "0006",
    }
    assert values["0022"] == values["0001"] + values["0002"]
    assert reading["meters"][0]["name"] == "Total coin in (handle)"


def test_meters_device_error_and_timeout_exit_non_zero(cli_env: Any, capsys: Any) -> None:
    fleet, _ = cli_env
    fleet.set_faults(fleet.relay_ids[1], Faults(error_rate=1.0))
    code, _, err = run(capsys, "meters", fleet.relay_ids[1])
    assert code == 1 and "-1" in err
    code, _, err = run(capsys, "meters", "0123456789ab", "--timeout", "0.5")
    assert code == 1 and "did not answer" in err


def test_config_get_masks_the_wifi_password(cli_env: Any, capsys: Any) -> None:
    fleet, _ = cli_env
    code, out, _ = run(capsys, "config", "get", fleet.relay_ids[0], "net", "--json")
    assert code == 0
    fields = json.loads(out)
    assert {"netMode", "netStaSSID", "netStaChan", "netStaPwd"} <= set(fields)
    real = fleet.board(fleet.relay_ids[0]).config["net"]["netStaPwd"]
    assert real and real not in out and fields["netStaPwd"] == "••••••"


def test_config_set_confirms_and_is_audited(cli_env: Any, capsys: Any) -> None:
    fleet, db_name = cli_env
    relay = fleet.relay_ids[0]
    code, out, _ = run(
        capsys, "config", "set", relay, "net", "netStaChan=11", "netStaPwd=new-secret-9"
    )
    assert code == 0 and "Confirmed" in out and "new-secret-9" not in out
    assert fleet.board(relay).config["net"]["netStaChan"] == 11
    import os

    from pymongo import MongoClient

    audit = MongoClient(os.environ["MONGO_URI"])[db_name]["audit"]
    records = list(audit.find({"kind": "config_write"}))
    assert len(records) == 1 and records[0]["actor"].startswith("cli:")
    assert "new-secret-9" not in json.dumps(records[0], default=str)


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "set", "ab#cdef01234", "net", "netStaChan=6"],
        ["config", "set", "e831cdfa8384", "net", "netStaChan=15"],
        ["config", "set", "e831cdfa8384", "mqtt", "mqttURI=mqtt://h:70000"],
        ["config", "set", "e831cdfa8384", "net", "nosuch=1"],
        ["config", "set", "e831cdfa8384", "app", "version=v9"],
        ["config", "set", "e831cdfa8384", "bogus", "x=1"],
        ["restart", "+", "--yes"],
        ["meters", "a/b/c/d/e/f/g"],
    ],
)
def test_invalid_input_publishes_nothing(
    cli_env: Any, capsys: Any, mosquitto: Mosquitto, topic_prefix: str, argv: list[str]
) -> None:
    spy = Spy(mosquitto.uri, f"{topic_prefix}#")  # this test's topics only: the broker is shared
    try:
        code, _, err = run(capsys, *argv)
        time.sleep(0.3)
    finally:
        spy.close()
    assert code != 0 and err.startswith("smib: ")
    assert not [t for t, _ in spy.seen if t.startswith(f"{topic_prefix}sas/relay/")]


def test_version_and_restart(cli_env: Any, capsys: Any) -> None:
    fleet, _ = cli_env
    relay = fleet.relay_ids[2]
    code, out, _ = run(capsys, "version", relay, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown == {"firmware": fleet.board(relay).firmware, "version": fleet.board(relay).version}
    code, out, _ = run(capsys, "restart", relay, "--yes", "--no-confirm")
    assert code == 0 and f"{relay}: restart sent" in out
    code, _, err = run(capsys, "version", relay, "--timeout", "0.3")
    assert code == 1 and "did not answer" in err  # quiet while it reboots
    time.sleep(1.5)
    assert run(capsys, "version", relay)[0] == 0
    started = time.monotonic()
    code, out, _ = run(capsys, "restart", relay, "--yes", "--timeout", "15")
    assert code == 0 and f"{relay}: restart sent; back (answers cfg app)" in out
    assert time.monotonic() - started >= 1.0, "confirmed only once back from its 1 s reboot"
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGO_URI"])
    try:
        audit = AuditTrail(client[cli_env[1]]).query(relay=relay, kind="restart")
    finally:
        client.close()
    assert audit["outcome"].tolist() == ["confirmed", "not_confirmed"]  # newest first
