"""The sign-in gate of app.py and the navigation per role (AppTest, embedded database)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.ui import navigation, resources

pytestmark = pytest.mark.integration

APP = str(Path(__file__).resolve().parents[1] / "pages" / "console.py")
PASSWORD = "correct-horse-battery"


@pytest.fixture
def app(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings())
    return AppTest.from_file(APP, default_timeout=30)


def _accounts(mongo_db: Any) -> AccountStore:
    return AccountStore(mongo_db, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def _texts(app: AppTest) -> str:
    parts = [e.value for e in (*app.title, *app.markdown, *app.info, *app.error, *app.caption)]
    return "\n".join(str(p) for p in parts)


def test_first_start_offers_only_the_first_administrator(app: AppTest) -> None:
    app.run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Create the first administrator"]
    assert "principal" not in app.session_state
    labels = [b.label for b in app.button]
    assert labels == ["Create the administrator"]


def test_first_administrator_is_created_and_signed_in(app: AppTest, mongo_db: Any) -> None:
    app.run()
    app.text_input[0].input("root")
    app.text_input[1].input(PASSWORD)
    app.text_input[2].input(PASSWORD)
    app.button[0].click().run()
    assert not app.exception
    assert app.session_state["principal"] == Principal("root", Role.ADMIN, "local")
    assert AccountStore(mongo_db).count() == 1


def test_unauthenticated_never_reaches_a_page(app: AppTest, mongo_db: Any) -> None:
    _accounts(mongo_db).create("tina", Role.TECHNICIAN, PASSWORD, actor="test")
    app.run()
    assert [t.value for t in app.title] == ["Sign in"]
    assert "Bus status" not in _texts(app) and not app.dataframe and not app.metric


def test_wrong_password_fails_is_logged_and_audited(
    app: AppTest, mongo_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _accounts(mongo_db).create("tina", Role.TECHNICIAN, PASSWORD, actor="test")
    app.run()
    app.text_input[0].input("tina")
    app.text_input[1].input("not-the-password")
    with caplog.at_level(logging.INFO):
        app.button[0].click().run()
    assert "Wrong account name or password" in app.error[0].value
    assert "principal" not in app.session_state
    assert any("tina" in r.getMessage() for r in caplog.records)
    assert "not-the-password" not in caplog.text
    failed = list(mongo_db["audit"].find({"kind": "sign_in_failed"}))
    assert len(failed) == 1 and "not-the-password" not in str(failed[0])


def test_sign_in_opens_the_role_s_home(app: AppTest, mongo_db: Any) -> None:
    _accounts(mongo_db).create("mona", Role.MANAGER, PASSWORD, actor="test")
    app.run()
    app.text_input[0].input("mona")
    app.text_input[1].input(PASSWORD)
    app.button[0].click().run()
    assert not app.exception
    assert app.session_state["principal"] == Principal("mona", Role.MANAGER, "local")
    assert [t.value for t in app.title] == ["SMIB Console"]
    assert [b.label for b in app.sidebar.button] == ["Sign out"]


EXPECTED = {
    Role.ADMIN: {
        "Home",
        "Fleet",
        "Cabinet",
        "Registry",
        "Batch work",
        "Bus status",
        "Dashboard",
        "Export",
        "Events",
        "Alerts",
        "Firmware library",
        "Rollouts",
        "Accounts",
        "Audit trail",
    },
    Role.TECHNICIAN: {
        "Home",
        "Fleet",
        "Cabinet",
        "Registry",
        "Batch work",
        "Bus status",
        "Events",
        "Alerts",
        "Firmware library",
        "Rollouts",
    },
    Role.MANAGER: {
        "Home",
        "Fleet",
        "Cabinet",
        "Registry",
        "Bus status",
        "Dashboard",
        "Events",
        "Alerts",
    },
    Role.ANALYST: {"Home", "Dashboard", "Export"},
}


@pytest.mark.parametrize("role", list(Role))
def test_navigation_shows_only_what_a_role_may_use(
    role: Role, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(navigation.Path, "exists", lambda _self: True)
    titles = {spec.title for spec in navigation.visible_pages(Principal("x", role))}
    assert titles == EXPECTED[role]


AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "s" * 32,
        "client_id": "console",
        "client_secret": "x" * 16,
        "server_metadata_url": "https://idp.example/.well-known/openid-configuration",
    }
}


def test_identity_provider_offered_when_configured(app: AppTest, mongo_db: Any) -> None:
    _accounts(mongo_db).create("tina", Role.TECHNICIAN, PASSWORD, actor="test")
    app.secrets.update(AUTH)
    app.user = {"is_logged_in": False}
    app.run()
    assert not app.exception
    labels = [b.label for b in app.button]
    assert "Sign in" in labels and "Sign in with your organisation" in labels


def test_mapped_identity_gets_its_role_unmapped_is_refused(app: AppTest, mongo_db: Any) -> None:
    accounts = _accounts(mongo_db)
    accounts.create("root", Role.ADMIN, PASSWORD, actor="test")
    accounts.map_identity("mona@casino.example", Role.MANAGER, actor="root")
    app.secrets.update(AUTH)
    app.user = {"is_logged_in": True, "email": "Mona@Casino.example", "email_verified": True}
    app.run()
    assert not app.exception
    assert app.session_state["principal"] == Principal("mona@casino.example", Role.MANAGER, "oidc")
    session = mongo_db["sessions"].find_one({"name": "mona@casino.example"})
    assert session is not None and session["source"] == "oidc" and session["ended_at"] is None

    other = AppTest.from_file(APP, default_timeout=30)
    other.secrets.update(AUTH)
    other.user = {"is_logged_in": True, "email": "eve@elsewhere.example", "email_verified": True}
    other.run()
    assert "principal" not in other.session_state
    assert "ask an administrator" in other.warning[0].value


def test_a_session_ended_elsewhere_signs_this_tab_out(app: AppTest, mongo_db: Any) -> None:
    from smib_core.store.sessions import SessionStore

    _accounts(mongo_db).create("tina", Role.TECHNICIAN, PASSWORD, actor="test")
    app.run()
    app.text_input[0].input("tina")
    app.text_input[1].input(PASSWORD)
    app.button[0].click().run()
    assert app.session_state["principal"] == Principal("tina", Role.TECHNICIAN, "local")
    public_id = app.session_state["server_session"]
    assert mongo_db["sessions"].find_one({"_id": public_id})["ended_at"] is None
    SessionStore(mongo_db).end(public_id, "signed out")  # another tab signed out
    app.run()
    assert "principal" not in app.session_state
    assert [t.value for t in app.title] == ["Sign in"]
    assert "signed out" in app.info[0].value
