"""Events and alerts in the browser: a slot door opens on the wire, the event arrives live,
the alert shows on the fleet and alerts pages, and a technician acknowledges it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import expect

from smib_core.settings import BrokerAddress
from smib_core.store.alerts import AlertStore
from smib_core.store.events import EventStore
from tests.browser.conftest import ZONE, ServedApp, screenshot, sign_in

pytestmark = pytest.mark.browser


@contextmanager
def board_voice(app: ServedApp) -> Iterator[mqtt.Client]:
    """A raw paho client on the served broker, speaking as a board would."""
    address = BrokerAddress.parse(app.broker_uri)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:6]}")
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def say(client: mqtt.Client, relay: str, code: str) -> None:
    payload = json.dumps({"rly": relay, "typ": "exp", "pyd": code})
    client.publish("sas/gy/server", payload, qos=1).wait_for_publish(5)


def _rows(table: Any, *texts: str) -> Any:
    """Rows of a dataframe holding every text (its grid's fallback table, inside a canvas,
    is not in the accessibility tree, so roles do not find it)."""
    rows = table.locator("tr")
    for text in texts:
        rows = rows.filter(has_text=text)
    return rows


def test_a_door_event_arrives_live_and_its_alert_is_acknowledged(
    served_app: ServedApp, page: Any
) -> None:
    relay = served_app.relays[0]
    sign_in(page, served_app, "tech")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Events").click()
    page.get_by_role("heading", name="Machine events").wait_for()
    page.get_by_text("Arriving now").wait_for()
    with board_voice(served_app) as board:
        say(board, relay, "11")
        live = page.get_by_test_id("stDataFrame").first
        expect(_rows(live, relay, "Slot door opened")).to_have_count(1, timeout=15_000)
        # Shown in the deployment's local time, the zone named (SMIB_TIMEZONE).
        events = EventStore(served_app.db()).query(relays=(relay,), codes=("11",), limit=1)
        local = events["at"].iloc[0].tz_convert(ZONE)
        # (the simulated board may report an event of its own in that second too)
        shown_at = f"{local:%Y-%m-%d %H:%M:%S}"
        expect(_rows(live, relay, "Slot door opened", shown_at)).to_have_count(1)
        header = f"At ({local.tzname()}, {ZONE})"
        expect(live.get_by_text(header, exact=True).first).to_be_attached()
        screenshot(page, "events")

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Fleet").click()
        banner = page.get_by_text("Slot door open ·").filter(has_text=relay)
        expect(banner.first).to_be_visible(timeout=15_000)
        screenshot(page, "fleet_alerts_banner")

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Alerts").click()
        alert = next(
            a
            for a in AlertStore(served_app.db()).active()
            if a.relay == relay and a.kind == "slot_door_open"
        )
        card = page.locator(f".st-key-alert_{alert.id}")
        expect(card).to_be_visible(timeout=15_000)
        screenshot(page, "alerts_active")
        card.get_by_role("button", name="Acknowledge").click()
        page.get_by_text(f"Slot door open on {relay} acknowledged.").wait_for()
        history = page.get_by_test_id("stDataFrame").last
        expect(_rows(history, relay, "Slot door open", "tech")).to_have_count(1, timeout=10_000)
        screenshot(page, "alerts")
        say(board, relay, "12")  # the door closes: leaves no alert behind for other tests

    done = AlertStore(served_app.db()).get(alert.id)
    assert done.acknowledged_by == "tech" and done.acknowledged_at is not None
