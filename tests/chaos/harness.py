"""The chaos suite's harness: a whole deployment in processes, faults by `kill -9`, and
the invariants checked afterwards.

A `Deployment` is a real Mosquitto (`tests.servers.Mosquitto`, restartable on its port),
the embedded database of a temporary data folder (MONGO_URI unset, so every process
finds it through the folder's state file and the workers' `EmbeddedSupervisor` restarts
it on the same port), simulated boards (`smib sim`, strict) and workers (`smib worker`),
each its own process with its own log in the folder. Nothing here knows how the
services work inside: faults are signals, facts are read from the database.

Invariants (each returns what it found, so a test can assert and print it):
- `slot_report`: every cabinet has exactly one snapshot per collection slot over a
  window (`smib_core.bench.fleet.slot_report`: read, failed, recorded missed, absent,
  duplicated);
- `open_audit`: audit records still `sent`;
- `batch_accounts` / `rollout_accounts`: a batch or rollout finished, each board in a
  final state.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core import embedded
from smib_core.bench.fleet import SlotReport, window_snapshots
from smib_core.bench.fleet import slot_report as count_slots
from smib_core.sim.board import make_boards
from smib_core.slots import SlotAudit, audit_slots, offset_s
from smib_core.store.registry import Registry
from tests.servers import Mosquitto, free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "smib"


class ChaosError(AssertionError):
    """A wait ran out or a process died: the message carries the logs to look at."""


# --- waiting --------------------------------------------------------------------------


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    every: float = 0.25,
    explain: Callable[[], str] = lambda: "",
) -> tuple[T, float]:
    """(first truthy value of `probe`, seconds it took); a database error counts as not
    yet. ChaosError after `timeout` seconds."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(PyMongoError):
            value = probe()
            if value:
                return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ChaosError(f"{what}: not within {timeout:g} s\n{explain()}")
        time.sleep(every)


# --- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process of the test in its own session, output in `log`."""

    name: str
    command: list[str]
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> float:
        """SIGKILL, reaped; returns when it was sent (time.time())."""
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        return at

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"[{self.name}: no log]"
        state = "running" if self.alive else f"exited {self.popen.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}) ---\n" + "\n".join(text)


def smib_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "smib_core", *args]


# --- the deployment -----------------------------------------------------------------------


@dataclass
class Deployment:
    """Broker, database, boards and workers of one test module (see the module doc)."""

    folder: Path
    boards: int = 20
    period_s: float = 10.0
    sim_args: Sequence[str] = ("--events-per-minute", "0", "--reboot-s", "1")
    extra_env: Mapping[str, str] = field(default_factory=dict)
    broker: Mosquitto = field(init=False)
    procs: dict[str, Proc] = field(default_factory=dict, init=False)
    relays: list[str] = field(default_factory=list, init=False)
    cabinets: dict[str, str] = field(default_factory=dict, init=False)  # id -> relay
    db_port: int = field(default=0, init=False)
    firmware_port: int = field(default_factory=free_port, init=False)  # one per deployment
    _client: MongoClient[dict[str, Any]] | None = field(default=None, init=False)

    # -- setup and teardown

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def start_servers(self) -> None:
        (self.folder / "broker").mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.folder / "broker")
        self.broker.start()
        self._connect_database()

    def _connect_database(self) -> None:
        uri = embedded.ensure_database(self.data_dir)
        self.db_port = int(urlsplit(uri).port or 0)  # the URI may hold credentials
        if self._client is not None:
            self._client.close()
        self._client = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=3_000)

    def restore(self, workers: Sequence[str]) -> list[str]:
        """Make the deployment whole again after a test whose fault it did not survive
        (so one failure does not fail the tests after it); returns what was repaired."""
        repaired = []
        if self.broker.process is None or self.broker.process.poll() is not None:
            self.broker.stop()
            self.broker.start()
            repaired.append("broker restarted")
        try:
            wait_for("the database", self.database_answers, 10)
        except ChaosError:
            self._connect_database()
            for name in workers:  # they knew the database's old address
                if name in self.procs:
                    self.procs[name].stop()
            repaired.append(f"database started again (port {self.db_port}), workers restarted")
        for name in workers:
            if name not in self.procs or not self.procs[name].alive:
                self.start_worker(name)
                repaired.append(f"{name} started")
        return repaired

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "MONGO_"))}
        env.update(
            {
                "MQTT_URI": self.broker.uri,
                "SMIB_DATA_DIR": str(self.data_dir),
                "MONGO_DB": DB_NAME,
                "SMIB_COLLECT_PERIOD_S": f"{self.period_s:g}",
                "SMIB_HEARTBEAT_S": "3",
                "SMIB_OFFLINE_AFTER_S": "30",
                "FIRMWARE_BIND": "127.0.0.1",
                "FIRMWARE_PORT": str(self.firmware_port),
                # a restarted board answers within a few seconds here; what a killed
                # worker left `sent` is settled by the sweeper this long after
                "SMIB_BATCH_RESTART_TIMEOUT_S": "20",
                "SMIB_AUDIT_SETTLE_AFTER_S": "30",
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def spawn(self, name: str, command: list[str], **env: str) -> Proc:
        log = self.folder / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.folder,
                env=self.env(**env),
                start_new_session=True,
            )
        proc = Proc(name, command, log, popen)
        self.procs[name] = proc
        return proc

    def register_fleet(self, seed: int = 11) -> None:
        """The simulator's relay ids for `seed`, each registered as a cabinet."""
        self.relays = [board.relay for board in make_boards(self.boards, seed)]
        registry = Registry(self.db)
        floor = registry.add_location("Chaos floor", "chaos")
        for n, relay in enumerate(self.relays):
            values = {"name": f"C{n:03d}", "location_id": floor.id, "relay": relay}
            registry.add_cabinet(values | {"denomination": 0.01}, "chaos")
        self.cabinets = {c.id: str(c.relay) for c in registry.cabinets()}
        self.spawn(
            "sim",
            smib_command("sim", "--relays", str(self.boards), "--seed", str(seed), *self.sim_args),
        )

    def start_worker(self, name: str) -> Proc:
        """`smib worker` (again, if it died). Every worker has the deployment's firmware
        port: the one holding the lease `firmware-server` serves it."""
        old = self.procs.get(name)
        if old is not None and old.alive:
            return old
        return self.spawn(name, smib_command("worker"))

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        if self._client is not None:
            self._client.close()
        with contextlib.suppress(Exception):
            self.broker.stop()
        embedded.stop(self.data_dir)

    @property
    def db(self) -> Database[dict[str, Any]]:
        assert self._client is not None, "start_servers first"
        return self._client[DB_NAME]

    def workers(self) -> list[Proc]:
        return [p for name, p in self.procs.items() if name.startswith("worker")]

    def logs(self) -> str:
        """The tail of every process's log, for a failed assertion."""
        return "\n".join(proc.tail() for proc in self.procs.values())

    def check_alive(self, *names: str) -> None:
        dead = [self.procs[n] for n in names if not self.procs[n].alive]
        if dead:
            raise ChaosError("died: " + ", ".join(p.name for p in dead) + "\n" + self.logs())

    # -- leases

    def lease_owner(self, name: str) -> str | None:
        doc = self.db["leases"].find_one({"_id": name})
        if doc is None or float(doc.get("expires_at", 0)) < time.time():
            return None
        return str(doc["owner"])

    def holder(self, lease: str) -> Proc | None:
        """The worker holding `lease` now (its pid is in the owner name)."""
        owner = self.lease_owner(lease)
        if owner is None:
            return None
        for proc in self.workers():
            if proc.alive and f":{proc.pid}:" in f":{owner}:":
                return proc
        return None

    def wait_holder(
        self, lease: str, timeout: float = 30.0, not_pid: int = 0
    ) -> tuple[Proc, float]:
        def probe() -> Proc | None:
            proc = self.holder(lease)
            return proc if proc is not None and proc.pid != not_pid else None

        return wait_for(f"a worker holding {lease!r}", probe, timeout, explain=self.logs)

    # -- the database server

    def database_pid(self) -> int:
        state = embedded.status(self.data_dir)["database"]
        if not state.get("running"):
            raise ChaosError(f"the embedded database is not running: {state}")
        return int(str(state["pid"]))

    def kill_database(self) -> float:
        """kill -9 of the embedded database (reaped if this process started it)."""
        pid = self.database_pid()
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        child = embedded._children.get(pid)
        if child is not None:
            child.wait(10)
        else:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(10)
        return at

    def database_answers(self) -> bool:
        try:
            self.db.command("ping")
        except PyMongoError:
            return False
        return True

    # -- collection

    def good_reading_after(self, moment: float) -> datetime | None:
        """When the first good reading taken after `moment` was taken, once it is stored."""
        doc = self.db["meter_snapshots"].find_one(
            {"ok": True, "at": {"$gt": datetime.fromtimestamp(moment, UTC)}},
            sort=[("at", 1)],
        )
        return None if doc is None else doc["at"]

    def next_slot(self) -> int:
        """The first slot none of whose reads is due yet."""
        return math.floor(time.time() / self.period_s) + 1

    def slot_report(self, first: int, last: int, *, settle_s: float = 8.0) -> SlotReport:
        """Wait until slot `last` of every board is due and read (`settle_s` more), then
        count every cabinet's snapshots of slots `first`..`last`."""
        due = (last + 1) * self.period_s + settle_s
        while (left := due - time.time()) > 0:
            time.sleep(min(left, 1.0))
        report, _ = wait_for(
            "the database, to count slots",
            lambda: count_slots(self.db, self.cabinets, self.period_s, first, last),
            timeout=60,
        )
        return report

    def incomplete_slots(self, first: int, last: int) -> dict[str, SlotAudit]:
        """The collector's own check (`smib_core.slots.audit_slots`) of the same window:
        the cabinets with a slot missing or recorded twice."""
        docs = window_snapshots(self.db, self.cabinets, self.period_s, first, last)
        start, end = first * self.period_s, (last + 1) * self.period_s
        audits = audit_slots(docs, self.period_s, start=start, end=end, cabinets=self.cabinets)
        return {cabinet: audit for cabinet, audit in audits.items() if not audit.complete}

    def explain_slots(self, report: SlotReport) -> str:
        """The snapshots around each slot gone wrong: what a failed assertion shows."""
        lines = []
        for cabinet, slot, count in report.examples[:6]:
            relay = self.cabinets[cabinet]
            due = slot * self.period_s + offset_s(relay, self.period_s)
            near = {"cabinet_id": cabinet, "at": {"$gte": _utc(due - 2 * self.period_s)}}
            near["at"]["$lt"] = _utc(due + 2 * self.period_s)
            found = [
                f"{d['at']:%H:%M:%S.%f} ok={d.get('ok')} {d.get('failure_check')} "
                f"slot={d.get('slot')}"
                for d in self.db["meter_snapshots"].find(near).sort("at", 1)
            ]
            lines.append(
                f"{cabinet} ({relay}) slot {slot} due {_utc(due):%H:%M:%S.%f}: "
                f"{count} snapshot(s); near it: {found}"
            )
        return "\n".join(lines)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- invariants -------------------------------------------------------------------------


def open_audit(db: Database[Any]) -> list[dict[str, Any]]:
    """Audit records still `sent`: commands nobody settled."""
    fields = {"kind": 1, "relays": 1, "actor": 1, "at": 1}
    return list(db["audit"].find({"outcome": "sent"}, fields))


@dataclass(frozen=True)
class Accounts:
    """A batch or rollout: finished or not, and each board's state."""

    finished: bool
    state: str
    boards: dict[str, str]
    final: frozenset[str]

    @property
    def unaccounted(self) -> dict[str, str]:
        return {relay: state for relay, state in self.boards.items() if state not in self.final}


def batch_accounts(db: Database[Any], batch_id: str) -> Accounts:
    from smib_core.store.batches import OUTCOMES, BatchStore

    store = BatchStore(db)
    batch = store.get(batch_id)
    assert batch is not None, f"no batch {batch_id}"
    boards = {b.relay: b.state for b in store.boards(batch_id)}
    return Accounts(batch.finished, batch.state, boards, frozenset(OUTCOMES))


def rollout_accounts(db: Database[Any], rollout_id: str) -> Accounts:
    from smib_core.store.rollouts import BOARD_DONE, RolloutStore

    store = RolloutStore(db)
    rollout = store.get(rollout_id)
    assert rollout is not None, f"no rollout {rollout_id}"
    boards = {b.relay: b.state for b in store.boards(rollout_id)}
    return Accounts(rollout.finished, rollout.state, boards, frozenset(BOARD_DONE))


# --- the figures of a fault -------------------------------------------------------------


@dataclass(frozen=True)
class FaultFigures:
    """One row of the README's chaos table."""

    fault: str
    recovery_s: float
    lost: int  # slots with no record
    duplicated: int  # slots stored twice
    unaccounted: int = 0  # boards of a batch or rollout in no final state
    note: str = ""


def record(figures: FaultFigures) -> None:
    """Append a fault's figures to $SMIB_CHAOS_RESULTS (a JSON-lines file), when set:
    how the README's table is made."""
    results = os.environ.get("SMIB_CHAOS_RESULTS")
    if results:
        with Path(results).open("a") as out:
            out.write(json.dumps(asdict(figures)) + "\n")


@contextlib.contextmanager
def deployment(folder: Path, **options: Any) -> Iterator[Deployment]:
    dep = Deployment(folder, **options)
    try:
        dep.start_servers()
        yield dep
    finally:
        dep.stop()
