"""What board-acting CLI commands share: a connected bus and the guarded, audited actions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from smib_core.errors import BusError

if TYPE_CHECKING:
    from pymongo.database import Database

    from smib_core.bus import DeviceBus
    from smib_core.services.actions import BoardActions
    from smib_core.settings import Settings


@contextmanager
def connected(
    client_id_prefix: str = "smib-cli", connect_timeout: float = 10.0
) -> Iterator[tuple[Settings, Database[Any], DeviceBus]]:
    """The settings, the database (MONGO_URI or the embedded one) and a bus connected to
    MQTT_URI (or the embedded broker); all closed on exit."""
    from smib_core.settings import Settings
    from smib_core.store.db import connect

    settings = Settings.from_env()
    db = connect(settings)
    try:
        with connected_bus(settings, client_id_prefix, connect_timeout) as bus:
            yield settings, db, bus
    finally:
        db.client.close()


@contextmanager
def connected_bus(
    settings: Settings, client_id_prefix: str, connect_timeout: float = 10.0
) -> Iterator[DeviceBus]:
    """A bus connected to MQTT_URI (or the embedded broker), stopped on exit; BusError
    when the broker cannot be reached within `connect_timeout` seconds."""
    from smib_core.bus import bus_for

    bus = bus_for(settings, client_id_prefix)
    bus.start()
    try:
        if not bus.wait_connected(connect_timeout):
            raise BusError(f"could not reach the MQTT broker {bus.stats().broker}")
        yield bus
    finally:
        bus.stop()


@contextmanager
def board_actions(connect_timeout: float = 10.0) -> Iterator[BoardActions]:
    """BoardActions acting as `cli:<os user>`, over a bus connected to MQTT_URI (or the
    embedded broker) and an audit trail in MONGO_URI (or the embedded database)."""
    from smib_core.services.actions import BoardActions, cli_principal
    from smib_core.store.audit import AuditTrail

    with connected(connect_timeout=connect_timeout) as (_, db, bus):
        yield BoardActions(bus, AuditTrail(db), cli_principal())
