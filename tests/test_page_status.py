"""The Bus status page tells which background services run where, from the database
(the web app runs none): no worker -> a warning; a worker's leases -> its host and pid."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.bus import DeviceBus
from smib_core.protocol import Topics
from smib_core.services import background
from smib_core.settings import Settings
from smib_core.store.leases import Lease
from smib_core.store.meters import MeterStore
from smib_core.ui import resources
from tests.servers import free_port

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "status.py")


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", Topics())  # never started: disconnected
    settings = Settings(firmware_port=free_port())  # nothing answers there
    monkeypatch.setattr(resources, "get_settings", lambda: settings)
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = Principal("tina", Role.TECHNICIAN)
    return app.run()


def test_no_worker_is_said_plainly(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    Lease(mongo_db, "collector", "collector:old-host:4242:abc", 5, clock=lambda: 0.0).acquire()
    app = page(mongo_db, monkeypatch)
    assert not app.exception
    assert any("No background service runs" in w.value for w in app.warning)
    table = app.dataframe[-1].value
    assert set(table["status"]) == {"not running"}, "an expired lease is no running service"
    assert any("No meter reading stored yet" in c.value for c in app.caption)


def test_a_workers_services_show_where_they_run(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("presence", "collector", "firmware-server"):
        Lease(mongo_db, name, f"{name}:box-7:31337:abc123", 30).acquire()
    MeterStore(mongo_db).insert_snapshot("e831cdfa8384", datetime.now(UTC), ok=False)
    app = page(mongo_db, monkeypatch)
    assert not app.exception
    assert not any("No background service runs" in w.value for w in app.warning)
    rows = app.dataframe[-1].value.set_index("service")
    assert rows.loc["Meter collector", "where"] == "box-7 (process 31337)"
    assert rows.loc["Presence heartbeats", "status"] == "running"
    assert rows.loc["Rollout runner", "status"] == "not running"
    assert any("does not answer on this host's port" in c.value for c in app.caption)
    assert any("Last meter reading stored" in c.value for c in app.caption)


def test_statuses_list_every_service_in_order(mongo_db: Any) -> None:
    Lease(mongo_db, "rollout-runner", "rollouts:h:12:x", 30).acquire()
    statuses = background.service_statuses(mongo_db)
    assert [s.lease for s in statuses] == list(background.SERVICES)
    running = [(s.lease, s.host, s.pid) for s in statuses if s.running]
    assert running == [("rollout-runner", "h", 12)]
    assert background.service_statuses(mongo_db, now=time.time() + 31)[4].running is False


def test_clock_checks_and_refused_stamps_are_shown(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smib_core.store.clock import record_skew

    app = page(mongo_db, monkeypatch)
    assert any("No service has checked its clock" in c.value for c in app.caption)
    record_skew(mongo_db, "collector", "collector:box-7:31337:abc123", -400.0)
    MeterStore(mongo_db).insert_snapshot(
        "e831cdfa8384", datetime.now(UTC), failure="clock behind", failure_check="clock_behind"
    )
    app = page(mongo_db, monkeypatch)
    assert not app.exception
    [row] = app.dataframe[-1].value.to_dict("records")
    assert (row["service"], row["skew"], row["refused_24h"]) == ("collector", "-400.0 s", 1)
