"""Server-side sessions: a one-time hand-off, hashed secrets, the idle timeout, ending
(by the person, elsewhere, by an administrator), and a changed or disabled account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smib_core.auth import Principal, Role
from smib_core.errors import InvalidInput
from smib_core.store.sessions import SessionStore

pytestmark = pytest.mark.integration
ANA = Principal("ana", Role.MANAGER, "local")


def keep(p: Principal) -> Principal | None:
    return p


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_hand_off_code_is_good_once_and_only_the_hash_is_kept(mongo_db: Any) -> None:
    store = SessionStore(mongo_db)
    public_id, code = store.start(ANA)
    secret = store.claim(code)
    assert secret and store.claim(code) is None
    assert store.by_cookie(secret, 30, keep) == (public_id, ANA)
    assert store.by_cookie(secret + "x", 30, keep) is None
    stored = str(mongo_db["sessions"].find_one({"_id": public_id}))
    assert secret not in stored and code not in stored


def test_a_late_hand_off_is_refused(mongo_db: Any) -> None:
    clock = Clock()
    store = SessionStore(mongo_db, clock=clock)
    _, code = store.start(ANA)
    clock.now += timedelta(seconds=61)
    assert store.claim(code) is None


def test_idle_sessions_end_and_activity_keeps_them(mongo_db: Any) -> None:
    clock = Clock()
    store = SessionStore(mongo_db, clock=clock)
    public_id, _ = store.start(ANA)
    for _ in range(3):
        clock.now += timedelta(minutes=20)
        assert store.principal(public_id, 30, keep) == ANA
    clock.now += timedelta(minutes=31)
    assert store.principal(public_id, 30, keep) is None
    assert store.active(30) == []
    audit = mongo_db["audit"].find_one({"kind": "session_end"})
    assert audit["detail"]["reason"] == "idle for 30 min"


def test_ended_sessions_and_refused_accounts_end_at_once(mongo_db: Any) -> None:
    store = SessionStore(mongo_db)
    mine, code = store.start(ANA)
    secret = store.claim(code)
    other, _ = store.start(ANA)
    admin_ended, _ = store.start(Principal("bob", Role.ANALYST, "local"))
    store.end(mine)
    assert store.principal(mine, 30, keep) is None
    assert secret is not None and store.by_cookie(secret, 30, keep) is None
    assert [s.public_id for s in store.active(30)] == [other, admin_ended]
    store.end_by_admin(admin_ended, "root")
    with pytest.raises(InvalidInput):
        store.end_by_admin(admin_ended, "root")
    demoted = Principal("ana", Role.ANALYST, "local")
    assert store.principal(other, 30, lambda p: demoted) == demoted  # the current role
    assert store.principal(other, 30, lambda p: None) is None  # disabled: ended
    assert store.active(30) == []
