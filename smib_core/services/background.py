"""Which background services run, and where: read from the database, never from this
process (a web app runs none of them; workers do, see `services.worker`).

Each service that must be single holds a lease (`store.leases`); its live holder is
the process running it. The collector's last reading comes from `meter_last_readings`,
so a page in any process tells the truth about the whole deployment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from pymongo.database import Database

from smib_core.store.clock import clock_checks
from smib_core.store.leases import COLLECTION
from smib_core.store.meters import FAILURES, LAST_READINGS

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


def clock_frame(db: Database[Any], now: datetime | None = None) -> pd.DataFrame:
    """The services' latest clock checks against the database's, and the readings
    refused in the last day because their stamp was behind the cabinet's latest."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=1)
    refused = db[FAILURES].count_documents({"failure_check": "clock_behind", "at": {"$gte": since}})
    rows = [
        {
            "service": str(check["_id"]),
            "skew": f"{float(check['skew_s']):+.1f} s",
            "checked": check["checked_at"],
            "refused_24h": refused if check["_id"] == "collector" else None,
        }
        for check in clock_checks(db)
    ]
    return pd.DataFrame(rows, columns=["service", "skew", "checked", "refused_24h"])
