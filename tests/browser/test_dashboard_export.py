"""Dashboard and export in the browser: a manager sees KPIs and charts of a seeded meter
history; an analyst builds a CSV and an Excel file in the background and downloads them.

The history belongs to three cabinets of their own location with no board (relay
None in the registry), so the shared simulated fleet and the collector are untouched.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from smib_core.services.meter_seed import SeedCabinet, seed_history, simulated_denomination
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry
from tests.browser.conftest import ServedApp, screenshot, sign_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def history(served_app: ServedApp) -> list[str]:
    """Three cabinets with readings every 5 minutes from three days ago until now."""
    db = served_app.db()
    registry = Registry(db)
    place = registry.add_location(f"Meter floor {uuid.uuid4().hex[:4]}", actor="test-setup")
    now = datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    cabinets = []
    for n in range(3):
        name = f"Meter cabinet {n + 1} {place.id[-4:]}"
        denomination = simulated_denomination(100 + n)
        values = {"name": name, "location_id": place.id, "denomination": denomination}
        cabinet = registry.add_cabinet(values, actor="test-setup")
        relay = f"fe{uuid.uuid4().hex[:10]}"  # readings only: no board on the bus
        cabinets.append(SeedCabinet(cabinet.id, name, place.id, place.name, relay, 100 + n))
    steps = int((now - start).total_seconds() // 300)
    seed_history(MeterStore(db), cabinets, start, steps)
    return [c.cabinet for c in cabinets]


def open_as(page: Any, app: ServedApp, name: str, path: str) -> None:
    """Sign in and open the page; the first load of a busy server may take a while."""
    page.goto(app.url)
    page.get_by_label("Account name").wait_for(timeout=90_000)
    sign_in(page, app, name, path)


def tall_screenshot(page: Any, name: str, height: int) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the window."""
    page.set_viewport_size({"width": 1400, "height": height})
    page.wait_for_timeout(1500)  # charts redraw at the new size
    screenshot(page, name)


def choose_period(page: Any, label: str) -> None:
    page.get_by_role("radio", name=label, exact=True).click()
    page.wait_for_timeout(500)


def test_a_manager_sees_kpis_and_charts(
    served_app: ServedApp, page: Any, history: list[str]
) -> None:
    open_as(page, served_app, "manager", "dashboard")
    page.get_by_role("heading", name="Dashboard").wait_for()
    choose_period(page, "Last 7 days")
    for kpi in ("Coin in", "Net win", "Hold", "Games played", "Average bet"):
        # each waited for: the page re-renders after the period changes, element by element
        label = page.locator('[data-testid="stMetricLabel"]', has_text=kpi).first
        label.wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").nth(4).wait_for(timeout=30_000)  # 4 charts + heatmap
    assert page.locator(".js-plotly-plot").count() >= 5
    assert page.get_by_text("Net win by location").count() >= 1
    page.get_by_text(history[0]).first.wait_for(state="attached")
    tall_screenshot(page, "dashboard", 3000)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_analyst_downloads_an_export(
    served_app: ServedApp, page: Any, history: list[str], tmp_path: Any, fmt: str
) -> None:
    open_as(page, served_app, "analyst", "export")
    page.get_by_role("heading", name="Export").wait_for()
    choose_period(page, "Last 7 days")
    if fmt == "xlsx":
        page.get_by_text("Excel (.xlsx)", exact=True).click()
        page.wait_for_timeout(500)
    page.get_by_text("Preview").first.wait_for()
    page.get_by_role("button", name="Build export").click()
    download_button = page.get_by_role("button", name="Download meters-day")
    download_button.wait_for(timeout=60_000)
    tall_screenshot(page, f"export-{fmt}", 1300)
    with page.expect_download() as info:
        download_button.click()
    path = tmp_path / info.value.suggested_filename
    assert path.suffix == f".{fmt}"
    info.value.save_as(path)
    rows = pd.read_csv(path) if fmt == "csv" else pd.read_excel(path, sheet_name="Meters")
    assert len(rows) > 0
    assert {"Gaming day", "Cabinet", "Location", "Coin in ($)", "Hold (%)"} <= set(rows.columns)
    assert set(history) <= set(rows["Cabinet"])
    audit = served_app.db()["audit"].find_one({"kind": "export", "actor": "analyst"})
    assert audit is not None and audit["outcome"] == "ok"
