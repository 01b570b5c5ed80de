"""Cabinet page in the browser: live cards from the simulated board, a confirmed WiFi
change, an invalid port refused with nothing published, meters, the restart countdown."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import expect

from smib_core.settings import BrokerAddress
from smib_core.sim.board import Firmware
from smib_core.store.audit import AuditTrail
from smib_core.store.registry import Registry
from tests.browser.conftest import ServedApp, ask_boards, screenshot, sign_in

pytestmark = pytest.mark.browser

NOISY = Firmware(ack_writes=True, announce_on_boot=True, duplicate_rate=1.0, reorder_rate=0.5)


class Sniffer:
    """A raw paho subscriber on every command topic: what the console really published."""

    def __init__(self, broker_uri: str) -> None:
        self.payloads: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        address = BrokerAddress.parse(broker_uri)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, f"sniff-{uuid.uuid4().hex[:6]}"
        )
        self._client.on_connect = lambda c, *_: c.subscribe("sas/relay/#")
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = lambda _c, _u, m: self.payloads.append((m.topic, m.payload))
        self._client.connect(address.host, address.port)
        self._client.loop_start()
        assert self._ready.wait(10), "the sniffer could not subscribe"

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def shot(page: Any, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main area, so the
    window is made as tall as the content first."""
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(900, height), 5000)})
    page.wait_for_timeout(300)
    screenshot(page, name)
    page.set_viewport_size({"width": 1400, "height": 900})


def visible(locator: Any) -> Any:
    return locator.locator("visible=true").first


@pytest.fixture
def board(served_app: ServedApp) -> Iterator[str]:
    """relays[4] (no other browser test uses it) as a registered cabinet, restored after."""
    relay = served_app.relays[4]
    registry = Registry(served_app.db())
    if registry.cabinet_for_relay(relay) is None:
        place = registry.add_location(f"Cabinet test floor {uuid.uuid4().hex[:4]}", "test-setup")
        registry.adopt(relay, "Cabinet 042", place.id, "0.25", actor="test-setup")
    sim = served_app.fleet.board(relay)
    saved = {comp: dict(fields) for comp, fields in sim.config.items()}
    ask_boards(served_app, [relay])  # heard just now
    yield relay
    with served_app.fleet.lock:
        for comp, fields in saved.items():
            sim.config[comp].update(fields)


def test_live_cards_a_confirmed_change_a_refused_port_meters_and_restart(
    served_app: ServedApp, page: Any, board: str
) -> None:
    relay, sim = board, served_app.fleet.board(board)
    channel = sim.config["net"]["netStaChan"]
    new_channel = 13 if channel != 13 else 3
    sign_in(page, served_app, "tech", f"cabinet?relay={relay}")

    page.get_by_role("heading", name="Cabinet 042").wait_for()
    cards = page.get_by_test_id("stDataFrame")
    expect(page.get_by_text("heard", exact=False).first).to_be_visible()
    expect(page.get_by_text("WiFi network", exact=True)).to_be_visible()
    expect(cards.filter(has_text="casino-floor")).to_have_count(1)  # the sim's SSID
    expect(page.get_by_text(sim.version).first).to_be_visible()
    assert "sim-wifi-pass" not in page.content()  # the sim's WiFi password never shows
    shot(page, "cabinet_cards")

    page.get_by_role("spinbutton", name="WiFi channel").fill(str(new_channel))
    page.get_by_role("spinbutton", name="WiFi channel").press("Tab")
    visible(page.get_by_role("button", name="Preview the change")).click()
    page.get_by_text("Check the change before sending it").wait_for()
    shot(page, "cabinet_edit_diff")
    page.get_by_role("button", name="Send to the board").click()
    page.get_by_text("Confirmed: the board reports the new WiFi channel").wait_for()
    assert sim.config["net"]["netStaChan"] == new_channel
    page.get_by_text("Configuration history").scroll_into_view_if_needed()
    expect(page.get_by_test_id("stDataFrame").last).to_contain_text(str(new_channel))

    # The same write against firmware that acknowledges writes, announces itself and
    # sends duplicated and late replies: still confirmed by reading back, nothing more.
    served_app.fleet.set_firmware(relay, NOISY)
    try:
        page.get_by_role("spinbutton", name="WiFi channel").fill(str(channel))
        page.get_by_role("spinbutton", name="WiFi channel").press("Tab")
        visible(page.get_by_role("button", name="Preview the change")).click()
        page.get_by_role("button", name="Send to the board").click()
        page.get_by_text("Confirmed: the board reports the new WiFi channel").wait_for()
    finally:
        served_app.fleet.set_firmware(relay, None)
    assert sim.config["net"]["netStaChan"] == channel

    audit = AuditTrail(served_app.db())
    writes_before = len(audit.query(relay=relay, kind="config_write"))
    mqtt_before = dict(sim.config["mqtt"])
    sniffer = Sniffer(served_app.broker_uri)
    try:
        page.get_by_role("tab", name="MQTT").click()
        visible(page.get_by_role("spinbutton", name="MQTT port")).fill("70000")
        visible(page.get_by_role("spinbutton", name="MQTT port")).press("Tab")
        visible(page.get_by_role("button", name="Preview the change")).click()
        page.get_by_text("MQTT port must be a whole number 1..65535. Nothing was sent.").wait_for()
        page.wait_for_timeout(500)
    finally:
        sniffer.stop()
    assert not [p for _, p in sniffer.payloads if b"mqttURI" in p]
    assert len(audit.query(relay=relay, kind="config_write")) == writes_before
    assert sim.config["mqtt"] == mqtt_before

    page.get_by_role("button", name="Read meters now").click()
    page.get_by_text("money at 0.25 per credit").wait_for()
    meters = page.get_by_test_id("stDataFrame").filter(has_text="Total coin in (handle)")
    expect(meters).to_have_count(1)
    shot(page, "cabinet_meters")

    what = page.get_by_test_id("stSelectbox").filter(has_text="What to clear").locator("input")
    what.click()
    what.fill("Door")
    page.get_by_text("Door records", exact=True).click()
    page.get_by_role("button", name="Clear…").click()
    page.get_by_text("This erases the door open/close records").wait_for()
    page.get_by_role("button", name="Clear: door records").click()
    page.get_by_text("The board cleared its door records.").wait_for()

    page.get_by_role("button", name="Restart…").click()
    page.get_by_role("button", name="Restart now").click()
    page.get_by_text("Restarting board").wait_for()
    shot(page, "cabinet_countdown")
    page.get_by_text(f"Restart done: board {relay} is back and answering.").wait_for(timeout=30_000)
    restarts = audit.query(relay=relay, kind="restart")
    assert restarts["actor"].iloc[0] == "tech"
    assert json.loads(restarts["detail"].iloc[0])["command"] == {"typ": "rst"}
    assert restarts["outcome"].iloc[0] == "confirmed"  # seen answering again
    writes = audit.query(relay=relay, kind="config_write")
    assert writes["outcome"].tolist()[:2] == ["confirmed", "confirmed"]
