"""Rollouts end to end: real Mosquitto, the embedded database, a simulated fleet that
downloads from a real firmware server, and the runner driving it all."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smib_core.auth import Principal, Role
from smib_core.bus import DeviceBus
from smib_core.firmware.materialise import in_library
from smib_core.firmware.server import FirmwareServer
from smib_core.protocol import Topics
from smib_core.services.rollout import RolloutRunner, RunnerTimings
from smib_core.sim.board import Faults, Firmware
from smib_core.sim.fleet import Fleet
from smib_core.store.audit import AuditTrail
from smib_core.store.downloads import DownloadLog
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
from smib_core.store.rollouts import Rollout, RolloutStore
from tests.servers import Mosquitto
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration

TECH = Principal("tina", Role.TECHNICIAN)
TARGET = "v2.0.0"
FAST = RunnerTimings(
    poll_s=0.1,
    request_timeout_s=1.0,
    readback_s=4.0,
    probe_every_s=1.0,
    probe_downloaded_s=0.2,
    lease_ttl_s=5.0,
)


@dataclass
class Rig:
    db: Any
    bus: DeviceBus
    fleet: Fleet
    server: FirmwareServer
    firmware: FirmwareInfo
    topics: Topics
    broker: str

    def runner(self, bus: DeviceBus | None = None) -> RolloutRunner:
        return RolloutRunner(
            self.db,
            bus or self.bus,
            AuditTrail(self.db),
            ota_url=self.server.base_url,
            folder=self.server.folder,
            timings=FAST,
        )

    def rollout(
        self, relays: list[str], batch_size: int = 5, min_success: float = 80, timeout_s: float = 8
    ) -> Rollout:
        return RolloutStore(self.db).create(
            self.firmware,
            relays,
            batch_size=batch_size,
            min_success_pct=min_success,
            timeout_s=timeout_s,
            principal=TECH,
        )

    def states(self, rollout: Rollout) -> dict[str, str]:
        return {b.relay: b.state for b in RolloutStore(self.db).boards(rollout.id)}

    def new_bus(self) -> DeviceBus:
        bus = DeviceBus(self.broker, self.topics, client_id_prefix="rollout-test")
        bus.start()
        assert bus.wait_connected(10)
        return bus


@pytest.fixture
def rig(mosquitto: Mosquitto, mongo_db: Any, topic_prefix: str, tmp_path: Path) -> Iterator[Rig]:
    topics = make_topics(topic_prefix)
    library = FirmwareLibrary(mongo_db)
    firmware = library.add(
        b"\xe9" + bytes(4095), filename="new.bin", product="cloudy", version=TARGET, actor="test"
    )
    server = FirmwareServer(
        tmp_path / "firmwares",
        port=0,
        allowed=in_library(library),
        on_download=DownloadLog(mongo_db).record,
        board_token=RolloutStore(mongo_db).ota_token_ok,
    )
    fleet = Fleet(
        mosquitto.uri, topics, relays=20, seed=5, reboot_s=0.5, events_per_minute=0, ota_timeout_s=5
    )
    rig = Rig(
        mongo_db, DeviceBus(mosquitto.uri, topics), fleet, server, firmware, topics, mosquitto.uri
    )
    with server, fleet:
        rig.bus.start()
        try:
            assert rig.bus.wait_connected(10)
            yield rig
        finally:
            rig.bus.stop()


def test_twenty_boards_in_batches_of_five_are_all_confirmed(rig: Rig) -> None:
    relays = rig.fleet.relay_ids
    rollout = rig.rollout(relays)
    assert rollout.batches == 4
    finished = rig.runner().follow(rollout.id)
    assert finished.state == "completed", finished.reason
    assert set(rig.states(rollout).values()) == {"confirmed"}
    assert all(rig.fleet.board(r).version == TARGET for r in relays)
    boards = RolloutStore(rig.db).boards(rollout.id)
    assert [b.batch for b in boards] == [i // 5 for i in range(20)]
    for board in boards:  # each went through every step, in order
        steps = ["queued", "url_set", "command_sent", "downloaded", "back_online", "confirmed"]
        assert all(step in board.times for step in steps), (board.relay, board.times)
        times = [board.times[s] for s in steps]
        assert times == sorted(times)
        assert board.previous_version != TARGET and board.version == TARGET
    # a batch starts only once the one before it is over
    last_of = {i: max(b.times["confirmed"] for b in boards if b.batch == i) for i in range(4)}
    first_of = {i: min(b.times["url_set"] for b in boards if b.batch == i) for i in range(4)}
    assert all(first_of[i + 1] >= last_of[i] for i in range(3))
    assert len(rig.server.downloads()) == 20
    # each board fetched from its own folder, so the log names it: no guessing by order
    assert {d.relay for d in rig.server.downloads()} == set(relays)
    # the URL a board is given carries its secret token; stored and shown masked only
    assert all(b.ota_url == f"{rig.server.base_url}{b.relay}/••••••/" for b in boards)
    for board in boards:
        url = rig.fleet.board(board.relay).config["ota"]["otaURL"]
        assert url == f"{rig.server.base_url}{board.relay}/{board.ota_token}/"
        assert len(board.ota_token) == 32
    assert len({b.ota_token for b in boards}) == 20
    audit = AuditTrail(rig.db).query(person="tina", kind="ota_start")
    assert len(audit) == 20 and set(audit["outcome"]) == {"confirmed"}
    urls = AuditTrail(rig.db).query(person="tina", kind="ota_url")
    assert len(urls) == 20 and set(urls["outcome"]) == {"confirmed"}
    assert not any(b.ota_token in str(urls["detail"].tolist()) for b in boards)


def test_flash_failures_halt_the_rollout_below_the_threshold(rig: Rig) -> None:
    relays = rig.fleet.relay_ids
    failing = relays[:3]
    for relay in failing:
        rig.fleet.set_faults(relay, Faults(ota_fail_rate=1.0))
    rollout = rig.rollout(relays, batch_size=5, min_success=80)
    finished = rig.runner().follow(rollout.id)
    assert finished.state == "halted"
    assert "40%" in finished.reason and "80%" in finished.reason
    boards = {b.relay: b for b in RolloutStore(rig.db).boards(rollout.id)}
    for relay in failing:
        assert boards[relay].state == "failed"
        assert boards[relay].reason.startswith(f"device kept version {boards[relay].version}")
        assert rig.fleet.board(relay).version != TARGET
        ota_start = AuditTrail(rig.db).query(relay=relay, kind="ota_start")
        assert ota_start["outcome"].tolist() == ["failed"]
    assert [boards[r].state for r in relays[3:5]] == ["confirmed", "confirmed"]
    assert {boards[r].state for r in relays[5:]} == {"not_started"}
    assert all(rig.fleet.board(r).version != TARGET for r in relays[5:])


def test_a_new_runner_resumes_a_rollout_left_mid_batch(rig: Rig) -> None:
    relays = rig.fleet.relay_ids[:10]
    rollout = rig.rollout(relays)
    store = RolloutStore(rig.db)
    first = rig.runner()

    def batch_commanded() -> bool:
        return all(b.command_at for b in store.boards(rollout.id) if b.batch == 0)

    left = first.follow(rollout.id, should_stop=batch_commanded)
    assert left.state == "running"
    left_states = [rig.states(rollout)[r] for r in relays]
    assert left_states[5:] == ["queued"] * 5
    assert "command_sent" in left_states[:5], "the first batch is still updating"
    # the app restarts: a new bus (it heard none of the announcements) and a new runner
    bus = rig.new_bus()
    try:
        second = rig.runner(bus)
        other = rig.runner(bus)
        assert second.tick()
        assert not other.tick(), "one runner per deployment: the lease is held"
        finished = second.follow(rollout.id)
    finally:
        bus.stop()
    assert finished.state == "completed", finished.reason
    assert set(rig.states(rollout).values()) == {"confirmed"}
    for relay in relays:  # nobody was commanded twice
        assert len(AuditTrail(rig.db).query(relay=relay, kind="ota_start")) == 1


def test_boards_already_on_the_target_are_skipped(rig: Rig) -> None:
    relays = rig.fleet.relay_ids[:6]
    for relay in relays[:2]:
        with rig.fleet.lock:
            rig.fleet.board(relay).config["app"]["version"] = TARGET
    rollout = rig.rollout(relays, batch_size=3, min_success=100)
    finished = rig.runner().follow(rollout.id)
    assert finished.state == "completed"
    states = rig.states(rollout)
    assert [states[r] for r in relays] == ["skipped"] * 2 + ["confirmed"] * 4
    assert "2 already on v2.0.0" in finished.reason
    assert AuditTrail(rig.db).query(relay=relays[0], kind="ota_start").empty


def test_an_offline_board_fails_and_others_carry_on(rig: Rig) -> None:
    relays = rig.fleet.relay_ids[:3]
    rig.fleet.set_online(relays[1], False)
    rollout = rig.rollout(relays, batch_size=3, min_success=50)
    finished = rig.runner().follow(rollout.id)
    boards = {b.relay: b for b in RolloutStore(rig.db).boards(rollout.id)}
    assert boards[relays[1]].state == "failed"
    assert boards[relays[1]].reason.startswith("offline")
    assert finished.state == "completed"
    assert [boards[r].state for r in (relays[0], relays[2])] == ["confirmed", "confirmed"]


def test_a_board_that_never_comes_back_times_out(rig: Rig) -> None:
    relays = rig.fleet.relay_ids[:2]
    rollout = rig.rollout(relays, batch_size=2, min_success=0, timeout_s=3)
    store = RolloutStore(rig.db)

    def unplug_once_commanded() -> bool:
        board = store.boards(rollout.id)[0]
        if board.command_at and rig.fleet.board(board.relay).online:
            rig.fleet.set_online(board.relay, False)  # it flashes, but never returns
        return False

    finished = rig.runner().follow(rollout.id, should_stop=unplug_once_commanded)
    boards = store.boards(rollout.id)
    assert [b.state for b in boards] == ["timed_out", "confirmed"]
    assert boards[0].reason == "did not come back within 3 s"
    outcomes = {
        b.relay: AuditTrail(rig.db).query(relay=b.relay, kind="ota_start")["outcome"].tolist()
        for b in boards
    }
    assert outcomes == {boards[0].relay: ["timed_out"], boards[1].relay: ["confirmed"]}
    assert finished.state == "completed" and "1 not confirmed" in finished.reason


def test_a_paused_rollout_starts_no_board_until_resumed(rig: Rig) -> None:
    relays = rig.fleet.relay_ids[:4]
    rollout = rig.rollout(relays, batch_size=2)
    store = RolloutStore(rig.db)
    store.pause(rollout.id, TECH)
    runner = rig.runner()
    for _ in range(3):
        assert runner.tick()
    assert set(rig.states(rollout).values()) == {"queued"}
    assert AuditTrail(rig.db).query(kind="ota_start").empty
    store.resume(rollout.id, TECH)
    finished = runner.follow(rollout.id)
    assert finished.state == "completed"
    assert set(rig.states(rollout).values()) == {"confirmed"}


def test_a_forged_confirmation_with_a_download_in_the_boards_name_fails(rig: Rig) -> None:
    """Both attacks at once: the board reports the new version without downloading, and
    someone fetches the file in its name (no token, a wrong token). Neither counts."""
    relay = rig.fleet.relay_ids[0]
    rig.fleet.set_firmware(relay, Firmware(forges_ota=True))
    rollout = rig.rollout([relay], batch_size=1, min_success=0)
    store = RolloutStore(rig.db)
    forged: list[int] = []

    def download_in_its_name() -> bool:
        if not forged and store.boards(rollout.id)[0].command_at:
            for middle in ("", "0" * 32 + "/"):
                url = f"{rig.server.base_url}{relay}/{middle}{rig.firmware.filename}"
                try:
                    urllib.request.urlopen(url, timeout=5)
                    forged.append(200)
                except urllib.error.HTTPError as exc:
                    forged.append(exc.code)
        return False

    rig.runner().follow(rollout.id, should_stop=download_in_its_name)
    [board] = store.boards(rollout.id)
    assert forged == [404, 404]
    assert board.state == "failed", board.reason
    assert board.reason == "reported the new version without downloading it"
    assert rig.fleet.board(relay).version == TARGET  # it does claim the new version
    assert (
        rig.server.downloads() == [] and DownloadLog(rig.db).since(rig.firmware.filename, 0) == []
    )
    assert AuditTrail(rig.db).query(relay=relay, kind="ota_start")["outcome"].tolist() == ["failed"]
