"""Which background services run, and where: read from the database, never from this
process (a web app runs none of them; workers do, see `services.worker`).

Each service that must be single holds a lease (`store.leases`); its live holder is
the process running it. The collector's last reading comes from `meter_last_readings`,
so a page in any process tells the truth about the whole deployment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pymongo.database import Database

from smib_core.store.leases import COLLECTION
from smib_core.store.meters import LAST_READINGS

# lease name -> what people call the service, in the order a page lists them
SERVICES: dict[str, str] = {
    "firmware-server": "Firmware server",
    "presence": "Presence heartbeats",
    "event-recorder": "Event recorder and alerts",
    "collector": "Meter collector",
    "rollout-runner": "Rollout runner",
    "batches": "Batch runner",
}


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    lease: str
    service: str
    host: str | None  # None: no live holder, the service runs nowhere
    pid: int | None

    @property
    def running(self) -> bool:
        return self.host is not None


def _holder(owner: str) -> tuple[str, int | None]:
    """(host, pid) of a lease owner `prefix:host:pid:tag` (`store.leases.process_owner`)."""
    parts = owner.split(":")
    if len(parts) < 3:
        return owner, None
    pid = parts[-2]
    return parts[-3], int(pid) if pid.isdigit() else None


def service_statuses(db: Database[Any], now: float | None = None) -> list[ServiceStatus]:
    """Every known background service, running (a live lease holder) or not."""
    now = time.time() if now is None else now
    docs = {str(d["_id"]): d for d in db[COLLECTION].find({"_id": {"$in": list(SERVICES)}})}
    statuses = []
    for lease, service in SERVICES.items():
        doc = docs.get(lease)
        if doc is None or float(doc.get("expires_at", 0.0)) < now:
            statuses.append(ServiceStatus(lease, service, None, None))
            continue
        host, pid = _holder(str(doc.get("owner", "")))
        statuses.append(ServiceStatus(lease, service, host, pid))
    return statuses


def status_frame(statuses: list[ServiceStatus]) -> pd.DataFrame:
    """One row per service, in words: for the Bus status page."""
    rows = [
        {
            "service": s.service,
            "status": "running" if s.running else "not running",
            "where": f"{s.host} (process {s.pid})" if s.running else "",
        }
        for s in statuses
    ]
    return pd.DataFrame(rows, columns=["service", "status", "where"])


def last_meter_reading(db: Database[Any]) -> datetime | None:
    """When the collector (any process) last stored a reading attempt, good or failed."""
    newest = db[LAST_READINGS].find_one({"at": {"$gt": 0}}, sort=[("at", -1)])
    return None if newest is None else datetime.fromtimestamp(float(newest["at"]), UTC)
