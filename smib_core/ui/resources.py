"""Process-wide resources, reached from Streamlit only through `st.cache_resource`.

One settings object, one database handle and one device bus per server process; every
page and fragment calls these functions, so no page ever builds its own client.

The web app runs no background service: presence, the collector, the event recorder,
the rollout runner and the firmware server run in a worker process
(`services.worker.Worker`: `smib worker`, or the one `smib serve` starts). Pages read
what those services wrote in the database (`services.background` says which runs where).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from pymongo.database import Database

from smib_core.auth import Principal
from smib_core.bus import DeviceBus
from smib_core.services.actions import BoardActions
from smib_core.services.export_jobs import ExportJobs
from smib_core.services.local_time import column_label
from smib_core.settings import Settings
from smib_core.store.alerts import AlertStore
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import BatchStore
from smib_core.store.events import EventStore
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from smib_core.ui.stores import accounts_for, audit_for, database_key
from smib_core.web.context import process_context


# The server process's settings, database and bus: the same objects the HTTP API uses.
@st.cache_resource
def get_settings() -> Settings:
    return process_context().settings


def time_zone() -> str:
    """The casino's zone (SMIB_TIMEZONE): every time a page shows is in it, named
    (`smib_core.services.local_time`)."""
    return get_settings().timezone


def time_column(
    label: str, times: pd.Series, fmt: str = "YYYY-MM-DD HH:mm:ss", help: str | None = None
) -> Any:
    """A table's time column, its header naming the zone (`Raised (EDT, America/New_York)`);
    the column's values are converted with `local_times` first."""
    header = column_label(label, time_zone(), times)
    return st.column_config.DatetimeColumn(header, format=fmt, help=help)


@st.cache_resource
def get_db() -> Database:  # type: ignore[type-arg]
    return process_context().db


@st.cache_resource
def get_bus() -> DeviceBus:
    return process_context().bus


def board_actions(principal: Principal | None) -> BoardActions:
    """The guarded, audited way a page acts on boards (checks the account and its role
    in the database on every call)."""
    return BoardActions(get_bus(), get_audit(), principal, recheck=account_check())


def account_check() -> Callable[[Principal], Principal | None]:
    """The principal as the database knows it now (None: disabled or removed), for the
    session gate, live sections and board actions."""
    return accounts_for(get_db()).current


def get_audit() -> AuditTrail:
    return audit_for(get_db())


@st.cache_resource
def get_registry() -> Registry:
    return Registry(get_db(), get_audit())


def get_batch_store() -> BatchStore:
    """Persisted batches: the page submits and follows them; a worker carries them out."""
    return _batch_store(get_db())


@st.cache_resource(hash_funcs={Database: database_key})
def _batch_store(db: Database) -> BatchStore:  # type: ignore[type-arg]
    return BatchStore(db)


def get_event_store() -> EventStore:
    return _event_store(get_db())


def get_alert_store() -> AlertStore:
    return _alert_store(get_db())


# Keyed by the database handle, like the stores of smib_core.ui.stores.
@st.cache_resource(hash_funcs={Database: database_key})
def _event_store(db: Database) -> EventStore:  # type: ignore[type-arg]
    return EventStore(db)


@st.cache_resource(hash_funcs={Database: database_key})
def _alert_store(db: Database) -> AlertStore:  # type: ignore[type-arg]
    return AlertStore(db, audit_for(db))


def get_meter_store() -> MeterStore:
    return _meter_store(get_db())


@st.cache_resource(hash_funcs={Database: database_key})
def _meter_store(db: Database) -> MeterStore:  # type: ignore[type-arg]
    return MeterStore(db)


@st.cache_resource
def get_export_jobs() -> ExportJobs:
    """The exports of this server process (their worker threads outlive a rerun)."""
    return ExportJobs()
