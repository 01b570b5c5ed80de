"""`smib user ...` against the embedded database, passwords on stdin."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from pymongo import MongoClient

from smib_core.cli import main
from smib_core.store.audit import os_actor
from tests.servers import EmbeddedMongo

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"


@pytest.fixture
def db_name(embedded_mongo: EmbeddedMongo, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"cli_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", name)
    client: MongoClient[dict[str, Any]] = MongoClient(embedded_mongo.uri, tz_aware=True)
    yield client[name]
    client.close()


def smib(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(list(argv))


def test_add_list_set_role_disable(
    db_name: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert smib(monkeypatch, "user", "list") == 0
    assert "no accounts" in capsys.readouterr().out

    assert smib(monkeypatch, "user", "add", "Alice", "--role", "admin", stdin=PASSWORD + "\n") == 0
    assert smib(monkeypatch, "user", "add", "bob", "--role", "analyst", stdin=PASSWORD) == 0
    assert capsys.readouterr().out.splitlines() == ["added alice (admin)", "added bob (analyst)"]

    assert smib(monkeypatch, "user", "set-role", "bob", "technician") == 0
    assert smib(monkeypatch, "user", "disable", "bob") == 0
    capsys.readouterr()
    assert smib(monkeypatch, "user", "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(a["name"], a["role"], a["disabled"]) for a in listed] == [
        ("alice", "admin", False),
        ("bob", "technician", True),
    ]
    assert smib(monkeypatch, "user", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["bob", "technician", "disabled"]

    stored = db_name["accounts"].find_one({"name": "alice"})
    assert stored["hash"].startswith("$argon2") and PASSWORD not in repr(stored)
    audit = list(db_name["audit"].find({}).sort("at", 1))
    assert {d["actor"] for d in audit} == {os_actor()}
    assert [d["kind"] for d in audit] == [
        "account_create",
        "account_create",
        "account_set_role",
        "account_disable",
    ]


def test_set_password_from_stdin(
    db_name: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    smib(monkeypatch, "user", "add", "alice", "--role", "manager", stdin=PASSWORD)
    assert smib(monkeypatch, "user", "set-password", "alice", stdin="another password\n") == 0
    assert "alice: password set" in capsys.readouterr().out
    from smib_core.store.accounts import AccountStore

    accounts = AccountStore(db_name)
    assert accounts.verify("alice", "another password") is not None


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["add", "alice", "--role", "admin"], "short\n", "at least 10 characters"),
        (["add", "alice", "--role", "admin"], "", "no password on stdin"),
        (["add", "a b", "--role", "admin"], PASSWORD, "2 to 32 characters"),
        (["set-role", "nobody", "admin"], "", "no account named 'nobody'"),
        (["disable", "nobody"], "", "no account named"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    db_name: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    message: str,
) -> None:
    assert smib(monkeypatch, "user", *argv, stdin=stdin) == 1
    err = capsys.readouterr().err
    assert err.startswith("smib: ") and message in err and len(err.splitlines()) == 1
    assert "short" not in err


def test_duplicate_and_last_admin_are_refused(
    db_name: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    smib(monkeypatch, "user", "add", "alice", "--role", "admin", stdin=PASSWORD)
    assert smib(monkeypatch, "user", "add", "ALICE", "--role", "analyst", stdin=PASSWORD) == 1
    assert "already exists" in capsys.readouterr().err
    assert smib(monkeypatch, "user", "disable", "alice") == 1
    assert "last active administrator" in capsys.readouterr().err
