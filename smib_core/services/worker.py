"""The worker: every background service of a deployment, in one process, with no page.

Contract: `Worker(settings, services=...)` builds, and `start()` starts in this order,
the supervisor of the embedded broker and database (`embedded.EmbeddedSupervisor`), the
firmware HTTP server (`FirmwareService`), presence heartbeats, the event recorder
with the alert evaluation, the meter collector, the rollout runner, the batch runner
and the audit sweeper, then the extra `services` given (objects with `start()` and
`stop(timeout)`, or factories that build one from the worker's `WorkerContext`: its
settings, database, bus, audit trail and registry). `stop()` stops them in reverse
order, then the bus and the database client.

Several workers (and `smib collect`, `smib ota`) may run against one broker and one
database: each service that must be single holds a lease (`store.leases`, a TTL of
`LEASE_TTL_S` renewed every `LEASE_RENEW_S`), so one process acts and the others stand
by, taking over within 10 s of the holder's death. The firmware server binds a port,
which only one process of a host can: the process that holds the lease `firmware-server`
serves; the others (and a holder that cannot bind) retry every `LEASE_STANDBY_S`, so a
worker that dies is replaced by another within 10 s. The lease also tells every
process (the Bus status page) who serves.

`smib worker` runs one alone (`run_until_stopped`); `smib serve` starts one beside the
web app. The web app runs none of this: its pages read what the services wrote.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pymongo.database import Database

from smib_core.bus import DeviceBus, bus_for
from smib_core.embedded import EmbeddedSupervisor
from smib_core.errors import SmibError
from smib_core.firmware import materialise
from smib_core.firmware.server import FirmwareServer
from smib_core.inbox import WarnThrottle
from smib_core.services.batch import AuditSweeper, BatchWorker
from smib_core.services.collector import Collector, CollectorConfig
from smib_core.services.events import EventRecorder, start_event_recording
from smib_core.services.presence import PresencePoller, presence_lease
from smib_core.services.rollout import RolloutRunner, RunnerTimings, firmware_server
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.db import connect
from smib_core.store.leases import (
    LEASE_RENEW_S,
    LEASE_STANDBY_S,
    LEASE_TTL_S,
    Lease,
    LeaseKeeper,
    process_owner,
)
from smib_core.store.registry import Registry

log = logging.getLogger(__name__)

FIRMWARE_LEASE = "firmware-server"


@runtime_checkable
class BackgroundService(Protocol):
    """What the worker starts and stops: anything with these two methods."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a service built by a factory may use: the worker's own handles."""

    settings: Settings
    db: Database[Any]
    bus: DeviceBus
    audit: AuditTrail
    registry: Registry


ServiceFactory = Callable[[WorkerContext], BackgroundService]


class FirmwareService:
    """The firmware HTTP server of a deployment: served by the process that holds the
    lease `firmware-server` and could bind FIRMWARE_PORT; the others retry."""

    def __init__(self, server: FirmwareServer, lease: Lease) -> None:
        self.server = server
        self.lease = lease
        self.problem: str | None = None  # why this process does not serve, when it tried
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = WarnThrottle()

    @property
    def running(self) -> bool:
        return self.server.running

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="smib-firmware", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.server.stop(timeout)
        self.lease.release()

    def tick(self) -> None:
        """Serve when the lease is ours and the port free; keep the lease while serving."""
        if self.server.running:
            if not self.lease.acquire() and self._warn.ready():
                log.warning("firmware server: another process holds its lease; still serving")
            return
        if not self.lease.acquire():
            return  # another process serves
        try:
            self.server.start()
        except SmibError as exc:
            self.lease.release()  # so that a process that can bind the port takes it
            self.problem = str(exc)
            if self._warn.ready():
                log.warning("%s; retrying every %g s", exc, LEASE_STANDBY_S)
            return
        self.problem = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must outlive a failed pass (the database away)
                if self._warn.ready():
                    log.exception("firmware server: a pass failed")
            self._stop.wait(LEASE_RENEW_S if self.server.running else LEASE_STANDBY_S)


class _EventRecording:
    """The event recorder and the alert evaluation, started by the worker."""

    def __init__(self, context: WorkerContext) -> None:
        self._context = context
        self.recorder: EventRecorder | None = None

    def start(self) -> None:
        c = self._context
        if self.recorder is None:
            self.recorder = start_event_recording(
                c.bus, c.db, c.settings, audit=c.audit, registry=c.registry
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self.recorder is not None:
            self.recorder.stop(timeout)
            self.recorder = None


class Worker:
    """Every background service of a deployment (see the module's contract)."""

    def __init__(
        self,
        settings: Settings,
        *,
        services: Iterable[BackgroundService | ServiceFactory] = (),
        firmware_folder: Path = materialise.DEFAULT_FOLDER,
    ) -> None:
        self.settings = settings
        db = connect(settings)
        try:
            self._build(settings, db, services, firmware_folder)
        except BaseException:
            db.client.close()
            raise
        self._started: list[tuple[str, BackgroundService]] = []

    def _build(
        self,
        settings: Settings,
        db: Database[Any],
        services: Iterable[BackgroundService | ServiceFactory],
        firmware_folder: Path,
    ) -> None:
        """Every service, built (the stores prepare their indexes: the database must answer)."""
        bus = bus_for(settings, "smib-worker")
        audit = AuditTrail(db)
        self.context = WorkerContext(settings, db, bus, audit, Registry(db, audit))
        self.firmware = FirmwareService(
            firmware_server(settings, db, firmware_folder),  # library files, OTA tokens
            Lease(db, FIRMWARE_LEASE, process_owner("firmware:"), LEASE_TTL_S),
        )
        registry = self.context.registry
        self.presence = PresencePoller(
            bus,
            lambda: (c.relay for c in registry.cabinets() if c.relay),
            settings.heartbeat_s,
            presence_lease(db),
        )
        self.events = _EventRecording(self.context)
        self.collector = Collector(
            bus,
            db,
            CollectorConfig.from_settings(settings, lease_ttl_s=LEASE_TTL_S),
            registry=registry,
        )
        self.rollouts = RolloutRunner(
            db,
            bus,
            audit,
            ota_url=self.firmware.server.base_url,
            folder=self.firmware.server.folder,
            timings=RunnerTimings(lease_ttl_s=LEASE_TTL_S),
        )
        self.services: list[tuple[str, BackgroundService]] = [
            # restarts a dead embedded broker/database on its port (none with both URIs set)
            ("embedded servers", EmbeddedSupervisor(settings)),
            ("firmware server", self.firmware),
            ("presence", self.presence),
            ("event recorder", self.events),
            ("collector", self.collector),
            ("rollout runner", self.rollouts),
            # a pass of the runner may outlast its lease's TTL: renew it meanwhile
            ("rollout runner lease", LeaseKeeper(self.rollouts.lease)),
            ("batch runner", BatchWorker(db, bus, audit, settings)),
            ("audit sweeper", AuditSweeper(db, audit)),
        ]
        for extra in services:
            service = extra if isinstance(extra, BackgroundService) else extra(self.context)
            self.services.append((type(service).__name__, service))

    @property
    def db(self) -> Database[Any]:
        return self.context.db

    @property
    def bus(self) -> DeviceBus:
        return self.context.bus

    def start(self) -> None:
        """Connect the bus and start every service; on a failure, stop those started."""
        if self._started:
            return
        self.bus.start()
        try:
            for name, service in self.services:
                service.start()
                self._started.append((name, service))
                log.info("worker: %s started", name)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the services in reverse order, then the bus and the database client."""
        while self._started:
            name, service = self._started.pop()
            try:
                service.stop(timeout)
            except Exception:
                log.exception("worker: stopping the %s failed", name)
        self.bus.stop()
        self.db.client.close()

    def run_until_stopped(self, stopping: threading.Event) -> None:
        """Start, wait for `stopping`, stop (the `smib worker` process)."""
        self.start()
        try:
            while not stopping.wait(0.5):  # a timed wait: a signal handler may set it
                pass
        finally:
            self.stop()
