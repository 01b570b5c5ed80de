"""Persisted batches against strict boards (no reply to writes, no announcement on boot)
through a real Mosquitto and the embedded database, including a worker killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from smib_core.auth import Principal, Role
from smib_core.bus import DeviceBus
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.services.batch import (
    AuditSweeper,
    BatchJob,
    BatchTimings,
    BatchWorker,
    cancel_batch,
    submit_batch,
)
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import BatchStore
from tests.servers import EmbeddedMongo, Mosquitto
from tests.strict_boards import StrictBoards
from tests.test_bus import make_topics

ROOT = Path(__file__).resolve().parents[1]
TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("max", Role.MANAGER)
RELAYS = [f"e831cd{n:06x}" for n in range(1, 11)]
FAST = BatchTimings(
    offline_after_s=60,
    read_timeout_s=1.0,
    config_timeout_s=4.0,
    restart_timeout_s=15.0,
    restart_grace_s=0.5,
    probe_every_s=0.5,
    poll_s=0.2,
)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- the job itself ---------------------------------------------------------------------


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


def test_refused_submission_is_audited_and_nothing_stored(mongo_db: Any) -> None:
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    with pytest.raises(PermissionDenied):
        submit_batch(
            BatchJob("restart", (RELAYS[0],)), Principal("max", Role.MANAGER), store, audit
        )
    assert store.recent() == []
    assert list(audit.query(kind="batch_restart")["outcome"]) == ["refused"]


def test_submission_stores_a_queued_batch_with_its_secret_masked_in_the_audit(
    mongo_db: Any,
) -> None:
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    job = BatchJob("config", tuple(RELAYS[:2]), "net", {"netStaPwd": "hunter2222"})
    batch = submit_batch(job, TECH, store, audit)
    assert store.get(batch.id) == batch and batch.state == "queued"
    assert [b.state for b in store.boards(batch.id)] == ["queued", "queued"]
    assert batch.fields["netStaPwd"] == "hunter2222", "the worker needs the value"
    assert "hunter" not in repr(batch)
    record = audit.query(kind="batch_config").iloc[0]
    assert record["outcome"] == "sent" and "hunter" not in record.to_json()
    assert store.worker_holder() is None  # no worker: the page says so


# --- for real: Mosquitto, strict boards and the embedded database ---------------------------


@pytest.fixture
def boards(mosquitto: Mosquitto, topic_prefix: str) -> Iterator[StrictBoards]:
    with StrictBoards(mosquitto.uri, make_topics(topic_prefix), RELAYS, reboot_s=3.0) as fleet:
        yield fleet


@pytest.fixture
def bus(mosquitto: Mosquitto, topic_prefix: str) -> Iterator[DeviceBus]:
    with DeviceBus(mosquitto.uri, make_topics(topic_prefix), client_id_prefix="batch") as bus:
        assert bus.wait_connected(5)
        yield bus


def run_worker(mongo_db: Any, bus: DeviceBus, timings: BatchTimings = FAST) -> BatchWorker:
    worker = BatchWorker(mongo_db, bus, AuditTrail(mongo_db), Settings(), timings=timings)
    worker.start()
    return worker


def finished(store: BatchStore, batch_id: str) -> Callable[[], bool]:
    return lambda: (b := store.get(batch_id)) is not None and b.finished


@pytest.mark.integration
def test_config_batch_confirmed_by_reading_back(
    boards: StrictBoards, bus: DeviceBus, mongo_db: Any
) -> None:
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    ok, off, stubborn = RELAYS[:3], RELAYS[3], RELAYS[4]
    boards.offline.add(off)
    boards.stubborn.add(stubborn)
    fields = {"netStaChan": 6, "netStaPwd": "new-wifi-pass"}
    job = BatchJob("config", (*ok, off, stubborn), "net", fields, "template floor")
    batch = submit_batch(job, TECH, store, audit)
    worker = run_worker(mongo_db, bus)
    try:
        wait_for(finished(store, batch.id), 30, "the batch to finish")
    finally:
        worker.stop()
    states = {b.relay: (b.state, b.detail) for b in store.boards(batch.id)}
    assert {r: states[r][0] for r in ok} == dict.fromkeys(ok, "confirmed")
    assert states[off][0] == "offline" and "no answer to cfg app" in states[off][1]
    assert states[stubborn] == ("not_confirmed", "the board reports other values for netStaChan")
    assert all(boards.config[r]["net"]["netStaChan"] == 6 for r in ok)
    assert all(boards.config[r]["net"]["netStaPwd"] == "new-wifi-pass" for r in ok)
    assert "cfg" not in boards.kinds(off)[1:], "nothing but the question sent to offline"
    done = store.get(batch.id)
    assert done is not None and done.fields["netStaPwd"] == "••••••", "secret erased when done"
    records = audit.query()
    assert "new-wifi-pass" not in records.to_csv()
    assert audit.open_records() == []
    writes = records[records["kind"] == "config_write"]
    assert sorted(writes["outcome"]) == ["confirmed"] * 3 + ["not_confirmed"]
    summary = records[records["kind"] == "batch_config"].iloc[0]
    assert summary["outcome"] == "not_confirmed" and '"confirmed": 3' in summary["result"]


def start_worker_process(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, db_name: str, prefix: str
) -> subprocess.Popen[str]:
    args = {
        "broker": mosquitto.uri,
        "mongo": embedded_mongo.uri,
        "db": db_name,
        "prefix": prefix,
        "timings": asdict(FAST),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.batch_worker_proc", json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    return proc


def waiting(store: BatchStore, batch_id: str) -> int:
    return sum(1 for b in store.boards(batch_id) if b.state == "waiting")


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.integration
def test_restart_of_ten_boards_resumes_after_kill_9_of_the_worker(
    boards: StrictBoards,
    bus: DeviceBus,
    mongo_db: Any,
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    topic_prefix: str,
) -> None:
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    batch = submit_batch(BatchJob("restart", tuple(RELAYS)), TECH, store, audit)
    proc = start_worker_process(mosquitto, embedded_mongo, mongo_db.name, topic_prefix)
    try:
        wait_for(lambda: waiting(store, batch.id) == 8, 20, "8 boards sent their rst")
    finally:
        kill_9(proc)
    states = [b.state for b in store.boards(batch.id)]
    assert states.count("queued") == 2, f"2 boards wait their turn: {states}"
    # The rst the dead worker published may still be on their way to the counting
    # subscriber: wait for them (a lost one keeps the count below 8 and fails here).
    wait_for(lambda: sum(boards.rst_counts().values()) >= 8, 5, "8 rst reached the broker")
    assert sum(boards.rst_counts().values()) == 8
    assert store.worker_holder() is not None, "the dead worker's lease has not expired yet"

    worker = run_worker(mongo_db, bus)
    try:
        wait_for(finished(store, batch.id), 40, "the resumed batch to finish")
    finally:
        worker.stop()
    assert boards.rst_counts() == dict.fromkeys(RELAYS, 1), "exactly one rst per board"
    outcome = {b.relay: b.state for b in store.boards(batch.id)}
    assert outcome == dict.fromkeys(RELAYS, "confirmed")
    assert audit.open_records() == [], "every audit record settled"
    restarts = audit.query(kind="restart")
    assert len(restarts) == 10 and set(restarts["outcome"]) == {"confirmed"}
    assert audit.query(kind="batch_restart")["outcome"].iloc[0] == "confirmed"


@pytest.mark.integration
def test_cancel_survives_a_restart_of_the_worker(
    boards: StrictBoards,
    bus: DeviceBus,
    mongo_db: Any,
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    topic_prefix: str,
) -> None:
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    batch = submit_batch(BatchJob("restart", tuple(RELAYS)), TECH, store, audit)
    proc = start_worker_process(mosquitto, embedded_mongo, mongo_db.name, topic_prefix)
    try:
        wait_for(lambda: waiting(store, batch.id) == 8, 20, "8 boards sent their rst")
    finally:
        kill_9(proc)
    with pytest.raises(PermissionDenied):
        cancel_batch(store, batch.id, MANAGER, audit)
    assert cancel_batch(store, batch.id, TECH, audit) == 2  # kept while no worker runs
    worker = run_worker(mongo_db, bus)
    try:
        wait_for(finished(store, batch.id), 40, "the cancelled batch to finish")
    finally:
        worker.stop()
    outcome = [b.state for b in store.boards(batch.id)]
    assert outcome.count("confirmed") == 8 and outcome.count("cancelled") == 2
    sent_to = set(boards.rst_counts())
    assert len(sent_to) == 8 and max(boards.rst_counts().values()) == 1
    cancelled = {b.relay for b in store.boards(batch.id) if b.state == "cancelled"}
    assert not cancelled & sent_to, "nothing sent to the cancelled boards"
    record = audit.query(kind="batch_restart").iloc[0]
    assert record["outcome"] == "cancelled" and '"cancelled_by": "tina"' in record["result"]
    assert audit.open_records() == []


@pytest.mark.integration
def test_a_board_left_waiting_is_confirmed_by_reading_back(
    boards: StrictBoards, bus: DeviceBus, mongo_db: Any
) -> None:
    """A worker died after the write went out: the next one only reads back and judges."""
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    relay = RELAYS[0]
    batch = submit_batch(BatchJob("config", (relay,), "net", {"netStaChan": 9}), TECH, store, audit)
    boards.config[relay]["net"]["netStaChan"] = 9  # the dead worker's write arrived
    assert store.claim(batch.id, relay, "writing net")
    assert store.sent(batch.id, relay, time.time(), "", "written")
    assert not store.claim(batch.id, relay, "again"), "a claimed board is never claimed twice"
    worker = run_worker(mongo_db, bus)
    try:
        wait_for(finished(store, batch.id), 20, "the batch to finish")
    finally:
        worker.stop()
    [board] = store.boards(batch.id)
    assert board.state == "confirmed" and "read back" in board.detail
    assert boards.kinds(relay) == ["cfg"], "read back only: nothing written again"


@pytest.mark.integration
def test_a_worker_stopped_during_a_read_back_leaves_the_board_in_flight(
    boards: StrictBoards, bus: DeviceBus, mongo_db: Any
) -> None:
    """Stopping is not a verdict: the board stays `waiting` and its audit record open,
    and the next worker judges it by reading back (nothing written again)."""
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    relay = RELAYS[0]
    boards.stubborn.add(relay)  # keeps its old value: the read-back goes on
    timings = BatchTimings(**{**asdict(FAST), "config_timeout_s": 30.0})
    batch = submit_batch(BatchJob("config", (relay,), "net", {"netStaChan": 7}), TECH, store, audit)
    worker = run_worker(mongo_db, bus, timings)
    try:
        wait_for(lambda: waiting(store, batch.id) == 1, 10, "the write to go out")
        time.sleep(1.0)  # a question or two read back the old value
    finally:
        started = time.monotonic()
        worker.stop()
    assert time.monotonic() - started < 5, "a stop does not wait for the read-back's end"
    [board] = store.boards(batch.id)
    assert board.state == "waiting" and board.audit_id
    [write] = [r for r in audit.open_records() if r["kind"] == "config_write"]
    assert str(write["id"]) == board.audit_id, "the write's record is left open"

    boards.stubborn.discard(relay)
    boards.config[relay]["net"]["netStaChan"] = 7  # the write took after all
    worker = run_worker(mongo_db, bus, timings)
    try:
        wait_for(finished(store, batch.id), 20, "the batch to finish")
    finally:
        worker.stop()
    [board] = store.boards(batch.id)
    assert board.state == "confirmed" and board.detail == "net read back with the new values"
    assert boards.kinds(relay).count("cfg") > 2 and audit.open_records() == []
    writes = [c for r, c, _ in boards.received if r == relay and "netStaChan" in c]
    assert len(writes) == 1, "the write was not sent again"
    assert list(audit.query(kind="config_write")["outcome"]) == ["confirmed"]


@pytest.mark.integration
def test_a_board_left_sending_is_never_sent_a_second_rst(
    boards: StrictBoards, bus: DeviceBus, mongo_db: Any
) -> None:
    """A worker died between recording `sending` and recording the send: nobody knows
    whether its rst went out, so none is sent; the board is asked, and the detail says so."""
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    answers, silent = RELAYS[:2]
    boards.offline.add(silent)
    batch = submit_batch(BatchJob("restart", (answers, silent)), TECH, store, audit)
    for relay in (answers, silent):
        assert store.claim(batch.id, relay, "sending rst")
    timings = BatchTimings(**{**asdict(FAST), "restart_timeout_s": 3.0})
    worker = run_worker(mongo_db, bus, timings)
    try:
        wait_for(finished(store, batch.id), 20, "the batch to finish")
    finally:
        worker.stop()
    assert boards.rst_counts() == {}, "no rst sent again"
    outcome = {b.relay: (b.state, b.detail) for b in store.boards(batch.id)}
    assert outcome[answers][0] == "not_confirmed"
    assert "unknown whether it went out" in outcome[answers][1]
    assert outcome[silent][0] == "not_confirmed"
    assert "did not answer cfg app within 3 s" in outcome[silent][1]
    assert audit.query(kind="batch_restart")["outcome"].iloc[0] == "not_confirmed"


def test_sweeper_settles_what_a_dead_process_left_sent(mongo_db: Any) -> None:
    audit, store = AuditTrail(mongo_db), BatchStore(mongo_db)
    old = audit.record("cli:bob", "restart", [RELAYS[0]], {}, "sent")
    running = submit_batch(BatchJob("restart", (RELAYS[1],)), TECH, store, audit)
    time.sleep(1.6)  # the embedded database compares times to the second
    fresh = audit.record("cli:bob", "restart", [RELAYS[2]], {}, "sent")
    sweeper = AuditSweeper(mongo_db, audit, settle_after_s=0.5, owner="sweeper-1")
    assert sweeper.lease.acquire()
    assert sweeper.sweep() == 1
    settled = audit.query(kind="restart").set_index("id")
    assert settled.loc[old, "outcome"] == "timed_out"
    assert "settled by sweeper-1" in settled.loc[old, "result"]
    assert "ended without an outcome" in settled.loc[old, "result"]
    assert settled.loc[fresh, "outcome"] == "sent", "younger than the bound"
    assert audit.query(kind="batch_restart")["outcome"].iloc[0] == "sent", "batch still runs"
    assert store.get(running.id) is not None
    assert not audit.settle(old, "confirmed"), "an outcome, once set, is kept"
    sweeper.stop()
