"""`smib serve --sim N` end to end: it serves the app beside a worker and a simulated
fleet, and however it is killed (SIGTERM, SIGINT, SIGKILL) none of its processes stays
behind, so the next serve starts on the same port. A new serve ends what a dead one
left (checked by start time and command line, never by pid alone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from pymongo import MongoClient

from smib_core.cli.children import FOLDER, ProcessId, end_leftovers
from tests.servers import EmbeddedMongo, Mosquitto, free_port, wait_for_port
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration


def _env(mosquitto: Mosquitto, mongo: EmbeddedMongo, data: Path, prefix: str) -> dict[str, str]:
    topics = make_topics(prefix)
    return dict(
        os.environ,
        MQTT_URI=mosquitto.uri,
        MONGO_URI=mongo.uri,
        MONGO_DB=f"serve_{uuid.uuid4().hex[:8]}",
        SMIB_DATA_DIR=str(data),
        FIRMWARE_PORT=str(free_port()),
        MQTT_PUB_TOPIC=topics.pub,
        MQTT_CFG_TOPIC=topics.cfg,
        MQTT_SUB_TOPIC=topics.sub,
        MQTT_GLI_TOPIC=topics.gli,
    )


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "smib_core", "serve", "--sim", "3", "--port", str(port)]
    out = log.open("ab")
    return subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)


def _children_when_up(serve: subprocess.Popen[bytes], port: int) -> list[psutil.Process]:
    """serve's processes once the web app listens and all three children run."""
    wait_for_port(port, timeout=90)
    deadline = time.monotonic() + 30
    while True:
        children = psutil.Process(serve.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        kinds = ("smib_core sim", "smib_core worker", "streamlit run")
        if all(kind in names for kind in kinds) or time.monotonic() > deadline:
            assert all(kind in names for kind in kinds), names
            return children


def _worker_pid(children: list[psutil.Process]) -> int:
    return next(c.pid for c in children if "worker" in c.cmdline())


def _lease_pids(env: dict[str, str]) -> set[int]:
    client: MongoClient[Any] = MongoClient(env["MONGO_URI"])
    try:
        docs = client[env["MONGO_DB"]]["leases"].find({"expires_at": {"$gt": time.time()}})
        return {int(str(d["owner"]).split(":")[-2]) for d in docs}
    finally:
        client.close()


def _clean_up(serve: subprocess.Popen[bytes], children: list[psutil.Process]) -> None:
    if serve.poll() is None:
        serve.kill()
    for child in children:  # orphans if the test failed before they were gone
        if child.is_running():
            child.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killing_serve_leaves_nothing_and_the_next_serve_starts(
    sig: signal.Signals,
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    tmp_path: Path,
    topic_prefix: str,
) -> None:
    env = _env(mosquitto, embedded_mongo, tmp_path, topic_prefix)
    port = free_port()
    first = _serve(env, port, tmp_path / "first.log")
    children: list[psutil.Process] = []
    try:
        children = _children_when_up(first, port)
        worker = _worker_pid(children)
        deadline = time.monotonic() + 30  # the worker works with no page opened
        while _lease_pids(env) != {worker} and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _lease_pids(env) == {worker}
        assert (tmp_path / FOLDER / f"{first.pid}.json").exists()
        first.send_signal(sig)
        code = first.wait(30)
        assert code == {signal.SIGTERM: 128 + sig, signal.SIGINT: 130}.get(sig, -sig)
        _, alive = psutil.wait_procs(children, timeout=20)
        assert alive == [], [child.cmdline() for child in alive]
    finally:
        _clean_up(first, children)
    second = _serve(env, port, tmp_path / "second.log")
    again: list[psutil.Process] = []
    try:
        again = _children_when_up(second, port)
        time.sleep(1)
        assert second.poll() is None, (tmp_path / "second.log").read_text()
        assert not (tmp_path / FOLDER / f"{first.pid}.json").exists()
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(again, timeout=20)
        assert alive == []
    finally:
        _clean_up(second, again)
    printed = (tmp_path / "first.log").read_text()
    assert f"SMIB Console: http://127.0.0.1:{port}" in printed
    assert "registered 1 demo cabinets" in printed  # two boards left to adopt
    assert "demo history not seeded: MONGO_URI is set" in printed  # never a real database
    assert "Port" not in (tmp_path / "second.log").read_text()


def test_a_new_serve_ends_only_what_a_dead_serve_left(tmp_path: Path) -> None:
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        dead_serve = {"pid": gone.pid, "started": 1.0, "cmdline": ["smib", "serve"]}
        me = ProcessId.of(os.getpid())
        reused = {"pid": me.pid, "started": me.started, "cmdline": ["a", "reused", "pid"]}
        folder = tmp_path / FOLDER
        folder.mkdir()
        (folder / "1.json").write_text(
            json.dumps({"serve": dead_serve, "children": [_as_dict(left.pid), reused]})
        )
        live_serve = ProcessId.of(os.getpid())
        still = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (folder / "2.json").write_text(
            json.dumps({"serve": _as_dict(live_serve.pid), "children": [_as_dict(still.pid)]})
        )
        ended = end_leftovers(tmp_path, timeout=5)
        assert [p.pid for p in ended] == [left.pid]
        left.wait(5)  # ended (and reaped by end_leftovers: no exit code left to read)
        assert still.poll() is None, "the children of a live serve are its own"
        assert not (folder / "1.json").exists() and (folder / "2.json").exists()
        still.kill()
        still.wait()
    finally:
        left.kill()
        left.wait()


def _as_dict(pid: int) -> dict[str, Any]:
    process = ProcessId.of(pid)
    return {"pid": process.pid, "started": process.started, "cmdline": process.cmdline}


def test_serve_starts_a_worker_again_when_it_dies(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path: Path, topic_prefix: str
) -> None:
    env = _env(mosquitto, embedded_mongo, tmp_path, topic_prefix)
    port = free_port()
    serve = _serve(env, port, tmp_path / "serve.log")
    children: list[psutil.Process] = []
    try:
        children = _children_when_up(serve, port)
        worker = _worker_pid(children)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 20
        again = worker
        while again == worker and time.monotonic() < deadline:
            time.sleep(0.3)
            now = psutil.Process(serve.pid).children()
            again = next((c.pid for c in now if "worker" in c.cmdline()), worker)
        assert again != worker, (tmp_path / "serve.log").read_text()
        children = psutil.Process(serve.pid).children(recursive=True)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(children, timeout=20)
        assert alive == []
    finally:
        _clean_up(serve, children)
    assert "worker ended (exit code -9); starting it again" in (tmp_path / "serve.log").read_text()
