"""API tokens: what a program presents (`Authorization: Bearer …`) to act as an account.

Contract: `create` makes a random token (`smib_` + 43 URL-safe characters: 256 bits),
returns it once and keeps only its SHA-256 (a token is random, not a password a person
chose: a fast hash of it cannot be guessed back, and checking costs one indexed lookup).
`authenticate(token)` gives the principal of a live token: its account's *current* role
(a changed role or a disabled account takes effect on the next request); None for a
token that is unknown, revoked or expired, or whose account is gone or disabled. Every
creation and revocation is audited; the token itself never is.

Collection: `api_tokens` (`_id` a short public id, `hash` unique, `label`, `account`,
`created_at`, `created_by`, `expires_at` or None, `revoked_at` or None, `last_used_at`).
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

from smib_core.auth import Principal, Role, normalize_account_name
from smib_core.errors import InvalidInput
from smib_core.store.audit import AuditTrail
from smib_core.store.documents import as_utc, replace_fields, utc_now

TOKEN_PREFIX = "smib_"
MAX_LABEL = 64
MAX_EXPIRY_DAYS = 3650
# last_used_at is written at most this often per token (not on every request).
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown of a token: never the token nor its hash."""

    id: str
    label: str
    account: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _label(value: object) -> str:
    label = value.strip() if isinstance(value, str) else ""
    if not label or len(label) > MAX_LABEL or not label.isprintable():
        raise InvalidInput(f"a token label is 1 to {MAX_LABEL} printable characters")
    return label


def _opt(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _info(doc: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=str(doc["_id"]),
        label=str(doc["label"]),
        account=str(doc["account"]),
        created_at=as_utc(doc["created_at"]),
        created_by=str(doc.get("created_by", "")),
        expires_at=_opt(doc.get("expires_at")),
        revoked_at=_opt(doc.get("revoked_at")),
        last_used_at=_opt(doc.get("last_used_at")),
    )


class TokenStore:
    def __init__(
        self,
        db: Database[Any],
        audit: AuditTrail | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._tokens = db["api_tokens"]
        self._accounts = db["accounts"]
        self._audit = audit if audit is not None else AuditTrail(db)
        self._clock = clock
        self._tokens.create_index([("hash", ASCENDING)], unique=True)
        self._tokens.create_index([("account", ASCENDING)])

    def create(
        self, label: str, account: str, actor: str, expires_days: float | None = None
    ) -> tuple[str, TokenInfo]:
        """A new token for an existing, enabled account: (the token, shown once; its info)."""
        label = _label(label)
        name = normalize_account_name(account)
        doc_account = self._accounts.find_one({"name": name}, {"disabled": 1})
        if doc_account is None:
            raise InvalidInput(f"no account named {name!r}")
        if doc_account.get("disabled"):
            raise InvalidInput(f"the account {name!r} is disabled")
        if expires_days is not None and not 0 < expires_days <= MAX_EXPIRY_DAYS:
            raise InvalidInput(f"a token expires after 1 to {MAX_EXPIRY_DAYS} days")
        now = self._clock()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        doc = {
            "_id": secrets.token_hex(6),
            "hash": token_hash(token),
            "label": label,
            "account": name,
            "created_at": now,
            "created_by": actor,
            "expires_at": None if expires_days is None else now + timedelta(days=expires_days),
            "revoked_at": None,
            "last_used_at": None,
            "rev": 0,
        }
        self._tokens.insert_one(doc)
        detail = {"id": doc["_id"], "label": label, "account": name, "expires_days": expires_days}
        self._audit.record(actor, "token_create", [], detail, "ok")
        return token, _info(doc)

    def list(self, account: str | None = None) -> list[TokenInfo]:
        query = {} if account is None else {"account": account}
        return [_info(d) for d in self._tokens.find(query, {"hash": 0}).sort("created_at", 1)]

    def revoke(self, token_id: str, actor: str) -> TokenInfo:
        doc = self._tokens.find_one({"_id": str(token_id)[:32]}, {"hash": 0})
        if doc is None:
            raise InvalidInput(f"no token with id {str(token_id)[:32]!r}")
        if doc.get("revoked_at") is None:
            doc["revoked_at"] = self._clock()
            self._set(doc["_id"], revoked_at=doc["revoked_at"])
            detail = {"id": doc["_id"], "label": doc["label"], "account": doc["account"]}
            self._audit.record(actor, "token_revoke", [], detail, "ok")
        return _info(doc)

    def _set(self, token_id: str, **fields: Any) -> None:
        # replace_fields, not $set: nx-27017 stores a datetime given to $set as text.
        replace_fields(self._tokens, {"_id": token_id}, fields, what="token", clock=self._clock)

    def authenticate(self, token: str) -> tuple[Principal, TokenInfo] | None:
        """The principal a live token acts as (its account's current role), or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        doc = self._tokens.find_one({"hash": token_hash(token)}, {"hash": 0})
        if doc is None:
            return None
        info = _info(doc)
        now = self._clock()
        if info.state(now) != "active":
            return None
        account = self._accounts.find_one({"name": info.account}, {"role": 1, "disabled": 1})
        if account is None or account.get("disabled"):
            return None
        try:
            role = Role(account["role"])
        except (KeyError, ValueError):
            return None
        if info.last_used_at is None or now - info.last_used_at >= _TOUCH_EVERY:
            self._set(doc["_id"], last_used_at=now)
        return Principal(info.account, role, "token"), info
