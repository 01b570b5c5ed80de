"""Server-side sign-in sessions: what keeps a person signed in across reloads and tabs.

Contract: `start(principal)` records a session and returns its public id (the tab that
signed in keeps it) and a one-time hand-off code. `claim(code)` (the cookie route, once,
within `HANDOFF_TTL_S`) makes the session's secret id (256 random bits) that becomes the
browser's HttpOnly cookie; the database keeps only SHA-256 hashes of code and secret.
`principal(public_id, ...)` and `by_cookie(secret, ...)` give the session's person with
their *current* role (`refresh`), or None when the session is unknown, ended, idle
too long, or its account disabled or its role removed: every check reads the
database, so a sign-out in one tab, an administrator ending the session, or a disabled
account takes effect at once in every tab. Activity is written at most once a minute per session.

Collection `sessions`: `_id` (the public id: what an administrator sees and ends it
by), `sid` (hash of the secret id, once claimed), `name`, `source`, `started_at`, `last_seen_at`,
`ended_at`, `end_reason`, `handoff` (hash) and `handoff_until`, `rev`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from smib_core.auth import Principal, parse_role, session_expired
from smib_core.errors import InvalidInput
from smib_core.store.audit import AuditTrail
from smib_core.store.documents import as_utc, replace_fields, utc_now

HANDOFF_TTL_S = 60.0
_TOUCH_EVERY = timedelta(minutes=1)

Refresh = Callable[[Principal], Principal | None]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    public_id: str
    name: str
    source: str
    started_at: datetime
    last_seen_at: datetime


class SessionStore:
    def __init__(
        self,
        db: Database[Any],
        audit: AuditTrail | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._col = db["sessions"]
        self._audit = audit if audit is not None else AuditTrail(db)
        self._clock = clock
        self._col.create_index([("sid", ASCENDING)])
        self._col.create_index([("handoff", ASCENDING)])
        self._col.create_index([("name", ASCENDING)])

    def start(self, principal: Principal) -> tuple[str, str]:
        """A new session for `principal`: (its public id, a one-time hand-off code).

        The tab that signed in keeps the public id; the browser trades the code for the
        cookie (`claim`), whose secret id is made then and never stored in clear."""
        public_id, code = secrets.token_hex(12), secrets.token_urlsafe(32)
        now = self._clock()
        self._col.insert_one(
            {
                "_id": public_id,
                "sid": None,
                "name": principal.name,
                "role": principal.role.value,
                "source": principal.source,
                "started_at": now,
                "last_seen_at": now,
                "ended_at": None,
                "end_reason": "",
                "handoff": _hash(code),
                "handoff_until": now + timedelta(seconds=HANDOFF_TTL_S),
                "rev": 0,
            }
        )
        return public_id, code

    def claim(self, code: str) -> str | None:
        """A new secret session id (the cookie's value) for a live hand-off code, once;
        None for an unknown, used or expired code or an ended session."""
        if not code or len(code) > 128:
            return None
        doc = self._col.find_one({"handoff": _hash(code)})
        if doc is None or doc.get("ended_at") is not None:
            return None
        late = as_utc(doc["handoff_until"]) < self._clock()
        secret = secrets.token_urlsafe(32)
        fields = {"handoff": None, "handoff_until": None, "sid": None if late else _hash(secret)}
        replace_fields(self._col, {"_id": doc["_id"]}, fields, what="session", clock=self._clock)
        return None if late else secret

    def by_cookie(
        self, secret: str, idle_min: float, refresh: Refresh
    ) -> tuple[str, Principal] | None:
        """(public id, principal) of the session a cookie names, if it is still live."""
        if not secret or len(secret) > 128:
            return None
        doc = self._col.find_one({"sid": _hash(secret)})
        principal = self._live(doc, idle_min, refresh)
        return None if principal is None or doc is None else (str(doc["_id"]), principal)

    def principal(self, public_id: str, idle_min: float, refresh: Refresh) -> Principal | None:
        """The session's principal now (see the module contract); ends a stale session."""
        doc = self._col.find_one({"_id": str(public_id)[:32]}) if public_id else None
        return self._live(doc, idle_min, refresh)

    def _live(
        self, doc: dict[str, Any] | None, idle_min: float, refresh: Refresh
    ) -> Principal | None:
        if doc is None or doc.get("ended_at") is not None:
            return None
        now = self._clock()
        last = as_utc(doc["last_seen_at"])
        if session_expired(last, now, idle_min):
            self._end_doc(doc, f"idle for {idle_min:g} min", doc["name"])
            return None
        stored = Principal(doc["name"], parse_role(doc["role"]), doc["source"])
        current = refresh(stored)
        if current is None:
            self._end_doc(doc, "account disabled or role removed", doc["name"])
            return None
        if now - last >= _TOUCH_EVERY:
            replace_fields(
                self._col,
                {"_id": doc["_id"]},
                {"last_seen_at": now, "role": current.role.value},
                what="session",
                clock=self._clock,
            )
        return current

    def end(self, public_id: str, reason: str = "signed out") -> None:
        doc = self._col.find_one({"_id": str(public_id)[:32]}) if public_id else None
        if doc is not None and doc.get("ended_at") is None:
            self._end_doc(doc, reason, doc["name"])

    def end_by_admin(self, public_id: str, actor: str) -> None:
        doc = self._col.find_one({"_id": str(public_id)[:32]})
        if doc is None or doc.get("ended_at") is not None:
            raise InvalidInput("no such session is open")
        self._end_doc(doc, f"ended by {actor}", actor)

    def end_all(self, name: str, reason: str, actor: str) -> int:
        docs = list(self._col.find({"name": name, "ended_at": None}))
        for doc in docs:
            self._end_doc(doc, reason, actor)
        return len(docs)

    def active(self, idle_min: float) -> list[SessionInfo]:
        now = self._clock()
        rows = []
        for doc in self._col.find({"ended_at": None}).sort("started_at", ASCENDING):
            last = as_utc(doc["last_seen_at"])
            if session_expired(last, now, idle_min):
                continue
            started = as_utc(doc["started_at"])
            rows.append(SessionInfo(str(doc["_id"]), doc["name"], doc["source"], started, last))
        return rows

    def _end_doc(self, doc: dict[str, Any], reason: str, actor: str) -> None:
        fields = {"ended_at": self._clock(), "end_reason": reason, "sid": None, "handoff": None}
        replace_fields(self._col, {"_id": doc["_id"]}, fields, what="session", clock=self._clock)
        detail = {"name": doc["name"], "session": str(doc["_id"]), "reason": reason}
        self._audit.record(actor, "session_end", [], detail, "ok")
