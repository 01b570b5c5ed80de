"""The dashboard and export pages in AppTest: empty data says what to do, seeded data
shows KPIs, charts and a preview, and each page keeps out the roles it is not for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.services.export_jobs import ExportJobs
from smib_core.services.meter_seed import SeedCabinet, seed_history
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from smib_core.ui import resources

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MANAGER = Principal("max", Role.MANAGER)
ANALYST = Principal("ann", Role.ANALYST)


@pytest.fixture
def served(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    audit = AuditTrail(mongo_db)
    jobs = ExportJobs()
    monkeypatch.setattr(resources, "get_settings", lambda: Settings())
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "get_registry", lambda: Registry(mongo_db, audit))
    monkeypatch.setattr(resources, "get_meter_store", lambda: MeterStore(mongo_db))
    monkeypatch.setattr(resources, "get_export_jobs", lambda: jobs)
    # The pages run alone, without app.py's gate: their principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    st.cache_data.clear()  # the pages cache figures per period: not across tests
    return mongo_db


def open_page(name: str, who: Principal) -> AppTest:
    app = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)
    app.session_state["principal"] = who
    return app.run()


def seed_yesterday(db: Any) -> None:
    registry = Registry(db)
    floor = registry.add_location("Main floor", actor="test")
    cabinet = registry.add_cabinet(
        {
            "name": "Buffalo 1",
            "location_id": floor.id,
            "denomination": 0.01,
            "relay": "ef0000000001",
        },
        actor="test",
    )
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    seed = SeedCabinet(cabinet.id, cabinet.name, floor.id, floor.name, "ef0000000001", 3, 0.01)
    seed_history(MeterStore(db), [seed], today - timedelta(days=1), 289)


def test_dashboard_without_readings_says_what_to_do(served: Any) -> None:
    app = open_page("dashboard", MANAGER)
    assert not app.exception
    assert "No meter readings in this period yet" in app.info[0].value
    assert "smib collect --once" in app.info[0].value
    assert not app.metric or app.metric[0].label == "Silent cabinets"


def test_dashboard_with_readings_shows_kpis_and_charts(served: Any) -> None:
    seed_yesterday(served)
    app = open_page("dashboard", MANAGER)
    app.segmented_control(key="dashboard_period").set_value("yesterday").run()
    assert not app.exception
    labels = [m.label for m in app.metric]
    assert labels[:10] == [
        "Coin in",
        "Coin out",
        "Drop",
        "Cancelled credits",
        "Jackpots",
        "Net win",
        "Meter win",
        "Hold",
        "Games played",
        "Average bet",
    ]
    assert app.metric[0].value.startswith("$")
    charts = app.get("plotly_chart")
    assert len(charts) == 4
    table = app.dataframe[0].value
    assert table["cabinet"].tolist() == ["Buffalo 1"]


def test_export_without_readings_disables_the_build(served: Any) -> None:
    app = open_page("export", ANALYST)
    assert not app.exception
    assert "No meter readings in this period" in app.info[0].value
    build = next(b for b in app.button if b.label == "Build export")
    assert build.disabled


def test_export_preview_of_seeded_readings(served: Any) -> None:
    seed_yesterday(served)
    app = open_page("export", ANALYST)
    assert not app.exception
    first = app.dataframe[0].value
    assert isinstance(first, pd.DataFrame) and len(first) == 1
    assert list(first.columns)[:5] == [
        "Gaming day",
        "Gaming day starting (UTC)",
        "Gaming day starting (local)",
        "Time zone",
        "Cabinet",
    ]
    app.radio(key="export_granularity").set_value("raw").run()
    assert app.dataframe[0].value.columns[0] == "Time (UTC)"
    assert not next(b for b in app.button if b.label == "Build export").disabled


@pytest.mark.parametrize(
    ("page", "who"), [("dashboard", Principal("tina", Role.TECHNICIAN)), ("export", MANAGER)]
)
def test_roles_without_the_permission_see_nothing(served: Any, page: str, who: Principal) -> None:
    app = open_page(page, who)
    assert "does not allow" in app.error[0].value
    assert not app.dataframe
