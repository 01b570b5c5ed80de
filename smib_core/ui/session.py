"""The sign-in gate and the session: who is using this browser tab, and for how long.

Contract: `current_principal(db, settings)` runs first on every rerun (app.py). It
returns the signed-in `Principal`, refreshed from the database each time (a disabled
account or a changed role takes effect on the next click), or renders a form and
returns None: with no account at all, only "Create the first administrator"; otherwise
the sign-in form, plus identity-provider buttons when `.streamlit/secrets.toml` has an
`[auth]` section. A session idle for `settings.session_idle_min` minutes ends. A
sign-in also starts a server-side session (`ui.persistent`): a reload or a new tab
restores it from its cookie, and every check (the gate, live sections) ends this tab's
sign-in once the session was ended elsewhere. Pages
read the principal from `st.session_state["principal"]` through `page_principal`,
which checks the page's permission; every action re-checks with `auth.require`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ParamSpec, cast

import streamlit as st
from pymongo.database import Database
from streamlit.runtime.scriptrunner import get_script_run_ctx

from smib_core.auth import (
    Permission,
    Principal,
    SignInThrottled,
    require,
    session_expired,
)
from smib_core.errors import PermissionDenied, SmibError
from smib_core.settings import Settings
from smib_core.store.accounts import AccountStore
from smib_core.store.audit import utc_now
from smib_core.ui import persistent, resources
from smib_core.ui.plain import escape_markdown
from smib_core.ui.stores import accounts_for, audit_for

PRINCIPAL_KEY = "principal"
LAST_ACTIVITY_KEY = "last_activity"
_NOTICE_KEY = "session_notice"


def current_principal(db: Database[Any], settings: Settings) -> Principal | None:
    """The signed-in principal, or None after rendering the form to sign in."""
    accounts = accounts_for(db)
    now = utc_now()
    persistent.pending_scripts()
    if not isinstance(st.session_state.get(PRINCIPAL_KEY), Principal):
        restored = persistent.restore(settings, resources.account_check())
        if restored is not None:  # a reload or a new tab of a live server session
            _start(restored, now)
    principal = _session_principal(accounts, settings, now)
    if principal is not None:
        return principal
    if not accounts.has_any():
        _first_admin_form(accounts)
        return None
    if _oidc_providers() and st.user.get("is_logged_in") is True:
        return _oidc_principal(accounts, now)
    notice = st.session_state.pop(_NOTICE_KEY, None)
    if notice:
        st.info(notice)
    _sign_in_form(accounts, now)
    _oidc_buttons()
    return None


def page_principal(permission: Permission) -> Principal:
    """For pages: the session's principal, checked again (idle, disabled, role changed),
    when it may open this page; else stop."""
    try:
        return require(checked_principal(), permission)
    except PermissionDenied as exc:
        st.error(escape_markdown(str(exc)))
        st.stop()
        raise  # st.stop() raises; this line keeps type checkers honest


def checked_principal() -> Principal | None:
    """The session's principal as it stands now, without counting this run as activity:
    None after ending the session when it was idle too long or its account was disabled
    (the next full run shows the sign-in form and says why). A changed role is taken."""
    principal = st.session_state.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        return None
    current = _still_valid(principal, resources.get_settings(), utc_now())
    if current is not None:
        st.session_state[PRINCIPAL_KEY] = current
    return current


P = ParamSpec("P")


def live_section(run_every: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """`st.fragment(run_every=...)` for every auto-refreshing section: each run checks
    the session first (`checked_principal`). A section whose session ended, or whose
    principal's role changed, draws and sends nothing: the whole app reruns instead, so
    the sign-in gate (or the navigation of the new role) takes over. An automatic
    refresh is not activity: it never keeps an idle session alive."""

    def wrap(body: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(body)
        def checked(*args: P.args, **kwargs: P.kwargs) -> None:
            before = st.session_state.get(PRINCIPAL_KEY)
            current = checked_principal()
            if current is None or current != before:
                if _in_fragment_run():
                    st.rerun()
                st.stop()
            body(*args, **kwargs)

        return cast(Callable[P, None], st.fragment(run_every=run_every)(checked))

    return wrap


def _in_fragment_run() -> bool:
    """True when only fragments rerun (an automatic refresh or a click inside one)."""
    ctx = get_script_run_ctx()
    return bool(ctx is not None and ctx.fragment_ids_this_run)


def sign_out(db: Database[Any], reason: str = "signed out") -> None:
    """End this tab's session (and the identity-provider session for OIDC)."""
    principal = st.session_state.pop(PRINCIPAL_KEY, None)
    st.session_state.pop(LAST_ACTIVITY_KEY, None)
    persistent.end(reason)
    if isinstance(principal, Principal):
        audit_for(db).record(principal.name, "sign_out", [], {"reason": reason}, "ok")
        if principal.source == "oidc":
            st.logout()
            return
    st.rerun()


def sign_out_button(db: Database[Any], key: str = "sign_out") -> None:
    if st.button("Sign out", key=key, icon=":material/logout:"):
        sign_out(db)


# --- the pieces of the gate -------------------------------------------------------------


def _session_principal(
    accounts: AccountStore, settings: Settings, now: datetime
) -> Principal | None:
    principal = st.session_state.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        return None
    current = _still_valid(principal, settings, now)
    if current is not None:
        _start(current, now)
    return current


def _still_valid(principal: Principal, settings: Settings, now: datetime) -> Principal | None:
    """`principal` with its current role, or None after ending the session (idle for too
    long, account disabled or its role removed)."""
    last = st.session_state.get(LAST_ACTIVITY_KEY, now)
    if session_expired(last, now, settings.session_idle_min):
        minutes = f"{settings.session_idle_min:g}"
        notice = f"Your session ended after {minutes} minutes without activity: sign in again."
        _end(principal, f"idle for {minutes} min", notice)
        return None
    refreshed = resources.account_check()(principal)
    if refreshed is None:
        _end(
            principal,
            "account disabled or role removed",
            "Your account was disabled or its role removed: ask an administrator.",
        )
    elif not persistent.live(settings, resources.account_check()):
        notice = "You were signed out (in another tab, or by an administrator): sign in again."
        _end(principal, "session ended elsewhere", notice, session_reason=None)
        return None
    return refreshed


def _start(principal: Principal, now: datetime) -> None:
    st.session_state[PRINCIPAL_KEY] = principal
    st.session_state[LAST_ACTIVITY_KEY] = now


def _end(principal: Principal, reason: str, notice: str, session_reason: str | None = "") -> None:
    """End this tab's sign-in; the server session too unless `session_reason` is None
    (it ended already)."""
    if session_reason is None:
        st.session_state.pop(persistent.SESSION_KEY, None)
    else:
        persistent.end(session_reason or reason)
    st.session_state.pop(PRINCIPAL_KEY, None)
    st.session_state.pop(LAST_ACTIVITY_KEY, None)
    st.session_state[_NOTICE_KEY] = notice
    resources.get_audit().record(principal.name, "sign_out", [], {"reason": reason}, "ok")
    if principal.source == "oidc":
        st.logout()


def _first_admin_form(accounts: AccountStore) -> None:
    st.title("Create the first administrator")
    st.write(
        "No account exists yet. The account you create now administers SMIB Console; "
        "there is no default password."
    )
    with st.form("first_admin"):
        name = st.text_input("Account name", help="2 to 32 characters: a-z 0-9 . _ -")
        password = st.text_input("Password (at least 10 characters)", type="password")
        again = st.text_input("Repeat the password", type="password")
        submitted = st.form_submit_button("Create the administrator", type="primary")
    if not submitted:
        return
    if password != again:
        st.error("The two passwords differ.")
        return
    try:
        principal = accounts.create_first_admin(name, password)
    except SmibError as exc:
        st.error(escape_markdown(str(exc)))
        return
    _start(principal, utc_now())
    persistent.begin(principal)
    st.rerun()


def _sign_in_form(accounts: AccountStore, now: datetime) -> None:
    st.title("Sign in")
    with st.form("sign_in"):
        name = st.text_input("Account name", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    try:
        principal = accounts.verify(name, password, client_address())
    except SignInThrottled as exc:
        st.error(escape_markdown(str(exc)))
        return
    if principal is None:
        st.error("Wrong account name or password, or the account is disabled.")
        return
    _start(principal, now)
    persistent.begin(principal)
    st.rerun()


def client_address() -> str | None:
    """The browser's address as Streamlit saw the connection (None on loopback; behind
    a reverse proxy on the same host, the address the proxy forwarded)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None  # AppTest hands a mock


def _oidc_providers() -> list[str | None]:
    """Providers configured in secrets.toml `[auth]` (None: the default provider)."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:
        return []
    if not isinstance(section, Mapping):
        return []
    named = [str(k) for k, v in section.items() if isinstance(v, Mapping)]
    default: list[str | None] = [None] if "client_id" in section or not named else []
    return default + list(named)


def _oidc_buttons() -> None:
    for provider in _oidc_providers():
        label = (
            "Sign in with your organisation" if provider is None else (f"Sign in with {provider}")
        )
        if st.button(label, key=f"oidc_{provider or 'default'}"):
            if provider is None:
                st.login()
            else:
                st.login(provider)


def _oidc_principal(accounts: AccountStore, now: datetime) -> Principal | None:
    identity = str(st.user.get("email") or st.user.get("sub") or "")
    if st.user.get("email_verified") is False:
        identity = ""
    role = accounts.role_for_identity(identity)
    if role is None:
        st.title("Not allowed yet")
        shown = escape_markdown(identity) if identity else "this identity (no verified e-mail)"
        st.warning(
            f"You are signed in as {shown}, but no role is given to it: "
            "ask an administrator to map it to a role, then reload."
        )
        if st.button("Sign out", key="oidc_unmapped_sign_out"):
            st.logout()
        return None
    principal = Principal(identity.strip().lower(), role, "oidc")
    accounts.audit.record(principal.name, "sign_in", [], {"source": "oidc"}, "ok")
    _start(principal, now)
    persistent.begin(principal)
    return principal
