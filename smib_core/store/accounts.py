"""Built-in accounts and OIDC identity mappings, stored in MongoDB.

Contract: passwords are kept only as argon2 hashes (argon2-cffi's `PasswordHasher`,
rehashed on sign-in when its parameters change) and never leave this module: `Account`
has no hash, logs and the audit trail never see a password. A failed sign-in is logged,
audited as `sign_in_failed` and counted per name; after repeated failures a name is
throttled (`auth.retry_after`) and its attempts are refused unchecked with
`SignInThrottled` until the wait is over. Every change is audited with its actor.

Collections: `accounts` (unique `name`), `sign_in_failures` (`name`, `at`),
`identities` (unique `identity`, an OIDC e-mail or subject), `account_setup` (a guard
document so the first administrator is created once).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from smib_core.auth import (
    THROTTLE_WINDOW,
    Principal,
    Role,
    SignInThrottled,
    check_password,
    normalize_account_name,
    parse_role,
    retry_after,
)
from smib_core.errors import InvalidInput
from smib_core.store.audit import AuditTrail, utc_now
from smib_core.store.documents import as_utc, replace_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    created_by: str
    last_sign_in_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IdentityMapping:
    identity: str
    role: Role
    mapped_by: str
    mapped_at: datetime


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def normalize_identity(value: object) -> str:
    """An OIDC e-mail or subject, lowercased; InvalidInput when empty or unreasonable."""
    identity = value.strip().lower() if isinstance(value, str) else ""
    if not identity or len(identity) > 254 or any(ord(ch) < 33 for ch in identity):
        raise InvalidInput("an identity is the e-mail (or subject) the provider signs in with")
    return identity


def _attempted_name(value: object) -> str:
    """The name a failed attempt used, safe to log and audit (no control characters)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    return "".join(ch for ch in text if ch.isprintable())[:64]


class AccountStore:
    """Accounts, sign-in and identity mappings. `hasher` lets tests use cheap argon2."""

    def __init__(
        self,
        db: Database[Any],
        audit: AuditTrail | None = None,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._accounts = db["accounts"]
        self._failures = db["sign_in_failures"]
        self._identities = db["identities"]
        self._setup = db["account_setup"]
        self._audit = audit if audit is not None else AuditTrail(db)
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._clock = clock
        self._dummy_hash: str | None = None
        self._accounts.create_index([("name", ASCENDING)], unique=True)
        self._failures.create_index([("name", ASCENDING), ("at", ASCENDING)])
        self._identities.create_index([("identity", ASCENDING)], unique=True)

    @property
    def audit(self) -> AuditTrail:
        return self._audit

    # --- reading ----------------------------------------------------------------------

    def count(self) -> int:
        return self._accounts.count_documents({})

    def has_any(self) -> bool:
        return self._accounts.find_one({}, {"_id": 1}) is not None

    def get(self, name: str) -> Account | None:
        doc = self._accounts.find_one({"name": _attempted_name(name)}, {"hash": 0})
        return _account(doc) if doc else None

    def list(self) -> list[Account]:
        docs = self._accounts.find({}, {"hash": 0}).sort("name", ASCENDING)
        return [_account(doc) for doc in docs]

    # --- changes ----------------------------------------------------------------------

    def create(self, name: str, role: Role | str, password: str, actor: str) -> Account:
        """A new enabled account; InvalidInput for a bad or taken name or a weak password."""
        name = normalize_account_name(name)
        role = parse_role(role)
        check_password(password, name)
        now = self._clock()
        doc = {
            "name": name,
            "role": role.value,
            "hash": self._hasher.hash(password),
            "disabled": False,
            "created_at": now,
            "created_by": actor,
            "updated_at": now,
            "last_sign_in_at": None,
            "rev": 0,
        }
        try:
            self._accounts.insert_one(doc)
        except DuplicateKeyError:
            raise InvalidInput(f"an account named {name!r} already exists") from None
        self._audit.record(actor, "account_create", [], {"name": name, "role": role.value}, "ok")
        log.info("account %s created with role %s by %s", name, role, actor)
        return _account(doc)

    def create_first_admin(self, name: str, password: str) -> Principal:
        """The first administrator, allowed once and only while no account exists."""
        if self.has_any():
            raise InvalidInput("an account already exists: sign in instead")
        try:
            self._setup.insert_one({"_id": "first_admin", "at": self._clock()})
        except DuplicateKeyError:
            raise InvalidInput("the first administrator was already created") from None
        try:
            account = self.create(name, Role.ADMIN, password, actor="first-start")
        except InvalidInput:
            self._setup.delete_one({"_id": "first_admin"})
            raise
        return Principal(account.name, Role.ADMIN, "local")

    def set_password(self, name: str, password: str, actor: str) -> None:
        name = self._existing(name).name
        check_password(password, name)
        self._update(name, {"hash": self._hasher.hash(password)})
        self._failures.delete_many({"name": name})
        self._audit.record(actor, "account_set_password", [], {"name": name}, "ok")

    def set_role(self, name: str, role: Role | str, actor: str) -> None:
        account = self._existing(name)
        role = parse_role(role)
        if account.role is Role.ADMIN and role is not Role.ADMIN:
            self._keep_an_admin(account)
        self._update(account.name, {"role": role.value})
        detail = {"name": account.name, "role": role.value, "previous_role": account.role.value}
        self._audit.record(actor, "account_set_role", [], detail, "ok")

    def disable(self, name: str, actor: str) -> None:
        account = self._existing(name)
        if account.role is Role.ADMIN:
            self._keep_an_admin(account)
        self._update(account.name, {"disabled": True})
        self._audit.record(actor, "account_disable", [], {"name": account.name}, "ok")

    def enable(self, name: str, actor: str) -> None:
        account = self._existing(name)
        self._update(account.name, {"disabled": False})
        self._failures.delete_many({"name": account.name})
        self._audit.record(actor, "account_enable", [], {"name": account.name}, "ok")

    # --- signing in -------------------------------------------------------------------

    def verify(self, name: str, password: str) -> Principal | None:
        """The principal for a right name and password; None otherwise.

        Raises `SignInThrottled` (without checking the password) while the name must
        wait after repeated failures.
        """
        attempted = _attempted_name(name)
        now = self._clock()
        since = now - THROTTLE_WINDOW
        failures = [
            _utc(d["at"]) or now
            for d in self._failures.find({"name": attempted, "at": {"$gte": since}}, {"at": 1})
        ]
        wait = retry_after(failures, now)
        if wait > 0:
            log.warning(
                "sign-in for %r refused: throttled for %.0f s after %d failures",
                attempted,
                wait,
                len(failures),
            )
            detail = {"name": attempted, "reason": "throttled", "recent_failures": len(failures)}
            self._audit.record(attempted or "?", "sign_in_failed", [], detail, "refused")
            raise SignInThrottled(wait)
        doc = self._accounts.find_one({"name": attempted})
        if doc is None:
            self._check_dummy(password)
            reason = "unknown_name"
        elif not self._check(doc["hash"], password):
            reason = "wrong_password"
        elif doc.get("disabled"):
            reason = "disabled"
        else:
            return self._signed_in(doc, password, now)
        self._failed(attempted, reason, len(failures) + 1, now)
        return None

    def _signed_in(self, doc: dict[str, Any], password: str, now: datetime) -> Principal:
        fields: dict[str, Any] = {"last_sign_in_at": now}
        if self._hasher.check_needs_rehash(doc["hash"]):
            fields["hash"] = self._hasher.hash(password)
        self._update(doc["name"], fields)
        self._failures.delete_many({"name": doc["name"]})
        self._audit.record(doc["name"], "sign_in", [], {"source": "local"}, "ok")
        return Principal(doc["name"], parse_role(doc["role"]), "local")

    def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    def _check_dummy(self, password: str) -> None:
        """Spend the time a real check takes, so an unknown name is not told by speed."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash("not a password of anyone")
        self._check(self._dummy_hash, password)

    def _failed(self, name: str, reason: str, recent: int, now: datetime) -> None:
        self._failures.insert_one({"name": name, "at": now})
        self._failures.delete_many({"name": name, "at": {"$lt": now - THROTTLE_WINDOW}})
        log.warning("sign-in failed for %r: %s (%d recent failures)", name, reason, recent)
        detail = {"name": name, "reason": reason, "recent_failures": recent}
        self._audit.record(name or "?", "sign_in_failed", [], detail, "refused")

    # --- OIDC identities --------------------------------------------------------------

    def map_identity(self, identity: str, role: Role | str, actor: str) -> None:
        """Give an OIDC identity (e-mail or subject) a role; replaces an earlier mapping."""
        identity = normalize_identity(identity)
        role = parse_role(role)
        doc = {
            "identity": identity,
            "role": role.value,
            "mapped_by": actor,
            "mapped_at": self._clock(),
        }
        self._identities.replace_one({"identity": identity}, doc, upsert=True)
        detail = {"identity": identity, "role": role.value}
        self._audit.record(actor, "identity_map", [], detail, "ok")

    def unmap_identity(self, identity: str, actor: str) -> None:
        identity = normalize_identity(identity)
        if self._identities.delete_one({"identity": identity}).deleted_count == 0:
            raise InvalidInput(f"{identity!r} has no role to remove")
        self._audit.record(actor, "identity_unmap", [], {"identity": identity}, "ok")

    def role_for_identity(self, identity: str | None) -> Role | None:
        """The role an administrator gave this identity, or None (not mapped)."""
        try:
            key = normalize_identity(identity)
        except InvalidInput:
            return None
        doc = self._identities.find_one({"identity": key})
        return parse_role(doc["role"]) if doc else None

    def list_identities(self) -> builtins.list[IdentityMapping]:
        docs = self._identities.find({}).sort("identity", ASCENDING)
        return [
            IdentityMapping(
                d["identity"],
                parse_role(d["role"]),
                d.get("mapped_by", ""),
                _utc(d.get("mapped_at")) or utc_now(),
            )
            for d in docs
        ]

    # --- helpers ----------------------------------------------------------------------

    def _existing(self, name: str) -> Account:
        account = self.get(normalize_account_name(name))
        if account is None:
            raise InvalidInput(f"there is no account named {name.strip().lower()!r}")
        return account

    def _update(self, name: str, fields: dict[str, Any]) -> None:
        replace_fields(
            self._accounts,
            {"name": name},
            fields,
            what=f"account named {name!r}",
            clock=self._clock,
        )

    def _keep_an_admin(self, account: Account) -> None:
        if account.disabled:
            return
        others = self._accounts.count_documents(
            {"role": Role.ADMIN.value, "disabled": False, "name": {"$ne": account.name}}
        )
        if others == 0:
            raise InvalidInput(f"{account.name} is the last active administrator: keep one")


def _account(doc: dict[str, Any]) -> Account:
    return Account(
        name=doc["name"],
        role=parse_role(doc["role"]),
        disabled=bool(doc.get("disabled", False)),
        created_at=_utc(doc.get("created_at")) or utc_now(),
        created_by=doc.get("created_by", ""),
        last_sign_in_at=_utc(doc.get("last_sign_in_at")),
    )
