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
`collector` (`store.leases`); other processes (more replicas, a `smib collect` next to
the web app) wait and take over when the holder stops renewing. `run_once` reads now,
regardless of the lease: an operator's explicit action.

Reads go to the bus directly, not through `BoardActions`: a meter read changes nothing
on the board, and auditing every board every five minutes would bury the audit trail
under hundreds of thousands of entries a day. The snapshots are the record of them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd
from pymongo.database import Database

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
from smib_core.store.leases import Lease, process_owner
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry

log = logging.getLogger(__name__)

LEASE_NAME = "collector"
SAS_MODE = 0
LOCATION_FLUSH_S = 60.0  # how stale the location-hourly coin in may get


class MeterBus(Protocol):
    """What the collector needs of `bus.DeviceBus`."""

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage: ...

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    period_s: float = 300.0
    concurrency: int = 8
    timeout_s: float = 5.0
    lease_ttl_s: float = 30.0
    gaming_day_start_hour: int = 0
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not 1 <= self.period_s <= 86_400:
            raise InvalidInput("the collect period must be 1 s to 1 day")
        if not 1 <= self.concurrency <= 64:
            raise InvalidInput("the collector reads 1 to 64 boards at a time")
        if not 0.1 <= self.timeout_s <= 60:
            raise InvalidInput("the per-board timeout must be 0.1 to 60 s")
        if self.lease_ttl_s < 3:
            raise InvalidInput("the collector lease lives at least 3 s")

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


@dataclass(slots=True)
class CollectorStats:
    reads: int = 0
    ok: int = 0
    failed: int = 0
    store_errors: int = 0
    periods: int = 0
    holding_lease: bool = False
    last_reading: dict[str, datetime] = field(default_factory=dict)


def offset_s(relay: str, period_s: float) -> float:
    """Where in the period a board is read: stable for a relay, spread evenly in
    `[0, period_s)` over many relays."""
    digest = hashlib.sha256(relay.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * period_s


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
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._renewed = 0.0  # when the lease was last renewed (clock seconds)
        self._dirty: set[tuple[str, datetime]] = set()  # (location_id, hour) to recompute
        self._dirty_days: set[datetime] = set()  # gaming days whose digest to recompute
        self._flushed = 0.0  # when the location hours were last recomputed (clock seconds)

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

    def read(self, target: Target) -> Reading:
        """Ask one board for its meters, store the snapshot, refresh the rollups."""
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
        reading = Reading(target.relay, target.cabinet, at, failure is None, failure, check, count)
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
        try:
            outcome = {"ok": reading.ok, "failure": reading.failure, "meters": meters}
            outcome |= {"failure_check": reading.failure_check, "sizes": sizes}
            self.store.insert_snapshot(
                target.relay, reading.at, **target.cabinet_fields(), **outcome
            )
            if reading.ok:
                self._refresh(target, reading.at)
        except Exception:  # a store failure must not end the worker; it is counted
            with self._lock:
                self._stats.store_errors += 1
            log.exception("collector: could not store the reading of %s", target.relay)

    def _refresh(self, target: Target, at: datetime) -> None:
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
        closing = movement[movement["end"] == pd.Timestamp(at)]
        if bool(closing["ram_clear"].any()):
            self._raise_ram_clear(target, at)

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

    def start(self) -> None:
        """Run the loop on a named thread (and a pool of `concurrency` readers)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(
            self.config.concurrency, thread_name_prefix="smib-collector"
        )
        self._thread = threading.Thread(target=self._loop, name="smib-collector", daemon=True)
        self._thread.start()
        log.info("collector started as %s (every %g s)", self.lease.owner, self.config.period_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the reads in flight, join the threads, give the lease up. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.flush_location_hours()
        self.lease.release()
        with self._lock:
            self._stats.holding_lease = False
            self._in_flight.clear()  # reads cancelled before they ran

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

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                holding = self.lease.acquire()
                self._set_holding(holding)
                if holding:
                    self._hold()
                    continue
            except Exception:  # the loop must outlive a database hiccup
                log.exception("collector: the loop failed; retrying")
            self._stopping.wait(self._heartbeat_s())

    def _hold(self) -> None:
        """Read period after period while the lease stays ours."""
        period = self.config.period_s
        self._recompute_recent_hours()
        cursor = self._renewed = self._clock()
        while not self._stopping.is_set():
            if self._clock() - cursor > period:
                cursor = self._clock()  # fell behind (a slow database): skip, do not burst
            period_start = math.floor(cursor / period) * period
            slots = ((period_start + offset_s(t.relay, period), t) for t in self.targets())
            for due, target in sorted((s for s in slots if s[0] >= cursor), key=lambda s: s[0]):
                if not self._wait_until(due):
                    return
                self._submit(target)
            cursor = period_start + period
            if not self._wait_until(cursor):
                return
            with self._lock:
                self._stats.periods += 1

    def _wait_until(self, due: float) -> bool:
        """Sleep until `due`, renewing the lease; False when stopping or the lease is lost."""
        while (wait := due - self._clock()) > 0:
            self._maybe_flush()
            if self._stopping.wait(min(wait, self._heartbeat_s())):
                return False
            if self._clock() - self._renewed >= self._heartbeat_s():
                if not self.lease.renew():
                    log.warning("collector: lost the lease; waiting to get it back")
                    self._set_holding(False)
                    return False
                self._renewed = self._clock()
        return not self._stopping.is_set()

    def _submit(self, target: Target) -> None:
        with self._lock:
            if target.relay in self._in_flight or self._pool is None:
                return  # still being read (a slow board): its next slot will do
            self._in_flight.add(target.relay)
        try:
            self._pool.submit(self._read_in_pool, target)
        except RuntimeError:  # the pool shut down under us: stopping
            with self._lock:
                self._in_flight.discard(target.relay)

    def _read_in_pool(self, target: Target) -> None:
        try:
            self.read(target)
        except Exception:
            log.exception("collector: reading %s failed", target.relay)
        finally:
            with self._lock:
                self._in_flight.discard(target.relay)
