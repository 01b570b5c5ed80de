"""API tokens: stored hashed, shown once, live only while unexpired, unrevoked and their
account enabled; `smib token create|list|revoke`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher

from smib_core.auth import Role
from smib_core.cli import main
from smib_core.errors import InvalidInput
from smib_core.store.accounts import AccountStore
from smib_core.store.tokens import TokenStore
from tests.servers import EmbeddedMongo

pytestmark = pytest.mark.integration
PASSWORD = "correct-horse-battery"


def _accounts(db: Any) -> AccountStore:
    return AccountStore(db, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def test_a_token_is_stored_hashed_and_acts_with_the_current_role(mongo_db: Any) -> None:
    _accounts(mongo_db).create("ops", "technician", PASSWORD, "test")
    tokens = TokenStore(mongo_db)
    token, info = tokens.create("ci pipeline", "ops", "test", expires_days=30)
    assert token.startswith("smib_") and len(token) > 40
    stored = mongo_db["api_tokens"].find_one({"_id": info.id})
    assert token not in str(stored) and stored["hash"] != token
    found = tokens.authenticate(token)
    assert found is not None and found[0].role is Role.TECHNICIAN and found[0].name == "ops"
    _accounts(mongo_db).set_role("ops", "analyst", "test")
    assert tokens.authenticate(token)[0].role is Role.ANALYST  # type: ignore[index]
    _accounts(mongo_db).disable("ops", "test")
    assert tokens.authenticate(token) is None
    assert tokens.authenticate(token + "x") is None
    assert tokens.authenticate("smib_" + "a" * 43) is None
    audit = [d["kind"] for d in mongo_db["audit"].find({"kind": {"$regex": "^token_"}})]
    assert audit == ["token_create"]
    assert token not in str(list(mongo_db["audit"].find()))


def test_expired_and_revoked_tokens_do_not_authenticate(mongo_db: Any) -> None:
    _accounts(mongo_db).create("ops", "manager", PASSWORD, "test")
    then = datetime.now(UTC) - timedelta(days=2)
    old, _ = TokenStore(mongo_db, clock=lambda: then).create("old", "ops", "test", 1)
    tokens = TokenStore(mongo_db)
    assert tokens.authenticate(old) is None
    live, info = tokens.create("live", "ops", "test")
    assert tokens.authenticate(live) is not None
    assert tokens.revoke(info.id, "test").state(datetime.now(UTC)) == "revoked"
    assert tokens.authenticate(live) is None
    states = {i.label: i.state(datetime.now(UTC)) for i in tokens.list()}
    assert states == {"old": "expired", "live": "revoked"}


def test_tokens_are_refused_for_unknown_or_disabled_accounts_and_bad_labels(mongo_db: Any) -> None:
    _accounts(mongo_db).create("ops", "manager", PASSWORD, "test")
    _accounts(mongo_db).create("gone", "manager", PASSWORD, "test")
    _accounts(mongo_db).disable("gone", "test")
    tokens = TokenStore(mongo_db)
    for label, account, days in (
        ("x", "nobody", None),
        ("x", "gone", None),
        ("", "ops", None),
        ("x", "ops", 0),
    ):
        with pytest.raises(InvalidInput):
            tokens.create(label, account, "test", days)


def test_smib_token_create_prints_only_the_token_then_list_and_revoke(
    embedded_mongo: EmbeddedMongo, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    name = f"tok_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", name)
    from pymongo import MongoClient

    client: Any = MongoClient(embedded_mongo.uri, tz_aware=True)
    _accounts(client[name]).create("ops", "manager", PASSWORD, "test")
    assert main(["token", "create", "nightly export", "--account", "ops", "--expires", "7"]) == 0
    token = capsys.readouterr().out
    assert token.endswith("\n") and token.count("\n") == 1 and token.startswith("smib_")
    token = token.strip()
    assert TokenStore(client[name]).authenticate(token) is not None
    assert main(["token", "list"]) == 0
    listed = capsys.readouterr().out
    assert "nightly export" in listed and "active" in listed and token not in listed
    token_id = listed.split()[0]
    assert main(["token", "revoke", token_id]) == 0
    assert "revoked" in capsys.readouterr().out
    assert TokenStore(client[name]).authenticate(token) is None
    assert main(["token", "create", "x", "--account", "nobody"]) == 1
    assert "no account named" in capsys.readouterr().err
    client.close()
