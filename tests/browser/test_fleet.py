"""Fleet and registry pages in the browser: the boards live, adopt in two clicks, offline."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from smib_core.store.registry import Registry
from tests.browser.conftest import ServedApp, ask_boards, screenshot, sign_in

pytestmark = pytest.mark.browser


def _open(page: Any, app: ServedApp, path: str, title: str) -> None:
    sign_in(page, app, "tech", path)
    page.get_by_role("heading", name=title).wait_for()


def _rows(page: Any) -> Any:
    """The fleet grid's rows, from the grid's accessible table (drawn on a canvas)."""
    return page.get_by_test_id("stDataFrame").first.get_by_role("row", include_hidden=True)


def _row(page: Any, relay: str) -> Any:
    return _rows(page).filter(has_text=relay)


def test_adopt_a_board_and_watch_it_drop_off_and_return(served_app: ServedApp, page: Any) -> None:
    relay = served_app.relays[-1]
    registry = Registry(served_app.db())
    claimed = registry.cabinet_for_relay(relay)
    if claimed is not None:  # another test adopted it: free it for this one
        registry.retire_cabinet(claimed.id, actor="test-setup")
    _open(page, served_app, "fleet", "Fleet")
    ask_boards(served_app, served_app.relays)  # each answers: heard now (none announces)
    for board in served_app.relays:
        expect(_row(page, board)).to_have_count(1, timeout=15_000)
    expect(_row(page, relay)).to_contain_text("unassigned")
    page.get_by_role("heading", name="Unassigned boards").wait_for()

    page.get_by_role("radio", name=relay, exact=True).click()  # click 1: the board
    page.get_by_text(f"Adopt board {relay}").wait_for()
    page.set_viewport_size({"width": 1400, "height": 1500})
    screenshot(page, "fleet_adopt")
    page.get_by_role("button", name="Adopt", exact=True).click()  # click 2: adopt it
    page.get_by_text(f"Board {relay} is now cabinet").wait_for()
    cabinet = registry.cabinet_for_relay(relay)
    assert cabinet is not None
    expect(_row(page, relay)).to_contain_text(cabinet.name)
    screenshot(page, "fleet")

    threshold = page.get_by_label("Offline after (s)", exact=True)
    threshold.fill("10")  # this tab's threshold (the server's is 20 s): a quicker test
    threshold.press("Enter")
    try:
        served_app.fleet.set_online(relay, False)
        expect(_row(page, relay)).to_contain_text("offline", timeout=25_000)
        served_app.fleet.set_online(relay, True)  # back: it answers the next heartbeat
        expect(_row(page, relay)).to_contain_text("online", timeout=10_000)
        expect(_row(page, relay)).not_to_contain_text("offline")
    finally:
        served_app.fleet.set_online(relay, True)

    find = page.get_by_role("textbox", name="Find")
    find.fill(relay)  # one row left; selecting it opens the cabinet
    find.press("Enter")
    expect(_rows(page)).to_have_count(2)  # the header and this board
    grid = page.get_by_test_id("stDataFrame").first.bounding_box()
    page.mouse.click(grid["x"] + 16, grid["y"] + 35 + 17)  # the row's selection box
    expect(page).to_have_url(re.compile(f"/cabinet\\?relay={relay}"))


def test_registry_lists_locations_and_cabinets(served_app: ServedApp, page: Any) -> None:
    registry = Registry(served_app.db())
    names = {loc.name for loc in registry.locations()}
    for name in {"Main floor", "Terrace"} - names:
        registry.add_location(name, actor="test-setup")
    _open(page, served_app, "registry", "Registry")
    page.set_viewport_size({"width": 1400, "height": 1200})
    page.get_by_test_id("stDataFrame").first.wait_for()
    page.get_by_text("Add a location").click()
    page.get_by_role("button", name="Add the location").wait_for()
    page.wait_for_timeout(500)  # the expander's opening animation
    screenshot(page, "registry_locations")
    page.get_by_role("tab", name="Cabinets").click()
    page.get_by_text("Change or retire a cabinet").click()
    page.get_by_role("button", name="Retire").wait_for()
    page.wait_for_timeout(500)
    screenshot(page, "registry_cabinets")
