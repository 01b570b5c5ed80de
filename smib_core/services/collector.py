"""The meter collector: every registered SAS board read on a period, once per deployment.

Every `period_s` (default 300) each registered, non-retired cabinet with a relay is
asked for its meters (the standard SAS 6F request), each board at its own moment of the
period (`offset_s`: a hash of the relay, so a thousand boards are not asked at once
and each one is read at regular intervals), by a small pool (`concurrency`), waiting
at most `timeout_s` per board. A board whose `coms` config says it is not SAS
(`comsMode` != 0) is skipped; one whose config the bus has not heard is tried.

Every attempt becomes a meter snapshot (`store.meters`): ok with its meters and sizes,
or failed with the reason (the board's "-1" is `device_error`, a frame that failed a
check names the check, no reply is `timeout`), so gaps are visible, never silent. The
`ReadingKeeper` (`services.reading_keeper`) stores it, now or when the database answers
again, and keeps the rollups, location hours and daily digests current (flushed at
the end of `run_once`, on stop, and for every location's current and previous hour
when the loop starts).

One per deployment: the periodic loop runs only while this process holds the lease
`collector` (`store.leases`, 8 s, renewed every 2.7 s by a thread of its own); other
processes (more workers, a `smib collect` next to them) try every half second and take
over when the holder stops renewing. `run_once` reads now (an operator's explicit
action, stored without a slot) holding the same lease for its run: refused while
another process holds it.

Slots (`smib_core.slots`): each scheduled read is the read of one slot of its board and
is stored with `slot`, `period_s` and the `_id` of that slot, so a slot is stored once
whoever stores it. On taking the lease, and every period after, the holder reads at
once every board whose current slot has no record, and writes a `missed` failed
snapshot (with the reason) for every slot between a cabinet's last recorded slot and
the one it reads next (one day of slots one by one at most; an older gap is one record
covering `slot_from..slot_to`).

The database may go away: reads go on (the bus is fine), and what cannot be stored
waits in the keeper's bounded backlog (`backlog_max`), written in order when the
database answers again; a reading the full backlog had to drop becomes a `missed`
record of its slot, saying so. The holder keeps its role while the database cannot be
reached (nobody can take a lease from it); once it answers, the lease rules apply
again, and a slot read twice meanwhile is stored once.

Reads go to the bus directly, not through `BoardActions`: a meter read changes nothing
on the board, and auditing every board every five minutes would bury the audit trail
under hundreds of thousands of entries a day. The snapshots are the record of them.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core import protocol
from smib_core.analytics.verdicts import Judgement, Verdict
from smib_core.errors import InvalidInput, RequestTimeout, SmibError
from smib_core.protocol import Command, DeviceMessage, MeterReply
from smib_core.routing import LateReply
from smib_core.sas import MeterReading
from smib_core.services.meter_rollups import verify_rollups
from smib_core.services.reading_keeper import ReadingKeeper, Target, utc_ms
from smib_core.services.reading_verdicts import CLOCK_BEHIND_ALERT_AFTER, VerdictBook, reading_of
from smib_core.settings import Settings
from smib_core.slots import offset_s, slot_due, slot_of
from smib_core.store.clock import DeploymentClock, record_skew
from smib_core.store.leases import Lease, process_owner
from smib_core.store.meters import MeterStore, snapshot_document
from smib_core.store.registry import Registry

log = logging.getLogger(__name__)

LEASE_NAME = "collector"
SAS_MODE = 0
STANDBY_POLL_S = 0.5  # how often a process without the lease tries to take it
CLOCK_SKEW_WARN_S = 2.0  # a process clock this far from the database's is logged
CLOCK_RECHECK_S = 5.0  # a stamp refused as clock behind checks the clock again, this often at most
STANDBY_CLOCK_CHECK_S = 60.0  # on standby, the clock is checked this often (lease expiry)
MAX_METER = 10**18 - 1  # 18 digits (9 BCD bytes): the most a stored meter holds (int64)
LATE_REPLY_S = 90.0  # a reply this long after its read's timeout is still its reading
RECONCILE_S = 900.0  # how often the holder repairs recent cabinet-hours from their readings
RECONCILE_BACK_S = 3 * 3600.0  # how far back it looks
RECONCILE_SLICE = 10  # cabinets checked at a time
RECONCILE_SHARE = 0.25  # of the writer's time a reconciliation pass may take, at most
BUSY_RETRY_S = 0.25  # a board still being read is tried again this much later, within its slot
NOT_READ = "not read: no collector was reading (stopped, crashed or taking over the lease)"
STILL_READING = "not read: the board's previous read was still running"
FELL_BEHIND = "not read: the collector fell more than a period behind its schedule"

__all__ = ["Collector", "CollectorConfig", "Target", "offset_s", "slot_due", "slot_of"]


class MeterBus(Protocol):
    """What the collector needs of `bus.DeviceBus`."""

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage: ...

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


class LateMeterBus(MeterBus, Protocol):
    """A bus that also hands over replies that came after their request's timeout."""

    def request(
        self, relay: str, command: Command, timeout: float = 5.0, *, late_s: float = 0.0
    ) -> DeviceMessage: ...

    def add_late_listener(self, fn: Callable[[LateReply], None]) -> Callable[[], None]: ...


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    period_s: float = 300.0
    concurrency: int = 8
    timeout_s: float = 5.0
    lease_ttl_s: float = 8.0  # renewed every third of it: a dead holder is replaced in < 9 s
    backlog_max: int = 100_000  # readings kept while the database cannot store them
    gaming_day_start_hour: int = 0
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not 1 <= self.period_s <= 86_400:
            raise InvalidInput("the collect period must be 1 s to 1 day")
        if not 1 <= self.concurrency <= 64:
            raise InvalidInput("the collector reads 1 to 64 boards at a time")
        if not 0.1 <= self.timeout_s <= 60:
            raise InvalidInput("the per-board timeout must be 0.1 to 60 s")
        if not 3 <= self.lease_ttl_s <= 9:
            raise InvalidInput("the collector lease lives 3 to 9 s")
        if self.backlog_max < 1:
            raise InvalidInput("the collector keeps a backlog of at least one reading")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CollectorConfig:
        """The settings' period and gaming day, with `overrides` (None: keep)."""
        base = cls(
            period_s=settings.collect_period_s,
            gaming_day_start_hour=settings.gaming_day_start_hour,
            tz=settings.timezone,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True, slots=True)
class Reading:
    """How one read went (the snapshot that was stored, in short)."""

    relay: str
    cabinet: str
    at: datetime
    ok: bool
    failure: str | None = None
    failure_check: str | None = None
    meters: int = 0
    slot: int | None = None


@dataclass(slots=True)
class CollectorStats:
    reads: int = 0
    ok: int = 0
    failed: int = 0
    store_errors: int = 0
    periods: int = 0
    holding_lease: bool = False
    backlog: int = 0  # readings waiting for the database
    dropped: int = 0  # readings the full backlog dropped (their slots recorded missed)
    missed: int = 0  # missed slots recorded
    last_reading: dict[str, datetime] = field(default_factory=dict)
    clock_skew_s: float | None = None  # this process's clock minus the database's


def _too_large(reading: MeterReading | None) -> str | None:
    """A meter over `MAX_METER` (a size byte of 10 or more: PROTOCOL.md lets the machine
    choose, real ones send 4 to 9 bytes), which no database integer holds."""
    meters = reading.meters if reading is not None else ()
    return next((m.code for m in meters if (m.value or 0) > MAX_METER), None)


def _meter_reading(reply: DeviceMessage | None) -> MeterReading | None:
    """The reply's meters, when it is a meter reply whose meters can be counted."""
    if not isinstance(reply, MeterReply) or _too_large(reply.reading):
        return None
    return reply.reading  # None for a failed reply


def _failure_of(reply: DeviceMessage) -> tuple[str | None, str | None]:
    """(failure, failure_check) of a reply; (None, None) for a good meter reading."""
    if isinstance(reply, MeterReply) and (code := _too_large(reply.reading)):
        return f"meter {code} reads more than 18 digits: not counted", "too_large"
    if _meter_reading(reply) is not None:
        return None, None
    failure = getattr(reply, "failure", None) or "the board sent no meter reply"
    return str(failure), getattr(reply, "failure_check", None) or "command"


class CollectorBusy(SmibError):
    """Another process holds the collector lease: it reads the boards."""


class Collector:
    """Reads the meters of the registered boards; `start()` runs the periodic loop."""

    def __init__(
        self,
        bus: MeterBus,
        db: Database[Any],
        config: CollectorConfig | None = None,
        *,
        registry: Registry | None = None,
        store: MeterStore | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        alerts: bool = True,
    ) -> None:
        self.config = config or CollectorConfig()
        self._bus = bus
        self._db = db
        self._registry = registry or Registry(db)
        self.store = store or MeterStore(db)
        owner = owner or process_owner("collector:")
        # Stamps, slots and the lease in the database's time (`check_clock`).
        self._clock = DeploymentClock(db, clock)
        self.lease = Lease(db, LEASE_NAME, owner, self.config.lease_ttl_s, clock=self._clock)
        self._alerts = alerts
        self._stats = CollectorStats()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._stopping = threading.Event()
        self._lost = threading.Event()  # the lease turned out to be someone else's
        self._thread: threading.Thread | None = None
        self._renewer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._targets: list[Target] = []  # the last targets read from the registry
        self._schedule: dict[str, tuple[Target, int]] = {}  # relay -> (target, next slot)
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()  # the writer has something to do
        self._recompute_due = False
        self._reconcile_due = True  # a reconciliation pass starts (lease taken)
        self._unreconciled: list[str] = []  # cabinets the current pass has yet to check
        self._late_s = 0.0  # how long a timed-out read still takes a late reply
        self._timed_out: dict[str, tuple[Target, int | None]] = {}  # relay -> its read
        self._late_bus: LateMeterBus | None = None
        if hasattr(bus, "add_late_listener"):  # a DeviceBus: late replies are readings
            self._late_bus = cast(LateMeterBus, bus)
            self._late_s = min(LATE_REPLY_S, self.config.period_s / 2)
            self._late_bus.add_late_listener(self._on_late_reply)
        self.keeper = ReadingKeeper(
            db,
            self.store,
            period_s=self.config.period_s,
            backlog_max=self.config.backlog_max,
            gaming_day_start_hour=self.config.gaming_day_start_hour,
            tz=self.config.tz,
            alerts=alerts,
            clock=self._clock,
        )
        self.verdicts = VerdictBook(self.store, is_fresh=self.keeper.book.is_fresh)

    # --- what to read ----------------------------------------------------------------

    def is_sas(self, relay: str) -> bool:
        """False only when the board's latest `coms` config says it is not SAS."""
        coms = self._bus.latest_config(relay).get("coms")
        if coms is None:
            return True
        try:
            return int(coms[0].get("comsMode", SAS_MODE)) == SAS_MODE
        except (TypeError, ValueError):
            return True

    def targets(self, relays: Iterable[str] | None = None) -> list[Target]:
        """The registered SAS boards to read (only those of `relays`, when given)."""
        wanted = None if relays is None else {protocol.normalize_relay_id(r) for r in relays}
        locations = {loc.id: loc.name for loc in self._registry.locations(include_retired=True)}
        found = []
        for cabinet in self._registry.cabinets():
            relay = cabinet.relay
            if not relay or (wanted is not None and relay not in wanted):
                continue
            if self.is_sas(relay):
                where = locations.get(cabinet.location_id, "")
                ids = (cabinet.id, cabinet.name, cabinet.location_id, where)
                found.append(Target(relay, *ids, cabinet.denomination))
        return found

    # --- reading ---------------------------------------------------------------------

    def read(self, target: Target, slot: int | None = None) -> Reading:
        """Ask one board for its meters, judge a good reply by the money rules
        (`analytics.verdicts`: a stale or suspect one is asked again once, before a RAM
        clear is booked), store the snapshot (of `slot` when scheduled), refresh the
        rollups. A database that cannot take it now gets it later."""
        at, decoded, failure, check = self._ask(target)
        heard: dict[str, int] | None = None
        with self._lock:
            if check == "timeout" and self._late_s:
                self._timed_out[target.relay] = (target, slot)
            else:
                self._timed_out.pop(target.relay, None)
        if decoded is not None:
            judgement = self._judge(target, at, decoded)
            first = decoded.values()
            if judgement.verdict in (Verdict.STALE, Verdict.SUSPECT):
                at, decoded, failure, check = self._ask(target)
                judgement = self._judge(target, at, decoded) if decoded else judgement
            if not judgement.stored:  # kept with its meters (the re-read's, else the first's)
                heard = decoded.values() if decoded is not None else first
                decoded, failure = None, judgement.reason
                check = judgement.verdict.value.replace(" ", "_")
        count = len(decoded.values()) if decoded is not None else 0
        reading = Reading(
            target.relay, target.cabinet, at, failure is None, failure, check, count, slot
        )
        self._store(target, reading, decoded, heard=heard)
        return reading

    def _ask(self, target: Target) -> tuple[datetime, MeterReading | None, str | None, str | None]:
        """(when, good reading or None, failure, failure_check) of one meter request."""
        reply: DeviceMessage | None = None
        try:
            command, timeout = protocol.read_meters(), self.config.timeout_s
            if self._late_bus is not None and self._late_s:
                reply = self._late_bus.request(target.relay, command, timeout, late_s=self._late_s)
            else:
                reply = self._bus.request(target.relay, command, timeout)
            failure, check = _failure_of(reply)
        except RequestTimeout:
            failure, check = f"no reply within {self.config.timeout_s:g} s", "timeout"
        except SmibError as exc:  # not connected to the broker: nothing was asked
            failure, check = str(exc), "timeout"
        return utc_ms(self._clock()), _meter_reading(reply), failure, check

    def _on_late_reply(self, late: LateReply) -> None:
        """A meter reply after its read's timeout, no newer read of the board out (the
        bus's thread: hand it to the pool)."""
        decoded = _meter_reading(late.message)
        with self._lock:
            read = self._timed_out.pop(late.message.relay, None)
            pool = self._pool
        if read is None or decoded is None:
            return
        try:
            if pool is not None:
                pool.submit(self._store_late, *read, decoded)
                return
        except RuntimeError:  # the pool shut down: stopping
            return
        name = "smib-collector-late"  # no loop running (`run_once`): a thread of its own
        threading.Thread(target=self._store_late, args=(*read, decoded), name=name).start()

    def _store_late(self, target: Target, slot: int | None, decoded: MeterReading) -> None:
        """Store a late reply as the reading of its slot, at its arrival, marked late
        (it takes the place of the slot's `timeout` record) when the rules accept it."""
        at = utc_ms(self._clock())
        judgement = self.verdicts.judge(target.cabinet_id, reading_of(at, decoded, late=True))
        if not judgement.stored:
            log.info("collector: %s: a late reply refused: %s", target.cabinet, judgement.reason)
            return
        count = len(decoded.values())
        reading = Reading(target.relay, target.cabinet, at, True, None, None, count, slot)
        self._store(target, reading, decoded, late=True)
        if not self.running:  # no writer to fold it into its rollups (`run_once`)
            self.keeper.flush_rollups()

    def _judge(self, target: Target, at: datetime, decoded: MeterReading) -> Judgement:
        judgement = self.verdicts.judge(target.cabinet_id, reading_of(at, decoded))
        if judgement.verdict is Verdict.CLOCK_BEHIND:
            log.warning("collector: %s: %s", target.cabinet, judgement.reason)
            if self.running and self._clock.due(CLOCK_RECHECK_S):  # a step since the check?
                try:
                    self.check_clock()
                except PyMongoError as exc:
                    log.warning("collector: cannot check the clock: %s", exc)
            in_a_row = self.verdicts.clock_behind_in_a_row(target.cabinet_id)
            if self._alerts and in_a_row == CLOCK_BEHIND_ALERT_AFTER:
                self._raise("clock_behind", target, judgement.reason, at)
        elif not judgement.stored:
            log.info("collector: %s: %s", target.cabinet, judgement.reason)
        return judgement

    def _raise(self, kind: str, target: Target, detail: str, at: datetime) -> None:
        try:
            from smib_core.services.alerts import raise_alert

            raise_alert(self._db, kind, target.relay, detail, at)
        except (ImportError, SmibError, PyMongoError):
            log.exception("collector: could not raise a %s alert for %s", kind, target.relay)

    def _store(
        self,
        target: Target,
        reading: Reading,
        decoded: MeterReading | None,
        *,
        late: bool = False,
        heard: Mapping[str, int] | None = None,
    ) -> None:
        meters: dict[str, int] = {}
        sizes: dict[str, int] = {}
        if reading.ok and decoded is not None:
            meters = decoded.values()
            sizes = {m.code: m.size for m in decoded.meters}
        with self._lock:
            self._stats.reads += 1
            self._stats.ok += reading.ok
            self._stats.failed += not reading.ok
            self._stats.last_reading[target.relay] = reading.at
        outcome: dict[str, Any] = {"ok": reading.ok, "failure": reading.failure, "meters": meters}
        outcome |= {"failure_check": reading.failure_check, "sizes": sizes}
        if reading.slot is not None:
            outcome |= {"slot": reading.slot, "period_s": self.config.period_s}
        doc = snapshot_document(
            target.relay, reading.at, **target.cabinet_fields(), **outcome, late=late, heard=heard
        )
        self.keeper.keep(target, doc)

    def run_once(self, relays: Iterable[str] | None = None) -> list[Reading]:
        """Read the registered SAS boards (or those of `relays`) now, all at once with
        the pool's concurrency; in target order. One process stores readings at a time:
        unless this collector's loop holds the lease, it is taken for the run (what was
        remembered of the cabinets is read again when another process held it since)
        and let go; `CollectorBusy` when another process holds it. A database that
        cannot be asked leaves the lease untaken: the readings wait in the backlog."""
        found = self.targets(relays)
        if not found:
            return []
        borrowed = not (self.running and self._holding())
        if borrowed:
            try:
                if not self.lease.try_acquire():
                    holder = self.lease.holder()
                    who = f" ({holder.owner})" if holder is not None else ""
                    raise CollectorBusy(f"another process collects the meters{who}")
                if not self.lease.kept:  # someone may have stored readings since
                    self._forget()
            except PyMongoError as exc:
                log.warning("collector: reading without the lease: %s", exc)
                self._forget()
        try:
            workers = min(self.config.concurrency, len(found))
            with ThreadPoolExecutor(workers, thread_name_prefix="smib-collect-once") as pool:
                readings = list(pool.map(self.read, found))
            if not self.keeper.drain():
                log.error("collector: the database did not take %d readings", self.stats().backlog)
            self.keeper.flush_rollups()
            self.keeper.flush_location_hours()
        finally:
            if borrowed:
                self.lease.expire()
        return readings

    def drain(self) -> bool:
        """Write what waits for the database (`ReadingKeeper.drain`) and fold the readings
        stored into their rollups."""
        return self.keeper.drain() and self.keeper.flush_rollups()

    def flush_location_hours(self) -> int:
        """Recompute the location hours and daily digests readings touched."""
        return self.keeper.flush_location_hours()

    # --- the periodic loop -----------------------------------------------------------
    #
    # Three threads: the scheduler (`_loop`: takes the lease, then submits each board's
    # read at its slot's moment; it never waits on the database while holding), the
    # lease keeper (`_keep_lease`: renews every third of the lease's life) and the writer
    # (`_write_loop`: the backlog, the missed records, the registry, the location hours;
    # everything that may wait on a database that went away).

    def start(self) -> None:
        """Run the loop on named threads (and a pool of `concurrency` readers)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(
            self.config.concurrency, thread_name_prefix="smib-collector"
        )
        self._renewer = threading.Thread(
            target=self._keep_lease, name="smib-collector-lease", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name="smib-collector-writer", daemon=True
        )
        self._thread = threading.Thread(target=self._loop, name="smib-collector", daemon=True)
        for thread in (self._renewer, self._writer, self._thread):
            thread.start()
        log.info("collector started as %s (every %g s)", self.lease.owner, self.config.period_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the reads in flight, write what waits (if the database answers), join
        the threads, give the lease up. Idempotent."""
        self._stopping.set()
        self._wake.set()
        for thread in (self._thread, self._renewer, self._writer):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._renewer = self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if not (self.keeper.drain() and self.keeper.write_missed()):
            left = self.keeper.waiting()
            log.error("collector: stopping with %d records the database did not take", left)
        self.keeper.flush_rollups()
        self.flush_location_hours()
        self.lease.release()
        with self._lock:
            self._stats.holding_lease = False
            self._in_flight.clear()  # reads cancelled before they ran
            self._schedule.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> CollectorStats:
        with self._lock:
            stats = replace(self._stats, last_reading=dict(self._stats.last_reading))
        counts = self.keeper.counts()
        stats.store_errors, stats.backlog = counts.store_errors, counts.backlog
        stats.dropped, stats.missed = counts.dropped, counts.missed
        return stats

    def _heartbeat_s(self) -> float:
        return self.config.lease_ttl_s / 3

    def _set_holding(self, holding: bool) -> None:
        with self._lock:
            self._stats.holding_lease = holding

    def _holding(self) -> bool:
        with self._lock:
            return self._stats.holding_lease

    def _keep_lease(self) -> None:
        """Renew the lease every third of its life while we hold it. A database that
        cannot be asked takes nobody's lease, so the holder keeps its role meanwhile."""
        while not self._stopping.wait(self._heartbeat_s()):
            if not self._holding() or self._lost.is_set():
                continue
            try:
                ours = self.lease.try_renew()
            except PyMongoError as exc:
                self.keeper.database_away(exc)
                continue
            if not ours:
                log.warning("collector: lost the lease; waiting to get it back")
                self._lost.set()
                self._forget()  # the next holder stores readings meanwhile

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                holding = self._holding() and not self._lost.is_set()
                if not holding:
                    self._set_holding(False)
                    self._lost.clear()
                    with self._lock:
                        self._schedule.clear()  # whoever held it meanwhile read those slots
                    self._forget()  # and stored readings: judge from the database
                    self._clock.check_if_due(STANDBY_CLOCK_CHECK_S)  # expiry: the db's time
                    holding = self.lease.try_acquire()
                    self._set_holding(holding)
                if holding:
                    self._hold()
                    continue
            except PyMongoError as exc:
                self.keeper.database_away(exc)
            except Exception:  # the loop must outlive a database hiccup
                log.exception("collector: the loop failed; retrying")
            self._stopping.wait(STANDBY_POLL_S)

    def _hold(self) -> None:
        """Read slot after slot while the lease stays ours: at once every board whose
        current slot has no record, then each at its own moment of every period."""
        with self._lock:
            fresh = not self._schedule
        if fresh:  # just taken: what is recorded, what nobody read (the database answers)
            self.check_clock()  # before the first stamp
            self._targets = self._classified(self.targets())
            last = self.store.last_slots(self.config.period_s)
            self._plan(self._targets, last)
            self._recompute_due = True
            self._reconcile_due = True
            self._wake.set()
        due = self._due_heap()
        planned = self._targets
        while not self._stopping.is_set() and not self._lost.is_set():
            if self._targets is not planned:  # the writer read the registry again
                planned = self._targets
                self._plan(planned, None)
                due = self._due_heap()
            soon = self._clock() + 1.0  # the registry may bring new boards meanwhile
            if not self._wait_until(min(due[0][0], soon) if due else soon):
                return
            self._submit_due(due)

    def _plan(self, targets: list[Target], last: Mapping[str, int] | None) -> None:
        """Schedule new targets (at once if their current slot has no record: with
        `last` unknown, a new cabinet), forget old ones; with `last`, the slots nobody
        recorded before the ones now scheduled become missed records."""
        period, now = self.config.period_s, self._clock()
        wanted = {t.relay: t for t in targets}
        gaps: list[dict[str, Any]] = []
        with self._lock:
            for relay in [r for r in self._schedule if r not in wanted]:
                del self._schedule[relay]
            for relay, target in wanted.items():
                if relay in self._schedule:
                    self._schedule[relay] = (target, self._schedule[relay][1])
                    continue
                current = slot_of(relay, now, period)
                recorded = None if last is None else last.get(target.cabinet_id)
                first = current + 1 if recorded is not None and recorded >= current else current
                self._schedule[relay] = (target, first)
                if recorded is not None and recorded + 1 < first:
                    missed = list(range(recorded + 1, first))
                    gaps += self.keeper.missed_docs(target, missed, NOT_READ)
        self.keeper.queue_missed(gaps)

    def _due_heap(self) -> list[tuple[float, str, int]]:
        period = self.config.period_s
        with self._lock:
            due = [(slot_due(r, k, period), r, k) for r, (_, k) in self._schedule.items()]
        heapq.heapify(due)
        return due

    def _submit_due(self, due: list[tuple[float, str, int]]) -> None:
        period = self.config.period_s
        now = self._clock()
        while due and due[0][0] <= now:
            _, relay, slot = heapq.heappop(due)
            with self._lock:
                entry = self._schedule.get(relay)
            if entry is None or entry[1] != slot:
                continue  # no longer read, or rescheduled
            target = entry[0]
            current = slot_of(relay, now, period)
            if current > slot:  # fell behind by a period or more: read the current slot
                skipped = list(range(slot, current))
                self._record_missed(target, skipped, FELL_BEHIND)
                slot = current
            if self._submit(target, slot):
                following = slot + 1
            elif slot_of(relay, now + BUSY_RETRY_S, period) == slot:
                with self._lock:
                    self._schedule[relay] = (target, slot)
                heapq.heappush(due, (now + BUSY_RETRY_S, relay, slot))
                continue
            else:
                self._record_missed(target, [slot], STILL_READING)
                following = slot + 1
            with self._lock:
                self._schedule[relay] = (target, following)
            heapq.heappush(due, (slot_due(relay, following, period), relay, following))

    def _record_missed(self, target: Target, slots: list[int], reason: str) -> None:
        self.keeper.queue_missed(self.keeper.missed_docs(target, slots, reason))
        self._wake.set()

    def _wait_until(self, when: float) -> bool:
        """Sleep until `when`; False when stopping or the lease is lost."""
        while (wait := when - self._clock()) > 0:
            if self._stopping.wait(min(wait, 1.0)) or self._lost.is_set():
                return False
        return not self._stopping.is_set() and not self._lost.is_set()

    def _submit(self, target: Target, slot: int) -> bool:
        """Hand the read of `slot` to the pool; False when the board is still being read."""
        with self._lock:
            if target.relay in self._in_flight or self._pool is None:
                return False
            self._in_flight.add(target.relay)
        self.keeper.add_pending(target.cabinet_id, slot)
        try:
            self._pool.submit(self._read_in_pool, target, slot)
        except RuntimeError:  # the pool shut down under us: stopping
            with self._lock:
                self._in_flight.discard(target.relay)
            self.keeper.discard_pending(target.cabinet_id, slot)
        return True

    def _read_in_pool(self, target: Target, slot: int) -> None:
        try:
            self.read(target, slot)
        except Exception:
            log.exception("collector: reading %s failed", target.relay)
            self.keeper.discard_pending(target.cabinet_id, slot)
        finally:
            with self._lock:
                self._in_flight.discard(target.relay)

    # --- the writer ------------------------------------------------------------------

    def _write_loop(self) -> None:
        """Everything that waits on the database, off the scheduler's thread."""
        next_check = next_pass = rest_until = 0.0  # next_check: time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                if self._recompute_due:
                    self._recompute_due = False
                    locations = {t.location_id for t in self.targets()}
                    self.keeper.recompute_recent_hours(locations)
                self.keeper.drain()
                self.keeper.flush_rollups()
                self.keeper.write_missed()
                self.keeper.maybe_flush()
                if self._holding() and self._clock.due(self.config.period_s):
                    self.check_clock()
                if self._holding() and time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.config.period_s
                    self._check()
                if self._holding() and (self._reconcile_due or self._clock() >= next_pass):
                    self._reconcile_due = False
                    next_pass = self._clock() + RECONCILE_S
                    self._unreconciled = sorted({t.cabinet_id for t in self._targets})
                if self._holding() and self._unreconciled and self._clock() >= rest_until:
                    began = self._clock()
                    self._reconcile(self._unreconciled[:RECONCILE_SLICE])
                    del self._unreconciled[:RECONCILE_SLICE]
                    took = self._clock() - began
                    rest_until = self._clock() + took * (1 - RECONCILE_SHARE) / RECONCILE_SHARE
            except PyMongoError as exc:
                self.keeper.database_away(exc)
            except Exception:
                log.exception("collector: writing failed; retrying")

    def _reconcile(self, cabinets: list[str]) -> None:
        """A pass starts on taking the lease and every `RECONCILE_S`, and checks every
        cabinet, `RECONCILE_SLICE` at a time, taking at most `RECONCILE_SHARE` of the
        writer's time (a pass over 5,000 cabinets on the embedded database takes about
        an hour): the recent cabinet-hours whose rollup disagrees with their readings (a
        reading stored, its rollup update lost to a failing database or a killed
        process) are rewritten from the readings. The last two periods are left to the
        readings still arriving."""
        now = self._clock()
        end = datetime.fromtimestamp(now - 2 * self.config.period_s, UTC)
        start = end - timedelta(seconds=RECONCILE_BACK_S)
        hour, tz = self.config.gaming_day_start_hour, self.config.tz
        found = verify_rollups(
            self.store, start, end, cabinets, repair=True, gaming_day_start_hour=hour, tz=tz
        )
        if found:
            hours = {(d.cabinet_id, d.bucket) for d in found}
            self.keeper.book.forget({cabinet for cabinet, _ in hours})  # rewritten: read again
            log.warning("collector: repaired %d cabinet-hours from their readings", len(hours))

    def _forget(self) -> None:
        """Another process stores readings while we do not hold the lease: what we
        remember of the cabinets' histories and rollups is read again when we do."""
        self.verdicts.forget()
        self.keeper.book.forget()

    def _classified(self, targets: list[Target]) -> list[Target]:
        """`targets`, the new ones among them classified (fresh: nothing stored yet)
        before any is read."""
        self.keeper.book.classify((t.relay, t.cabinet_id) for t in targets)
        return targets

    def check_clock(self) -> None:
        """The database's clock is the deployment's: this process stamps readings with
        its own corrected by the skew measured here (once a period, on taking the lease,
        on a stamp refused as clock behind). The skew is kept in the stats, recorded for
        the Bus status page and logged when it passes `CLOCK_SKEW_WARN_S`."""
        skew = self._clock.check()
        record_skew(self._db, LEASE_NAME, self.lease.owner, skew)
        with self._lock:
            self._stats.clock_skew_s = skew
        if abs(skew) > CLOCK_SKEW_WARN_S:
            log.warning(
                "collector: this process's clock is %.1f s %s the database's: readings are "
                "stamped in the database's time",
                abs(skew),
                "ahead of" if skew > 0 else "behind",
            )

    def _check(self) -> None:
        """Once a period: the registry again, and missed records for the slots between
        a cabinet's last recorded one and the next it is due (none being read)."""
        try:
            self._targets = self._classified(self.targets())
        except PyMongoError as exc:
            self.keeper.database_away(exc)
            return
        if self.keeper.missed_waiting():
            return  # the last ones are not written yet
        with self._lock:
            schedule = list(self._schedule.values())
            self._stats.periods += 1
        pending = self.keeper.pending()
        last = self.store.last_slots(self.config.period_s)
        gaps: list[dict[str, Any]] = []
        for target, upcoming in schedule:
            recorded = last.get(target.cabinet_id)
            if recorded is None:
                continue
            skipped = pending.get(target.cabinet_id, set())
            slots = [k for k in range(recorded + 1, upcoming) if k not in skipped]
            if slots:
                gaps += self.keeper.missed_docs(target, slots, NOT_READ)
        self.keeper.queue_missed(gaps)
