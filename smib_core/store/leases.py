"""Leases: one holder per deployment for a background job (the rollout runner, a collector).

Contract: a lease is one document `{_id: name, owner, expires_at, acquired_at}` in the
collection `leases`. `acquire()` takes it when it is free, expired or already ours;
`renew()` pushes the expiry on while we still hold it; `release()` gives it up. Several
processes on one database each run the job's loop, and only the lease holder acts.
A holder that dies stops renewing, and another process takes over after `ttl_s`.

Every background service leases with `LEASE_TTL_S`, renews at least every
`LEASE_RENEW_S` and, on standby, tries to take the lease every `LEASE_STANDBY_S`, so a
dead holder is replaced within 10 s. A service whose work may hold
its loop longer than that keeps its lease alive with a `LeaseKeeper` thread.

Times are float epoch seconds, not datetimes: they are compared inside the update
filter, and nx-27017 stores a datetime given to `$set` as text. They are the database
server's time (`DeploymentClock`, checked every `LEASE_CLOCK_CHECK_S`), so a process
whose clock runs ahead does not take a live holder's lease, nor one running behind
hold a dead holder's for longer.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from smib_core.errors import InvalidInput
from smib_core.store.clock import DeploymentClock

log = logging.getLogger(__name__)

COLLECTION = "leases"
# A holder renews every LEASE_RENEW_S (two renewals in a row may fail), a process on
# standby tries to take the lease every LEASE_STANDBY_S: a dead holder's lease is taken
# over at most LEASE_TTL_S + LEASE_STANDBY_S (8 s) after its last renewal.
LEASE_TTL_S = 7.0
LEASE_RENEW_S = LEASE_TTL_S / 3
LEASE_STANDBY_S = 1.0
LEASE_CLOCK_CHECK_S = 60.0


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
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock`: float epoch seconds; by default the database's (a `DeploymentClock`
        checked when taking or renewing the lease, every `LEASE_CLOCK_CHECK_S`); a clock
        given is checked by whoever gave it."""
        if ttl_s <= 0 or not name or not owner:
            raise InvalidInput("a lease needs a name, an owner and a positive time to live")
        self._col = db[COLLECTION]
        self.name = name
        self.owner = owner
        self.ttl_s = float(ttl_s)
        # A clock given is its giver's to check; our own we check with the lease.
        self._own_clock: DeploymentClock | None = None
        if clock is None:
            clock = self._own_clock = DeploymentClock(db)
        self._clock = clock
        self.kept = False  # the last acquire found the lease ours already (no one between)

    def acquire(self) -> bool:
        """True when we hold the lease now (taken, taken over after expiry, or renewed)."""
        try:
            return self.try_acquire()
        except PyMongoError as exc:
            log.warning("lease %s: cannot acquire: %s", self.name, exc)
            return False

    def try_acquire(self) -> bool:
        """`acquire`, raising PyMongoError when the database cannot be asked (so a
        caller can tell "someone else holds it" from "nobody can tell")."""
        self._check_clock()
        now = self._clock()
        fields = {"owner": self.owner, "expires_at": now + self.ttl_s, "acquired_at": now}
        # Ours, or expired: two conditional updates, not one filter with `$or`: the
        # embedded database (nx-27017 0.8.1) ignores `_id` beside `$or` in an update and
        # changed the first expired lease of ANY name (a dead worker's collector lease
        # taken by the batch runner's acquire, so the collector lost it again and again).
        try:
            for condition in ({"owner": self.owner}, {"expires_at": {"$lt": now}}):
                taken = self._col.update_one({"_id": self.name, **condition}, {"$set": fields})
                if taken.matched_count:
                    self.kept = "owner" in condition
                    return True
            self._col.insert_one({"_id": self.name, **fields})
        except DuplicateKeyError:
            return False  # someone else holds it
        self.kept = False
        log.info("lease %s acquired by %s", self.name, self.owner)
        return True

    def expire(self) -> None:
        """Let the lease go but keep our name on it: another process may take it at
        once, and our next `try_acquire` tells (`kept`) whether anyone did meanwhile."""
        try:
            self._col.update_one(
                {"_id": self.name, "owner": self.owner},
                {"$set": {"expires_at": self._clock() - 0.001}},
            )
        except PyMongoError as exc:
            log.warning("lease %s: cannot let it go: %s", self.name, exc)

    def renew(self) -> bool:
        """Push the expiry on; False when the lease is no longer ours (stop acting)."""
        try:
            return self.try_renew()
        except PyMongoError as exc:
            log.warning("lease %s: cannot renew: %s", self.name, exc)
            return False

    def try_renew(self) -> bool:
        """`renew`, raising PyMongoError when the database cannot be asked."""
        self._check_clock()
        result = self._col.update_one(
            {"_id": self.name, "owner": self.owner},
            {"$set": {"expires_at": self._clock() + self.ttl_s}},
        )
        return bool(result.matched_count)

    def _check_clock(self) -> None:
        if self._own_clock is not None:
            self._own_clock.check_if_due(LEASE_CLOCK_CHECK_S)

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


class LeaseKeeper:
    """Renews `lease` every `every_s` on its own thread while this process holds it.

    For a service whose work (a long pass over boards) can outlast the lease: the work
    loop takes the lease, the keeper keeps it alive between the loop's own renewals.
    It never takes a lease (a renewal only succeeds while the lease is ours), so a
    released or lost lease stays released. A background service: start()/stop().
    """

    def __init__(self, lease: Lease, every_s: float = LEASE_RENEW_S) -> None:
        self.lease = lease
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"smib-lease-{self.lease.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.lease.renew()
