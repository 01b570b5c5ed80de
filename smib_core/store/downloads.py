"""The firmware server's download log, in MongoDB so that every process can read it.

Contract: `DownloadLog(db).record` is the firmware server's `on_download`: one document
per GET that started sending, in `firmware_downloads` (`at` as float epoch seconds, the
client's address, the file name, the relay the URL named (`/firmwares/<relay>/<name>`)
or None, status, bytes sent, complete or not). A rollout runner
in any process reads `since(name, at)` to see which boards downloaded; the server may
run in another app process, or in `smib ota`. Records older than a week are dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.database import Database

COLLECTION = "firmware_downloads"
KEEP_S = 7 * 86_400.0
PRUNE_EVERY_S = 3600.0


class DownloadLike(Protocol):
    """What the log keeps of `firmware.server.DownloadRecord`."""

    @property
    def client(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def complete(self) -> bool: ...
    @property
    def relay(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Download:
    at: float  # epoch seconds
    client: str
    name: str
    complete: bool
    relay: str | None = None


class DownloadLog:
    def __init__(self, db: Database[Any]) -> None:
        self._col = db[COLLECTION]
        self._col.create_index([("name", ASCENDING), ("at", ASCENDING)])
        self._next_prune = 0.0

    def record(self, record: DownloadLike) -> None:
        """Keep one download (the server's `on_download`)."""
        now = time.time()
        doc = {
            "at": now,
            "client": record.client,
            "name": record.name,
            "relay": record.relay,
            "status": record.status,
            "bytes": record.bytes_sent,
            "complete": record.complete,
        }
        self._col.insert_one(doc)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self._col.delete_many({"at": {"$lt": now - KEEP_S}})

    def since(self, name: str, at: float) -> list[Download]:
        """Downloads of file `name` from `at` on, oldest first."""
        docs = self._col.find({"name": name, "at": {"$gte": at}})
        found = [
            Download(
                float(d["at"]),
                str(d.get("client", "")),
                name,
                bool(d.get("complete")),
                str(d["relay"]) if d.get("relay") else None,
            )
            for d in docs
        ]
        return sorted(found, key=lambda d: d.at)
