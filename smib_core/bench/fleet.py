"""`smib bench fleet`: a worker collecting a large simulated fleet, period after period.

Setup: a private Mosquitto (`bench.broker`), a fresh embedded database in its own
temporary folder, the worker in its own process (`smib worker` when this build has it,
else `smib collect`: the collector and the event recorder) with the collection period
`period_s`, and the boards in `processes` `smib sim` processes (one MQTT connection
each carries all its boards). Timeline:

1. the worker starts on an empty registry; its CPU and RSS over `baseline_s` are the
   baseline (the same process, idle: no cabinet to read, no board talking);
2. `boards` cabinets are registered (`Registry.add_cabinet`, the registry page's path)
   and the simulators start;
3. from the next period boundary, `periods` whole periods are measured: the worker's
   CPU (% of one core) and RSS (sampled every second), and every cabinet's slots
   (`slot_report`): one snapshot per slot is a slot read (good or failed), none is a
   slot missed, more than one a duplicate; counted a few seconds after the window and
   again a period later (readings a busy database stored late);
4. the Fleet page's live table is built for the whole fleet (`services.fleet.live_table`,
   what the page calls every 2 s) beside the baseline of reading the same cabinet
   documents into a plain DataFrame.

Slots follow the collector's scheme: relay r's k-th read is due at `k*P + offset_s(r, P)`;
a snapshot's slot is its `slot` field when the collector stores one, else
`floor((at - offset_s) / P)` of its reading time.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import psutil
from pymongo.database import Database

from smib_core.errors import InvalidInput, SmibError
from smib_core.sim.board import make_boards
from smib_core.slots import slot_of, slots_covered
from smib_core.store.documents import READ_ALL_BATCH
from smib_core.store.meters import SNAPSHOTS
from smib_core.store.registry import Registry

LOCATIONS = 10
SEED_BASE = 7_000  # sim process i runs `--seed SEED_BASE + i`
_MIB = 1024 * 1024
ACTOR = "bench"


@dataclass(frozen=True, slots=True)
class FleetPlan:
    boards: int = 5_000
    period_s: float = 300.0
    periods: int = 2
    processes: int = 5
    events_per_minute: float = 1.0
    baseline_s: float = 30.0
    table_runs: int = 5
    timeout_s: float = 5.0  # the collector's wait per board: a slot's last read ends by then

    def __post_init__(self) -> None:
        if self.boards < 1 or self.processes < 1 or self.periods < 1:
            raise InvalidInput("the bench needs at least one board, process and period")
        if self.processes > self.boards:
            raise InvalidInput("more simulator processes than boards")
        if self.period_s < 1:
            raise InvalidInput("the period is at least 1 s")


# --- the fleet's identities -------------------------------------------------------------


def split(boards: int, processes: int) -> list[int]:
    """How many boards each simulator process carries (as even as possible)."""
    base, extra = divmod(boards, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def fleet_relays(boards: int, processes: int) -> list[list[str]]:
    """The relay ids of each simulator process (`smib sim --seed SEED_BASE + i`): the
    simulator's ids depend only on the seed. InvalidInput if two processes share one."""
    groups = [
        [board.relay for board in make_boards(count, SEED_BASE + i)]
        for i, count in enumerate(split(boards, processes))
    ]
    every = [relay for group in groups for relay in group]
    if len(set(every)) != len(every):
        raise InvalidInput("two simulator processes would share a relay id; change SEED_BASE")
    return groups


def register(db: Database[Any], relays: Sequence[str]) -> float:
    """One cabinet per relay over `LOCATIONS` locations; returns the seconds it took."""
    started = time.perf_counter()
    registry = Registry(db)
    places = [registry.add_location(f"Floor {n + 1}", ACTOR).id for n in range(LOCATIONS)]
    for n, relay in enumerate(relays):
        values = {
            "name": f"Cabinet {n + 1:05d}",
            "location_id": places[n % LOCATIONS],
            "relay": relay,
            "denomination": 0.01,
        }
        registry.add_cabinet(values, ACTOR)
    return time.perf_counter() - started


# --- processes --------------------------------------------------------------------------


def worker_command() -> tuple[list[str], str]:
    """(command, name) of the process that runs the background services."""
    from smib_core.cli import COMMAND_MODULES

    smib = [sys.executable, "-m", "smib_core"]
    if "worker" in COMMAND_MODULES:
        return [*smib, "worker"], "smib worker"
    return [*smib, "collect"], "smib collect (no smib worker in this build)"


def sim_command(relays: int, seed: int, events_per_minute: float) -> list[str]:
    return [
        *(sys.executable, "-m", "smib_core", "sim"),
        *("--relays", str(relays), "--seed", str(seed)),
        *("--events-per-minute", f"{events_per_minute:g}"),
    ]


@dataclass
class Processes:
    """Child processes of the bench, each in its own session, logs in `folder`."""

    folder: Path
    env: Mapping[str, str]
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(self.env),
                start_new_session=True,
            )
        self.children.append(child)
        return child

    def stop_all(self, timeout: float = 15.0) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.folder / f"{name}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- CPU and RSS --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    seconds: float
    cpu_pct: float  # of one core
    rss_mib: float  # at the end
    rss_peak_mib: float


class UsageMeter:
    """CPU time and RSS of one process (and its children) between `start` and `stop`."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        self._process = psutil.Process(pid)
        self._every = every_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="smib-bench-rss", daemon=True)
        self._cpu0 = 0.0
        self._t0 = 0.0

    def _cpu(self) -> float:
        total = 0.0
        for proc in (self._process, *self._process.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            with contextlib.suppress(psutil.Error):
                self._peak = max(self._peak, self._rss())

    def start(self) -> None:
        self._cpu0, self._t0 = self._cpu(), time.monotonic()
        self._peak = self._rss()
        self._thread.start()

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join()
        seconds = time.monotonic() - self._t0
        rss = self._rss()
        cpu = 100 * (self._cpu() - self._cpu0) / seconds if seconds > 0 else 0.0
        return Usage(seconds, cpu, rss / _MIB, max(self._peak, rss) / _MIB)


def measure(pid: int, seconds: float) -> Usage:
    meter = UsageMeter(pid)
    meter.start()
    time.sleep(seconds)
    return meter.stop()


# --- slots ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotReport:
    """Every cabinet's slots from `first` to `last` (inclusive)."""

    cabinets: int
    first: int
    last: int
    expected: int  # cabinets x slots
    read_ok: int  # slots with one good reading
    read_failed: int  # slots with one failed reading (no reply, bad frame, ...)
    recorded_missed: int  # slots recorded as missed (failure_check "missed")
    absent: int  # slots with no snapshot at all
    duplicated: int  # slots with more than one snapshot (counted once each)
    failures: dict[str, int]  # failure_check -> slots
    examples: tuple[tuple[str, int, int], ...] = ()  # (cabinet, slot, snapshots) gone wrong

    @property
    def read_share_pct(self) -> float:
        return 100 * (self.read_ok + self.read_failed) / self.expected if self.expected else 0.0

    @property
    def lost(self) -> int:
        """Slots with no record at all: a reading nobody can account for."""
        return self.absent


def snapshot_slots(doc: Mapping[str, Any], period_s: float) -> range:
    """The slots a stored snapshot accounts for: its own `slot` (or `slot_from`..
    `slot_to`, a long gap recorded as one) when the collector marks them, else the slot
    its reading time falls in."""
    if doc.get("slot") is not None:
        return slots_covered(doc)
    at = doc["at"]
    moment = at.timestamp() if isinstance(at, datetime) else float(at)
    # + 1 ms: times are stored to the millisecond, cut down, so a read that failed at
    # once (no broker) may be stored a fraction of a millisecond before it was due
    slot = slot_of(str(doc["relay"]), moment + 0.001, period_s)
    return range(slot, slot + 1)


def window_snapshots(
    db: Database[Any],
    cabinets: Mapping[str, str],
    period_s: float,
    first: int,
    last: int,
    *,
    grace_s: float = 30.0,
) -> list[dict[str, Any]]:
    """The snapshots of `cabinets` that may account for slots `first`..`last`: those
    taken from the first slot's period to a period (and `grace_s`) after the last
    one's, and any long gap recorded as one snapshot reaching into the window."""
    start = datetime.fromtimestamp(first * period_s, UTC)
    end = datetime.fromtimestamp((last + 2) * period_s + grace_s, UTC)
    ids = {"cabinet_id": {"$in": list(cabinets)}}
    fields = {"relay": 1, "cabinet_id": 1, "at": 1, "ok": 1, "failure_check": 1, "slot": 1}
    fields |= {"period_s": 1, "slot_from": 1, "slot_to": 1}
    taken = ids | {"at": {"$gte": start, "$lt": end}}
    found = {d["_id"]: d for d in db[SNAPSHOTS].find(taken, fields).batch_size(READ_ALL_BATCH)}
    # a long gap recorded as one snapshot is dated by its first slot, maybe long before
    found |= {d["_id"]: d for d in db[SNAPSHOTS].find(ids | {"slot_to": {"$gte": first}}, fields)}
    return list(found.values())


def slot_report(
    db: Database[Any],
    cabinets: Mapping[str, str],
    period_s: float,
    first: int,
    last: int,
    *,
    grace_s: float = 30.0,
) -> SlotReport:
    """Count the snapshots of each cabinet (`cabinets`: cabinet_id -> relay) per slot
    from `first` to `last`. Once the collector marks its snapshots with their slot, a
    snapshot with none (a reading made on demand) fills no slot."""
    docs = window_snapshots(db, cabinets, period_s, first, last, grace_s=grace_s)
    marked = any(doc.get("slot") is not None for doc in docs)
    counts: Counter[tuple[str, int]] = Counter()
    outcome: dict[tuple[str, int], tuple[bool, str | None]] = {}
    for doc in docs:
        if marked and doc.get("slot") is None:
            continue  # read on demand: fills no slot
        if doc.get("period_s") is not None and float(doc["period_s"]) != float(period_s):
            continue
        for slot in snapshot_slots(doc, period_s):
            key = (str(doc["cabinet_id"]), slot)
            if first <= slot <= last:
                counts[key] += 1
                outcome[key] = (bool(doc.get("ok")), doc.get("failure_check"))
    slots = last - first + 1
    read_ok = read_failed = missed = 0
    failures: Counter[str] = Counter()
    for ok, check in outcome.values():
        if ok:
            read_ok += 1
        elif check == "missed":
            missed += 1
        else:
            read_failed += 1
            failures[str(check)] += 1
    return SlotReport(
        cabinets=len(cabinets),
        first=first,
        last=last,
        expected=len(cabinets) * slots,
        read_ok=read_ok,
        read_failed=read_failed,
        recorded_missed=missed,
        absent=len(cabinets) * slots - len(outcome),
        duplicated=sum(1 for n in counts.values() if n > 1),
        failures=dict(failures),
        examples=tuple(_wrong(cabinets, counts, first, last)[:20]),
    )


def _wrong(
    cabinets: Mapping[str, str], counts: Mapping[tuple[str, int], int], first: int, last: int
) -> list[tuple[str, int, int]]:
    """(cabinet, slot, snapshots) of the slots with none or more than one snapshot."""
    return [
        (cabinet, slot, counts.get((cabinet, slot), 0))
        for cabinet in sorted(cabinets)
        for slot in range(first, last + 1)
        if counts.get((cabinet, slot), 0) != 1
    ]


# --- the fleet table ----------------------------------------------------------------------


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """(median seconds, last result) of `runs` calls."""
    times = []
    result: Any = None
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def table_figures(db: Database[Any], bus: Any, runs: int, offline_after_s: float) -> dict[str, Any]:
    """The Fleet page's live table for the whole fleet, beside a plain DataFrame of the
    same cabinet documents (read in as few round trips as the page reads them)."""
    from smib_core.services.fleet import live_table, status_counts
    from smib_core.store.meters import MeterStore

    registry, meters = Registry(db), MeterStore(db)
    everything = db["cabinets"].find
    baseline_s, raw = timed(
        lambda: pd.DataFrame(list(everything().batch_size(READ_ALL_BATCH))), runs
    )
    build_s, table = timed(lambda: live_table(registry, bus, meters, offline_after_s), runs)
    return {
        "rows": len(table),
        "raw_rows": len(raw),
        "build_s": round(build_s, 3),
        "baseline_s": round(baseline_s, 3),
        "status": status_counts(table),
        "with_meter_reading": int(table["last_meter_reading"].notna().sum()),
    }


# --- the run ----------------------------------------------------------------------------


def _env(broker: str, mongo: str, folder: Path, plan: FleetPlan) -> dict[str, str]:
    from smib_core.embedded import free_port

    env = dict(os.environ)
    env.update(
        {
            "MQTT_URI": broker,
            "MONGO_URI": mongo,
            "MONGO_DB": "smib",
            "SMIB_DATA_DIR": str(folder),
            "SMIB_COLLECT_PERIOD_S": f"{plan.period_s:g}",
            "FIRMWARE_PORT": str(free_port()),
            "FIRMWARE_BIND": "127.0.0.1",
        }
    )
    env.pop("MQTT_CA_FILE", None)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _alive(processes: Processes, names: Sequence[str]) -> None:
    for child, name in zip(processes.children, names, strict=True):
        if child.poll() is not None:
            tail = processes.log_tail(name)
            raise SmibError(f"{name} exited ({child.returncode}) during the bench:\n{tail}")


def _sleep_until(epoch: float, check: Callable[[], None]) -> None:
    while (left := epoch - time.time()) > 0:
        check()
        time.sleep(min(left, 2.0))


@contextlib.contextmanager
def _database(folder: Path) -> Iterator[str]:
    from smib_core import embedded

    try:
        yield embedded.ensure_database(folder)
    finally:
        embedded.stop(folder)


def run(plan: FleetPlan, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole bench (see the module docstring); the report as a JSON-ready dict."""
    from smib_core.bench.broker import private_broker
    from smib_core.bus import DeviceBus
    from smib_core.protocol import Topics
    from smib_core.store.db import client_for

    say = progress or (lambda _text: None)
    groups = fleet_relays(plan.boards, plan.processes)
    folder = Path(tempfile.mkdtemp(prefix="smib-bench-fleet-"))
    try:
        with private_broker() as (broker, broker_name), _database(folder) as mongo:
            env = _env(broker, mongo, folder, plan)
            client = client_for(mongo)
            db = client["smib"]
            bus = DeviceBus(
                broker,
                Topics(),
                client_id_prefix="smib-bench-fleet",
                max_relays=max(5_000, plan.boards),
            )
            processes = Processes(folder, env)
            names: list[str] = []
            try:
                bus.start()
                command, worker_name = worker_command()
                worker = processes.start("worker", command)
                names.append("worker")
                say(
                    f"{worker_name} started (pid {worker.pid}); idle baseline {plan.baseline_s:g} s"
                )
                time.sleep(min(5.0, plan.baseline_s))
                _alive(processes, names)
                idle = measure(worker.pid, plan.baseline_s)
                _alive(processes, names)
                every = [relay for group in groups for relay in group]
                say(f"registering {len(every)} cabinets")
                register_s = register(db, every)
                for i, group in enumerate(groups):
                    name = f"sim{i}"
                    processes.start(
                        name, sim_command(len(group), SEED_BASE + i, plan.events_per_minute)
                    )
                    names.append(name)
                say(
                    f"{plan.processes} simulator processes started ({register_s:.0f} s to register)"
                )
                ready = time.time() + 3.0
                first = math.floor(ready / plan.period_s) + 1
                window_start = first * plan.period_s
                last = first + plan.periods - 1
                window_end = (last + 1) * plan.period_s
                say(
                    f"measuring {plan.periods} period(s) of {plan.period_s:g} s from "
                    f"{datetime.fromtimestamp(window_start, UTC):%H:%M:%S} UTC"
                )
                check = lambda: _alive(processes, names)  # noqa: E731
                _sleep_until(window_start, check)
                meter = UsageMeter(worker.pid)
                meter.start()
                _sleep_until(window_end, check)
                busy = meter.stop()
                _sleep_until(window_end + plan.timeout_s + 3.0, check)
                cabinets = {
                    str(d["_id"]): str(d["relay"]) for d in db["cabinets"].find({}, {"relay": 1})
                }
                slots = slot_report(db, cabinets, plan.period_s, first, last)
                say("building the fleet table")
                table = table_figures(db, bus, plan.table_runs, offline_after_s=2 * plan.period_s)
                say("counting the window's slots again, a period later")
                _sleep_until(window_end + plan.period_s + plan.timeout_s + 3.0, check)
                late = slot_report(db, cabinets, plan.period_s, first, last)
                processes.stop_all()  # the worker folds in what it read before it ends
                say("checking every cabinet-hour's rollup against the readings")
                rollups = rollup_check(db)
            finally:
                processes.stop_all()
                bus.stop()
                client.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "broker": broker_name,
        "worker": worker_name,
        "plan": {
            "boards": plan.boards,
            "period_s": plan.period_s,
            "periods": plan.periods,
            "processes": plan.processes,
            "boards_per_process": split(plan.boards, plan.processes),
            "events_per_minute": plan.events_per_minute,
        },
        "register_s": round(register_s, 1),
        "slots": _slots_json(slots),
        "slots_a_period_later": _slots_json(late),
        "worker_usage": {"idle": _usage_json(idle), "collecting": _usage_json(busy)},
        "table": table,
        "rollups": rollups,
    }


ROLLUP_FIGURES = ("coin_in_money", "drop_money", "games_played", "intervals")


def rollup_check(db: Database[Any]) -> dict[str, int]:
    """Every stored hourly and daily rollup row against all the readings rolled up
    afresh (`meter_seed.rollups_of`): rows compared, rows that disagree (a figure of
    `ROLLUP_FIGURES` off by more than a cent, or a row only one side has)."""
    from smib_core.services.meter_seed import rollups_of
    from smib_core.store.meters import MeterStore

    store = MeterStore(db)
    wide = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    hourly, daily = rollups_of(store.snapshots(*wide))
    result: dict[str, int] = {}
    frequencies: tuple[tuple[Literal["h", "D"], pd.DataFrame], ...] = (
        ("h", hourly),
        ("D", daily),
    )
    for freq, expected in frequencies:
        stored = store.rollups(freq, *wide)
        keyed = [
            f.assign(bucket=pd.to_datetime(f["bucket"], utc=True))
            .set_index(["cabinet_id", "bucket"])[list(ROLLUP_FIGURES)]
            .astype("float64")
            for f in (stored, expected)
        ]
        joined = keyed[0].join(keyed[1], how="outer", lsuffix="_stored")
        off = pd.Series(False, index=joined.index)
        for figure in ROLLUP_FIGURES:
            off |= ~((joined[f"{figure}_stored"] - joined[figure]).abs() <= 0.01)
        result[f"{freq}_rows"] = len(joined)
        result[f"{freq}_wrong"] = int(off.sum())
    return result


def _usage_json(usage: Usage) -> dict[str, float]:
    return {
        "seconds": round(usage.seconds, 1),
        "cpu_pct": round(usage.cpu_pct, 1),
        "rss_mib": round(usage.rss_mib, 1),
        "rss_peak_mib": round(usage.rss_peak_mib, 1),
    }


def _slots_json(report: SlotReport) -> dict[str, Any]:
    return {
        "cabinets": report.cabinets,
        "first": report.first,
        "last": report.last,
        "expected": report.expected,
        "read_ok": report.read_ok,
        "read_failed": report.read_failed,
        "recorded_missed": report.recorded_missed,
        "absent": report.absent,
        "duplicated": report.duplicated,
        "read_share_pct": round(report.read_share_pct, 2),
        "failures": report.failures,
    }


def print_report(report: dict[str, Any]) -> None:
    plan, slots, late, usage, table = (
        report["plan"],
        report["slots"],
        report["slots_a_period_later"],
        report["worker_usage"],
        report["table"],
    )
    idle, busy = usage["idle"], usage["collecting"]
    print(f"broker: {report['broker']}; worker: {report['worker']}")
    print(
        f"{plan['boards']:,} boards in {plan['processes']} simulator processes, period "
        f"{plan['period_s']:g} s, {plan['periods']} period(s) measured; "
        f"{report['register_s']} s to register the cabinets"
    )
    rows = [
        ("figure", "SMIB Console", "baseline, same run"),
        (
            "slots read (one snapshot)",
            f"{slots['read_ok'] + slots['read_failed']:,} of {slots['expected']:,} "
            f"({slots['read_share_pct']}%): {slots['read_ok']:,} good, "
            f"{slots['read_failed']:,} failed {slots['failures'] or ''}",
            f"{slots['expected']:,} = {slots['cabinets']:,} cabinets x {plan['periods']} slots",
        ),
        (
            "slots missed / duplicated",
            f"{slots['absent']:,} with no record, {slots['recorded_missed']:,} recorded "
            f"missed, {slots['duplicated']:,} duplicated",
            "0",
        ),
        (
            "the same slots a period later",
            f"{late['read_ok'] + late['read_failed']:,} read, {late['recorded_missed']:,} "
            f"recorded missed, {late['absent']:,} with no record, {late['duplicated']:,} "
            "duplicated",
            "(readings the database took late)",
        ),
        (
            "worker CPU (% of one core)",
            f"{busy['cpu_pct']}% over {busy['seconds']:g} s",
            f"{idle['cpu_pct']}% idle ({idle['seconds']:g} s, no cabinet, no board)",
        ),
        (
            "worker RSS",
            f"{busy['rss_mib']} MiB at the end, peak {busy['rss_peak_mib']} MiB",
            f"{idle['rss_mib']} MiB idle",
        ),
        (
            f"Fleet table, {table['rows']:,} rows",
            f"{table['build_s']} s (median)",
            f"{table['baseline_s']} s: {table['raw_rows']:,} cabinet documents into a DataFrame",
        ),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())
    print(f"fleet table status counts: {table['status']}")
    checked = report["rollups"]
    print(
        f"rollups against the readings rolled up afresh: {checked['h_wrong']:,} of "
        f"{checked['h_rows']:,} hourly rows and {checked['D_wrong']:,} of "
        f"{checked['D_rows']:,} daily rows disagree"
    )
