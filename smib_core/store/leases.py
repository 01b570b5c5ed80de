"""Leases: one holder per deployment for a background job (the rollout runner, a collector).

Contract: a lease is one document `{_id: name, owner, expires_at, acquired_at}` in the
collection `leases`. `acquire()` takes it when it is free, expired or already ours;
`renew()` pushes the expiry on while we still hold it; `release()` gives it up. Several
app processes on one database each run the job's loop, and only the lease holder acts.
A holder that dies stops renewing, and another process takes over after `ttl_s`.

Times are float epoch seconds (`time.time()`), not datetimes: they are compared inside
the update filter, and nx-27017 stores a datetime given to `$set` as text.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from smib_core.errors import InvalidInput

log = logging.getLogger(__name__)

COLLECTION = "leases"


def process_owner(prefix: str = "") -> str:
    """An owner name unique to this process (and this call): `host:pid:random`."""
    tag = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    return f"{prefix}{tag}" if prefix else tag


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    owner: str
    expires_at: float  # epoch seconds


class Lease:
    """The lease `name`, as seen by `owner`; thread-safe through the database."""

    def __init__(
        self,
        db: Database[Any],
        name: str,
        owner: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0 or not name or not owner:
            raise InvalidInput("a lease needs a name, an owner and a positive time to live")
        self._col = db[COLLECTION]
        self.name = name
        self.owner = owner
        self.ttl_s = float(ttl_s)
        self._clock = clock

    def acquire(self) -> bool:
        """True when we hold the lease now (taken, taken over after expiry, or renewed)."""
        now = self._clock()
        fields = {"owner": self.owner, "expires_at": now + self.ttl_s, "acquired_at": now}
        try:
            free_or_ours = {"$or": [{"owner": self.owner}, {"expires_at": {"$lt": now}}]}
            taken = self._col.update_one({"_id": self.name, **free_or_ours}, {"$set": fields})
            if taken.matched_count:
                return True
            self._col.insert_one({"_id": self.name, **fields})
        except DuplicateKeyError:
            return False  # someone else holds it
        except PyMongoError as exc:
            log.warning("lease %s: cannot acquire: %s", self.name, exc)
            return False
        log.info("lease %s acquired by %s", self.name, self.owner)
        return True

    def renew(self) -> bool:
        """Push the expiry on; False when the lease is no longer ours (stop acting)."""
        try:
            result = self._col.update_one(
                {"_id": self.name, "owner": self.owner},
                {"$set": {"expires_at": self._clock() + self.ttl_s}},
            )
        except PyMongoError as exc:
            log.warning("lease %s: cannot renew: %s", self.name, exc)
            return False
        return bool(result.matched_count)

    def release(self) -> None:
        """Give the lease up (if ours) so another process can take it at once."""
        try:
            self._col.delete_one({"_id": self.name, "owner": self.owner})
        except PyMongoError as exc:
            log.warning("lease %s: cannot release: %s", self.name, exc)

    def holder(self) -> LeaseHolder | None:
        """Who holds the lease now, or None when it is free or expired."""
        doc = self._col.find_one({"_id": self.name})
        if doc is None or float(doc.get("expires_at", 0.0)) < self._clock():
            return None
        return LeaseHolder(str(doc["owner"]), float(doc["expires_at"]))

    @property
    def held(self) -> bool:
        holder = self.holder()
        return holder is not None and holder.owner == self.owner
