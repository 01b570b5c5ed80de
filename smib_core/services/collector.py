"""The meter collector: every registered SAS board read on a period, once per deployment.

Every `period_s` (default 300) each registered, non-retired cabinet with a relay is
asked for its meters (the standard SAS 6F request), each board at its own moment of the
period (`offset_s`: a hash of the relay, so a thousand boards are not asked at once
and each one is read at regular intervals), by a small pool (`concurrency`), waiting
at most `timeout_s` per board. A board whose `coms` config says it is not SAS
(`comsMode` != 0) is skipped; one whose config the bus has not heard is tried.

Every attempt becomes a meter snapshot (`store.meters`): ok with its meters and sizes,
or failed with the reason (the board's "-1" is `device_error`, a frame that failed a
check names the check, no reply is `timeout`), so gaps are visible, never silent. A
good reading refreshes the rollups it touches (`services.meter_rollups`), and a RAM
clear seen in the interval it closes raises a `ram_clear` alert. The (location, hour)
pairs those refreshes touched, and their gaming days, are remembered and their
`rollups_location_hourly` rows and `rollups_daily_digest` documents recomputed at most
every `LOCATION_FLUSH_S` by the loop's thread (at the end of `run_once`, on stop, and
for every location's current and previous hour, and their days, when the loop starts).

One per deployment: the periodic loop runs only while this process holds the lease
`collector` (`store.leases`, 9 s, renewed every 3 s by a thread of its own); other
processes (more workers, a `smib collect` next to them) try every half second and take
over when the holder stops renewing. `run_once` reads now, regardless of the lease: an
operator's explicit action, stored without a slot.

Slots (`smib_core.slots`): each scheduled read is the read of one slot of its board and
is stored with `slot`, `period_s` and the `_id` of that slot, so a slot is stored once
whoever stores it. On taking the lease, and every period after, the holder reads at
once every board whose current slot has no record, and writes a `missed` failed
snapshot (with the reason) for every slot between a cabinet's last recorded slot and
the one it reads next (one day of slots one by one at most; an older gap is one record
covering `slot_from..slot_to`).

The database may go away: reads go on (the bus is fine), and what cannot be stored
waits in a bounded in-memory backlog (`backlog_max`), written in order when the
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
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd
from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core import protocol
from smib_core.errors import InvalidInput, RequestTimeout, SmibError
from smib_core.protocol import Command, DeviceMessage, MeterReply
from smib_core.sas import MeterReading
from smib_core.services.meter_rollups import (
    reading_day,
    reading_hour,
    refresh_daily_digests,
    refresh_location_hours,
    refresh_rollups,
)
from smib_core.settings import Settings
from smib_core.slots import offset_s, slot_due, slot_of
from smib_core.store.leases import Lease, process_owner
from smib_core.store.meters import MISSED, MeterStore, snapshot_document
from smib_core.store.registry import Registry

log = logging.getLogger(__name__)

LEASE_NAME = "collector"
SAS_MODE = 0
LOCATION_FLUSH_S = 60.0  # how stale the location-hourly coin in may get
STANDBY_POLL_S = 0.5  # how often a process without the lease tries to take it
BUSY_RETRY_S = 0.25  # a board still being read is tried again this much later, within its slot
DRAIN_BATCH = 500  # backlog readings written per insert
DAY_S = 86_400
NOT_READ = "not read: no collector was reading (stopped, crashed or taking over the lease)"
STILL_READING = "not read: the board's previous read was still running"
FELL_BEHIND = "not read: the collector fell more than a period behind its schedule"

__all__ = ["Collector", "CollectorConfig", "offset_s", "slot_due", "slot_of"]


class MeterBus(Protocol):
    """What the collector needs of `bus.DeviceBus`."""

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage: ...

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    period_s: float = 300.0
    concurrency: int = 8
    timeout_s: float = 5.0
    lease_ttl_s: float = 9.0  # renewed every third of it
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
class Target:
    """A board to read and the cabinet its meters belong to."""

    relay: str
    cabinet_id: str
    cabinet: str
    location_id: str
    location: str
    denomination: float

    def cabinet_fields(self) -> dict[str, Any]:
        """What a snapshot records of the cabinet (`store.meters.snapshot_document`)."""
        names = ("cabinet_id", "cabinet", "location_id", "location", "denomination")
        return {name: getattr(self, name) for name in names}


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


def _meter_reading(reply: DeviceMessage | None) -> MeterReading | None:
    return reply.reading if isinstance(reply, MeterReply) else None


def _failure_of(reply: DeviceMessage) -> tuple[str | None, str | None]:
    """(failure, failure_check) of a reply; (None, None) for a good meter reading."""
    if _meter_reading(reply) is not None:
        return None, None
    failure = getattr(reply, "failure", None) or "the board sent no meter reply"
    return str(failure), getattr(reply, "failure_check", None) or "command"


def _utc(epoch: float) -> datetime:
    """A reading time as MongoDB keeps it (milliseconds), so it compares equal later."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


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
        self.lease = Lease(db, LEASE_NAME, owner, self.config.lease_ttl_s, clock=clock)
        self._clock = clock
        self._alerts = alerts
        self._stats = CollectorStats()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._stopping = threading.Event()
        self._lost = threading.Event()  # the lease turned out to be someone else's
        self._thread: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._dirty: set[tuple[str, datetime]] = set()  # (location_id, hour) to recompute
        self._dirty_days: set[datetime] = set()  # gaming days whose digest to recompute
        self._flushed = 0.0  # when the location hours were last recomputed (clock seconds)
        self._targets: list[Target] = []  # the last targets read from the registry
        # Readings the database could not take yet, in reading order (with their target).
        self._backlog: deque[tuple[Target, dict[str, Any]]] = deque()
        self._dropped: dict[str, tuple[Target, list[int]]] = {}  # cabinet -> dropped slots
        self._unrefreshed: deque[tuple[Target, list[datetime]]] = deque()  # rollups to redo
        self._pending: dict[str, set[int]] = {}  # cabinet -> slots read, not yet stored
        self._schedule: dict[str, tuple[Target, int]] = {}  # relay -> (target, next slot)
        self._gaps: deque[dict[str, Any]] = deque()  # missed records to write
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()  # the writer has something to do
        self._recompute_due = False
        self._db_down = False  # logged once per outage

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
        """Ask one board for its meters, store the snapshot (of `slot` when scheduled),
        refresh the rollups. A database that cannot take it now gets it later."""
        reply: DeviceMessage | None = None
        try:
            reply = self._bus.request(target.relay, protocol.read_meters(), self.config.timeout_s)
            failure, check = _failure_of(reply)
        except RequestTimeout:
            failure, check = f"no reply within {self.config.timeout_s:g} s", "timeout"
        except SmibError as exc:  # not connected to the broker: nothing was asked
            failure, check = str(exc), "timeout"
        decoded = _meter_reading(reply)
        count = len(decoded.values()) if decoded is not None else 0
        at = _utc(self._clock())
        reading = Reading(
            target.relay, target.cabinet, at, failure is None, failure, check, count, slot
        )
        self._store(target, reading, decoded)
        return reading

    def _store(self, target: Target, reading: Reading, decoded: MeterReading | None) -> None:
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
        doc = snapshot_document(target.relay, reading.at, **target.cabinet_fields(), **outcome)
        self._keep(target, doc)

    def _keep(self, target: Target, doc: dict[str, Any]) -> None:
        """Store one snapshot now, or put it in the backlog (behind any waiting there, so
        readings are written in the order they were taken)."""
        with self._lock:
            if self._backlog:
                self._to_backlog(target, doc)
                return
        try:
            stored = self.store.store_snapshots([doc])
        except PyMongoError as exc:
            self._database_away(exc)
            with self._lock:
                self._to_backlog(target, doc)
            return
        except Exception:  # a store failure must not end the worker; it is counted
            with self._lock:
                self._stats.store_errors += 1
                self._settled(doc)
            log.exception("collector: could not store the reading of %s", target.relay)
            return
        with self._lock:
            self._settled(doc)
        self._after_stored([(target, d) for d in stored])

    def _settled(self, doc: Mapping[str, Any]) -> None:
        """The doc's slot is no longer pending (stored, or given up). Holds the lock."""
        if doc.get("slot") is not None:
            self._pending.get(str(doc["cabinet_id"]), set()).discard(int(doc["slot"]))

    def _to_backlog(self, target: Target, doc: dict[str, Any]) -> None:
        """Queue a snapshot for later; the oldest goes when full. Holds the lock."""
        self._backlog.append((target, doc))
        self._trim_backlog()

    def _trim_backlog(self) -> None:
        """Drop the oldest readings beyond `backlog_max`. Holds the lock."""
        while len(self._backlog) > self.config.backlog_max:
            old_target, old = self._backlog.popleft()
            self._stats.dropped += 1
            self._settled(old)
            if old.get("slot") is not None and old["failure_check"] != MISSED:
                slots = self._dropped.setdefault(old_target.cabinet_id, (old_target, []))[1]
                slots.append(int(old["slot"]))
            elif old["failure_check"] != MISSED:
                log.error("collector: dropped an unscheduled reading of %s", old["relay"])
        self._stats.backlog = len(self._backlog)

    def _database_away(self, exc: Exception) -> None:
        if not self._db_down:
            self._db_down = True
            log.warning("collector: the database does not answer (%s); keeping readings", exc)

    def _after_stored(self, stored: list[tuple[Target, dict[str, Any]]]) -> None:
        """Refresh the rollups the good readings just stored touch: once per cabinet
        and hour (a refresh recomputes the whole hour); a failed refresh is redone."""
        if not stored:
            return
        groups: dict[tuple[str, datetime], tuple[Target, list[datetime]]] = {}
        for target, doc in stored:
            if doc["ok"]:
                hour = reading_hour(doc["at"], self.config.tz).to_pydatetime()
                groups.setdefault((target.cabinet_id, hour), (target, []))[1].append(doc["at"])
        for target, ats in groups.values():
            try:
                self._refresh(target, ats)
            except PyMongoError as exc:
                self._database_away(exc)
                with self._lock:
                    self._unrefreshed.append((target, ats))
            except Exception:
                with self._lock:
                    self._stats.store_errors += 1
                log.exception("collector: could not refresh the rollups of %s", target.relay)

    def _refresh(self, target: Target, ats: list[datetime]) -> None:
        at = max(ats)
        hour = self.config.gaming_day_start_hour
        movement = refresh_rollups(
            self.store, target.cabinet_id, at, gaming_day_start_hour=hour, tz=self.config.tz
        )
        if movement.empty:
            return
        day = reading_day(at, hour, self.config.tz).to_pydatetime()
        with self._lock:
            self._dirty.add((target.location_id, reading_hour(at, self.config.tz).to_pydatetime()))
            self._dirty_days.add(day)
        if not self._alerts:
            return
        closing = movement[movement["end"].isin([pd.Timestamp(a) for a in ats])]
        if bool(closing["ram_clear"].any()):
            self._raise_ram_clear(target, at)

    def drain(self) -> bool:
        """Write what waits for the database: the backlog (in order), the `missed`
        records of readings it dropped, the rollup refreshes that failed. True when
        nothing is left; False when the database still does not answer."""
        try:
            self._write_dropped()
            while True:
                with self._lock:  # left in place while written: new readings queue behind
                    batch = list(itertools.islice(self._backlog, DRAIN_BATCH))
                if not batch:
                    break
                stored = self.store.store_snapshots([doc for _, doc in batch])
                with self._lock:
                    written = {id(doc) for _, doc in batch}
                    while self._backlog and id(self._backlog[0][1]) in written:
                        self._backlog.popleft()
                    for _, doc in batch:
                        self._settled(doc)
                    self._stats.backlog = len(self._backlog)
                by_relay = {doc["relay"]: target for target, doc in batch}
                self._after_stored([(by_relay[d["relay"]], d) for d in stored])
            while True:
                with self._lock:
                    if not self._unrefreshed:
                        break
                    target, ats = self._unrefreshed[0]
                self._refresh(target, ats)
                with self._lock:
                    self._unrefreshed.popleft()
        except PyMongoError as exc:
            self._database_away(exc)
            return False
        if self._db_down:
            self._db_down = False
            log.warning("collector: the database answers again; the backlog is written")
        return True

    def _write_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        try:
            for target, slots in dropped.values():
                reason = (
                    "read but not stored: the database did not answer and the backlog "
                    f"of {self.config.backlog_max:,} readings was full"
                )
                docs = self._missed_docs(target, sorted(set(slots)), reason)
                self.store.store_snapshots(docs)
                with self._lock:
                    self._stats.missed += len(docs)
        except Exception:
            with self._lock:
                for cabinet, (target, slots) in dropped.items():
                    self._dropped.setdefault(cabinet, (target, []))[1].extend(slots)
            raise

    def _missed_docs(self, target: Target, slots: list[int], reason: str) -> list[dict[str, Any]]:
        """`missed` snapshots of `slots` (ascending): the last day of them one by one,
        each older run of consecutive slots as one record (`slot_from..slot_to`)."""
        period = self.config.period_s
        per_day = max(1, math.ceil(DAY_S / period))
        older, recent = slots[:-per_day], slots[-per_day:]
        return [
            snapshot_document(
                target.relay,
                _utc(slot_due(target.relay, first, period)),
                **target.cabinet_fields(),
                ok=False,
                failure=reason,
                failure_check=MISSED,
                slot=first,
                period_s=period,
                slot_to=last if last != first else None,
            )
            for first, last in _runs(older) + [(k, k) for k in recent]
        ]

    def _raise_ram_clear(self, target: Target, at: datetime) -> None:
        try:
            from smib_core.services.alerts import raise_alert
        except ImportError:  # the alerts service is optional
            return
        detail = f"the meters of {target.cabinet} fell (not a rollover): counted as 0"
        raise_alert(self._db, "ram_clear", target.relay, detail, at)

    def run_once(self, relays: Iterable[str] | None = None) -> list[Reading]:
        """Read the registered SAS boards (or those of `relays`) now, all at once with
        the pool's concurrency, whatever the lease; in target order."""
        found = self.targets(relays)
        if not found:
            return []
        workers = min(self.config.concurrency, len(found))
        with ThreadPoolExecutor(workers, thread_name_prefix="smib-collect-once") as pool:
            readings = list(pool.map(self.read, found))
        if not self.drain():
            log.error("collector: the database did not take %d readings", self.stats().backlog)
        self.flush_location_hours()
        return readings

    # --- location-hourly coin in -----------------------------------------------------

    def flush_location_hours(self) -> int:
        """Recompute the location-hour rows and the daily digests the readings since the
        last flush touched; returns how many location-hour rows were written (on a store
        failure the pairs and days wait for the next flush)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            days, self._dirty_days = self._dirty_days, set()
            self._flushed = self._clock()
        written = 0
        try:
            written = refresh_location_hours(self.store, dirty) if dirty else 0
            dirty = set()  # stored: only the days remain to retry
            hour, tz = self.config.gaming_day_start_hour, self.config.tz
            refresh_daily_digests(self.store, days, gaming_day_start_hour=hour, tz=tz)
        except Exception:
            with self._lock:
                self._dirty |= dirty
                self._dirty_days |= days
                self._stats.store_errors += 1
            log.exception("collector: could not recompute the location hours / daily digests")
        return written

    def _recompute_recent_hours(self) -> None:
        """Every location's current and previous hour: what a stop may have left stale."""
        now = reading_hour(datetime.fromtimestamp(self._clock(), UTC), self.config.tz)
        hours = (now, now - pd.Timedelta(hours=1))
        locations = {t.location_id for t in self.targets()}
        start = self.config.gaming_day_start_hour
        days = {reading_day(h + pd.Timedelta(hours=1), start, self.config.tz) for h in hours}
        with self._lock:
            self._dirty |= {(loc, hour.to_pydatetime()) for loc in locations for hour in hours}
            self._dirty_days |= {day.to_pydatetime() for day in days}
        self.flush_location_hours()

    def _maybe_flush(self) -> None:
        if self._clock() - self._flushed >= LOCATION_FLUSH_S:
            self.flush_location_hours()

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
        self._keeper = threading.Thread(
            target=self._keep_lease, name="smib-collector-lease", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name="smib-collector-writer", daemon=True
        )
        self._thread = threading.Thread(target=self._loop, name="smib-collector", daemon=True)
        for thread in (self._keeper, self._writer, self._thread):
            thread.start()
        log.info("collector started as %s (every %g s)", self.lease.owner, self.config.period_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the reads in flight, write what waits (if the database answers), join
        the threads, give the lease up. Idempotent."""
        self._stopping.set()
        self._wake.set()
        for thread in (self._thread, self._keeper, self._writer):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._keeper = self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if not (self.drain() and self._write_gaps()):
            with self._lock:
                left = len(self._backlog) + len(self._gaps)
            log.error("collector: stopping with %d records the database did not take", left)
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
            return replace(self._stats, last_reading=dict(self._stats.last_reading))

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
                self._database_away(exc)
                continue
            if not ours:
                log.warning("collector: lost the lease; waiting to get it back")
                self._lost.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                holding = self._holding() and not self._lost.is_set()
                if not holding:
                    self._set_holding(False)
                    self._lost.clear()
                    with self._lock:
                        self._schedule.clear()  # whoever held it meanwhile read those slots
                    holding = self.lease.try_acquire()
                    self._set_holding(holding)
                if holding:
                    self._hold()
                    continue
            except PyMongoError as exc:
                self._database_away(exc)
            except Exception:  # the loop must outlive a database hiccup
                log.exception("collector: the loop failed; retrying")
            self._stopping.wait(STANDBY_POLL_S)

    def _hold(self) -> None:
        """Read slot after slot while the lease stays ours: at once every board whose
        current slot has no record, then each at its own moment of every period."""
        with self._lock:
            fresh = not self._schedule
        if fresh:  # just taken: what is recorded, what nobody read (the database answers)
            self._targets = self.targets()
            last = self.store.last_slots(self.config.period_s)
            self._plan(self._targets, last)
            self._recompute_due = True
            self._wake.set()
        due = self._due_heap()
        planned = self._targets
        while not self._stopping.is_set() and not self._lost.is_set():
            if self._targets is not planned:  # the writer read the registry again
                planned = self._targets
                self._plan(planned, None)
                due = self._due_heap()
            if not self._wait_until(min(due[0][0], self._clock() + 1.0) if due else 1.0):
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
                    gaps += self._missed_docs(target, list(range(recorded + 1, first)), NOT_READ)
            self._gaps.extend(gaps)

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
        docs = self._missed_docs(target, slots, reason)
        with self._lock:
            self._gaps.extend(docs)
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
            self._pending.setdefault(target.cabinet_id, set()).add(slot)
        try:
            self._pool.submit(self._read_in_pool, target, slot)
        except RuntimeError:  # the pool shut down under us: stopping
            with self._lock:
                self._in_flight.discard(target.relay)
                self._pending[target.cabinet_id].discard(slot)
        return True

    def _read_in_pool(self, target: Target, slot: int) -> None:
        try:
            self.read(target, slot)
        except Exception:
            log.exception("collector: reading %s failed", target.relay)
            with self._lock:
                self._pending.get(target.cabinet_id, set()).discard(slot)
        finally:
            with self._lock:
                self._in_flight.discard(target.relay)

    # --- the writer ------------------------------------------------------------------

    def _write_loop(self) -> None:
        """Everything that waits on the database, off the scheduler's thread."""
        next_check = 0.0
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                if self._recompute_due:
                    self._recompute_due = False
                    self._recompute_recent_hours()
                self.drain()
                self._write_gaps()
                self._maybe_flush()
                if self._holding() and self._clock() >= next_check:
                    next_check = self._clock() + self.config.period_s
                    self._check()
            except PyMongoError as exc:
                self._database_away(exc)
            except Exception:
                log.exception("collector: writing failed; retrying")

    def _check(self) -> None:
        """Once a period: the registry again, and missed records for the slots between
        a cabinet's last recorded one and the next it is due (none being read)."""
        try:
            self._targets = self.targets()
        except PyMongoError as exc:
            self._database_away(exc)
            return
        with self._lock:
            if self._gaps:
                return  # the last ones are not written yet
            schedule = list(self._schedule.values())
            pending = {cabinet: set(slots) for cabinet, slots in self._pending.items()}
            self._stats.periods += 1
        last = self.store.last_slots(self.config.period_s)
        gaps: list[dict[str, Any]] = []
        for target, upcoming in schedule:
            recorded = last.get(target.cabinet_id)
            if recorded is None:
                continue
            skipped = pending.get(target.cabinet_id, set())
            slots = [k for k in range(recorded + 1, upcoming) if k not in skipped]
            if slots:
                gaps += self._missed_docs(target, slots, NOT_READ)
        with self._lock:
            self._gaps.extend(gaps)

    def _write_gaps(self) -> bool:
        """Write the missed records waiting; False when the database did not take them."""
        while True:
            with self._lock:
                batch = [self._gaps.popleft() for _ in range(min(DRAIN_BATCH, len(self._gaps)))]
            if not batch:
                return True
            try:
                self.store.store_snapshots(batch)
            except PyMongoError as exc:
                self._database_away(exc)
                with self._lock:
                    self._gaps.extendleft(reversed(batch))
                return False
            with self._lock:
                self._stats.missed += len(batch)


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Ascending slots as runs of consecutive ones: [(first, last), ...]."""
    runs: list[tuple[int, int]] = []
    for k in slots:
        if runs and runs[-1][1] == k - 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    return runs
