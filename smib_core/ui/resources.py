"""Process-wide resources, reached from Streamlit only through `st.cache_resource`.

One settings object, one database handle and one device bus per server process; every
page and fragment calls these functions, so no page ever builds its own client.
"""

from __future__ import annotations

import streamlit as st
from pymongo.database import Database

from smib_core.auth import Principal
from smib_core.bus import DeviceBus
from smib_core.embedded import broker_uri
from smib_core.services.actions import BoardActions
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.db import connect
from smib_core.store.registry import Registry


@st.cache_resource
def get_settings() -> Settings:
    return Settings.from_env()


@st.cache_resource
def get_db() -> Database:  # type: ignore[type-arg]
    return connect(get_settings())


@st.cache_resource
def get_bus() -> DeviceBus:
    settings = get_settings()
    bus = DeviceBus(broker_uri(settings), settings.topics, client_id_prefix="smib-console")
    bus.start()
    return bus


def board_actions(principal: Principal | None) -> BoardActions:
    """The guarded, audited way a page acts on boards (checks the role on every call)."""
    return BoardActions(get_bus(), get_audit(), principal)


@st.cache_resource
def get_audit() -> AuditTrail:
    return AuditTrail(get_db())


@st.cache_resource
def get_registry() -> Registry:
    return Registry(get_db(), get_audit())
