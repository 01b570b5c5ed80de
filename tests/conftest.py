from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smib_core import embedded
from tests.servers import EmbeddedMongo, Mosquitto

# What a test starts without MONGO_URI or MQTT_URI (the app, a `smib` command) finds its
# embedded servers in a data folder of the session's own, never the checkout's ./data;
# a server left running there is stopped when the session ends, and named.
_DATA_DIR = Path(os.environ.setdefault("SMIB_DATA_DIR", tempfile.mkdtemp(prefix="smib-tests-")))
_STARTED_BY: dict[str, str] = {}  # state file -> the test during which it appeared


@pytest.fixture(autouse=True)
def who_starts_embedded_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for state in _DATA_DIR.glob("embedded-*.json"):
        _STARTED_BY.setdefault(state.name, request.node.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stopped = embedded.stop(_DATA_DIR)
    if stopped:
        started = ", ".join(f"{name} by {test}" for name, test in _STARTED_BY.items())
        print(f"\nstopped embedded servers left running: {stopped} (started: {started})")


# Threads that libraries keep for the whole process (not leaks of a test).
# (smib-sim-ota: the download pool of the browser tests' session-wide simulated fleet.)
_LONG_LIVED = (
    "pymongo",
    "ThreadPoolExecutor",
    "asyncio_",
    "Dummy-",
    "ScriptRunner",
    "Thread-",
    "smib-sim-ota",
)


@pytest.fixture(autouse=True)
def no_thread_left_running() -> Iterator[None]:
    """Fail a test that leaves one of its own threads running (pymodbus' habit)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_LONG_LIVED)
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"threads left running: {[t.name for t in left]}"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker of the test's own, which it may kill and restart."""
    broker = Mosquitto(tmp_path_factory.mktemp("own-mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def embedded_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    server = EmbeddedMongo(tmp_path_factory.mktemp("nx"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mongo_db(embedded_mongo: EmbeddedMongo) -> Iterator[object]:
    """A fresh database (unique name) on the shared embedded server."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(
        embedded_mongo.uri, serverSelectionTimeoutMS=10_000, tz_aware=True
    )
    yield client[f"t_{uuid.uuid4().hex[:12]}"]
    client.close()


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing one broker never hear each other."""
    return f"t{uuid.uuid4().hex[:8]}/"
