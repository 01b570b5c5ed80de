"""The deployment's one clock: the database server's, against which each process checks
its own (`hello`'s `localTime`, MongoDB's and nx-27017's alike). A service that stamps
what it stores records its latest check (`record_skew`) for the Bus status page."""

from __future__ import annotations

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


CLOCK_CHECKS = "clock_checks"


def record_skew(db: Database[Any], service: str, owner: str, skew_s: float) -> None:
    """Keep a service's latest clock check: {_id: service, owner, skew_s, checked_at}."""
    fields = {"owner": owner, "skew_s": float(skew_s), "checked_at": datetime.now(UTC)}
    db[CLOCK_CHECKS].update_one({"_id": service}, {"$set": fields}, upsert=True)


def clock_checks(db: Database[Any]) -> list[dict[str, Any]]:
    """Every service's latest clock check, by service name."""
    return list(db[CLOCK_CHECKS].find({}).sort("_id", 1))
