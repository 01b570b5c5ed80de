"""The conformance matrix: every flow that writes to or restarts a board, against the strict
board of PROTOCOL.md and against each firmware variant, through a real Mosquitto.

Flows, at the service level and through the CLI: a config write read back
(`write_and_confirm`, `smib config set`), a restart seen back (`restart_and_confirm`,
`smib restart`), a firmware rollout (`RolloutRunner`, `smib ota`). One simulated fleet
per module, one board per firmware variant. What a variant adds (acknowledged writes,
announcements, duplicated or late replies, slow reboots) must change no outcome; a board
that keeps its old version, or reports the new one without downloading it, must fail
its rollout.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import MongoClient

from smib_core.auth import Principal, Role
from smib_core.bus import DeviceBus
from smib_core.cli import main
from smib_core.firmware.materialise import in_library
from smib_core.firmware.server import FirmwareServer
from smib_core.protocol import Topics
from smib_core.services.actions import BoardActions
from smib_core.services.board_config import FieldChange, write_and_confirm
from smib_core.services.board_maintenance import restart_and_confirm
from smib_core.services.readback import ReadBackTimings
from smib_core.services.rollout import RolloutRunner, RunnerTimings
from smib_core.sim.board import Firmware
from smib_core.sim.fleet import Fleet
from smib_core.store.audit import AuditTrail
from smib_core.store.downloads import DownloadLog
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
from smib_core.store.rollouts import RolloutStore
from tests.servers import EmbeddedMongo, Mosquitto
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration

TECH = Principal("tina", Role.TECHNICIAN)
TARGET = "v2.0.0"
OLD = "v1.4.2"
SLOW_REBOOT_S = 3.0
# variant -> (firmware, reboot seconds, how its rollout ends)
VARIANTS: dict[str, tuple[Firmware, float, str]] = {
    "strict": (Firmware(), 0.5, "confirmed"),
    "ack-writes": (Firmware(ack_writes=True), 0.5, "confirmed"),
    "announce-on-boot": (Firmware(announce_on_boot=True), 0.5, "confirmed"),
    "duplicates": (Firmware(duplicate_rate=1.0), 0.5, "confirmed"),
    "reordering": (Firmware(reorder_rate=0.5, reorder_delay_s=0.8), 0.5, "confirmed"),
    "slow-reboot": (Firmware(), SLOW_REBOOT_S, "confirmed"),
    "ota-keeps-version": (Firmware(ota_keeps_version=True), 0.5, "failed"),
    "forged-ota": (Firmware(forges_ota=True), 0.5, "failed"),
}
FAILED_BECAUSE = {
    "ota-keeps-version": "device kept version",
    "forged-ota": "reported the new version without downloading it",
}
QUICK = ReadBackTimings(ask_timeout_s=0.5, gap_s=0.1, disagreements=3, grace_s=0.3)
RUNNER = RunnerTimings(
    poll_s=0.1,
    request_timeout_s=1.0,
    readback_s=4.0,
    probe_every_s=0.5,
    probe_downloaded_s=0.2,
    lease_ttl_s=5.0,
)


@dataclass
class Rig:
    db: Any
    db_name: str
    bus: DeviceBus
    fleet: Fleet
    server: FirmwareServer
    firmware: FirmwareInfo
    topics: Topics
    broker: str
    relay_of: dict[str, str]

    def board(self, variant: str) -> str:
        relay = self.relay_of[variant]
        with self.fleet.lock:  # every flow starts from an old version
            self.fleet.board(relay).config["app"]["version"] = OLD
        return relay

    def actions(self) -> BoardActions:
        return BoardActions(self.bus, AuditTrail(self.db), TECH)

    def outcomes(self, relay: str, kind: str) -> list[str]:
        return list(AuditTrail(self.db).query(relay=relay, kind=kind)["outcome"])


@pytest.fixture(scope="module")
def rig(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    prefix = f"conf{uuid.uuid4().hex[:8]}/"
    topics = make_topics(prefix)
    client: MongoClient[dict[str, Any]] = MongoClient(embedded_mongo.uri, tz_aware=True)
    db_name = f"conf_{uuid.uuid4().hex[:8]}"
    db = client[db_name]
    library = FirmwareLibrary(db)
    firmware = library.add(
        b"\xe9" + bytes(4095), filename="new.bin", product="cloudy", version=TARGET, actor="test"
    )
    folder = tmp_path_factory.mktemp("conformance") / "firmwares"
    server = FirmwareServer(
        folder,
        port=0,
        allowed=in_library(library),
        on_download=DownloadLog(db).record,
        board_token=RolloutStore(db).ota_token_ok,
    )
    fleet = Fleet(
        mosquitto.uri,
        topics,
        relays=len(VARIANTS),
        seed=11,
        reboot_s=0.5,
        events_per_minute=0,
        ota_timeout_s=5,
    )
    relay_of = dict(zip(VARIANTS, fleet.relay_ids, strict=True))
    for variant, (behaviour, reboot_s, _) in VARIANTS.items():
        fleet.set_firmware(relay_of[variant], behaviour)
        fleet.board(relay_of[variant]).reboot_s = reboot_s
    bus = DeviceBus(mosquitto.uri, topics, client_id_prefix="conformance")
    rig = Rig(db, db_name, bus, fleet, server, firmware, topics, mosquitto.uri, relay_of)
    with server, fleet:
        bus.start()
        try:
            assert bus.wait_connected(10)
            yield rig
        finally:
            bus.stop()
            client.close()


@pytest.fixture
def cli(rig: Rig, monkeypatch: pytest.MonkeyPatch, embedded_mongo: EmbeddedMongo) -> Rig:
    """The CLI's environment: the rig's broker, topics, database and firmware server."""
    for name, value in {
        "MQTT_URI": rig.broker,
        "MQTT_PUB_TOPIC": rig.topics.pub,
        "MQTT_CFG_TOPIC": rig.topics.cfg,
        "MQTT_SUB_TOPIC": rig.topics.sub,
        "MQTT_GLI_TOPIC": rig.topics.gli,
        "MONGO_URI": embedded_mongo.uri,
        "MONGO_DB": rig.db_name,
        "FIRMWARE_PORT": str(rig.server.port),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FIRMWARE_BASE_URL", raising=False)
    monkeypatch.chdir(rig.server.folder.parent)  # smib ota uses the server that answers
    return rig


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


parametrize = pytest.mark.parametrize("variant", list(VARIANTS))


# --- service level -------------------------------------------------------------------------


@parametrize
def test_config_write_is_confirmed_by_reading_back(rig: Rig, variant: str) -> None:
    relay = rig.board(variant)
    chan = 1 + len(rig.outcomes(relay, "config_write")) % 13
    change = [FieldChange("netStaChan", None, chan)]
    result = write_and_confirm(rig.actions(), relay, "net", change, 6.0, QUICK)
    assert result.outcome == "confirmed", result.message
    assert rig.fleet.board(relay).config["net"]["netStaChan"] == chan
    assert rig.outcomes(relay, "config_write")[0] == "confirmed"


@parametrize
def test_restart_is_confirmed_when_the_board_answers_again(rig: Rig, variant: str) -> None:
    relay = rig.board(variant)
    outcome = restart_and_confirm(rig.actions(), relay, SLOW_REBOOT_S + 8, QUICK)
    assert outcome.ok, outcome.message
    assert rig.outcomes(relay, "restart")[0] == "confirmed"


@parametrize
def test_rollout(rig: Rig, variant: str) -> None:
    relay = rig.board(variant)
    rollout = RolloutStore(rig.db).create(
        rig.firmware, [relay], batch_size=1, min_success_pct=0, timeout_s=12, principal=TECH
    )
    runner = RolloutRunner(
        rig.db,
        rig.bus,
        AuditTrail(rig.db),
        ota_url=rig.server.base_url,
        folder=rig.server.folder,
        timings=RUNNER,
    )
    runner.follow(rollout.id)
    [board] = RolloutStore(rig.db).boards(rollout.id)
    expected = VARIANTS[variant][2]
    assert board.state == expected, board.reason
    assert board.reason.startswith(FAILED_BECAUSE.get(variant, ""))
    if expected == "confirmed":
        assert board.download_at is not None and "downloaded" in board.times
    assert rig.outcomes(relay, "ota_url")[0] == "confirmed"
    assert rig.outcomes(relay, "ota_start")[0] == expected  # settled with the board


# --- CLI -----------------------------------------------------------------------------------


@parametrize
def test_cli_config_set(cli: Rig, variant: str, capsys: pytest.CaptureFixture[str]) -> None:
    relay = cli.board(variant)
    rate = 100 + 10 * len(cli.outcomes(relay, "config_write"))
    code, out, err = run(capsys, "config", "set", relay, "coms", f"comsRateMs={rate}")
    assert code == 0, out + err
    assert "Confirmed" in out and cli.fleet.board(relay).config["coms"]["comsRateMs"] == rate
    assert cli.outcomes(relay, "config_write")[0] == "confirmed"


@parametrize
def test_cli_restart(cli: Rig, variant: str, capsys: pytest.CaptureFixture[str]) -> None:
    relay = cli.board(variant)
    code, out, err = run(capsys, "restart", relay, "--yes", "--timeout", str(SLOW_REBOOT_S + 10))
    assert code == 0, out + err
    assert f"{relay}: restart sent; back (answers cfg app)" in out
    assert cli.outcomes(relay, "restart")[0] == "confirmed"


@parametrize
def test_cli_ota(cli: Rig, variant: str, capsys: pytest.CaptureFixture[str]) -> None:
    relay = cli.board(variant)
    code, out, err = run(capsys, "ota", relay, "--version", TARGET, "--timeout", "10")
    expected = VARIANTS[variant][2]
    assert code == (0 if expected == "confirmed" else 1), out + err
    assert f"{relay}  {expected}" in out
    if variant in FAILED_BECAUSE:
        assert FAILED_BECAUSE[variant] in out
    assert cli.outcomes(relay, "ota_start")[0] == expected
