"""The Accounts page's Sessions and API tokens tabs (administrators only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from pymongo.database import Database

from smib_core.services.local_time import local_times
from smib_core.store.documents import utc_now
from smib_core.store.sessions import SessionStore
from smib_core.store.tokens import TokenStore
from smib_core.ui.resources import time_column, time_zone
from smib_core.ui.stores import audit_for

Act = Callable[[Callable[[str], object], str], None]
_NEW_TOKEN = "accounts_new_token"


def _times_table(table: pd.DataFrame, times: tuple[str, ...]) -> None:
    """The table with its times in the casino's zone, the zone named in the headers."""
    table = local_times(table, time_zone(), *times)
    config = {c: time_column(c, table[c]) for c in times}
    st.dataframe(table, hide_index=True, width="stretch", column_config=config)


def sessions_tab(db: Database[Any], idle_min: float, act: Act) -> None:
    st.caption(
        "Signed-in browser sessions (a reload or a new tab keeps one). Ending a session "
        "signs that person out in every tab at their next click."
    )
    store = SessionStore(db, audit_for(db))
    active = store.active(idle_min)
    table = pd.DataFrame(
        [
            {
                "session": s.public_id,
                "account": s.name,
                "via": s.source,
                "started": s.started_at,
                "last active": s.last_seen_at,
            }
            for s in active
        ],
        columns=["session", "account", "via", "started", "last active"],
    )
    _times_table(table, ("started", "last active"))
    labels = {
        s.public_id: f"{s.name} · {s.public_id} · since {s.started_at:%Y-%m-%d %H:%M}"
        for s in active
    }
    chosen = st.selectbox("Session", list(labels), format_func=lambda k: labels[k], index=None)
    if st.button("End the session", disabled=chosen is None) and chosen:
        act(lambda actor: store.end_by_admin(chosen, actor), "The session was ended.")


def tokens_tab(db: Database[Any], names: list[str], act: Act) -> None:
    st.caption(
        "API tokens let programs call /api/v1 with an account's role "
        "(`Authorization: Bearer …`). A token is shown once, when it is made."
    )
    store = TokenStore(db, audit_for(db))
    if token := st.session_state.pop(_NEW_TOKEN, None):
        st.success("Copy the token now: it is not shown again.")
        st.code(token, language=None)
    now = utc_now()
    tokens = store.list()
    table = pd.DataFrame(
        [
            {
                "id": t.id,
                "label": t.label,
                "account": t.account,
                "state": t.state(now),
                "expires": t.expires_at,
                "last used": t.last_used_at,
                "created by": t.created_by,
            }
            for t in tokens
        ],
        columns=["id", "label", "account", "state", "expires", "last used", "created by"],
    )
    _times_table(table, ("expires", "last used"))
    with st.form("create_token", clear_on_submit=True):
        label = st.text_input("Label", help="what the token is for, e.g. 'nightly export'")
        account = st.selectbox("Acts as the account", names, key="token_account")
        days = st.number_input("Expires after (days, 0: never)", 0, 3650, 90)
        if st.form_submit_button("Create the token") and account:

            def create(actor: str) -> None:
                token, _ = store.create(label, account, actor, float(days) or None)
                st.session_state[_NEW_TOKEN] = token

            act(create, f"Token for {account} created.")
    live = {t.id: f"{t.label} · {t.account} · {t.id}" for t in tokens if t.state(now) == "active"}
    gone = st.selectbox("Revoke a token", list(live), format_func=lambda k: live[k], index=None)
    if st.button("Revoke", disabled=gone is None) and gone:
        act(lambda actor: store.revoke(gone, actor), "The token was revoked.")
