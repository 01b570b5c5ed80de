"""Built-in accounts and OIDC identity mappings, stored in MongoDB.

Contract: passwords are kept only as argon2 hashes (argon2-cffi's `PasswordHasher`,
rehashed on sign-in when its parameters change) and never leave this module: `Account`
has no hash, logs and the audit trail never see a password. Every sign-in attempt is
counted, atomically and before its password is checked, for its name and for its client
address; after repeated attempts either is throttled (`auth.retry_after`) and attempts
are refused unchecked with `SignInThrottled` until the wait is over, so parallel
attempts gain nothing. A failed sign-in is logged and audited as `sign_in_failed`; a
name that is no account's is recorded as `unknown account #<hash>`, never verbatim.
Every change is audited with its actor.

Collections: `accounts` (unique `name`), `sign_in_throttle` (one counter per hashed
name or client address), `identities` (unique `identity`, an OIDC e-mail or subject),
`account_setup` (a guard
document so the first administrator is created once).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from smib_core.auth import (
    CLIENT_FREE_ATTEMPTS,
    THROTTLE_FREE_FAILURES,
    THROTTLE_WINDOW,
    Permission,
    Principal,
    Role,
    SignInThrottled,
    check_password,
    normalize_account_name,
    parse_role,
    require,
    retry_after,
)
from smib_core.errors import InvalidInput, PermissionDenied
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


def _from_timestamp(value: object) -> datetime | None:
    """A throttle counter's time (seconds since the epoch: the embedded database keeps
    a number through `$set` where it would turn a datetime into text)."""
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


def normalize_identity(value: object) -> str:
    """An OIDC e-mail or subject, lowercased; InvalidInput when empty or unreasonable."""
    identity = value.strip().lower() if isinstance(value, str) else ""
    if not identity or len(identity) > 254 or any(ord(ch) < 33 for ch in identity):
        raise InvalidInput("an identity is the e-mail (or subject) the provider signs in with")
    return identity


def unknown_account(attempted: str) -> str:
    """How a sign-in attempt with no account's name is recorded: never verbatim (it is
    often a password typed in the wrong box), only a short hash that tells repeats."""
    digest = hashlib.sha256(attempted.encode("utf-8")).hexdigest()[:8]
    return f"unknown account #{digest}"


def _name_key(attempted: str) -> str:
    return "name:" + hashlib.sha256(attempted.encode("utf-8")).hexdigest()


def _client_key(client: str | None) -> str:
    return "client:" + (client or "local")[:64]


def _attempted_name(value: object) -> str:
    """The name a failed attempt used, safe to log and audit (no control characters)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    return "".join(ch for ch in text if ch.isprintable())[:64]


def refreshed_principal(db: Database[Any], principal: Principal | None) -> Principal | None:
    """`principal` as the database knows it now: None when its account is gone or
    disabled (or its OIDC identity unmapped), with its current role otherwise. The CLI's
    principal (the host's own user) passes as it is. Sessions and every action on a
    person's behalf call this first, so a disabled account or a changed role takes
    effect at once, not at the next sign-in."""
    if principal is None:
        return None
    if principal.source == "local":
        doc = db["accounts"].find_one({"name": principal.name}, {"role": 1, "disabled": 1})
        if doc is None or doc.get("disabled"):
            return None
        return Principal(principal.name, parse_role(doc["role"]), "local")
    if principal.source == "oidc":
        found = db["identities"].find_one({"identity": principal.name}, {"role": 1})
        return Principal(principal.name, parse_role(found["role"]), "oidc") if found else None
    return principal


def require_current(
    db: Database[Any], principal: Principal | None, permission: Permission
) -> Principal:
    """`require` on the principal as the database knows it now (`refreshed_principal`)."""
    current = refreshed_principal(db, principal)
    if principal is not None and current is None:
        raise PermissionDenied(
            "This account was disabled or its role removed: sign in again or ask an administrator."
        )
    return require(current, permission)


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
        self._throttle = db["sign_in_throttle"]
        self._identities = db["identities"]
        self._setup = db["account_setup"]
        self._audit = audit if audit is not None else AuditTrail(db)
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._clock = clock
        self._dummy_hash: str | None = None
        self._accounts.create_index([("name", ASCENDING)], unique=True)
        self._identities.create_index([("identity", ASCENDING)], unique=True)

    @property
    def audit(self) -> AuditTrail:
        return self._audit

    def current(self, principal: Principal) -> Principal | None:
        """`refreshed_principal` of this store's database."""
        return refreshed_principal(self._accounts.database, principal)

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
        self._throttle.delete_one({"_id": _name_key(name)})
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
        self._throttle.delete_one({"_id": _name_key(account.name)})
        self._audit.record(actor, "account_enable", [], {"name": account.name}, "ok")

    # --- signing in -------------------------------------------------------------------

    def verify(self, name: str, password: str, client: str | None = None) -> Principal | None:
        """The principal for a right name and password; None otherwise.

        The attempt is counted first, atomically, for the name and for the `client`
        address (None: a local one), so parallel attempts cannot all pass a check made
        before any of them failed. Raises `SignInThrottled`, without checking the
        password, while either must wait after repeated attempts.
        """
        attempted = _attempted_name(name)
        now = self._clock()
        doc = self._accounts.find_one({"name": attempted})
        shown = attempted if doc is not None else unknown_account(attempted)
        for key, free in (
            (_name_key(attempted), THROTTLE_FREE_FAILURES),
            (_client_key(client), CLIENT_FREE_ATTEMPTS),
        ):
            wait, attempts = self._claim(key, free, now)
            if wait > 0:
                if key.startswith("client:"):  # the name's claim is given back
                    self._give_back(_name_key(attempted))
                self._throttled(shown, key, wait, attempts)
        if doc is None:
            self._check_dummy(password)
            reason = "unknown_name"
        elif not self._check(doc["hash"], password):
            reason = "wrong_password"
        elif doc.get("disabled"):
            reason = "disabled"
        else:
            self._give_back(_client_key(client))
            return self._signed_in(doc, password, now)
        self._failed(shown, reason)
        return None

    def _claim(self, key: str, free: int, now: datetime) -> tuple[float, int]:
        """Count one attempt for `key` unless it must wait: (0, attempts) when counted,
        (seconds to wait, attempts) otherwise. A compare-and-set on the counter's `rev`,
        so two processes never both take the last free attempt."""
        for _ in range(20):
            doc = self._throttle.find_one({"_id": key})
            if doc is None:
                try:
                    first = {"_id": key, "attempts": 1, "at": now.timestamp(), "rev": 1}
                    self._throttle.insert_one(first)
                    return 0.0, 1
                except DuplicateKeyError:
                    continue  # a parallel attempt counted first: read its count
            attempts, last = int(doc.get("attempts", 0)), _from_timestamp(doc.get("at"))
            wait = retry_after(attempts, last, now, free)
            if wait > 0:
                return wait, attempts
            if last is None or now - last >= THROTTLE_WINDOW:
                attempts = 0
            taken = self._throttle.update_one(
                {"_id": key, "rev": doc.get("rev", 0)},
                {
                    "$set": {
                        "attempts": attempts + 1,
                        "at": now.timestamp(),
                        "rev": doc.get("rev", 0) + 1,
                    }
                },
            )
            if taken.modified_count == 1:
                return 0.0, attempts + 1
        return 1.0, 0  # contended all along: refuse, the caller retries in a second

    def _give_back(self, key: str) -> None:
        """Uncount an attempt that turned out right (or was refused for another key)."""
        self._throttle.update_one(
            {"_id": key, "attempts": {"$gt": 0}}, {"$inc": {"attempts": -1, "rev": 1}}
        )

    def _throttled(self, shown: str, key: str, wait: float, attempts: int) -> NoReturn:
        by = "client address" if key.startswith("client:") else "name"
        log.warning(
            "sign-in for %r refused: throttled by %s for %.0f s after %d attempts",
            shown,
            by,
            wait,
            attempts,
        )
        detail = {"name": shown, "reason": f"throttled ({by})", "recent_attempts": attempts}
        self._audit.record(shown or "?", "sign_in_failed", [], detail, "refused")
        raise SignInThrottled(wait)

    def _signed_in(self, doc: dict[str, Any], password: str, now: datetime) -> Principal:
        fields: dict[str, Any] = {"last_sign_in_at": now}
        if self._hasher.check_needs_rehash(doc["hash"]):
            fields["hash"] = self._hasher.hash(password)
        self._update(doc["name"], fields)
        self._throttle.delete_one({"_id": _name_key(doc["name"])})
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

    def _failed(self, shown: str, reason: str) -> None:
        log.warning("sign-in failed for %r: %s", shown, reason)
        detail = {"name": shown, "reason": reason}
        self._audit.record(shown or "?", "sign_in_failed", [], detail, "refused")

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
