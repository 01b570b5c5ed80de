"""The web server process's resources: one settings object, one database handle, one
device bus, shared by the pages (through `ui.resources`), the HTTP API and the stream.

Contract: `process_context()` builds them on first use (thread-safe) and returns the same
object afterwards; `close_process_context()` (the ASGI lifespan's end) stops the bus and
closes the database client. Nothing here imports Streamlit or FastAPI.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from pymongo.database import Database

from smib_core.bus import DeviceBus, bus_for
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.audit import AuditTrail
from smib_core.store.db import connect
from smib_core.store.registry import Registry
from smib_core.store.tokens import TokenStore


class WebContext:
    """What every request of this process shares. Settings are made at once; the
    database handle on first use (without MONGO_URI that starts or finds the embedded
    server: reading a setting must not), the bus started on first use, each store built
    once on first use (their constructors make indexes: a round trip)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bus: DeviceBus | None = None
        self._db: Database[Any] | None = None
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()

    @property
    def db(self) -> Database[Any]:
        with self._db_lock:
            if self._db is None:
                self._db = connect(self.settings)
            return self._db

    @property
    def bus(self) -> DeviceBus:
        with self._lock:
            if self._bus is None:
                from smib_core.web.metrics import REPLY_LATENCY

                bus = bus_for(self.settings, "smib-console")
                bus.observe_latency(REPLY_LATENCY.observe)
                bus.start()
                self._bus = bus
            return self._bus

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.db)

    @cached_property
    def accounts(self) -> AccountStore:
        return AccountStore(self.db, self.audit)

    @cached_property
    def tokens(self) -> TokenStore:
        return TokenStore(self.db, self.audit)

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.db, self.audit)

    def prepare(self) -> None:
        """Start the bus and build the stores now (a server's startup)."""
        _ = self.bus
        for name in ("audit", "accounts", "tokens", "registry"):
            getattr(self, name)

    def close(self) -> None:
        with self._lock:
            bus, self._bus = self._bus, None
        if bus is not None:
            bus.stop()
        with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            db.client.close()


_lock = threading.Lock()
_context: WebContext | None = None


def process_context(settings: Settings | None = None) -> WebContext:
    """This process's context, made on the first call (see `WebContext`)."""
    global _context
    with _lock:
        if _context is None:
            _context = WebContext(settings or Settings.from_env())
        return _context


def current_context() -> WebContext | None:
    """The context if one was built (metrics read it; they never build it)."""
    return _context


def close_process_context() -> None:
    global _context
    with _lock:
        context, _context = _context, None
    if context is not None:
        context.close()
