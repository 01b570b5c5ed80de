"""/metrics figures: bus counters, boards online, collection slots and rollouts by state
read at scrape time, the reply latency histogram and API requests counted as they go."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from smib_core.bus import DeviceBus
from smib_core.protocol import Topics
from smib_core.settings import Settings
from smib_core.web import context as web_context
from smib_core.web.metrics import SmibCollector
from tests.servers import free_port

pytestmark = pytest.mark.integration


def test_scrape_reads_the_bus_and_the_database(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = Topics()
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", topics)  # fed by hand
    for relay in ("aa0000000001", "aa0000000002"):
        payload = {"rly": relay, "typ": "cfg", "comp": "app", "version": "v1"}
        bus.handle_payload(topics.cfg, json.dumps(payload).encode())
    bus.handle_payload(topics.cfg, b"not json")
    now = datetime.now(UTC)
    mongo_db["meter_snapshots"].insert_many(
        [
            {"relay": "aa0000000001", "at": now, "ok": True, "slot": 1, "period_s": 300},
            {"relay": "aa0000000001", "at": now, "ok": True, "slot": 2, "period_s": 300},
            {"relay": "aa0000000002", "at": now, "ok": False, "slot": 2, "period_s": 300},
            {"relay": "aa0000000002", "at": now, "ok": True},  # on demand: no slot
        ]
    )
    mongo_db["rollouts"].insert_many([{"state": "running"}, {"state": "halted"}])
    ctx = SimpleNamespace(bus=bus, db=mongo_db, settings=Settings())
    monkeypatch.setattr(web_context, "_context", ctx)
    registry = CollectorRegistry()
    registry.register(SmibCollector())
    text = generate_latest(registry).decode()
    lines = set(text.splitlines())
    assert "smib_messages_in_total 3.0" in lines
    assert "smib_boards_online 2.0" in lines
    assert any(line.startswith("smib_rejections_total{reason=") for line in lines)
    assert 'smib_collection_slots_total{result="read"} 2.0' in lines
    assert 'smib_collection_slots_total{result="failed"} 1.0' in lines
    assert 'smib_rollouts{state="running"} 1.0' in lines
    assert 'smib_rollouts{state="halted"} 1.0' in lines
    assert 'smib_rollouts{state="paused"} 0.0' in lines
