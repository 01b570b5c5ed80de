"""Batch page in the browser: restart a whole location, watch it (stored, then carried out
by the served app's worker), read every outcome."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from smib_core.store.registry import Registry
from smib_core.store.templates import TemplateStore
from tests.browser.conftest import ServedApp, ask_boards, screenshot, sign_in

pytestmark = pytest.mark.browser


def test_restart_a_location_and_see_each_outcome(served_app: ServedApp, page: Any) -> None:
    relays = served_app.relays[1:4]
    registry = Registry(served_app.db())
    place = registry.add_location(f"Batch floor {uuid.uuid4().hex[:4]}", actor="test-setup")
    for n, relay in enumerate(relays, start=1):
        registry.adopt(relay, f"Batch machine {n}", place.id, "0.01", actor="test-setup")
    template = f"Floor WiFi {place.id[-4:]}"
    fields = {"netStaChan": 6, "netStaPwd": "wifi-pass-123"}
    TemplateStore(served_app.db()).save(template, "net", fields, actor="test-setup")
    page.goto(served_app.url)  # warm up: a sign-in during the app's first run can be lost
    page.get_by_role("heading", name="Sign in").wait_for()
    page.wait_for_timeout(2000)
    sign_in(page, served_app, "tech")
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name="Batch work").click()
    page.get_by_role("heading", name="Batch work").wait_for()
    ask_boards(served_app, relays)  # heard just now: the app counts silent boards as offline
    page.get_by_test_id("stSelectbox").filter(has_text="Location").click()
    page.get_by_role("option", name=place.name).click()
    page.get_by_text("3 boards: every cabinet at this location").wait_for()
    page.get_by_text("Restart", exact=True).click()
    page.get_by_role("button", name="Review the batch").click()

    confirm = page.get_by_text("Confirm: restart 3 boards")
    confirm.wait_for()
    page.get_by_role("button", name="Confirm and start on 3 boards").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    screenshot(page, "batch_confirm")
    page.get_by_role("button", name="Confirm and start on 3 boards").click()
    # the served app's worker (smib worker) carries it out
    page.get_by_text("boards done").first.wait_for()
    screenshot(page, "batch_progress")
    page.get_by_text("All 3 boards confirmed.").wait_for(timeout=60_000)
    page.get_by_text("Outcome per board").wait_for()
    screenshot(page, "batch_outcome")
    grid = page.get_by_test_id("stDataFrame").first
    for relay in relays:
        row = grid.locator("tr").filter(has_text=relay)  # glide's hidden accessible table
        expect(row).to_contain_text("confirmed")

    page.get_by_role("tab", name="Templates").click()
    page.get_by_text("Configuration templates").wait_for()
    expect(
        page.get_by_test_id("stDataFrame").locator("tr").filter(has_text=template)
    ).to_contain_text("••••••")
    assert page.get_by_text("wifi-pass-123").count() == 0
    screenshot(page, "batch_templates")
