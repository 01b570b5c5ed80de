"""`smib serve --sim N` end to end: it serves the app beside a simulated fleet, and a
SIGTERM (`kill <pid>`) stops the web app and the simulator with it, as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from tests.servers import EmbeddedMongo, Mosquitto, free_port, wait_for_port
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration


def test_sigterm_stops_the_app_and_the_simulator(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path: Path, topic_prefix: str
) -> None:
    topics = make_topics(topic_prefix)
    port = free_port()
    env = dict(
        os.environ,
        MQTT_URI=mosquitto.uri,
        MONGO_URI=embedded_mongo.uri,
        MONGO_DB=f"serve_{uuid.uuid4().hex[:8]}",
        SMIB_DATA_DIR=str(tmp_path),
        FIRMWARE_PORT=str(free_port()),
        MQTT_PUB_TOPIC=topics.pub,
        MQTT_CFG_TOPIC=topics.cfg,
        MQTT_SUB_TOPIC=topics.sub,
    )
    command = [sys.executable, "-m", "smib_core", "serve", "--sim", "3", "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        wait_for_port(port, timeout=60)
        children = psutil.Process(serve.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "smib_core sim" in names and "smib_core.ui.launch" in names, names
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(20) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], [child.cmdline() for child in alive]
    finally:
        if serve.poll() is None:
            serve.kill()
        for child in children:  # orphans if serve died without stopping them
            if child.is_running():
                child.kill()
        log.close()
    printed = (tmp_path / "serve.log").read_text()
    assert f"SMIB Console: http://127.0.0.1:{port}" in printed
    assert "registered 1 demo cabinets" in printed  # two boards left to adopt
