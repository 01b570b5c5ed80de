"""Stores built once per database handle, not on every rerun (their constructors create
indexes: round trips the sign-in gate would otherwise pay on each click).

Keyed by the handle (one per process in production), so a store never outlives the
client it was built on: page tests hand each test its own database.
"""

from __future__ import annotations

import streamlit as st
from pymongo.database import Database

from smib_core.store.accounts import AccountStore
from smib_core.store.audit import AuditTrail


def database_key(db: Database) -> tuple[int, str]:  # type: ignore[type-arg]
    return id(db.client), db.name


@st.cache_resource(hash_funcs={Database: database_key})
def audit_for(db: Database) -> AuditTrail:  # type: ignore[type-arg]
    return AuditTrail(db)


@st.cache_resource(hash_funcs={Database: database_key})
def accounts_for(db: Database) -> AccountStore:  # type: ignore[type-arg]
    return AccountStore(db, audit_for(db))
