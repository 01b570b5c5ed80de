"""Batch work: one config change, template or restart carried to many boards, persisted.

Contract: `submit_batch(job, principal, store, audit)` validates the job (`BatchJob`),
checks the principal's role for its kind (refused: audited `refused`, nothing stored),
records the batch's `batch_config` / `batch_restart` audit record (`sent`, secrets
masked) and stores the batch as queued (`store.batches`). It sends nothing.

`BatchWorker(db, bus, audit, settings)` is a background service (`start` / `stop`) that
carries out queued and running batches while it holds the lease "batches" (TTL 9 s,
renewed every pass, at most every 0.5 s), with at most 8 boards in flight. Each board's
steps are in `services.batch_board`. A worker that starts (after a kill -9 of the last
one, say) takes over from the database: boards not started are started, boards in
flight are checked again, never sent a second `rst`. `cancel_batch` is kept in the
batch document: whichever worker runs the batch honours it (boards not started end
`cancelled`; those in flight finish). When every board has its outcome the batch's audit
record settles: confirmed (all), cancelled (someone cancelled) or not_confirmed.

`AuditSweeper` (in `services.audit_sweeper`) settles what a dead process left `sent`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core import protocol
from smib_core.auth import Permission, Principal, require
from smib_core.errors import InvalidInput, PermissionDenied, StoreError
from smib_core.inbox import WarnThrottle
from smib_core.services.audit_sweeper import AuditSweeper
from smib_core.services.batch_board import BatchBus, BatchTimings, BoardWork
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import (
    IN_FLIGHT,
    LEASE_NAME,
    OUTCOMES,
    Batch,
    BatchBoard,
    BatchStore,
    cancelled_detail,
    new_batch_id,
)
from smib_core.store.leases import LEASE_TTL_S, Lease, process_owner

__all__ = [
    "AuditSweeper",
    "BatchJob",
    "BatchTimings",
    "BatchWorker",
    "cancel_batch",
    "submit_batch",
]

log = logging.getLogger(__name__)

JobKind = Literal["config", "restart"]
MAX_BOARDS = 2_000


@dataclass(frozen=True, slots=True)
class BatchJob:
    """What to do to which boards; checked when made (ids, component, field values)."""

    kind: JobKind
    relays: tuple[str, ...]
    comp: str = ""
    fields: Mapping[str, int | str] = field(default_factory=dict, repr=False)
    label: str = ""  # where the change came from, e.g. "template wifi-6"

    def __post_init__(self) -> None:
        if self.kind not in ("config", "restart"):
            raise InvalidInput(f"unknown batch kind {self.kind!r}: config or restart")
        relays = [self.relays] if isinstance(self.relays, str) else list(self.relays)
        checked = tuple(dict.fromkeys(protocol.normalize_relay_id(r) for r in relays))
        if not checked:
            raise InvalidInput("choose at least one board")
        if len(checked) > MAX_BOARDS:
            raise InvalidInput(f"a batch holds at most {MAX_BOARDS} boards")
        object.__setattr__(self, "relays", checked)
        if self.kind == "config":
            object.__setattr__(self, "fields", protocol.validate_config(self.comp, self.fields))

    @property
    def permission(self) -> Permission:
        return Permission.CONFIGURE_BOARD if self.kind == "config" else Permission.RESTART_BOARD

    def masked_fields(self) -> dict[str, Any]:
        return protocol.mask_secrets(self.fields)

    def describe(self) -> str:
        """The exact change in words, secrets masked: `set net: netStaChan=6`."""
        if self.kind == "restart":
            return "restart"
        shown = ", ".join(f"{k}={v}" for k, v in self.masked_fields().items())
        return f"set {self.comp}: {shown}"


def submit_batch(
    job: BatchJob, principal: Principal | None, store: BatchStore, audit: AuditTrail
) -> Batch:
    """Check the role, audit and store the batch as queued; a worker carries it out.

    Raises PermissionDenied (audited as refused; nothing stored) when the principal may
    not do this kind of work to boards."""
    kind = f"batch_{job.kind}"
    detail = {"change": job.describe(), "fields": job.masked_fields(), "label": job.label}
    try:
        who = require(principal, job.permission)
    except PermissionDenied as exc:
        name = principal.name if principal is not None else "(not signed in)"
        audit.record(name, kind, job.relays, {**detail, "reason": str(exc)}, "refused")
        raise
    batch_id = new_batch_id()
    audit_id = audit.record(who.name, kind, job.relays, {**detail, "batch": batch_id}, "sent")
    try:
        batch = store.create(
            job.kind,
            job.relays,
            principal=who,
            comp=job.comp,
            fields=job.fields,
            label=job.label,
            change=job.describe(),
            audit_id=audit_id,
            batch_id=batch_id,
        )
    except PyMongoError as exc:  # not stored: nothing will be sent, and the record says so
        with contextlib.suppress(PyMongoError):  # else the sweeper settles it later
            audit.settle(audit_id, "failed", {"detail": f"the batch could not be stored: {exc}"})
        raise StoreError(f"the batch could not be stored: {exc}") from exc
    log.info("batch %s by %s: %s on %d boards", batch.id, who.name, batch.change, len(job.relays))
    return batch


def cancel_batch(
    store: BatchStore, batch_id: str, principal: Principal | None, audit: AuditTrail
) -> int:
    """Send nothing more: boards not started end `cancelled`, boards in flight finish.
    Only someone allowed to run this kind of batch may cancel it (PermissionDenied).
    Returns how many boards were still waiting their turn."""
    batch = store.get(batch_id)
    if batch is None:
        raise InvalidInput(f"there is no batch {batch_id!r}")
    who = require(principal, batch.permission)
    if batch.finished:
        return 0
    waiting = store.request_cancel(batch.id, who.name)
    audit.record(who.name, "batch_cancel", [], {"batch": batch.id, "not_started": waiting}, "ok")
    log.info("batch %s cancelled by %s (%d boards not started)", batch.id, who.name, waiting)
    return waiting


def batch_outcome(batch: Batch, boards: list[BatchBoard]) -> tuple[str, dict[str, Any], str]:
    """The batch's audit outcome, what to keep with it, and a one-line summary."""
    counts = Counter(b.state for b in boards)
    outcomes = {state: counts.get(state, 0) for state in OUTCOMES}
    outcome = "confirmed" if outcomes["confirmed"] == len(boards) else "not_confirmed"
    extra: dict[str, Any] = {"counts": outcomes, "outcomes": {b.relay: b.state for b in boards}}
    if batch.cancel_requested_by is not None:
        outcome, extra["cancelled_by"] = "cancelled", batch.cancel_requested_by
    summary = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in outcomes.items() if n)
    return outcome, extra, summary


class BatchWorker:
    """Runs persisted batches while it holds the lease "batches" (one per deployment)."""

    def __init__(
        self,
        db: Database[Any],
        bus: BatchBus,
        audit: AuditTrail,
        settings: Settings,
        *,
        timings: BatchTimings | None = None,
        owner: str | None = None,
    ) -> None:
        self.timings = timings or BatchTimings(
            offline_after_s=settings.offline_after_s,
            restart_timeout_s=settings.batch_restart_timeout_s,
        )
        self.store = BatchStore(db)
        self.audit = audit
        self.bus = bus
        ttl = min(LEASE_TTL_S, self.timings.lease_ttl_s)
        self.lease = Lease(db, LEASE_NAME, owner or process_owner("batches:"), ttl)
        self._stopping = threading.Event()
        self._held = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._active: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._warn = WarnThrottle()
        self._work = BoardWork(self.store, bus, audit, self.timings, self._stopping, self._may_send)

    # --- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(
            max(1, self.timings.max_in_flight), thread_name_prefix="smib-batch-board"
        )
        self._thread = threading.Thread(target=self._loop, name="smib-batch-worker", daemon=True)
        self._thread.start()
        log.info("batch worker started as %s", self.lease.owner)

    def stop(self, timeout: float = 10.0) -> None:
        """Leave boards in flight as they are (the next worker checks them again), give
        the lease up and join the threads. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._held.clear()
        self.lease.release()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except PyMongoError as exc:  # the database is away: try again, say so now and then
                self._held.clear()
                if self._warn.ready():
                    log.warning("batch worker: the database failed: %s", exc)
            except Exception:  # the worker must outlive a failed pass
                if self._warn.ready():
                    log.exception("batch worker: a pass failed")
            self._stopping.wait(min(self.timings.poll_s, 3.0))

    def _may_send(self) -> bool:
        return self._held.is_set() and not self._stopping.is_set()

    # --- passes -------------------------------------------------------------------------

    def tick(self) -> bool:
        """One pass over the active batches; False when another process holds the lease."""
        if not self.lease.acquire():
            self._held.clear()
            return False
        self._held.set()
        for batch in self.store.active():
            if self._stopping.is_set():
                break
            self._drive(batch)
        return True

    def _drive(self, batch: Batch) -> None:
        if batch.state == "queued":
            self.store.mark_running(batch.id)
        if batch.cancel_requested_by is not None:
            self.store.cancel_queued(batch.id, cancelled_detail(batch.cancel_requested_by))
        boards = self.store.boards(batch.id)
        for board in boards:
            if board.state in IN_FLIGHT:
                self._submit(batch, board, resume=True)
        connected = self.bus.connected
        for board in boards:
            if board.state == "queued" and connected and self._room():
                self._submit(batch, board, resume=False)
        if all(b.final for b in boards) and not self._busy_with(batch.id):
            outcome, extra, summary = batch_outcome(batch, boards)
            if batch.audit_id:
                self.audit.settle(batch.audit_id, outcome, extra)
            if self.store.finish(batch.id, summary):
                log.info("batch %s finished: %s", batch.id, summary)

    def _room(self) -> bool:
        with self._lock:
            return len(self._active) < self.timings.max_in_flight

    def _busy_with(self, batch_id: str) -> bool:
        with self._lock:
            return any(key[0] == batch_id for key in self._active)

    def _submit(self, batch: Batch, board: BatchBoard, resume: bool) -> None:
        key = (batch.id, board.relay)
        with self._lock:
            if key in self._active or self._pool is None:
                return
            self._active.add(key)
        try:
            self._pool.submit(self._run_board, batch, board, resume)
        except RuntimeError:  # the pool shut down (stopping)
            with self._lock:
                self._active.discard(key)

    def _run_board(self, batch: Batch, board: BatchBoard, resume: bool) -> None:
        try:
            if self._stopping.is_set():
                return
            if resume:
                self._work.resume(batch, board)
            else:
                self._work.start(batch, board.relay)
        except PyMongoError as exc:  # left as persisted: a later pass takes it up again
            if self._warn.ready():
                log.warning("batch %s: board %s: database: %s", batch.id, board.relay, exc)
        except Exception:
            log.exception("batch %s: board %s failed unexpectedly", batch.id, board.relay)
        finally:
            with self._lock:
                self._active.discard((batch.id, board.relay))
