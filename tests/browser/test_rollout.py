"""Rollouts in the browser: a technician uploads a firmware, rolls it out to two boards of
the simulated fleet and watches them come back confirmed on the new version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smib_core.sim.board import Firmware
from smib_core.store.audit import AuditTrail
from smib_core.store.rollouts import RolloutStore
from tests.browser.conftest import ROOT, ServedApp, ask_boards, screenshot, sign_in

pytestmark = pytest.mark.browser

NOISY = Firmware(ack_writes=True, announce_on_boot=True, duplicate_rate=1.0, reorder_rate=0.5)


VERSION = "v3.1.0"
SERVED = ROOT / "firmwares" / f"cloudy_{VERSION}.bin"


@pytest.fixture
def two_boards(served_app: ServedApp) -> Any:
    """relays[4:6], put back on their old version and OTA URL afterwards."""
    relays = served_app.relays[4:6]
    fleet = served_app.fleet
    before = {r: dict(fleet.board(r).config["app"]) for r in relays}
    urls = {r: fleet.board(r).config["ota"]["otaURL"] for r in relays}
    fleet.set_firmware(relays[1], NOISY)  # relays[0] stays strict
    yield relays
    fleet.set_firmware(relays[1], None)
    with fleet.lock:
        for relay in relays:
            fleet.board(relay).config["app"] = before[relay]
            fleet.board(relay).config["ota"]["otaURL"] = urls[relay]
    SERVED.unlink(missing_ok=True)


def test_upload_then_roll_out_to_two_boards(
    served_app: ServedApp, page: Any, two_boards: list[str], tmp_path: Path
) -> None:
    image = tmp_path / "cloudy-new.bin"
    image.write_bytes(b"\xe9" + bytes(range(256)) * 40)

    sign_in(page, served_app, "tech")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Firmware library").click()
    page.get_by_role("heading", name="Firmware").first.wait_for()
    page.get_by_text("Upload a firmware").click()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_label("Product").fill("cloudy")
    page.get_by_label("Version").fill(VERSION)
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_text(f"cloudy {VERSION} added to the library.").wait_for()
    page.get_by_role("button", name="Download", exact=True).wait_for()
    screenshot(page, "firmware_library")

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Rollouts").click()
    page.get_by_role("heading", name="Firmware rollouts").wait_for()
    start = page.get_by_test_id("stExpander").filter(has_text="Start a rollout")
    start.wait_for()
    if start.locator("details[open]").count() == 0:  # collapsed once rollouts exist
        start.get_by_text("Start a rollout").click()
    page.get_by_test_id("stSelectbox").filter(has_text="Firmware").click()
    page.get_by_role("option", name=f"cloudy {VERSION}").click()
    ask_boards(served_app, two_boards)  # the app lists the boards it has heard
    page.get_by_text("Boards one by one", exact=True).click()
    boards = page.get_by_test_id("stMultiSelect").filter(has_text="Boards")
    for relay in two_boards:
        boards.locator("input").fill(relay)
        page.get_by_role("option").filter(has_text=relay).wait_for()
        page.keyboard.press("Enter")
        boards.get_by_text(relay).wait_for()  # its chip
    page.keyboard.press("Escape")
    page.get_by_text("2 boards in 1 batch", exact=True).wait_for()
    page.get_by_role("button", name="Review the update of 2 boards").click()

    dialog = page.get_by_role("dialog")
    dialog.get_by_text("reflashes 2 machines' boards").wait_for()
    screenshot(page, "rollout_confirm")
    dialog.get_by_role("button", name="Reflash 2 boards").click()
    page.get_by_text(f"Rollout of cloudy {VERSION} started.").wait_for()

    page.get_by_text("Completed: 2 confirmed").wait_for(timeout=45_000)
    page.get_by_text("Batch 1 · 2 of 2 confirmed · done").wait_for()
    page.set_viewport_size({"width": 1400, "height": 1500})
    screenshot(page, "rollouts")

    rollout = RolloutStore(served_app.db()).recent(1)[0]
    assert rollout.state == "completed" and rollout.actor == "tech"
    states = {b.relay: b.state for b in RolloutStore(served_app.db()).boards(rollout.id)}
    assert states == {relay: "confirmed" for relay in two_boards}
    for relay in two_boards:
        assert served_app.fleet.board(relay).version == VERSION
        ota_url = served_app.fleet.board(relay).config["ota"]["otaURL"]
        token = ota_url.rstrip("/").rsplit("/", 1)[1]
        assert ota_url.endswith(f"/firmwares/{relay}/{token}/") and len(token) == 32
        assert token not in page.content()  # its own folder and secret: never shown
    for relay in two_boards:  # each board's ota_start record settled with its outcome
        starts = AuditTrail(served_app.db()).query(relay=relay, kind="ota_start")
        assert starts["outcome"].iloc[0] == "confirmed"
