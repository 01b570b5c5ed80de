"""The deployment's one clock: the database server's, against which each process checks
its own (`hello`'s `localTime`, MongoDB's and nx-27017's alike)."""

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
