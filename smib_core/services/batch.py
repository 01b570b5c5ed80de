"""Batch work: one config change, or a restart, carried to many boards at once.

Contract: `start_batch(job, actions, bus, settings)` checks the principal's role for the
job's kind (BoardActions re-checks it for every command), records a `batch_config` /
`batch_restart` audit record, and runs the job on a background thread with at most
`settings.max_workers` boards in flight. Each board goes

    queued -> (offline) | (cancelled) | sending -> [waiting] -> confirmed | not_confirmed | failed

- offline: not heard for `offline_after_s` (or never): nothing is sent to it.
- cancelled: `BatchRun.cancel` came before the board's turn: nothing is sent to it
  (boards already in progress finish). The batch's audit record then ends `cancelled`,
  naming who cancelled.
- config: one partial `cfg` write through `BoardActions.request`; the board answers a
  write with the whole component, which is the read-back. No answer within
  `reply_timeout_s`: an explicit read (`cfg` + comp) is the read-back. The read-back
  holds the written values (secrets are not compared: boards may hide them) ->
  confirmed; it differs, or neither answer came -> not_confirmed (the board may
  have applied it: look again later); the command could not be sent at all (broker
  down, refused) -> failed.
- restart: `rst` through `BoardActions.send_command`, then wait up to
  `restart_timeout_s` for the board to come back: it announces its `app` config after
  the restart was sent, or it is heard again more than `restart_grace_s` after it
  (earlier messages may have been on their way before it went quiet) -> confirmed;
  it does not come back in time -> not_confirmed; not sent -> failed. The board's
  `restart` audit record gets that outcome too.

Progress lives in a thread-safe `BatchProgress` that a page polls; nothing here calls
Streamlit. Finished runs stay readable in a process-wide `BatchJobs` registry.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from smib_core import protocol
from smib_core.auth import Permission, Principal, require
from smib_core.errors import InvalidInput, PermissionDenied, RequestTimeout, SmibError
from smib_core.protocol import Command, ConfigReply, DeviceMessage
from smib_core.services.actions import SendResult, judge_reply
from smib_core.services.batch_progress import BatchProgress
from smib_core.services.live import ago, is_online
from smib_core.store.audit import AuditTrail

log = logging.getLogger(__name__)

JobKind = Literal["config", "restart"]
MAX_BOARDS = 2_000


class BatchBus(Protocol):
    """What the runner reads of `smib_core.bus.DeviceBus`."""

    def last_seen(self, relay: str) -> float | None: ...

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


class BatchActions(Protocol):
    """What the runner needs of `BoardActions` (the guarded, audited gateway)."""

    principal: Principal | None

    @property
    def actor(self) -> str: ...

    def send_command(self, relays: Sequence[str], command: Command) -> SendResult: ...

    def request(self, relay: str, command: Command, timeout: float = ...) -> DeviceMessage: ...

    def settle(
        self, audit_id: str, outcome: str, extra: Mapping[str, Any] | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchSettings:
    offline_after_s: float = 120.0
    max_workers: int = 8
    reply_timeout_s: float = 5.0
    restart_timeout_s: float = 60.0
    restart_grace_s: float = 1.0
    poll_s: float = 0.2


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

    def command(self) -> Command:
        if self.kind == "restart":
            return protocol.restart()
        return protocol.config_write(self.comp, self.fields)

    def masked_fields(self) -> dict[str, Any]:
        return protocol.mask_secrets(self.fields)

    def describe(self) -> str:
        """The exact change in words, secrets masked: `set net: netStaChan=6`."""
        if self.kind == "restart":
            return "restart"
        shown = ", ".join(f"{k}={v}" for k, v in self.masked_fields().items())
        return f"set {self.comp}: {shown}"


@dataclass(slots=True)
class BatchRun:
    """One started job: its progress, and the thread carrying it out."""

    id: str
    job: BatchJob
    actor: str
    progress: BatchProgress
    started_at: float = field(default_factory=time.time)
    thread: threading.Thread | None = None
    cancelled_by: str | None = None

    @property
    def done(self) -> bool:
        return self.progress.done

    @property
    def cancelled(self) -> bool:
        return self.cancelled_by is not None

    def cancel(self, principal: Principal) -> int:
        """Send nothing more: boards not yet started end as `cancelled`, boards already
        in progress finish. Only someone allowed to run this kind of job may cancel it
        (PermissionDenied). Returns how many boards were still waiting their turn."""
        require(principal, self.job.permission)
        if self.done or self.cancelled:
            return 0
        self.cancelled_by = principal.name
        log.info("batch %s cancelled by %s", self.id, principal.name)
        return self.progress.cancel_queued(f"cancelled by {principal.name}: nothing sent")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every board has its outcome; False when `timeout` ran out."""
        return self.progress.wait(timeout)


class BatchRunner:
    """Carries a job out board by board; `run` blocks until every board has an outcome."""

    def __init__(
        self,
        actions: BatchActions,
        bus: BatchBus,
        settings: BatchSettings,
        audit: AuditTrail | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.actions = actions
        self.bus = bus
        self.settings = settings
        self.audit = audit
        self.clock = clock

    def run(self, run: BatchRun, audit_id: str | None = None) -> None:
        workers = max(1, min(self.settings.max_workers, len(run.job.relays)))
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix=f"smib-batch-{run.id}") as pool:
                for relay in run.job.relays:
                    pool.submit(self._board, run, relay)
        finally:
            run.progress.fail_unfinished()
            self._record_outcome(run, audit_id)
            run.progress.finish()

    def _board(self, run: BatchRun, relay: str) -> None:
        progress = run.progress
        if not progress.claim(relay):  # cancelled before its turn
            return
        try:
            if not self._online(relay, progress):
                return
            if run.job.kind == "restart":
                self._restart(relay, progress)
            else:
                self._configure(run.job, relay, progress)
        except PermissionDenied as exc:
            progress.set(relay, "failed", str(exc))
        except SmibError as exc:
            progress.set(relay, "failed", str(exc)[:300])
        except Exception as exc:  # one board's surprise must not end the others
            log.exception("batch %s: board %s failed unexpectedly", run.id, relay)
            progress.set(relay, "failed", f"internal error: {type(exc).__name__}")

    def _online(self, relay: str, progress: BatchProgress) -> bool:
        last = self.bus.last_seen(relay)
        now = self.clock()
        if is_online(last, now, self.settings.offline_after_s):
            return True
        heard = "never heard" if last is None else f"last heard {ago(now - last)}"
        progress.set(relay, "offline", f"{heard}: nothing sent")
        return False

    def _configure(self, job: BatchJob, relay: str, progress: BatchProgress) -> None:
        write = job.command()
        timeout = self.settings.reply_timeout_s
        progress.set(relay, "sending", f"writing {job.comp}")
        try:
            reply = self.actions.request(relay, write, timeout)
        except RequestTimeout:
            progress.set(relay, "waiting", f"no answer to the write: reading {job.comp} back")
            try:
                reply = self.actions.request(relay, protocol.config_read(job.comp), timeout)
            except RequestTimeout:
                detail = f"no answer to the write nor the read-back within {timeout:g} s"
                progress.set(relay, "not_confirmed", detail)
                return
            except SmibError as exc:  # the write went out: it may have been applied
                progress.set(relay, "not_confirmed", f"read-back not sent: {exc}"[:300])
                return
        outcome, extra = judge_reply(write, reply)
        if outcome == "confirmed" and isinstance(reply, ConfigReply):
            progress.set(relay, "confirmed", f"{job.comp} read back with the new values")
        else:
            differ = ", ".join(extra.get("differ", [])) or "the written fields"
            progress.set(relay, "not_confirmed", f"the board reports other values for {differ}")

    def _restart(self, relay: str, progress: BatchProgress) -> None:
        progress.set(relay, "sending", "sending rst")
        sent_at = self.clock()
        result = self.actions.send_command([relay], protocol.restart())
        limit = self.settings.restart_timeout_s
        progress.set(relay, "waiting", f"waiting for it to return (up to {limit:g} s)")
        deadline = sent_at + limit
        while self.clock() < deadline:
            if self._came_back(relay, sent_at):
                back = f"back after {self.clock() - sent_at:.1f} s"
                self._settle(result.audit_id, "confirmed", back)
                progress.set(relay, "confirmed", back)
                return
            time.sleep(self.settings.poll_s)
        missing = f"not back within {limit:g} s"
        self._settle(result.audit_id, "not_confirmed", missing)
        progress.set(relay, "not_confirmed", missing)

    def _came_back(self, relay: str, sent_at: float) -> bool:
        app = self.bus.latest_config(relay).get("app")
        if app is not None and app[1] > sent_at:
            return True
        seen = self.bus.last_seen(relay)
        return seen is not None and seen > sent_at + self.settings.restart_grace_s

    def _settle(self, audit_id: str, outcome: str, detail: str) -> None:
        """The board's own `restart` audit record learns how the restart ended."""
        try:
            self.actions.settle(audit_id, outcome, {"detail": detail})
        except SmibError as exc:
            log.warning("could not set the outcome of audit record %s: %s", audit_id, exc)

    def _record_outcome(self, run: BatchRun, audit_id: str | None) -> None:
        if self.audit is None or audit_id is None:
            return
        counts = run.progress.outcome_counts()
        all_confirmed = counts.get("confirmed", 0) == len(run.job.relays)
        extra: dict[str, Any] = {"counts": counts, "outcomes": run.progress.states()}
        outcome = "confirmed" if all_confirmed else "not_confirmed"
        if counts.get("cancelled", 0):
            outcome, extra["cancelled_by"] = "cancelled", run.cancelled_by
        try:
            self.audit.update_outcome(audit_id, outcome, extra)
        except Exception:  # the database may be gone; the run's outcome is still shown
            log.exception("could not record the outcome of batch %s", run.id)


def start_batch(
    job: BatchJob,
    actions: BatchActions,
    bus: BatchBus,
    settings: BatchSettings | None = None,
    audit: AuditTrail | None = None,
    jobs: BatchJobs | None = None,
) -> BatchRun:
    """Check the role, then run `job` on a background thread; returns at once.

    Raises PermissionDenied (audited as refused) when the principal may not do this
    kind of work to boards; nothing is sent then.
    """
    settings = settings or BatchSettings()
    kind = f"batch_{job.kind}"
    detail = {"change": job.describe(), "fields": job.masked_fields(), "label": job.label}
    try:
        require(actions.principal, job.permission)
    except PermissionDenied as exc:
        if audit is not None:
            audit.record(actions.actor, kind, job.relays, {**detail, "reason": str(exc)}, "refused")
        raise
    run = BatchRun(uuid.uuid4().hex[:8], job, actions.actor, BatchProgress(job.relays))
    audit_id = None
    if audit is not None:
        audit_id = audit.record(actions.actor, kind, job.relays, {**detail, "job": run.id}, "sent")
    runner = BatchRunner(actions, bus, settings, audit)
    run.thread = threading.Thread(
        target=runner.run, args=(run, audit_id), name=f"smib-batch-{run.id}", daemon=True
    )
    if jobs is not None:
        jobs.add(run)
    run.thread.start()
    log.info("batch %s by %s: %s on %d boards", run.id, run.actor, job.describe(), len(job.relays))
    return run


class BatchJobs:
    """The batch runs of this server process, newest first; thread-safe and bounded."""

    def __init__(self, keep: int = 50) -> None:
        self._keep = keep
        self._runs: dict[str, BatchRun] = {}
        self._lock = threading.Lock()

    def add(self, run: BatchRun) -> None:
        with self._lock:
            self._runs[run.id] = run
            finished = [r for r in self._runs.values() if r.done]
            for old in finished[: max(0, len(self._runs) - self._keep)]:
                del self._runs[old.id]

    def get(self, job_id: object) -> BatchRun | None:
        with self._lock:
            return self._runs.get(job_id) if isinstance(job_id, str) else None

    def recent(self) -> list[BatchRun]:
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.started_at, reverse=True)
