"""Process-wide resources, reached from Streamlit only through `st.cache_resource`.

One settings object, one database handle and one device bus per server process; every
page and fragment calls these functions, so no page ever builds its own client.
"""

from __future__ import annotations

import logging

import streamlit as st
from pymongo.database import Database

from smib_core.auth import Principal
from smib_core.bus import DeviceBus, bus_for
from smib_core.errors import SmibError
from smib_core.firmware.materialise import in_library
from smib_core.firmware.server import FirmwareServer
from smib_core.services.actions import BoardActions
from smib_core.services.collector import Collector, CollectorConfig
from smib_core.services.events import EventRecorder, start_event_recording
from smib_core.services.export_jobs import ExportJobs
from smib_core.services.presence import PresencePoller
from smib_core.services.rollout import RolloutRunner
from smib_core.settings import Settings
from smib_core.store.alerts import AlertStore
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import BatchStore
from smib_core.store.db import connect
from smib_core.store.downloads import DownloadLog
from smib_core.store.events import EventStore
from smib_core.store.firmware import FirmwareLibrary
from smib_core.store.leases import Lease, process_owner
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from smib_core.ui.stores import audit_for, database_key


@st.cache_resource
def get_settings() -> Settings:
    return Settings.from_env()


@st.cache_resource
def get_db() -> Database:  # type: ignore[type-arg]
    return connect(get_settings())


@st.cache_resource
def get_bus() -> DeviceBus:
    bus = bus_for(get_settings(), "smib-console")
    bus.start()
    return bus


def ensure_background_services() -> None:
    """Start, once per server process, what runs without a browser tab: each getter
    below is cached, so calling this on every rerun costs nothing after the first."""
    get_bus()
    get_presence()
    get_event_recorder()
    get_collector()
    get_rollout_runner()  # starts the firmware server too


@st.cache_resource
def get_presence() -> PresencePoller:
    """Asks every known board for its `app` config once per heartbeat (one process)."""
    settings = get_settings()
    lease = Lease(get_db(), "presence", process_owner("presence:"), 3 * settings.heartbeat_s)
    registry = get_registry()
    poller = PresencePoller(
        get_bus(),
        lambda: (c.relay for c in registry.cabinets() if c.relay),
        settings.heartbeat_s,
        lease,
    )
    poller.start()
    return poller


def board_actions(principal: Principal | None) -> BoardActions:
    """The guarded, audited way a page acts on boards (checks the role on every call)."""
    return BoardActions(get_bus(), get_audit(), principal)


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


@st.cache_resource
def get_event_recorder() -> EventRecorder:
    """Stores the bus's machine events and raises alerts, once per server process."""
    return start_event_recording(
        get_bus(), get_db(), get_settings(), audit=get_audit(), registry=get_registry()
    )


@st.cache_resource
def get_collector() -> Collector:
    """Reads every board's meters on the period; started in every server process, it
    collects only while it holds the deployment's lease (one collector per deployment)."""
    config = CollectorConfig.from_settings(get_settings())
    collector = Collector(get_bus(), get_db(), config, registry=get_registry())
    collector.start()
    return collector


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


@st.cache_resource
def get_firmware_server() -> FirmwareServer:
    """The HTTP server boards download firmware from (FIRMWARE_PORT), once per process.

    When the port is taken (another app process serves it) this one is not `running`;
    its `base_url` still names the server boards are given, and pages say so."""
    db = get_db()
    server = FirmwareServer.from_settings(
        get_settings(), allowed=in_library(FirmwareLibrary(db)), on_download=DownloadLog(db).record
    )
    try:
        server.start()
    except SmibError as exc:
        logging.getLogger(__name__).warning("%s; another process may serve firmware", exc)
    return server


@st.cache_resource
def get_rollout_runner() -> RolloutRunner:
    """Drives firmware rollouts; started in every server process, it acts only while it
    holds the deployment's lease (one runner per deployment)."""
    server = get_firmware_server()
    runner = RolloutRunner(
        get_db(), get_bus(), get_audit(), ota_url=server.base_url, folder=server.folder
    )
    runner.start()
    return runner
