"""`smib ota` end to end: real broker, the embedded database, simulated boards that download
from the firmware server the command starts (or the app's, when one answers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from smib_core.cli import main
from smib_core.firmware.server import FirmwareServer
from smib_core.protocol import Topics
from smib_core.services.rollout import firmware_server
from smib_core.settings import Settings
from smib_core.sim.board import Faults
from smib_core.sim.fleet import Fleet
from smib_core.store.audit import AuditTrail
from smib_core.store.firmware import FirmwareLibrary
from smib_core.store.rollouts import RolloutStore
from tests.servers import EmbeddedMongo, Mosquitto, free_port

pytestmark = pytest.mark.integration


@dataclass
class Env:
    fleet: Fleet
    db: Any
    port: int
    folder: Path


@pytest.fixture
def env(
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    topics = Topics(
        pub=f"{topic_prefix}sas/relay/",
        cfg=f"{topic_prefix}smib/config",
        sub=f"{topic_prefix}sas/gy/server",
        gli=f"{topic_prefix}sas/gli/server/",
    )
    port = free_port()
    db_name = f"ota_{uuid.uuid4().hex[:8]}"
    for name, value in {
        "MQTT_URI": mosquitto.uri,
        "MQTT_PUB_TOPIC": topics.pub,
        "MQTT_CFG_TOPIC": topics.cfg,
        "MQTT_SUB_TOPIC": topics.sub,
        "MQTT_GLI_TOPIC": topics.gli,
        "MONGO_URI": embedded_mongo.uri,
        "MONGO_DB": db_name,
        "FIRMWARE_PORT": str(port),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FIRMWARE_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # the served folder is ./firmwares
    client: MongoClient[dict[str, Any]] = MongoClient(embedded_mongo.uri, tz_aware=True)
    db = client[db_name]
    FirmwareLibrary(db).add(
        b"\xe9" + bytes(2047), filename="new.bin", product="cloudy", version="v2.0.0", actor="test"
    )
    fleet = Fleet(mosquitto.uri, topics, relays=3, seed=8, reboot_s=0.5, events_per_minute=0)
    with fleet:
        yield Env(fleet, db, port, tmp_path / "firmwares")
    client.close()


def ota(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ota", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_board_confirmed_exits_0(env: Env, capsys: Any) -> None:
    relays = env.fleet.relay_ids
    before = {r: env.fleet.board(r).version for r in relays}
    code, out, err = ota(
        capsys, *relays, "--version", "v2.0.0", "--batch-size", "2", "--timeout", "10"
    )
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("rollout r") and "2 batch(es) of 2" in lines[0]
    assert f"otaURL http://127.0.0.1:{env.port}/firmwares/" in lines[0]
    for relay in relays:
        assert f"{relay}  confirmed    {before[relay]} -> v2.0.0" in lines
        assert env.fleet.board(relay).version == "v2.0.0"
    assert lines[-1].endswith("completed: 3 confirmed")
    starts = AuditTrail(env.db).query(kind="ota_start")
    assert len(starts) == 3 and set(starts["actor"]) == {starts["actor"][0]}
    assert starts["actor"][0].startswith("cli:")


def test_a_board_that_keeps_its_version_exits_1(env: Env, capsys: Any) -> None:
    relays = env.fleet.relay_ids
    env.fleet.set_faults(relays[0], Faults(ota_fail_rate=1.0))
    code, out, _ = ota(
        capsys, *relays, "--version", "v2.0.0", "--min-success", "0", "--timeout", "10"
    )
    assert code == 1
    assert f"{relays[0]}  failed       device kept version" in out
    assert sum(f"{r}  confirmed" in out for r in relays[1:]) == 2
    rollout = RolloutStore(env.db).recent()[0]
    assert rollout.state == "completed"


def test_an_app_serving_the_port_is_used(env: Env, capsys: Any) -> None:
    relays = env.fleet.relay_ids[:1]
    app_server = firmware_server(Settings.from_env(), env.db, env.folder)  # as the app's
    with app_server:
        code, out, err = ota(capsys, *relays, "--version", "v2.0.0", "--timeout", "10")
        assert code == 0, out + err
        assert [d.name for d in app_server.downloads()] == ["cloudy_v2.0.0.bin"]
    with FirmwareServer(env.folder.parent / "elsewhere", port=env.port):
        code, _, err = ota(capsys, *relays, "--version", "v2.0.0")
    assert code == 1 and "does not serve" in err


def test_bad_input_publishes_nothing(env: Env, capsys: Any) -> None:
    code, _, err = ota(capsys, "not-a-board", "--version", "v2.0.0")
    assert code == 1 and "relay" in err
    code, _, err = ota(capsys, env.fleet.relay_ids[0], "--version", "v9")
    assert code == 1 and "no firmware version v9" in err
    assert RolloutStore(env.db).recent() == []
    assert env.fleet.stats().get("commands", 0) == 0


def test_a_base_url_with_a_password_is_printed_masked(
    env: Env, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"http://fw:hunter2-secret@127.0.0.1:{env.port}/firmwares/"
    monkeypatch.setenv("FIRMWARE_BASE_URL", base)
    relays = env.fleet.relay_ids[:1]
    _, out, err = ota(
        capsys, *relays, "--version", "v2.0.0", "--min-success", "0", "--timeout", "3"
    )
    assert "hunter2-secret" not in out + err
    assert f"otaURL http://fw:••••••@127.0.0.1:{env.port}/firmwares/" in out.splitlines()[0]
