"""Built-in accounts on the embedded database: hashing, sign-in, throttle, roles, OIDC."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from argon2 import PasswordHasher

from smib_core.auth import CLIENT_FREE_ATTEMPTS, Principal, Role, SignInThrottled
from smib_core.errors import InvalidInput
from smib_core.store.accounts import AccountStore, unknown_account

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


def fast_hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 5, 1, 9, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(mongo_db: Any, clock: Clock) -> AccountStore:
    return AccountStore(mongo_db, hasher=fast_hasher(), clock=clock)


def audit_kinds(mongo_db: Any) -> list[tuple[str, str, str]]:
    docs = mongo_db["audit"].find({}).sort("at", 1)
    return [(d["actor"], d["kind"], d["outcome"]) for d in docs]


def test_create_and_verify(store: AccountStore, mongo_db: Any) -> None:
    assert not store.has_any() and store.count() == 0
    account = store.create(" Alice ", "technician", PASSWORD, actor="cli:root")
    assert (account.name, account.role, account.disabled) == ("alice", Role.TECHNICIAN, False)
    assert store.has_any() and store.count() == 1
    assert store.verify("ALICE", PASSWORD) == Principal("alice", Role.TECHNICIAN, "local")
    assert store.get("alice").last_sign_in_at is not None  # type: ignore[union-attr]
    assert audit_kinds(mongo_db) == [
        ("cli:root", "account_create", "ok"),
        ("alice", "sign_in", "ok"),
    ]


def test_hash_is_argon2_and_never_leaves_the_store(store: AccountStore, mongo_db: Any) -> None:
    store.create("alice", "admin", PASSWORD, actor="cli:root")
    stored = mongo_db["accounts"].find_one({"name": "alice"})
    assert stored["hash"].startswith("$argon2id$") and PASSWORD not in stored["hash"]
    listed = store.list()
    assert [a.name for a in listed] == ["alice"]
    assert not hasattr(listed[0], "hash") and "argon2" not in repr(listed)
    assert PASSWORD not in repr(list(mongo_db["audit"].find({})))


def test_wrong_password_fails_is_logged_without_it_and_audited(
    store: AccountStore, mongo_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    with caplog.at_level(logging.WARNING, logger="smib_core.store.accounts"):
        assert store.verify("alice", "wrong password 123") is None
        assert store.verify("mallory", "guess guess 456") is None
    assert "sign-in failed for 'alice': wrong_password" in caplog.text
    mallory = unknown_account("mallory")
    assert f"sign-in failed for '{mallory}': unknown_name" in caplog.text
    assert "wrong password 123" not in caplog.text and "guess guess" not in caplog.text
    failed = list(mongo_db["audit"].find({"kind": "sign_in_failed"}).sort("at", 1))
    assert [(d["actor"], d["detail"]["reason"], d["outcome"]) for d in failed] == [
        ("alice", "wrong_password", "refused"),
        (mallory, "unknown_name", "refused"),
    ]
    assert "wrong password 123" not in repr(failed)


def test_repeated_failures_are_throttled(store: AccountStore, clock: Clock) -> None:
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    for _ in range(2):
        assert store.verify("alice", "not the password") is None
        clock.advance(0.1)
    with pytest.raises(SignInThrottled, match="wait 1 s") as err:
        store.verify("alice", PASSWORD)  # even the right password is not checked now
    assert err.value.retry_after_s == 1
    clock.advance(1)
    assert store.verify("alice", "still not it") is None  # third failure: wait 2 s
    with pytest.raises(SignInThrottled, match="wait 2 s"):
        store.verify("alice", PASSWORD)
    clock.advance(2)
    assert store.verify("alice", PASSWORD) is not None
    assert store.verify("alice", "after success the count restarts") is None
    assert store.verify("alice", PASSWORD) is not None  # one failure costs no wait


def test_throttle_forgets_old_failures(store: AccountStore, clock: Clock) -> None:
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    for _ in range(6):
        assert store.verify("alice", "not the password") is None
        clock.advance(31)
    clock.advance(15 * 60)
    assert store.verify("alice", PASSWORD) is not None


def test_unknown_names_are_throttled_too(store: AccountStore) -> None:
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    store.verify("nobody", "x" * 10)
    store.verify("nobody", "x" * 10)
    with pytest.raises(SignInThrottled):
        store.verify("nobody", "x" * 10)
    assert store.verify("alice", PASSWORD) is not None  # per name


def test_disabled_account_is_refused(store: AccountStore, mongo_db: Any) -> None:
    store.create("root", "admin", PASSWORD, actor="cli:root")
    store.create("alice", "manager", PASSWORD, actor="cli:root")
    store.disable("alice", actor="root")
    assert store.get("alice").disabled  # type: ignore[union-attr]
    assert store.verify("alice", PASSWORD) is None
    reasons = [d["detail"]["reason"] for d in mongo_db["audit"].find({"kind": "sign_in_failed"})]
    assert reasons == ["disabled"]
    store.enable("alice", actor="root")
    assert store.verify("alice", PASSWORD) == Principal("alice", Role.MANAGER, "local")


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("alice", PASSWORD, "already exists"),
        ("Alice", PASSWORD, "already exists"),
        ("a", PASSWORD, "2 to 32 characters"),
        ("bob@example.com", PASSWORD, "2 to 32 characters"),
        ("bob", "short", "at least 10"),
    ],
)
def test_create_refuses(store: AccountStore, name: str, password: str, message: str) -> None:
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    with pytest.raises(InvalidInput, match=message):
        store.create(name, "analyst", password, actor="cli:root")
    assert store.count() == 1


def test_set_password_and_role(store: AccountStore, mongo_db: Any) -> None:
    store.create("root", "admin", PASSWORD, actor="cli:root")
    store.create("alice", "analyst", PASSWORD, actor="root")
    store.set_password("alice", "a new long password", actor="root")
    assert store.verify("alice", PASSWORD) is None
    store.set_role("alice", "technician", actor="root")
    assert store.verify("alice", "a new long password") == Principal(
        "alice", Role.TECHNICIAN, "local"
    )
    kinds = [k for _, k, _ in audit_kinds(mongo_db)]
    assert "account_set_password" in kinds and "account_set_role" in kinds
    with pytest.raises(InvalidInput, match="no account named"):
        store.set_role("nobody", "admin", actor="root")
    with pytest.raises(InvalidInput, match="unknown role"):
        store.set_role("alice", "superuser", actor="root")


def test_the_last_active_admin_is_kept(store: AccountStore) -> None:
    store.create("root", "admin", PASSWORD, actor="cli:root")
    with pytest.raises(InvalidInput, match="last active administrator"):
        store.disable("root", actor="root")
    with pytest.raises(InvalidInput, match="last active administrator"):
        store.set_role("root", "analyst", actor="root")
    store.create("second", "admin", PASSWORD, actor="root")
    store.set_role("root", "analyst", actor="second")
    assert store.get("root").role is Role.ANALYST  # type: ignore[union-attr]


def test_first_admin_is_created_once(store: AccountStore, mongo_db: Any) -> None:
    assert store.create_first_admin("boss", PASSWORD) == Principal("boss", Role.ADMIN, "local")
    with pytest.raises(InvalidInput, match="already exists"):
        store.create_first_admin("other", PASSWORD)
    assert [a.name for a in store.list()] == ["boss"]


def test_first_admin_with_a_weak_password_can_be_retried(store: AccountStore) -> None:
    with pytest.raises(InvalidInput, match="at least 10"):
        store.create_first_admin("boss", "short")
    assert store.create_first_admin("boss", PASSWORD).role is Role.ADMIN


def test_hash_is_upgraded_when_parameters_change(
    mongo_db: Any, clock: Callable[[], datetime]
) -> None:
    AccountStore(mongo_db, hasher=fast_hasher(1), clock=clock).create(
        "alice", "analyst", PASSWORD, actor="cli:root"
    )
    before = mongo_db["accounts"].find_one({"name": "alice"})["hash"]
    stronger = AccountStore(mongo_db, hasher=fast_hasher(2), clock=clock)
    assert stronger.verify("alice", PASSWORD) is not None
    after = mongo_db["accounts"].find_one({"name": "alice"})["hash"]
    assert after != before and "t=2" in after
    assert stronger.verify("alice", PASSWORD) is not None


def test_oidc_identity_mapping(store: AccountStore, mongo_db: Any) -> None:
    assert store.role_for_identity("ann@example.com") is None
    assert store.role_for_identity(None) is None
    store.map_identity(" Ann@Example.com ", "manager", actor="root")
    assert store.role_for_identity("ann@example.com") is Role.MANAGER
    store.map_identity("ann@example.com", "analyst", actor="root")
    assert store.role_for_identity("ANN@example.com") is Role.ANALYST
    assert [(m.identity, m.role) for m in store.list_identities()] == [
        ("ann@example.com", Role.ANALYST)
    ]
    store.unmap_identity("ann@example.com", actor="root")
    assert store.role_for_identity("ann@example.com") is None
    with pytest.raises(InvalidInput):
        store.unmap_identity("ann@example.com", actor="root")
    with pytest.raises(InvalidInput):
        store.map_identity("   ", "admin", actor="root")
    kinds = [k for _, k, _ in audit_kinds(mongo_db)]
    assert kinds == ["identity_map", "identity_map", "identity_unmap"]


def test_a_password_typed_as_the_name_is_not_stored(store: AccountStore, mongo_db: Any) -> None:
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    assert store.verify("correct-horse-battery-2", "x" * 10) is None
    with pytest.raises(SignInThrottled):
        for _ in range(3):
            store.verify("correct-horse-battery-2", "x" * 10)
    stored = repr(list(mongo_db["audit"].find({}))) + repr(
        list(mongo_db["sign_in_throttle"].find())
    )
    assert "correct-horse-battery-2" not in stored
    assert unknown_account("correct-horse-battery-2").startswith("unknown account #")
    assert unknown_account("a") != unknown_account("b")


class CountingHasher(PasswordHasher):
    """A cheap hasher that counts the passwords it checked (slowly, like a real one)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.checked = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.checked += 1
        time.sleep(0.05)
        return super().verify(hash, password)


def _at_once(attempts: list[Callable[[], Principal | None]]) -> list[object]:
    """Run every attempt on its own thread, all released together."""
    start = threading.Barrier(len(attempts))

    def run(attempt: Callable[[], Principal | None]) -> object:
        start.wait()
        try:
            return attempt()
        except SignInThrottled as exc:
            return exc

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(run, attempts))


def test_parallel_attempts_on_one_name_are_counted_before_checking(mongo_db: Any) -> None:
    hasher = CountingHasher()
    store = AccountStore(mongo_db, hasher=hasher)
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    hasher.checked = 0
    wrong = [
        lambda n=n: store.verify("alice", f"wrong password {n}", f"10.0.0.{n}") for n in range(19)
    ]
    right = [lambda: store.verify("alice", PASSWORD, "10.0.1.1")]
    results = _at_once(wrong[:10] + right + wrong[10:])
    throttled = [r for r in results if isinstance(r, SignInThrottled)]
    assert hasher.checked <= 2  # the free attempts of one name; the rest never checked
    assert len(throttled) >= 18
    assert {r.retry_after_s for r in throttled} == {1}


def test_parallel_attempts_from_one_address_are_limited(mongo_db: Any) -> None:
    hasher = CountingHasher()
    store = AccountStore(mongo_db, hasher=hasher)
    store.create("alice", "analyst", PASSWORD, actor="cli:root")
    hasher.checked = 0
    guesses = [
        lambda n=n: store.verify(f"user{n}", "guess guess 1", "203.0.113.9") for n in range(30)
    ]
    results = _at_once(guesses)
    assert sum(isinstance(r, SignInThrottled) for r in results) >= 30 - CLIENT_FREE_ATTEMPTS - 1
    assert hasher.checked <= CLIENT_FREE_ATTEMPTS + 1
    assert store.verify("alice", PASSWORD, "198.51.100.7") is not None  # another address
