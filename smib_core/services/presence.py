"""Presence: keep "last seen" honest for boards that say nothing unprompted.

Boards only speak when spoken to (and for the odd event). So once per heartbeat the
console asks every known board (registered or heard) for its `app` config: a read that
changes nothing, whose reply proves the board alive and keeps its firmware version
current; a board's `coms` is read once, when first seen, for its comms mode. Requests
are spread over the heartbeat (no thundering herd; the first cycle after a start over a
few seconds, so a fresh console knows its fleet at once) and go straight to the bus, not
through the audit trail: auditing a read of every board every 30 s would bury the
actions people take. One process per deployment sends them (a lease, renewed every
`LEASE_RENEW_S` even in the middle of a cycle, so a dead sender is replaced within 10 s);
every process hears the replies, since all subscribe to the same topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pymongo.database import Database

from smib_core import protocol
from smib_core.bus import DeviceBus
from smib_core.errors import SmibError
from smib_core.store.leases import (
    LEASE_RENEW_S,
    LEASE_STANDBY_S,
    LEASE_TTL_S,
    Lease,
    process_owner,
)

log = logging.getLogger(__name__)

LEASE_NAME = "presence"


def presence_lease(db: Database[Any]) -> Lease:
    """This process's view of the deployment's presence lease."""
    return Lease(db, LEASE_NAME, process_owner("presence:"), LEASE_TTL_S)


class PresencePoller:
    def __init__(
        self,
        bus: DeviceBus,
        known_relays: Callable[[], Iterable[str]],
        heartbeat_s: float = 30.0,
        lease: Lease | None = None,
        first_spread_s: float = 5.0,
    ) -> None:
        self._bus = bus
        self._known = known_relays
        self.heartbeat_s = max(1.0, heartbeat_s)
        self.first_spread_s = max(0.0, min(first_spread_s, self.heartbeat_s))
        self._lease = lease
        self._stop = threading.Event()
        self._coms_asked: set[str] = set()
        self._thread: threading.Thread | None = None
        self._renewed = 0.0  # monotonic time of the last renewal of the lease
        self.cycles = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="smib-presence", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._lease is not None:
            self._lease.release()

    def relays(self) -> list[str]:
        try:
            known = set(self._known())
        except Exception as exc:  # the registry may be unreachable for a while
            log.warning("presence: cannot list registered boards: %s", exc)
            known = set()
        return sorted(known | set(self._bus.relays_seen()))

    def run_cycle(self) -> int:
        """Ask every known board once, spread over the heartbeat (the first cycle over
        `first_spread_s`); returns how many."""
        relays = self.relays()
        spread = self.first_spread_s if self.cycles == 0 else self.heartbeat_s
        started = time.monotonic()
        for index, relay in enumerate(relays):
            if not self._pause(started + index * spread / len(relays) - time.monotonic()):
                break
            self._ask(relay)
        self.cycles += 1
        return len(relays)

    def _ask(self, relay: str) -> None:
        try:
            if not self._bus.connected:
                return
            self._bus.send(relay, protocol.config_read("app"))
            if relay not in self._coms_asked:
                self._bus.send(relay, protocol.config_read("coms"))
                self._coms_asked.add(relay)
        except SmibError as exc:
            log.debug("presence: %s: %s", relay, exc)

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds`, renewing the lease every LEASE_RENEW_S on the way; False when
        stopping or when the lease went to another process (which asks from now on)."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if self._lease is not None and time.monotonic() - self._renewed >= LEASE_RENEW_S:
                if not self._lease.renew():
                    log.info("presence: the lease went to another process")
                    return False
                self._renewed = time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                return not self._stop.is_set()
            if self._stop.wait(min(left, LEASE_RENEW_S)):
                return False

    def _run(self) -> None:
        next_cycle = time.monotonic()
        while not self._stop.is_set():
            if self._lease is not None and not self._lease.acquire():
                next_cycle = time.monotonic()  # whoever holds it asks now; we stand by
                self._stop.wait(LEASE_STANDBY_S)
                continue
            self._renewed = time.monotonic()
            if time.monotonic() >= next_cycle:
                next_cycle = time.monotonic() + self.heartbeat_s
                self.run_cycle()
            self._stop.wait(max(0.0, min(LEASE_RENEW_S, next_cycle - time.monotonic())))
