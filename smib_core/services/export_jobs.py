"""Running an export: checked, audited, and (for the web page) on a background thread.

Contract: `run_export` checks that the principal may export (a refusal is audited),
writes the file chunk by chunk (`export_files.write_export`) and records one `export`
audit record: period, filters, granularity, format, rows and bytes, outcome `ok`, or
`failed` with the reason (the partial file is removed). The CLI calls it directly.

`ExportJobs` (one per server process) runs `run_export` on a worker thread so a large
export blocks neither the person's page nor anyone else's. A job's progress is plain
attributes written by the worker and read by a page fragment; nothing here calls
Streamlit. Finished files live in their own temporary folder, removed when the job is
dropped: the registry keeps the newest `keep` jobs, and none older than `keep_s`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smib_core.auth import Permission, Principal, require
from smib_core.errors import PermissionDenied, SmibError
from smib_core.services.export import (
    ExportRequest,
    estimate_rows,
    export_chunks,
)
from smib_core.services.export_files import Progress, write_export
from smib_core.services.meter_report import MeterSource
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportContext:
    """Where an export reads from, who asks, and how it is sized and audited."""

    source: MeterSource
    audit: AuditTrail
    principal: Principal | None
    cabinets: int = 1  # registered cabinets in the scope: sizes reads and the estimate
    names: dict[str, str] = field(default_factory=dict)  # ids -> names, for the audit
    settings: Settings = field(default_factory=Settings)
    chunk_rows: int = 5_000


def _actor(principal: Principal | None) -> str:
    return principal.name if principal is not None else "anonymous"


def run_export(
    context: ExportContext,
    request: ExportRequest,
    path: Path,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Write the export to `path`; returns its rows. Raises PermissionDenied (audited)."""
    detail = request.detail(context.names)
    actor = _actor(context.principal)
    try:
        require(context.principal, Permission.EXPORT)
    except PermissionDenied as exc:
        context.audit.record(actor, "export", [], {**detail, "reason": str(exc)}, "refused")
        raise
    chunks = export_chunks(
        context.source,
        request,
        cabinets=context.cabinets,
        chunk_rows=context.chunk_rows,
    )
    estimate = estimate_rows(request, context.cabinets, context.settings.collect_period_s)
    try:
        rows = write_export(
            chunks,
            request.granularity,
            request.format,
            path,
            estimated_total=estimate,
            progress=progress,
            should_stop=should_stop,
        )
    except Exception as exc:
        path.unlink(missing_ok=True)
        reason = str(exc) if isinstance(exc, SmibError) else "the export failed (see the log)"
        log.exception("export by %s failed", actor)
        context.audit.record(actor, "export", [], {**detail, "reason": reason}, "failed")
        raise
    size = path.stat().st_size
    context.audit.record(actor, "export", [], {**detail, "rows": rows, "bytes": size}, "ok")
    return rows


@dataclass(eq=False)
class ExportJob:
    """One export running (or run) on a worker thread; the worker writes the numbers."""

    id: str
    request: ExportRequest
    actor: str
    path: Path
    estimated: int = 1
    rows: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    @property
    def fraction(self) -> float:
        """0..1 for a progress bar (1 only once finished: the total is an estimate)."""
        if self.done:
            return 1.0
        return min(0.99, self.rows / max(1, self.estimated))

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.ok and self.path.exists() else 0

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.done

    def _progress(self, rows: int, estimated: int) -> None:
        self.rows, self.estimated = rows, estimated

    def _run(self, context: ExportContext) -> None:
        try:
            self.rows = run_export(
                context,
                self.request,
                self.path,
                progress=self._progress,
                should_stop=self.cancel.is_set,
            )
        except SmibError as exc:
            self.error = str(exc)
        except Exception:  # logged and audited by run_export
            self.error = "the export failed: see the server log"
        finally:
            self.finished_at = time.time()


class ExportJobs:
    """The exports of this server process, newest first; thread-safe and bounded."""

    def __init__(self, keep: int = 20, keep_s: float = 3600.0) -> None:
        self._keep = keep
        self._keep_s = keep_s
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()
        _remove_stale_folders(keep_s)

    def start(self, context: ExportContext, request: ExportRequest) -> ExportJob:
        """Check the role (refusal audited), then export on a worker thread."""
        try:
            require(context.principal, Permission.EXPORT)
        except PermissionDenied as exc:
            detail = {**request.detail(context.names), "reason": str(exc)}
            context.audit.record(_actor(context.principal), "export", [], detail, "refused")
            raise
        folder = Path(tempfile.mkdtemp(prefix=_FOLDER_PREFIX))
        job = ExportJob(
            id=uuid.uuid4().hex[:10],
            request=request,
            actor=_actor(context.principal),
            path=folder / request.file_name,
            estimated=estimate_rows(request, context.cabinets, context.settings.collect_period_s),
        )
        job.thread = threading.Thread(
            target=job._run, args=(context,), name=f"smib-export-{job.id}", daemon=True
        )
        self._add(job)
        job.thread.start()
        return job

    def get(self, job_id: object) -> ExportJob | None:
        with self._lock:
            return self._jobs.get(job_id) if isinstance(job_id, str) else None

    def _add(self, job: ExportJob) -> None:
        with self._lock:
            self._jobs[job.id] = job
            now = time.time()
            finished = sorted(
                (j for j in self._jobs.values() if j.done), key=lambda j: j.started_at
            )
            surplus = max(0, len(self._jobs) - self._keep)
            for old in finished:
                if surplus > 0 or now - old.started_at > self._keep_s:
                    del self._jobs[old.id]
                    shutil.rmtree(old.path.parent, ignore_errors=True)
                    surplus -= 1


_FOLDER_PREFIX = "smib-export-"


def _remove_stale_folders(older_than_s: float) -> None:
    """Export folders a stopped server process left behind (older than the keep time)."""
    limit = time.time() - older_than_s
    for folder in Path(tempfile.gettempdir()).glob(f"{_FOLDER_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
