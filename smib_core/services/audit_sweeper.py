"""The audit sweeper: no audit record stays `sent` because the process that sent it died.

Contract: `AuditSweeper(db, audit)` is a background service (`start` / `stop`). While
it holds the lease "audit-sweeper" (`LEASE_TTL_S`, renewed every `LEASE_RENEW_S`: one
sweeper per deployment) it looks every `every_s` for records still `sent` that are older
than `settle_after_s` (`SMIB_AUDIT_SETTLE_AFTER_S`: longer than any legitimate wait, a
batch restart's timeout and margin) and settles each `timed_out`, saying it was settled
by the sweeper because the process that sent the command ended without an outcome. It
leaves alone the records of batches still running (`detail.batch`) and of boards a
rollout is still updating: their runner settles them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core.errors import SmibError
from smib_core.inbox import WarnThrottle
from smib_core.settings import Settings
from smib_core.store import rollouts
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import ACTIVE
from smib_core.store.documents import utc_now
from smib_core.store.leases import (
    LEASE_RENEW_S,
    LEASE_STANDBY_S,
    LEASE_TTL_S,
    Lease,
    process_owner,
)

log = logging.getLogger(__name__)

LEASE_NAME = "audit-sweeper"


class AuditSweeper:
    def __init__(
        self,
        db: Database[Any],
        audit: AuditTrail,
        *,
        settle_after_s: float | None = None,
        every_s: float = 30.0,
        owner: str | None = None,
    ) -> None:
        if settle_after_s is None:
            settle_after_s = Settings.from_env().audit_settle_after_s
        self.settle_after_s = float(settle_after_s)
        self.every_s = float(every_s)
        self._db = db
        self._audit = audit
        self.lease = Lease(db, LEASE_NAME, owner or process_owner("audit-sweeper:"), LEASE_TTL_S)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = WarnThrottle()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="smib-audit-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.lease.release()

    def _loop(self) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            holding = False
            try:
                holding = self.lease.acquire()
                if holding:
                    now = utc_now().timestamp()
                    if now >= next_sweep:
                        self.sweep()
                        next_sweep = now + self.every_s
            except (PyMongoError, SmibError) as exc:
                if self._warn.ready():
                    log.warning("audit sweeper: %s", exc)
            # the holder renews every LEASE_RENEW_S; a standby looks every LEASE_STANDBY_S
            self._stopping.wait(min(LEASE_RENEW_S if holding else LEASE_STANDBY_S, self.every_s))

    def sweep(self) -> int:
        """Settle the open records older than the bound; how many were settled."""
        cutoff = utc_now() - timedelta(seconds=self.settle_after_s)
        records = self._audit.open_records(older_than=cutoff)
        if not records:
            return 0
        running = {
            str(doc["_id"])
            for doc in self._db["batches"].find({"state": {"$in": list(ACTIVE)}}, {"_id": 1})
        }
        updating = {
            str(doc.get("relay"))
            for doc in self._db["rollout_boards"].find(
                {"state": {"$in": list(rollouts.IN_FLIGHT)}}, {"relay": 1}
            )
        }
        why = (
            f"settled by {self.lease.owner}: the process that sent it ended without an "
            f"outcome (still sent after {self.settle_after_s:g} s)"
        )
        settled = 0
        for record in records:
            detail = record.get("detail")
            batch = detail.get("batch") if isinstance(detail, Mapping) else None
            if batch is not None and str(batch) in running:
                continue
            if updating.intersection(record.get("relays", [])):
                continue
            if self._audit.settle(record["id"], "timed_out", {"detail": why}):
                settled += 1
        if settled:
            log.info("audit sweeper settled %d records left sent", settled)
        return settled
