"""Who may do what: roles, permissions and the sign-in policies. Pure: stdlib only.

Contract: `ROLE_PERMISSIONS` is the one table of what each role may do. Every action
calls `require(principal, permission)` on the server side right before it acts, whatever
the page showed: a hidden button is not a permission. The policies here (account
names, password length, idle expiry, the failed sign-in throttle) are plain functions of
their inputs so the stores, the CLI and the UI share them and tests need no database.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from smib_core.errors import InvalidInput, PermissionDenied


class Role(StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"
    MANAGER = "manager"
    ANALYST = "analyst"


class Permission(StrEnum):
    VIEW_FLEET = "view_fleet"
    VIEW_DASHBOARD = "view_dashboard"
    VIEW_EVENTS = "view_events"
    EXPORT = "export"
    ACK_ALERTS = "ack_alerts"
    CONFIGURE_BOARD = "configure_board"
    RESTART_BOARD = "restart_board"
    NVS_CLEAR = "nvs_clear"
    OTA = "ota"
    MANAGE_FIRMWARE = "manage_firmware"
    MANAGE_REGISTRY = "manage_registry"
    MANAGE_TEMPLATES = "manage_templates"
    MANAGE_ACCOUNTS = "manage_accounts"
    VIEW_AUDIT = "view_audit"

    @property
    def label(self) -> str:
        """What the permission allows, in words a refused user reads."""
        return PERMISSION_LABELS[self]


PERMISSION_LABELS: dict[Permission, str] = {
    Permission.VIEW_FLEET: "view the fleet and read boards",
    Permission.VIEW_DASHBOARD: "view dashboards",
    Permission.VIEW_EVENTS: "view machine events",
    Permission.EXPORT: "export data",
    Permission.ACK_ALERTS: "acknowledge alerts",
    Permission.CONFIGURE_BOARD: "change a board's configuration",
    Permission.RESTART_BOARD: "restart boards",
    Permission.NVS_CLEAR: "clear a board's stored data (NVS, meters)",
    Permission.OTA: "update board firmware (OTA)",
    Permission.MANAGE_FIRMWARE: "manage the firmware library",
    Permission.MANAGE_REGISTRY: "change the board registry",
    Permission.MANAGE_TEMPLATES: "change configuration templates",
    Permission.MANAGE_ACCOUNTS: "manage accounts and sign-in identities",
    Permission.VIEW_AUDIT: "view the audit trail",
}

_READ_FLEET = frozenset({Permission.VIEW_FLEET, Permission.VIEW_EVENTS})

# The one table of what each role may do.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.TECHNICIAN: _READ_FLEET
    | {
        Permission.ACK_ALERTS,
        Permission.CONFIGURE_BOARD,
        Permission.RESTART_BOARD,
        Permission.NVS_CLEAR,
        Permission.OTA,
        Permission.MANAGE_FIRMWARE,
        Permission.MANAGE_REGISTRY,
        Permission.MANAGE_TEMPLATES,
    },
    Role.MANAGER: _READ_FLEET | {Permission.VIEW_DASHBOARD},
    Role.ANALYST: frozenset({Permission.VIEW_DASHBOARD, Permission.EXPORT}),
}

Source = Literal["local", "oidc", "cli", "token"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person (or the CLI's operating-system user) and their role.

    `name` is what the audit trail records: a local account name, an OIDC e-mail, or
    `cli:<os user>`.
    """

    name: str
    role: Role
    source: Source = "local"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


def parse_role(value: object) -> Role:
    """A role from text (a form, the CLI, the database); InvalidInput otherwise."""
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role {str(value)[:32]!r}: one of {roles}") from None


def allowed(principal: Principal | None, permission: Permission) -> bool:
    """For showing or hiding controls only; actions call `require`."""
    return principal is not None and principal.can(permission)


def require(principal: Principal | None, permission: Permission) -> Principal:
    """The principal when its role allows `permission`; PermissionDenied otherwise."""
    if principal is None:
        raise PermissionDenied(f"Sign in to {permission.label}.")
    if not principal.can(permission):
        raise PermissionDenied(
            f"The {principal.role.value} role does not allow you to {permission.label}; "
            "ask an administrator if you need it."
        )
    return principal


# --- account names and passwords -------------------------------------------------------

_NAME_RE = re.compile(r"\A[a-z0-9._-]{2,32}\Z")
MIN_PASSWORD_LEN = 10
MAX_PASSWORD_LEN = 256


def normalize_account_name(value: object) -> str:
    """`strip().lower()` of 2..32 characters from a-z 0-9 . _ -; InvalidInput otherwise."""
    name = value.strip().lower() if isinstance(value, str) else ""
    if not _NAME_RE.match(name):
        raise InvalidInput(
            "an account name is 2 to 32 characters: lowercase letters, digits, '.', '_', '-'"
        )
    return name


def check_password(password: object, name: str | None = None) -> str:
    """The password when the policy accepts it; InvalidInput (never echoing it) otherwise."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LEN:
        raise InvalidInput(f"a password must be at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise InvalidInput(f"a password must be at most {MAX_PASSWORD_LEN} characters")
    if not password.strip():
        raise InvalidInput("a password cannot be only spaces")
    if name is not None and password.strip().lower() == name.strip().lower():
        raise InvalidInput("a password must not be the account name")
    return password


# --- sessions and the failed sign-in throttle -----------------------------------------


def session_expired(last_activity: datetime, now: datetime, idle_min: float) -> bool:
    """True when the session was idle for `idle_min` minutes or more (0 or less: never)."""
    if idle_min <= 0:
        return False
    return now - last_activity >= timedelta(minutes=idle_min)


THROTTLE_WINDOW = timedelta(minutes=15)
THROTTLE_FREE_FAILURES = 1
CLIENT_FREE_ATTEMPTS = 10  # one address may be a whole floor behind a proxy
THROTTLE_MAX_DELAY_S = 30.0


def throttle_delay(recent_attempts: int, free: int = THROTTLE_FREE_FAILURES) -> float:
    """Seconds to wait after the last attempt: 0 for the first `free` + 1, then 1, 2, 4,
    8, 16, 30, 30, ... (with `free` = 1: 0, 0, 1, 2, 4, ...)."""
    if recent_attempts <= free:
        return 0.0
    exponent = min(recent_attempts - free - 1, 16)
    return min(THROTTLE_MAX_DELAY_S, float(2**exponent))


def retry_after(
    attempts: int, last_at: datetime | None, now: datetime, free: int = THROTTLE_FREE_FAILURES
) -> float:
    """Seconds before the next sign-in attempt may be checked (0: go ahead).

    `attempts` are the attempts counted for a name or a client address (each counted
    before its password was checked; a success of that name resets its count), the
    last at `last_at`. A count whose last attempt is `THROTTLE_WINDOW` old is forgotten.
    """
    if attempts <= 0 or last_at is None or now - last_at >= THROTTLE_WINDOW:
        return 0.0
    waited = max(0.0, (now - last_at).total_seconds())  # a parallel attempt may be later
    return max(0.0, throttle_delay(attempts, free) - waited)


class SignInThrottled(PermissionDenied):
    """Too many recent sign-in attempts for one name or from one client address: the
    attempt was not checked."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(f"Too many sign-in attempts: wait {self.retry_after_s} s and try again.")
