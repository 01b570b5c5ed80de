"""Accounts (admin): built-in accounts and the roles of identity-provider sign-ins."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from smib_core.auth import Permission, Role, require
from smib_core.errors import SmibError
from smib_core.services.local_time import local_times
from smib_core.store.accounts import AccountStore
from smib_core.ui.access_view import sessions_tab, tokens_tab
from smib_core.ui.plain import escape_markdown
from smib_core.ui.resources import get_db, get_settings, time_column, time_zone
from smib_core.ui.session import PRINCIPAL_KEY, page_principal

ROLES = [r.value for r in Role]
_FLASH = "accounts_flash"

page_principal(Permission.MANAGE_ACCOUNTS)
accounts = AccountStore(get_db())


def act(change: Callable[[str], object], done: str) -> None:
    """Re-check the permission, make the change as the signed-in admin, then reload."""
    try:
        admin = require(st.session_state.get(PRINCIPAL_KEY), Permission.MANAGE_ACCOUNTS)
        change(admin.name)
    except SmibError as exc:
        st.error(escape_markdown(str(exc)))
        return
    st.session_state[_FLASH] = done
    st.rerun()


st.title("Accounts")
if flash := st.session_state.pop(_FLASH, None):
    st.success(escape_markdown(flash))

rows = accounts.list()
table = pd.DataFrame(
    [
        {
            "name": a.name,
            "role": a.role.value,
            "status": "disabled" if a.disabled else "active",
            "last sign-in": a.last_sign_in_at,
            "created": a.created_at,
            "created by": a.created_by,
        }
        for a in rows
    ],
    columns=["name", "role", "status", "last sign-in", "created", "created by"],
)
table = local_times(table, time_zone(), "last sign-in", "created")
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={c: time_column(c, table[c]) for c in ("last sign-in", "created")},
)
names = [a.name for a in rows]

add, role, password, status, identities, sessions, tokens = st.tabs(
    [
        "Add",
        "Change role",
        "Reset password",
        "Disable or enable",
        "Identity provider",
        "Sessions",
        "API tokens",
    ]
)
with add, st.form("add_account", clear_on_submit=True):
    new_name = st.text_input("Account name", help="2 to 32 characters: a-z 0-9 . _ -")
    new_role = st.selectbox("Role", ROLES, index=ROLES.index("analyst"))
    new_pw = st.text_input("Password (at least 10 characters)", type="password")
    new_pw2 = st.text_input("Repeat the password", type="password")
    if st.form_submit_button("Add the account", type="primary"):
        if new_pw != new_pw2:
            st.error("The two passwords differ.")
        else:
            act(
                lambda actor: accounts.create(new_name, new_role, new_pw, actor),
                f"{new_name.strip().lower()} added as {new_role}.",
            )

with role, st.form("set_role"):
    who = st.selectbox("Account", names, key="role_account")
    to_role = st.selectbox("New role", ROLES)
    if st.form_submit_button("Change the role") and who:
        act(lambda actor: accounts.set_role(who, to_role, actor), f"{who} is now {to_role}.")

with password, st.form("set_password", clear_on_submit=True):
    who_pw = st.selectbox("Account", names, key="password_account")
    pw = st.text_input("New password (at least 10 characters)", type="password")
    pw2 = st.text_input("Repeat the new password", type="password")
    if st.form_submit_button("Set the password") and who_pw:
        if pw != pw2:
            st.error("The two passwords differ.")
        else:
            act(lambda actor: accounts.set_password(who_pw, pw, actor), f"{who_pw}: password set.")

with status:
    who_st = st.selectbox("Account", names, key="status_account")
    left, right = st.columns(2)
    if left.button("Disable", disabled=not who_st) and who_st:
        act(lambda actor: accounts.disable(who_st, actor), f"{who_st} disabled.")
    if right.button("Enable", disabled=not who_st) and who_st:
        act(lambda actor: accounts.enable(who_st, actor), f"{who_st} enabled.")

with identities:
    st.caption(
        "People who sign in with the identity provider ([auth] in secrets.toml) get the "
        "role mapped to their e-mail here; unmapped identities are refused."
    )
    mapped = accounts.list_identities()
    identity_table = pd.DataFrame(
        [
            {
                "identity": m.identity,
                "role": m.role.value,
                "mapped by": m.mapped_by,
                "mapped at": m.mapped_at,
            }
            for m in mapped
        ],
        columns=["identity", "role", "mapped by", "mapped at"],
    )
    identity_table = local_times(identity_table, time_zone(), "mapped at")
    st.dataframe(
        identity_table,
        hide_index=True,
        width="stretch",
        column_config={"mapped at": time_column("mapped at", identity_table["mapped at"])},
    )
    with st.form("map_identity", clear_on_submit=True):
        identity = st.text_input("E-mail (or subject) from the identity provider")
        id_role = st.selectbox("Role", ROLES, index=ROLES.index("analyst"), key="identity_role")
        if st.form_submit_button("Map the identity"):
            act(
                lambda actor: accounts.map_identity(identity, id_role, actor),
                f"{identity.strip().lower()} is mapped to {id_role}.",
            )
    gone = st.selectbox("Remove a mapping", [m.identity for m in mapped], index=None) or ""
    if st.button("Remove the mapping", disabled=not gone):
        act(lambda actor: accounts.unmap_identity(gone, actor), f"{gone} has no role any more.")

with sessions:
    sessions_tab(get_db(), get_settings().session_idle_min, act)

with tokens:
    tokens_tab(get_db(), names, act)
