"""The Accounts page's Sessions and API tokens tabs (AppTest, embedded database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.sessions import SessionStore
from smib_core.store.tokens import TokenStore
from smib_core.ui import resources

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "accounts.py")
ADMIN = Principal("root", Role.ADMIN)


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings())
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    accounts = AccountStore(mongo_db, hasher=hasher)
    for name, role in (("root", "admin"), ("ana", "analyst")):
        accounts.create(name, role, "correct-horse-battery", "test")
    app = AppTest.from_file(PAGE, default_timeout=30)
    app.session_state["principal"] = ADMIN
    return app.run()


def test_an_administrator_lists_and_ends_sessions(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = SessionStore(mongo_db)
    ana, _ = sessions.start(Principal("ana", Role.ANALYST))
    app = page(mongo_db, monkeypatch)
    assert not app.exception
    table = next(d.value for d in app.dataframe if "session" in d.value.columns)
    assert table["account"].tolist() == ["ana"]
    box = next(s for s in app.selectbox if s.label == "Session")
    box.set_value(ana).run()
    next(b for b in app.button if b.label == "End the session").click().run()
    assert not app.exception
    assert "The session was ended." in [s.value for s in app.success]
    assert sessions.principal(ana, 30, lambda p: p) is None
    record = mongo_db["audit"].find_one({"kind": "session_end"})
    assert record["actor"] == "root" and record["detail"]["reason"] == "ended by root"


def test_an_administrator_creates_a_token_shown_once_and_revokes_it(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch)
    next(t for t in app.text_input if t.label == "Label").input("nightly export")
    next(s for s in app.selectbox if s.label == "Acts as the account").set_value("ana")
    next(b for b in app.button if b.label == "Create the token").click().run()
    assert not app.exception
    shown = [c.value for c in app.code]
    assert len(shown) == 1 and shown[0].startswith("smib_")
    tokens = TokenStore(mongo_db)
    found = tokens.authenticate(shown[0])
    assert found is not None and found[0].name == "ana" and found[0].role is Role.ANALYST
    app.run()
    assert [c.value for c in app.code] == []  # shown once
    box = next(s for s in app.selectbox if s.label == "Revoke a token")
    box.set_value(found[1].id).run()
    next(b for b in app.button if b.label == "Revoke").click().run()
    assert not app.exception
    assert tokens.authenticate(shown[0]) is None
