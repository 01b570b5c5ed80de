"""Keeping the collector's readings: stored now, or later when the database is away.

A reading (a snapshot document, `store.meters`) is stored at once when the database
answers. When it does not (any PyMongoError), the reading waits in a bounded in-memory
backlog, behind any already waiting, and `drain()` writes them in the order they were
taken once the database answers again (idempotent: a slot's `_id` is stored once). A
full backlog drops its oldest reading; a dropped scheduled reading becomes a `missed`
record of its slot saying why, so nothing is silently absent. `missed` records the
scheduler produces (slots nobody read) wait in a queue of their own (`queue_missed`,
`write_missed`).

Good readings stored wait in a `services.rollup_book.RollupBook` and `flush_rollups`
folds them into their hourly and daily rollups all at once (the collector's writer, about
every second; kept for the next flush when the database fails meanwhile); a RAM clear
seen in an interval one closes raises a `ram_clear` alert. The (location, hour) pairs
those refreshes touched, and their gaming days, are remembered and their
`rollups_location_hourly` rows and `rollups_daily_digest` documents recomputed at most
every `LOCATION_FLUSH_S` (`maybe_flush`, `flush_location_hours`).

`pending` slots are those read (or being read) but not yet stored: the scheduler does
not record them missed.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core.services.meter_rollups import (
    reading_day,
    reading_hour,
    refresh_daily_digests,
    refresh_location_hours,
)
from smib_core.services.rollup_book import RollupBook
from smib_core.slots import slot_due
from smib_core.store.meters import MISSED, MeterStore, snapshot_document

log = logging.getLogger(__name__)

LOCATION_FLUSH_S = 60.0  # how stale the location-hourly coin in may get
DRAIN_BATCH = 500  # waiting records written per insert
DAY_S = 86_400


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


def utc_ms(epoch: float) -> datetime:
    """A reading time as MongoDB keeps it (milliseconds), so it compares equal later."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Ascending slots as runs of consecutive ones: [(first, last), ...]."""
    runs: list[tuple[int, int]] = []
    for k in slots:
        if runs and runs[-1][1] == k - 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    return runs


@dataclass(slots=True)
class KeeperCounts:
    store_errors: int = 0  # readings or rollups that could not be stored (not for an outage)
    backlog: int = 0  # readings waiting for the database
    dropped: int = 0  # readings the full backlog dropped (their slots recorded missed)
    missed: int = 0  # missed slots recorded


class ReadingKeeper:
    """Stores readings now or later (see the module docstring). Thread-safe."""

    def __init__(
        self,
        db: Database[Any],
        store: MeterStore,
        *,
        period_s: float,
        backlog_max: int,
        gaming_day_start_hour: int = 0,
        tz: str = "UTC",
        alerts: bool = True,
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self.store = store
        self._period_s = period_s
        self._backlog_max = backlog_max
        self._day_start = gaming_day_start_hour
        self._tz = tz
        self._alerts = alerts
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = KeeperCounts()
        # Readings the database could not take yet, in reading order (with their target).
        self._backlog: deque[tuple[Target, dict[str, Any]]] = deque()
        self._dropped: dict[str, tuple[Target, list[int]]] = {}  # cabinet -> dropped slots
        self.book = RollupBook(store, gaming_day_start_hour=gaming_day_start_hour, tz=tz)
        self._targets_by_cabinet: dict[str, Target] = {}  # of the readings stored
        self._pending: dict[str, set[int]] = {}  # cabinet -> slots read, not yet stored
        self._gaps: deque[dict[str, Any]] = deque()  # missed records to write
        self._dirty: set[tuple[str, datetime]] = set()  # (location_id, hour) to recompute
        self._dirty_days: set[datetime] = set()  # gaming days whose digest to recompute
        self._flushed = 0.0  # when the location hours were last recomputed (clock seconds)
        self._db_down = False  # logged once per outage

    def counts(self) -> KeeperCounts:
        with self._lock:
            return replace(self._counts)

    def waiting(self) -> int:
        """Records not yet stored: readings in the backlog, missed records queued."""
        with self._lock:
            return len(self._backlog) + len(self._gaps) + len(self._dropped)

    # --- pending slots ---------------------------------------------------------------

    def add_pending(self, cabinet_id: str, slot: int) -> None:
        with self._lock:
            self._pending.setdefault(cabinet_id, set()).add(slot)

    def discard_pending(self, cabinet_id: str, slot: int) -> None:
        with self._lock:
            self._pending.get(cabinet_id, set()).discard(slot)

    def pending(self) -> dict[str, set[int]]:
        with self._lock:
            return {cabinet: set(slots) for cabinet, slots in self._pending.items()}

    # --- missed records --------------------------------------------------------------

    def queue_missed(self, docs: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._gaps.extend(docs)

    def missed_waiting(self) -> bool:
        with self._lock:
            return bool(self._gaps)

    # --- readings --------------------------------------------------------------------

    def keep(self, target: Target, doc: dict[str, Any]) -> None:
        """Store one snapshot now, or put it in the backlog (behind any waiting there, so
        readings are written in the order they were taken)."""
        with self._lock:
            if self._backlog:
                self._to_backlog(target, doc)
                return
        try:
            stored = self.store.store_snapshots([doc])
        except PyMongoError as exc:
            self.database_away(exc)
            with self._lock:
                self._to_backlog(target, doc)
            return
        except Exception:  # a store failure must not end the worker; it is counted
            with self._lock:
                self._counts.store_errors += 1
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
        while len(self._backlog) > self._backlog_max:
            old_target, old = self._backlog.popleft()
            self._counts.dropped += 1
            self._settled(old)
            if old.get("slot") is not None and old["failure_check"] != MISSED:
                slots = self._dropped.setdefault(old_target.cabinet_id, (old_target, []))[1]
                slots.append(int(old["slot"]))
            elif old["failure_check"] != MISSED:
                log.error("collector: dropped an unscheduled reading of %s", old["relay"])
        self._counts.backlog = len(self._backlog)

    def database_away(self, exc: Exception) -> None:
        if not self._db_down:
            self._db_down = True
            log.warning("collector: the database does not answer (%s); keeping readings", exc)

    def _after_stored(self, stored: list[tuple[Target, dict[str, Any]]]) -> None:
        """The good readings just stored wait for the next `flush_rollups` (their targets
        are remembered for the alerts it raises)."""
        with self._lock:
            self._targets_by_cabinet.update((t.cabinet_id, t) for t, _ in stored)
        self.book.add(doc for _, doc in stored if doc["ok"])

    def flush_rollups(self) -> bool:
        """Fold the readings stored since the last flush into their rollups, all at once
        (`services.rollup_book`); remember the location hours and gaming days touched,
        raise `ram_clear` alerts. False when the database did not take them (they wait)."""
        try:
            refreshed = self.book.flush()
        except PyMongoError as exc:
            self.database_away(exc)
            return False
        except Exception:
            with self._lock:
                self._counts.store_errors += 1
            log.exception("collector: could not refresh the rollups")
            return False
        if refreshed is None:
            return True
        with self._lock:
            self._dirty |= refreshed.places
            self._dirty_days |= refreshed.days
        closing = refreshed.closing
        if self._alerts and not closing.empty:
            cleared = closing[closing["ram_clear"].astype(bool)]
            for row in cleared.drop_duplicates("cabinet", keep="last").to_dict("records"):
                target = self._targets_by_cabinet.get(str(row["cabinet"]))
                if target is not None:
                    self._raise_ram_clear(target, pd.Timestamp(row["end"]).to_pydatetime())
        return True

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
                    self._counts.backlog = len(self._backlog)
                by_relay = {doc["relay"]: target for target, doc in batch}
                self._after_stored([(by_relay[d["relay"]], d) for d in stored])
        except PyMongoError as exc:
            self.database_away(exc)
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
                    f"of {self._backlog_max:,} readings was full"
                )
                docs = self.missed_docs(target, sorted(set(slots)), reason)
                self.store.store_snapshots(docs)
                with self._lock:
                    self._counts.missed += len(docs)
        except Exception:
            with self._lock:
                for cabinet, (target, slots) in dropped.items():
                    self._dropped.setdefault(cabinet, (target, []))[1].extend(slots)
            raise

    def missed_docs(self, target: Target, slots: list[int], reason: str) -> list[dict[str, Any]]:
        """`missed` snapshots of `slots` (ascending): the last day of them one by one,
        each older run of consecutive slots as one record (`slot_from..slot_to`)."""
        period = self._period_s
        per_day = max(1, math.ceil(DAY_S / period))
        older, recent = slots[:-per_day], slots[-per_day:]
        return [
            snapshot_document(
                target.relay,
                utc_ms(slot_due(target.relay, first, period)),
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

    # --- location-hourly coin in and daily digests -------------------------------

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
            hour, tz = self._day_start, self._tz
            refresh_daily_digests(self.store, days, gaming_day_start_hour=hour, tz=tz)
        except Exception:
            with self._lock:
                self._dirty |= dirty
                self._dirty_days |= days
                self._counts.store_errors += 1
            log.exception("collector: could not recompute the location hours / daily digests")
        return written

    def recompute_recent_hours(self, location_ids: Iterable[str]) -> None:
        """Every location's current and previous hour: what a stop may have left stale."""
        now = reading_hour(datetime.fromtimestamp(self._clock(), UTC), self._tz)
        hours = (now, now - pd.Timedelta(hours=1))
        locations = set(location_ids)
        days = {reading_day(h + pd.Timedelta(hours=1), self._day_start, self._tz) for h in hours}
        with self._lock:
            self._dirty |= {(loc, hour.to_pydatetime()) for loc in locations for hour in hours}
            self._dirty_days |= {day.to_pydatetime() for day in days}
        self.flush_location_hours()

    def maybe_flush(self) -> None:
        if self._clock() - self._flushed >= LOCATION_FLUSH_S:
            self.flush_location_hours()

    def write_missed(self) -> bool:
        """Write the missed records waiting; False when the database did not take them."""
        while True:
            with self._lock:
                batch = [self._gaps.popleft() for _ in range(min(DRAIN_BATCH, len(self._gaps)))]
            if not batch:
                return True
            try:
                self.store.store_snapshots(batch)
            except PyMongoError as exc:
                self.database_away(exc)
                with self._lock:
                    self._gaps.extendleft(reversed(batch))
                return False
            with self._lock:
                self._counts.missed += len(batch)
