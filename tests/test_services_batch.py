"""Batch jobs: concurrency limit, offline boards skipped, outcomes mapped; then for real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from smib_core import protocol
from smib_core.auth import Principal, Role
from smib_core.bus import DeviceBus
from smib_core.errors import BusError, InvalidInput, PermissionDenied, RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage
from smib_core.services.actions import BoardActions, SendResult
from smib_core.services.batch import (
    BatchJob,
    BatchJobs,
    BatchRun,
    BatchSettings,
    start_batch,
)
from smib_core.services.batch_progress import BatchProgress
from smib_core.sim.fleet import Fleet
from smib_core.store.audit import AuditTrail
from tests.servers import Mosquitto
from tests.test_bus import make_topics

TECH = Principal("tina", Role.TECHNICIAN)
RELAYS = [f"e831cd{n:06x}" for n in range(1, 21)]
FAST = BatchSettings(
    offline_after_s=60,
    reply_timeout_s=0.05,
    restart_timeout_s=0.5,
    restart_grace_s=0.0,
    poll_s=0.01,
)


@dataclass
class FakeBoards:
    """Plays both the bus (what was heard) and BoardActions (what was sent)."""

    principal: Principal | None = TECH
    delay_s: float = 0.0
    silent: set[str] = field(default_factory=set)  # heard long ago: offline
    unreachable: set[str] = field(default_factory=set)  # sending raises BusError
    mute: set[str] = field(default_factory=set)  # no answer to anything
    wrong: set[str] = field(default_factory=set)  # answers with other values
    mute_writes: set[str] = field(default_factory=set)  # only reads are answered
    stuck: set[str] = field(default_factory=set)  # a restart never ends
    lost_reads: set[str] = field(default_factory=set)  # writes unanswered, reads not sent
    sent: list[tuple[str, str]] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _back: dict[str, float] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return "tina"

    # the bus
    def last_seen(self, relay: str) -> float | None:
        if relay in self.silent:
            return time.time() - 3600
        return self._back.get(relay, time.time() - 1)

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        back = self._back.get(relay)
        return {"app": ({"version": "v1"}, back)} if back else {}

    # the actions
    def _work(self, relay: str, command: Command) -> None:
        with self._lock:
            self.sent.append((relay, command.kind))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.delay_s)
        with self._lock:
            self.in_flight -= 1
        if relay in self.unreachable:
            raise BusError(f"not connected: not sent to board {relay}")

    def send_command(self, relays: Sequence[str], command: Command) -> SendResult:
        relay = relays[0]
        self._work(relay, command)
        if command.kind == "restart" and relay not in self.stuck:
            self._back[relay] = time.time() + 0.02
        return SendResult("a" * 24, (relay,))

    def settle(self, audit_id: str, outcome: str, extra: Mapping[str, Any] | None = None) -> None:
        self.settled.append(outcome)

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        self._work(relay, command)
        if command.kind == "config_read" and relay in self.lost_reads:
            raise BusError("not connected: not sent")
        writes_unanswered = self.mute_writes | self.lost_reads
        if relay in self.mute or (command.kind == "config_write" and relay in writes_unanswered):
            raise RequestTimeout(f"board {relay} did not answer")
        fields = {k: v for k, v in command.payload.items() if k not in ("typ", "comp")}
        if command.kind == "config_read":
            fields = {"netStaChan": 6}
        if relay in self.wrong:
            fields = {"netStaChan": 1}
        return ConfigReply(relay, "cfg", "smib/config", component="net", fields=fields)


def run_job(boards: FakeBoards, job: BatchJob, settings: BatchSettings = FAST) -> BatchRun:
    run = start_batch(job, boards, boards, settings)
    assert run.wait(10)
    return run


def channel(relays: Sequence[str], value: int = 6) -> BatchJob:
    return BatchJob("config", tuple(relays), "net", {"netStaChan": value})


def test_never_more_boards_in_flight_than_allowed() -> None:
    boards = FakeBoards(delay_s=0.03)
    settings = BatchSettings(max_workers=3, reply_timeout_s=0.05)
    run = run_job(boards, channel(RELAYS), settings)
    assert boards.max_in_flight == 3
    assert run.progress.outcome_counts()["confirmed"] == 20


def test_default_concurrency_is_eight() -> None:
    boards = FakeBoards(delay_s=0.03)
    run_job(boards, channel(RELAYS), BatchSettings(reply_timeout_s=0.05))
    assert boards.max_in_flight == 8


def test_config_outcomes_are_mapped() -> None:
    r_ok, r_off, r_bus, r_mute, r_wrong, r_readback, r_lost = RELAYS[:7]
    boards = FakeBoards(
        silent={r_off},
        unreachable={r_bus},
        mute={r_mute},
        wrong={r_wrong},
        mute_writes={r_readback},
        lost_reads={r_lost},
    )
    run = run_job(boards, channel(RELAYS[:7]))
    states = run.progress.states()
    assert states == {
        r_ok: "confirmed",
        r_off: "offline",
        r_bus: "failed",
        r_mute: "not_confirmed",
        r_wrong: "not_confirmed",
        r_readback: "confirmed",
        r_lost: "not_confirmed",  # the write went out: it may have been applied
    }
    assert r_off not in {relay for relay, _ in boards.sent}
    assert [kind for relay, kind in boards.sent if relay == r_readback] == [
        "config_write",
        "config_read",
    ]
    details = dict(zip(*[run.progress.frame()[c] for c in ("relay", "detail")], strict=True))
    assert "netStaChan" in details[r_wrong]
    assert "not connected" in details[r_bus]
    assert "last heard 1 h ago" in details[r_off]
    assert "nor the read-back" in details[r_mute]
    assert "read-back not sent" in details[r_lost]


def test_restart_outcomes_are_mapped() -> None:
    r_ok, r_off, r_stuck, r_bus = RELAYS[:4]
    boards = FakeBoards(silent={r_off}, stuck={r_stuck}, unreachable={r_bus})
    run = run_job(boards, BatchJob("restart", (r_ok, r_off, r_stuck, r_bus)))
    assert run.progress.states() == {
        r_ok: "confirmed",
        r_off: "offline",
        r_stuck: "not_confirmed",
        r_bus: "failed",
    }
    assert all(kind == "restart" for _, kind in boards.sent)
    assert sorted(boards.settled) == ["confirmed", "not_confirmed"]
    assert r_off not in {relay for relay, _ in boards.sent}


def test_role_is_checked_when_the_job_is_made() -> None:
    boards = FakeBoards(principal=Principal("max", Role.MANAGER))
    with pytest.raises(PermissionDenied):
        start_batch(BatchJob("restart", (RELAYS[0],)), boards, boards, FAST)
    with pytest.raises(PermissionDenied):
        start_batch(channel(RELAYS[:1]), boards, boards, FAST)
    assert boards.sent == []


@pytest.mark.parametrize(
    ("kind", "relays", "comp", "fields"),
    [
        ("restart", (), "", {}),
        ("restart", ("e831cd+#",), "", {}),
        ("config", (RELAYS[0],), "net", {"netStaChan": 15}),
        ("config", (RELAYS[0],), "app", {"version": "v2"}),
        ("reflash", (RELAYS[0],), "", {}),
    ],
)
def test_bad_jobs_are_refused(
    kind: Any, relays: tuple[str, ...], comp: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        BatchJob(kind, relays, comp, fields)


def test_job_normalises_and_describes_masked() -> None:
    job = BatchJob(
        "config",
        (" E831CD000001", "e831cd000001"),
        "net",
        {"netStaPwd": "hunter2222", "netStaChan": "11"},
    )
    assert job.relays == ("e831cd000001",)
    assert job.fields == {"netStaPwd": "hunter2222", "netStaChan": 11}
    assert job.describe() == "set net: netStaPwd=••••••, netStaChan=11"
    assert "hunter" not in repr(job)


def test_progress_outcomes_stick_and_finish_fails_stragglers() -> None:
    progress = BatchProgress(RELAYS[:3])
    progress.set(RELAYS[0], "sending")
    progress.set(RELAYS[0], "confirmed", "ok")
    progress.set(RELAYS[0], "failed", "late")
    progress.set(RELAYS[1], "waiting")
    assert progress.fraction() == pytest.approx(1 / 3)
    progress.finish()
    assert progress.done
    assert progress.states() == dict.fromkeys(RELAYS[:3], "failed") | {RELAYS[0]: "confirmed"}
    frame = progress.frame({RELAYS[0]: "Lucky 7 (Floor)"})
    assert list(frame["state"]) == ["confirmed", "failed", "failed"]
    assert frame["cabinet"].iloc[0] == "Lucky 7 (Floor)"
    assert frame["seconds"].notna().all()
    assert BatchProgress(RELAYS[:1]).frame()["seconds"].isna().all()  # queued: not started


def test_a_cancelled_batch_sends_nothing_more_and_says_who_cancelled(mongo_db: Any) -> None:
    boards = FakeBoards(delay_s=0.05)
    audit = AuditTrail(mongo_db)
    settings = BatchSettings(max_workers=2, reply_timeout_s=0.5)
    run = start_batch(channel(RELAYS), boards, boards, settings, audit)
    deadline = time.time() + 5
    while run.progress.outcome_counts()["confirmed"] < 2 and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(PermissionDenied):
        run.cancel(Principal("max", Role.MANAGER))
    assert not run.cancelled
    waiting = run.cancel(TECH)
    assert run.wait(10) and run.cancelled and run.cancelled_by == "tina"
    counts = run.progress.outcome_counts()
    assert counts["cancelled"] == waiting > 0
    assert counts["confirmed"] + counts["cancelled"] == len(RELAYS)
    assert len(boards.sent) == counts["confirmed"], "nothing sent after the cancel"
    details = {b.detail for b in run.progress.boards() if b.state == "cancelled"}
    assert details == {"cancelled by tina: nothing sent"}
    assert run.cancel(TECH) == 0, "a finished run has nothing left to cancel"
    record = audit.query(kind="batch_config").iloc[0]
    assert record["outcome"] == "cancelled" and '"cancelled_by": "tina"' in record["result"]


def test_jobs_registry_keeps_recent_runs_bounded() -> None:
    jobs = BatchJobs(keep=2)
    runs = []
    for n in range(4):
        progress = BatchProgress([RELAYS[n]])
        progress.finish()
        run = BatchRun(
            f"job{n}", BatchJob("restart", (RELAYS[n],)), "tina", progress, started_at=float(n)
        )
        jobs.add(run)
        runs.append(run)
    assert [r.id for r in jobs.recent()] == ["job3", "job2"]
    assert jobs.get("job3") is runs[3] and jobs.get("job0") is None and jobs.get(None) is None


# --- for real: Mosquitto, a simulated fleet and the embedded database ---------------------


@pytest.fixture
def live(mosquitto: Mosquitto, topic_prefix: str) -> Iterator[tuple[Fleet, DeviceBus]]:
    topics = make_topics(topic_prefix)
    with DeviceBus(mosquitto.uri, topics, client_id_prefix="batch-test") as bus:
        assert bus.wait_connected(5)
        with Fleet(
            mosquitto.uri, topics, relays=5, seed=21, reboot_s=1.0, events_per_minute=0
        ) as fleet:
            deadline = time.monotonic() + 5
            while len(bus.relays_seen()) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sorted(bus.relays_seen()) == sorted(fleet.relay_ids)
            yield fleet, bus


@pytest.mark.integration
def test_channel_change_on_five_boards_all_confirmed(
    live: tuple[Fleet, DeviceBus], mongo_db: Any
) -> None:
    fleet, bus = live
    audit = AuditTrail(mongo_db)
    job = channel(fleet.relay_ids, 13)
    run = start_batch(job, BoardActions(bus, audit, TECH), bus, BatchSettings(), audit)
    assert run.wait(10)
    assert run.progress.states() == dict.fromkeys(fleet.relay_ids, "confirmed")
    assert {fleet.board(r).config["net"]["netStaChan"] for r in fleet.relay_ids} == {13}
    records = audit.query()
    assert list(records["kind"]).count("config_write") == 5
    summary = records[records["kind"] == "batch_config"].iloc[0]
    assert summary["outcome"] == "confirmed" and '"confirmed": 5' in summary["result"]


@pytest.mark.integration
def test_location_restart_with_one_board_offline(
    live: tuple[Fleet, DeviceBus], mongo_db: Any
) -> None:
    fleet, bus = live
    audit = AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, TECH)
    *awake, asleep = fleet.relay_ids[:4]
    fleet.set_online(asleep, False)
    time.sleep(1.1)  # longer than offline_after_s below: `asleep` counts as offline
    for relay in awake:  # the others are heard again now
        actions.request(relay, protocol.config_read("app"), 2.0)
    settings = BatchSettings(offline_after_s=1.0, restart_timeout_s=10.0)
    run = start_batch(
        BatchJob("restart", tuple(fleet.relay_ids[:4])), actions, bus, settings, audit
    )
    assert run.wait(15)
    assert run.progress.states() == dict.fromkeys(awake, "confirmed") | {asleep: "offline"}
    restarts = audit.query(kind="restart")
    assert sorted(restarts["relays"]) == sorted(awake)
    assert set(restarts["outcome"]) == {"confirmed"}
    assert audit.query(kind="batch_restart")["outcome"].iloc[0] == "not_confirmed"
    fleet.set_online(asleep, True)
