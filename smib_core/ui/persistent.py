"""The tab's link to its server-side session (`store.sessions`, `web.sessions`).

`begin(principal)` after a sign-in: starts the session, keeps its public id in the tab
and queues the script that trades the one-time code for the HttpOnly cookie.
`restore(...)` on a tab with nobody signed in: the cookie the browser sent with its
websocket names a live session -> that person is signed in (a reload, a new tab).
`live(...)` on every rerun: the session still stands (not ended in another tab or by an
administrator, not idle, account enabled, role kept). `end(reason)` ends it and queues
the script that clears the cookie. `pending_scripts()` renders what is queued.
"""

from __future__ import annotations

import json

import streamlit as st
from pymongo.database import Database

from smib_core.auth import Principal
from smib_core.settings import Settings
from smib_core.store.sessions import Refresh, SessionStore
from smib_core.ui import resources
from smib_core.ui.stores import audit_for, database_key
from smib_core.web.sessions import COOKIE

SESSION_KEY = "server_session"
_SCRIPT_KEY = "server_session_script"


def _store() -> SessionStore:
    return _sessions_for(resources.get_db())  # looked up at call time (page tests replace it)


@st.cache_resource(hash_funcs={Database: database_key})
def _sessions_for(db: Database) -> SessionStore:  # type: ignore[type-arg]
    """Built once per database handle (its constructor makes indexes)."""
    return SessionStore(db, audit_for(db))


def _post(path: str, body: dict[str, str] | None = None) -> str:
    payload = json.dumps(body or {})
    return (
        f"<script>fetch({json.dumps(path)}, {{method: 'POST', credentials: 'same-origin', "
        "headers: {'Content-Type': 'application/json', 'X-SMIB-CSRF': '1'}, "
        f"body: {json.dumps(payload)}}});</script>"
    )


def begin(principal: Principal) -> None:
    public_id, code = _store().start(principal)
    st.session_state[SESSION_KEY] = public_id
    st.session_state[_SCRIPT_KEY] = _post("/session/claim", {"code": code})


def restore(settings: Settings, refresh: Refresh) -> Principal | None:
    secret = st.context.cookies.get(COOKIE)
    if not isinstance(secret, str) or not secret:  # AppTest has no real cookies
        return None
    found = _store().by_cookie(secret, settings.session_idle_min, refresh)
    if found is None:
        return None
    st.session_state[SESSION_KEY] = found[0]
    return found[1]


def live(settings: Settings, refresh: Refresh) -> bool:
    public_id = st.session_state.get(SESSION_KEY)
    if public_id is None:
        return True  # a tab signed in before sessions were kept (or in a page test)
    return _store().principal(public_id, settings.session_idle_min, refresh) is not None


def end(reason: str) -> None:
    public_id = st.session_state.pop(SESSION_KEY, None)
    if public_id is not None:
        _store().end(public_id, reason)
    st.session_state[_SCRIPT_KEY] = _post("/session/end")


def pending_scripts() -> None:
    script = st.session_state.pop(_SCRIPT_KEY, None)
    if script:
        st.html(script, unsafe_allow_javascript=True)
