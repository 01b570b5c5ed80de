"""The deployment's one clock: the database server's, against which each process checks
its own (`hello`'s `localTime`, MongoDB's and nx-27017's alike). A `DeploymentClock`
keeps it in the process (the server's time at its last check plus the monotonic time
since), so a replica whose clock runs behind, or one stepped between two checks, stamps
readings and leases in the same time as every other process. A service that stamps
what it stores records its latest check (`record_skew`) for the Bus status page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database


def _database_time(db: Database[Any], clock: Callable[[], float]) -> tuple[float, float, float]:
    """(the server's time, `clock` and `time.monotonic()` at the middle of the round
    trip of one `hello`: to about a millisecond on a LAN; the server reports milliseconds)."""
    before, mono_before = clock(), time.monotonic()
    reply = db.client.admin.command("hello")
    after, mono_after = clock(), time.monotonic()
    server: datetime = reply["localTime"]
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    return server.timestamp(), (before + after) / 2, (mono_before + mono_after) / 2


def database_clock_skew(db: Database[Any], clock: Callable[[], float] = time.time) -> float:
    """Seconds this process's `clock` is ahead of the database server's (negative:
    behind)."""
    server, local, _ = _database_time(db, clock)
    return local - server


class DeploymentClock:
    """The database's clock, kept in this process: from a `check` on, the server's time
    then plus the monotonic time elapsed since, so a step of the process clock (an NTP
    step, someone setting the date) moves nothing between checks; before the first
    check, the process clock. A drop-in `clock` (float epoch seconds); thread-safe. A
    check that fails keeps the last anchor."""

    def __init__(self, db: Database[Any], process: Callable[[], float] = time.time) -> None:
        self._db = db
        self.process = process
        self._lock = threading.Lock()
        self._anchor: tuple[float, float] | None = None  # (server time, monotonic) at a check

    def __call__(self) -> float:
        with self._lock:
            anchor = self._anchor
        if anchor is None:
            return self.process()
        server, mono = anchor
        return server + (time.monotonic() - mono)

    def check(self) -> float:
        """Measure against the database again and return the process clock's skew
        (PyMongoError when the database cannot be asked)."""
        server, local, mono = _database_time(self._db, self.process)
        with self._lock:
            self._anchor = (server, mono)
        return local - server

    def due(self, every_s: float) -> bool:
        """Never checked, or last checked `every_s` or more ago (a monotonic clock)."""
        with self._lock:
            anchor = self._anchor
        return anchor is None or time.monotonic() - anchor[1] >= every_s

    def check_if_due(self, every_s: float) -> None:
        """`check` when `due` (PyMongoError when the database cannot be asked)."""
        if self.due(every_s):
            self.check()


CLOCK_CHECKS = "clock_checks"


def record_skew(db: Database[Any], service: str, owner: str, skew_s: float) -> None:
    """Keep a service's latest clock check: {_id: service, owner, skew_s, checked_at}."""
    fields = {"owner": owner, "skew_s": float(skew_s), "checked_at": datetime.now(UTC)}
    db[CLOCK_CHECKS].update_one({"_id": service}, {"$set": fields}, upsert=True)


def clock_checks(db: Database[Any]) -> list[dict[str, Any]]:
    """Every service's latest clock check, by service name."""
    return list(db[CLOCK_CHECKS].find({}).sort("_id", 1))
