"""The ASGI server's lifespan: with SMIB_WORKER=inprocess it runs the deployment's Worker
in the web server process and stops it at shutdown; by default it runs none."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.api_server import UVICORN, serve
from tests.servers import EmbeddedMongo, Mosquitto

pytestmark = pytest.mark.integration


def _holders(db: Any) -> set[int]:
    docs = db["leases"].find({"expires_at": {"$gt": time.time()}})
    return {int(str(d["owner"]).split(":")[-2]) for d in docs}


@pytest.mark.parametrize("mode", ["inprocess", "off"])
def test_the_lifespan_runs_a_worker_only_when_asked(
    mode: str, mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path: Any
) -> None:
    with serve(
        UVICORN, embedded_mongo.uri, mosquitto.uri, tmp_path, env={"SMIB_WORKER": mode}
    ) as served:
        db = served.db()
        deadline = time.monotonic() + 20
        while mode == "inprocess" and served.process.pid not in _holders(db):
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.3)
        if mode == "off":
            time.sleep(3)
            assert served.process.pid not in _holders(db)
        served.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete
        assert served.process.wait(30) in (0, -signal.SIGTERM)
        log = served.log()
        assert "Application shutdown complete" in log
        if mode == "inprocess":
            # stopped leases are given back at once: nobody holds one any more
            assert served.process.pid not in _holders(db)
        db.client.close()


@pytest.mark.parametrize("down", ["broker", "database"])
def test_readyz_is_503_while_the_broker_or_the_database_is_unreachable(
    down: str, mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path: Any
) -> None:
    import httpx

    from tests.servers import free_port

    dead = f"127.0.0.1:{free_port()}"
    broker = f"mqtt://{dead}" if down == "broker" else mosquitto.uri
    mongo = f"mongodb://{dead}/" if down == "database" else embedded_mongo.uri
    with serve(UVICORN, mongo, broker, tmp_path, accounts=False, ready_path="/healthz") as served:
        ready = httpx.get(f"{served.url}/readyz", timeout=15)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready" and body[down] is False
        if down == "broker":
            assert body["database"] is True
        assert httpx.get(f"{served.url}/healthz", timeout=5).json() == {"status": "ok"}
