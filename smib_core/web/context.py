"""The web server process's resources: one settings object, one database handle, one
device bus, shared by the pages (through `ui.resources`), the HTTP API and the stream.

Contract: `process_context()` builds them on first use (thread-safe) and returns the same
object afterwards; `close_process_context()` (the ASGI lifespan's end) stops the bus and
closes the database client. Nothing here imports Streamlit or FastAPI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from smib_core.bus import DeviceBus, bus_for
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.audit import AuditTrail
from smib_core.store.db import connect
from smib_core.store.registry import Registry
from smib_core.store.tokens import TokenStore


@dataclass
class WebContext:
    """What every request of this process shares; stores are built once (indexes)."""

    settings: Settings
    db: Database[Any]
    bus: DeviceBus
    audit: AuditTrail = field(init=False)
    accounts: AccountStore = field(init=False)
    tokens: TokenStore = field(init=False)
    registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        self.audit = AuditTrail(self.db)
        self.accounts = AccountStore(self.db, self.audit)
        self.tokens = TokenStore(self.db, self.audit)
        self.registry = Registry(self.db, self.audit)

    def close(self) -> None:
        self.bus.stop()
        self.db.client.close()


_lock = threading.Lock()
_context: WebContext | None = None


def process_context(settings: Settings | None = None) -> WebContext:
    """This process's context, built (and its bus started) on the first call."""
    global _context
    with _lock:
        if _context is None:
            settings = settings or Settings.from_env()
            bus = bus_for(settings, "smib-console")
            bus.start()
            db = connect(settings)
            try:
                _context = WebContext(settings, db, bus)  # the stores' indexes: a round trip
            except BaseException:
                bus.stop()
                db.client.close()
                raise
            from smib_core.web.metrics import REPLY_LATENCY

            bus.observe_latency(REPLY_LATENCY.observe)
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
