"""Roles, permissions and the sign-in policies (pure: no database)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smib_core import auth
from smib_core.auth import Permission as P
from smib_core.auth import Principal, Role
from smib_core.errors import InvalidInput, PermissionDenied

# Every role against every permission: the words, as a table.
EXPECTED: dict[Role, set[P]] = {
    Role.ADMIN: set(P),
    Role.TECHNICIAN: {
        P.VIEW_FLEET,
        P.VIEW_EVENTS,
        P.ACK_ALERTS,
        P.CONFIGURE_BOARD,
        P.RESTART_BOARD,
        P.NVS_CLEAR,
        P.OTA,
        P.MANAGE_FIRMWARE,
        P.MANAGE_REGISTRY,
        P.MANAGE_TEMPLATES,
    },
    Role.MANAGER: {P.VIEW_DASHBOARD, P.VIEW_FLEET, P.VIEW_EVENTS},
    Role.ANALYST: {P.VIEW_DASHBOARD, P.EXPORT},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(P))
def test_role_permission_table(role: Role, permission: P) -> None:
    principal = Principal("someone", role)
    assert principal.can(permission) is (permission in EXPECTED[role])
    assert auth.allowed(principal, permission) is (permission in EXPECTED[role])


def test_every_permission_has_a_label_and_only_admin_manages_accounts() -> None:
    assert set(auth.PERMISSION_LABELS) == set(P)
    holders = [r for r in Role if P.MANAGE_ACCOUNTS in auth.ROLE_PERMISSIONS[r]]
    assert holders == [Role.ADMIN]


def test_require_returns_the_principal_when_allowed() -> None:
    tech = Principal("tom", Role.TECHNICIAN)
    assert auth.require(tech, P.RESTART_BOARD) is tech


def test_require_refuses_with_a_sentence_naming_role_and_action() -> None:
    with pytest.raises(PermissionDenied, match="analyst role does not allow you to restart"):
        auth.require(Principal("ann", Role.ANALYST), P.RESTART_BOARD)


def test_require_refuses_nobody() -> None:
    with pytest.raises(PermissionDenied, match="Sign in"):
        auth.require(None, P.VIEW_DASHBOARD)
    assert not auth.allowed(None, P.VIEW_DASHBOARD)


def test_parse_role() -> None:
    assert auth.parse_role(" Technician ") is Role.TECHNICIAN
    with pytest.raises(InvalidInput, match="one of admin, technician"):
        auth.parse_role("root")


@pytest.mark.parametrize("name", ["ab", "alice", "a.b-c_d", "x" * 32, " Bob "])
def test_account_names_accepted(name: str) -> None:
    assert auth.normalize_account_name(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["a", "x" * 33, "al ice", "al@ice", "cli:root", "", None, 7])
def test_account_names_refused(name: object) -> None:
    with pytest.raises(InvalidInput, match="2 to 32 characters"):
        auth.normalize_account_name(name)


def test_password_policy() -> None:
    assert auth.check_password("ten chars!") == "ten chars!"
    for bad, why in [
        ("short", "at least 10"),
        (" " * 12, "only spaces"),
        ("x" * 300, "at most"),
        (None, "at least 10"),
    ]:
        with pytest.raises(InvalidInput, match=why) as err:
            auth.check_password(bad)
        assert str(bad) not in str(err.value) or bad is None
    with pytest.raises(InvalidInput, match="not be the account name"):
        auth.check_password("AliceAlice", "alicealice")


T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("idle", "minutes", "expired"),
    [(29.9, 30, False), (30, 30, True), (45, 30, True), (500, 0, False), (1, 0.5, True)],
)
def test_session_idle_expiry(idle: float, minutes: float, expired: bool) -> None:
    assert auth.session_expired(T0, T0 + timedelta(minutes=idle), minutes) is expired


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0), (1, 0), (2, 1), (3, 2), (4, 4), (5, 8), (6, 16), (7, 30), (50, 30)],
)
def test_throttle_delay_grows_and_is_capped(failures: int, delay: float) -> None:
    assert auth.throttle_delay(failures) == delay


def test_retry_after_counts_from_the_last_attempt() -> None:
    last = T0 - timedelta(seconds=2)
    assert auth.retry_after(5, last, T0) == pytest.approx(6.0)  # 5 attempts -> 8 s
    assert auth.retry_after(5, last, T0 + timedelta(seconds=6)) == 0.0
    assert auth.retry_after(10, T0 - auth.THROTTLE_WINDOW, T0) == 0.0  # forgotten
    assert auth.retry_after(0, None, T0) == 0.0
    assert auth.retry_after(5, T0 + timedelta(seconds=1), T0) == 8.0  # counted after "now"
    assert auth.retry_after(auth.CLIENT_FREE_ATTEMPTS, T0, T0, auth.CLIENT_FREE_ATTEMPTS) == 0.0
    assert auth.retry_after(11, T0, T0, auth.CLIENT_FREE_ATTEMPTS) == 1.0


def test_sign_in_throttled_says_how_long_to_wait() -> None:
    exc = auth.SignInThrottled(3.2)
    assert exc.retry_after_s == 4
    assert "wait 4 s" in str(exc)
    assert isinstance(exc, PermissionDenied)


def test_auth_module_is_pure() -> None:
    tree = ast.parse(Path(auth.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {
        "__future__",
        "math",
        "re",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "typing",
        "smib_core",
    }
