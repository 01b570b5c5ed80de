"""The served app in headless Debian Chromium: a real broker, the embedded database and
a simulated fleet behind it. Playwright drives `chromium` from PATH, never a download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import EmbeddedMongo, Mosquitto, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"
SCREENSHOTS = ROOT / "screenshots"
ZONE = "America/New_York"


@dataclass
class ServedApp:
    url: str
    mongo_uri: str
    db_name: str
    broker_uri: str
    relays: list[str]
    fleet: Any
    data_dir: Path

    def db(self) -> Any:
        from pymongo import MongoClient

        return MongoClient(self.mongo_uri, tz_aware=True)[self.db_name]


def _create_accounts(mongo_uri: str, db_name: str) -> None:
    from pymongo import MongoClient

    from smib_core.store.accounts import AccountStore

    client: MongoClient[Any] = MongoClient(mongo_uri, tz_aware=True)
    accounts = AccountStore(client[db_name])
    for name in ("admin", "tech", "manager", "analyst"):
        role = "technician" if name == "tech" else name
        accounts.create(name, role, PASSWORD, actor="test-setup")
    client.close()


@pytest.fixture(scope="session")
def served_app(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedApp]:
    from smib_core.sim.fleet import Fleet

    data_dir = tmp_path_factory.mktemp("app-data")
    db_name = f"browser_{uuid.uuid4().hex[:8]}"
    _create_accounts(embedded_mongo.uri, db_name)
    fleet = Fleet(mosquitto.uri, relays=6, seed=11, reboot_s=3.0, events_per_minute=2.0)
    fleet.start()
    port = free_port()
    env = dict(
        os.environ,
        MQTT_URI=mosquitto.uri,
        MONGO_URI=embedded_mongo.uri,
        MONGO_DB=db_name,
        SMIB_DATA_DIR=str(data_dir),
        FIRMWARE_PORT=str(free_port()),
        SMIB_OFFLINE_AFTER_S="20",
        SMIB_HEARTBEAT_S="5",
        SMIB_TIMEZONE=ZONE,  # a zone with daylight saving: pages show its local time
    )
    log = (data_dir / "streamlit.log").open("ab")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    # The background work (presence, events, collector, rollouts, firmware) runs in a
    # worker beside the app, as `smib serve` starts it: the app itself runs none.
    worker_log = (data_dir / "worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "smib_core", "-v", "worker"],
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=worker_log,
    )
    try:
        wait_for_port(port, timeout=60)
        yield ServedApp(
            f"http://127.0.0.1:{port}",
            embedded_mongo.uri,
            db_name,
            mosquitto.uri,
            fleet.relay_ids,
            fleet,
            data_dir,
        )
    finally:
        for process in (proc, worker):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        fleet.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian chromium is not installed (./dev test installs it)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in(page: Any, app: ServedApp, name: str, path: str = "") -> None:
    """Open the app and sign in as one of the prepared accounts."""
    page.goto(f"{app.url}/{path}")
    page.get_by_label("Account name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def ask_boards(app: ServedApp, relays: list[str]) -> None:
    """Publish `cfg app` to each board as a console would: their answers are what the
    served app hears (the simulated boards are strict: they announce nothing)."""
    import paho.mqtt.client as mqtt

    from smib_core.settings import BrokerAddress

    address = BrokerAddress.parse(app.broker_uri)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, f"ask-{uuid.uuid4().hex[:6]}")
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for relay in relays:
            client.publish(f"sas/relay/{relay}", b'{"typ":"cfg","comp":"app"}').wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
