"""The deployment's one clock: the database server's, against which each process checks
its own (`hello`'s `localTime`, MongoDB's and nx-27017's alike). A `DeploymentClock`
reads it through the process's clock and the skew last measured, so a replica whose
clock runs behind (or an NTP step not yet made) stamps readings and leases in the same
time as every other process. A service that stamps what it stores records its latest
check (`record_skew`) for the Bus status page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database


def database_clock_skew(db: Database[Any], clock: Callable[[], float] = time.time) -> float:
    """Seconds this process's `clock` is ahead of the database server's (negative:
    behind), measured against the middle of the round trip (to about a millisecond on
    a LAN; the server reports milliseconds)."""
    before = clock()
    reply = db.client.admin.command("hello")
    after = clock()
    server: datetime = reply["localTime"]
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    return (before + after) / 2 - server.timestamp()


class DeploymentClock:
    """The database's clock read through this process's: `process() - skew`, the skew
    last measured by `check` (0 until then; a check that fails keeps the last one).
    A drop-in `clock` (float epoch seconds); thread-safe."""

    def __init__(self, db: Database[Any], process: Callable[[], float] = time.time) -> None:
        self._db = db
        self.process = process
        self._lock = threading.Lock()
        self._skew = 0.0
        self._checked: float | None = None  # time.monotonic() of the last check

    def __call__(self) -> float:
        with self._lock:
            return self.process() - self._skew

    @property
    def skew_s(self) -> float:
        """The process clock minus the database's, as last measured."""
        with self._lock:
            return self._skew

    def check(self) -> float:
        """Measure the skew again (PyMongoError when the database cannot be asked)."""
        skew = database_clock_skew(self._db, self.process)
        with self._lock:
            self._skew, self._checked = skew, time.monotonic()
        return skew

    def due(self, every_s: float) -> bool:
        """Never checked, or last checked `every_s` or more ago (a monotonic clock)."""
        with self._lock:
            return self._checked is None or time.monotonic() - self._checked >= every_s


CLOCK_CHECKS = "clock_checks"


def record_skew(db: Database[Any], service: str, owner: str, skew_s: float) -> None:
    """Keep a service's latest clock check: {_id: service, owner, skew_s, checked_at}."""
    fields = {"owner": owner, "skew_s": float(skew_s), "checked_at": datetime.now(UTC)}
    db[CLOCK_CHECKS].update_one({"_id": service}, {"$set": fields}, upsert=True)


def clock_checks(db: Database[Any]) -> list[dict[str, Any]]:
    """Every service's latest clock check, by service name."""
    return list(db[CLOCK_CHECKS].find({}).sort("_id", 1))
