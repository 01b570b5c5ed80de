"""Recording machine events from the bus, and the views of them a page shows.

`EventRecorder` is a device-bus listener. The listener runs on paho's thread, so it
only notes the (monotonic) time the event arrived and puts it in a bounded queue (it is
stamped when taken, by the recorder's `clock`: in a deployment, the database's, so that
two processes' stamps of one event agree); when
the queue is full the event is dropped and counted, never waited for. One named
worker thread drains the queue in batches: it looks up each relay's cabinet and
location (`CabinetDirectory`), stores the batch (`EventStore.record_many`), raises
and resolves the alerts the events imply, and every `evaluate_every_s` runs the
offline `AlertEvaluator`. A database that does not answer (killed, restarting) is
waited for, the batch kept and the events arriving meanwhile queued (a full queue drops
and counts); each event has an id given when it was heard, so a write repeated after a
failure part-way stores it once. Any other failure is retried a few times, then the
batch is counted as lost and logged.

Across a takeover no event is lost or stored twice: a recorder on standby keeps the
events it heard in the last `STANDBY_WINDOW_S` (bounded), and on taking the lease
stores those its predecessor had not (matched with the stored ones by relay, code and
arrival within `MATCH_S`, one for one, in order). A holder whose database was away
takes the lease again before it writes what it kept; if another process took it
meanwhile, that one stored the events from its buffer and the holder drops its copy.

Start it once per process that runs the background services (`services.worker.Worker`,
`smib collect`) through `start_event_recording`. With a lease (taken or renewed every
`LEASE_RENEW_S`), only the process holding it stores events and checks for silence;
the others stand by (their events are the same ones), so a deployment with several
such processes records each event once, and a dead recorder is replaced within 10 s.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo.database import Database
from pymongo.errors import ConnectionFailure, PyMongoError

from smib_core.protocol import DeviceMessage, EventMessage
from smib_core.routing import Listener
from smib_core.services.alerts import (
    AlertEvaluator,
    CabinetDirectory,
    apply_event_alerts,
    offline_alert_after_s,
)
from smib_core.settings import Settings
from smib_core.store.alerts import AlertStore
from smib_core.store.audit import AuditTrail
from smib_core.store.clock import DeploymentClock
from smib_core.store.events import EventRecord, EventStore
from smib_core.store.leases import (
    LEASE_CLOCK_CHECK_S,
    LEASE_RENEW_S,
    LEASE_STANDBY_S,
    LEASE_TTL_S,
    Lease,
    process_owner,
)
from smib_core.store.registry import Registry

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3
AWAY_RETRY_MAX_S = 5.0  # while the database does not answer, a write is tried this often
LEASE_NAME = "event-recorder"
# A dead holder's unwritten events, or those a holder kept while the database was away
# and leaves to whoever took the lease when it came back.
STANDBY_WINDOW_S = 300.0
STANDBY_EVENTS = 50_000  # at most this many kept on standby
MATCH_S = 1.0  # two processes stamp one event this close (the same broker, one LAN)


class ListenableBus(Protocol):
    def add_listener(self, fn: Listener) -> Callable[[], None]: ...

    def relays_seen(self) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class RecorderStats:
    received: int  # events the listener was handed
    stored: int
    dropped: int  # the queue was full: never stored
    lost: int  # the database refused the batch WRITE_ATTEMPTS times
    standby: int  # heard while another process held the lease (and recorded them)
    recording: bool  # this process records (holds the lease, or needs none)
    queued: int
    alerts_raised: int
    alerts_resolved: int
    last_stored_at: float | None  # epoch seconds, the recorder's clock
    handed_over: int = 0  # kept while the database was away, stored by the new holder


class EventRecorder:
    def __init__(
        self,
        bus: ListenableBus,
        events: EventStore,
        directory: CabinetDirectory,
        alerts: AlertStore | None = None,
        evaluator: AlertEvaluator | None = None,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        lease: Lease | None = None,
        evaluate_every_s: float = 5.0,
        retry_delay_s: float = 1.0,
        tz: str = "UTC",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.events = events
        self.directory = directory
        self.alerts = alerts
        self.evaluator = evaluator
        self.lease = lease
        self.batch_size = max(1, batch_size)
        self.evaluate_every_s = evaluate_every_s
        self.retry_delay_s = retry_delay_s
        self.tz = tz  # alerts' texts name their times in this zone
        self._clock = clock  # arrival stamps (float epoch seconds)
        self._queue: queue.Queue[tuple[EventMessage, float]] = queue.Queue(max(1, queue_size))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = {"received": 0, "stored": 0, "dropped": 0, "lost": 0, "standby": 0}
        self._counts["handed_over"] = 0
        self._recording = lease is None
        self._alert_counts = {"raised": 0, "resolved": 0}
        self._last_stored_at: float | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._standby: deque[tuple[EventMessage, float]] = deque(maxlen=STANDBY_EVENTS)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Listen to the bus and start the worker thread. Idempotent."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="smib-event-recorder", daemon=True
            )
        self._remove_listener = self.bus.add_listener(self.listen)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, store what is queued, join the worker. Idempotent."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the listener (paho's thread: quick, never blocks) ------------------------------

    def listen(self, message: DeviceMessage) -> None:
        if not isinstance(message, EventMessage):
            return
        try:
            self._queue.put_nowait((message, time.monotonic()))  # stamped when taken
            dropped = 0
        except queue.Full:
            dropped = 1
        with self._lock:
            self._counts["received"] += 1
            self._counts["dropped"] += dropped

    # --- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        next_lease = next_check = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_lease:
                self._hold_lease()
                every = LEASE_RENEW_S if self._recording else LEASE_STANDBY_S
                next_lease = time.monotonic() + every
            if time.monotonic() >= next_check:
                if self._recording and self.evaluator is not None:
                    self._evaluate()
                next_check = time.monotonic() + self.evaluate_every_s
            batch = self._take(timeout=0.25)
            if batch:
                self._handle(batch)
        while batch := self._take(timeout=0):  # what arrived before stop()
            self._handle(batch)
        if self.lease is not None:
            self.lease.release()

    def _hold_lease(self) -> None:
        """Check the clock when due, take or renew the lease: this process records while
        it holds it."""
        if self.lease is None:
            return
        if isinstance(self._clock, DeploymentClock):
            try:
                self._clock.check_if_due(LEASE_CLOCK_CHECK_S)
            except PyMongoError as exc:
                log.warning("event recording: cannot check the clock: %s", exc)
        recording = self.lease.acquire()
        if recording != self._recording:
            log.info(
                "event recording %s in this process",
                "starts" if recording else "stops: another process records",
            )
        taking_over = recording and not self._recording
        self._recording = recording
        if taking_over:
            self._catch_up()

    def _catch_up(self) -> None:
        """Store the standby buffer's events of the last STANDBY_WINDOW_S that the
        previous holder did not store."""
        since = self._clock() - STANDBY_WINDOW_S
        buffered = [(m, at) for m, at in self._standby if at >= since]
        self._standby.clear()
        if not buffered:
            return
        try:
            start = datetime.fromtimestamp(min(at for _, at in buffered) - MATCH_S, UTC)
            stored = self.events.heard_since({m.relay for m, _ in buffered}, start)
        except Exception:
            log.exception("could not read the stored events: the standby buffer is stored whole")
            stored = []
        missing = unstored(buffered, stored)
        log.info(
            "taking over event recording: %d of %d events heard on standby were not stored",
            len(missing),
            len(buffered),
        )
        if missing:
            self._store(missing)

    def _handle(self, batch: list[tuple[EventMessage, float]]) -> None:
        if self._recording:
            self._store(batch)
        else:
            self._standby.extend(batch)
            with self._lock:
                self._counts["standby"] += len(batch)

    def _take(self, timeout: float) -> list[tuple[EventMessage, float]]:
        """Up to `batch_size` queued events, (message, arrival by the recorder's clock):
        queued with the monotonic time they came, stamped now, so a clock checked (or
        stepped) meanwhile stamps them as of its latest check."""
        batch: list[tuple[EventMessage, float]] = []
        try:
            batch.append(self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait())
            while len(batch) < self.batch_size:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        now, mono = self._clock(), time.monotonic()
        return [(message, now - (mono - came)) for message, came in batch]

    def _store(self, batch: list[tuple[EventMessage, float]]) -> None:
        try:
            records = [
                EventRecord(
                    message, datetime.fromtimestamp(at, UTC), self.directory.context(message.relay)
                )
                for message, at in batch
            ]
        except Exception:
            log.exception("could not read the registry; events stored without their cabinet")
            records = [EventRecord(m, datetime.fromtimestamp(at, UTC)) for m, at in batch]
        if not self._write(records):
            return
        if self.alerts is not None:
            try:
                changes = apply_event_alerts(self.alerts, records, self.tz)
            except Exception:
                log.exception("could not raise or resolve alerts for %d events", len(records))
                return
            with self._lock:
                self._alert_counts["raised"] += changes.raised
                self._alert_counts["resolved"] += changes.resolved

    def _write(self, records: list[EventRecord]) -> bool:
        """Store `records`. A database that does not answer is waited for (the events
        stay in this batch, those arriving meanwhile in the queue), and before the
        batch is written after that the lease is taken again: when another process took
        it meanwhile, it stored them from its standby buffer, so they are left to it.
        Any other failure is retried `WRITE_ATTEMPTS` times, then counted lost."""
        attempt = away = 0
        while True:
            try:
                if away and not self._still_recording():
                    with self._lock:
                        self._counts["handed_over"] += len(records)
                    log.warning("%d events left to the recorder that took over", len(records))
                    return False
                stored = self.events.record_many(records)
            except ConnectionFailure as exc:
                away += 1
                if away == 1:
                    log.warning(
                        "the database does not answer (%s): %d events wait", exc, len(records)
                    )
                if self._stop.wait(min(self.retry_delay_s * away, AWAY_RETRY_MAX_S)):
                    break  # stopping: what is not stored now is lost
                continue
            except Exception:
                attempt += 1
                log.warning(
                    "storing %d events failed (attempt %d of %d)",
                    len(records),
                    attempt,
                    WRITE_ATTEMPTS,
                    exc_info=attempt == WRITE_ATTEMPTS,
                )
                if attempt >= WRITE_ATTEMPTS:
                    break
                if self._stop.wait(self.retry_delay_s * attempt):
                    break  # stopping: one last try is not worth holding shutdown
                continue
            with self._lock:
                self._counts["stored"] += stored
                self._last_stored_at = self._clock()
            if away:
                log.warning("the database answers again: %d events stored", stored)
            return True
        with self._lock:
            self._counts["lost"] += len(records)
        log.error("lost %d events: the database refused them", len(records))
        return False

    def _still_recording(self) -> bool:
        """After an outage: hold the lease again, or learn that another process does
        (raises ConnectionFailure while the database still does not answer)."""
        if self.lease is None:
            return True
        self._recording = self.lease.try_acquire()
        return self._recording

    def _evaluate(self) -> None:
        assert self.evaluator is not None
        try:
            changes = self.evaluator.evaluate()
        except Exception:
            log.exception("the offline alert check failed; trying again later")
            return
        with self._lock:
            self._alert_counts["raised"] += changes.raised
            self._alert_counts["resolved"] += changes.resolved

    # --- queries ------------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(
                received=self._counts["received"],
                stored=self._counts["stored"],
                dropped=self._counts["dropped"],
                lost=self._counts["lost"],
                standby=self._counts["standby"],
                recording=self._recording,
                queued=self._queue.qsize(),
                alerts_raised=self._alert_counts["raised"],
                alerts_resolved=self._alert_counts["resolved"],
                last_stored_at=self._last_stored_at,
                handed_over=self._counts["handed_over"],
            )


def unstored(
    buffered: list[tuple[EventMessage, float]], stored: list[tuple[str, str, datetime]]
) -> list[tuple[EventMessage, float]]:
    """The buffered events (message, arrival) with no stored (relay, code, at) within
    MATCH_S, each stored event matching one buffered event at most (in time order)."""
    left: dict[tuple[str, str], deque[float]] = {}
    for relay, code, stored_at in stored:
        left.setdefault((relay, code.upper()), deque()).append(stored_at.timestamp())
    missing = []
    for message, at in sorted(buffered, key=lambda b: b[1]):
        times = left.get((message.relay, message.code.strip().upper()))
        while times and times[0] < at - MATCH_S:
            times.popleft()  # stored events no buffered one matches (heard before ours)
        if times and abs(times[0] - at) <= MATCH_S:
            times.popleft()
        else:
            missing.append((message, at))
    return missing


def start_event_recording(
    bus: ListenableBus,
    db: Database[Any],
    settings: Settings,
    *,
    audit: AuditTrail | None = None,
    registry: Registry | None = None,
    clock: Callable[[], float] = time.time,
) -> EventRecorder:
    """Record events and raise alerts for this process's bus (the web app, `smib collect`).

    Every process that runs a bus may call this: they share the lease LEASE_NAME, so one
    records and the others stand by, taking over within LEASE_TTL_S if it stops. Events
    are stamped, and the lease kept, in the database's time (this process's `clock`
    corrected by its skew, checked with the lease every `LEASE_CLOCK_CHECK_S`): a standby
    whose clock is off still matches its buffer with what the holder stored.
    Returns the started recorder; call `stop()` on it at shutdown.
    """
    audit = audit if audit is not None else AuditTrail(db)
    directory = CabinetDirectory(registry if registry is not None else Registry(db, audit))
    alerts = AlertStore(db, audit)
    tz = settings.timezone
    evaluator = AlertEvaluator(bus, alerts, directory, offline_alert_after_s(settings), tz=tz)
    deployment = DeploymentClock(db, clock)  # checked by the recorder with its lease
    lease = Lease(db, LEASE_NAME, process_owner("events:"), LEASE_TTL_S, clock=deployment)
    recorder = EventRecorder(
        bus, EventStore(db), directory, alerts, evaluator, lease=lease, tz=tz, clock=deployment
    )
    recorder.start()
    return recorder
