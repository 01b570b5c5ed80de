"""Prometheus metrics of the web server process (`GET /metrics`), via prometheus_client.

Counters the process owns (`smib_api_requests_total`, the reply latency histogram) are
updated where things happen; the rest is read at scrape time from the bus's counters
and the database (`SmibCollector`), so nothing is counted twice. Database figures are
kept for `DB_CACHE_S` seconds: a scrape every few seconds costs a few queries a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smib_core.store.rollouts import ROLLOUT_STATES

REGISTRY = CollectorRegistry(auto_describe=True)
API_REQUESTS = Counter(
    "smib_api_requests", "HTTP API requests, by status", ["status"], registry=REGISTRY
)
REPLY_LATENCY = Histogram(
    "smib_reply_latency_seconds",
    "Time from a request's publish to the board's matching reply",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
STREAM_CLIENTS = Gauge(
    "smib_stream_clients", "Clients connected to /api/v1/stream now", registry=REGISTRY
)
STREAM_CUT_OFF = Counter(
    "smib_stream_cut_off", "Stream clients cut off for not keeping up", registry=REGISTRY
)
DB_CACHE_S = 15.0


class SmibCollector(Collector):
    """Bus counters and database figures of the process's `WebContext`, at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db_at = 0.0
        self._db_figures: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        from smib_core.web.context import current_context

        ctx = current_context()
        if ctx is None:
            return
        stats = ctx.bus.stats()
        yield CounterMetricFamily(
            "smib_messages_in", "MQTT messages received from boards", value=stats.messages_in
        )
        yield CounterMetricFamily(
            "smib_messages_out", "Commands published to boards", value=stats.messages_out
        )
        rejections = CounterMetricFamily(
            "smib_rejections", "Device messages refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.rejections.items()):
            rejections.add_metric([reason], count)
        yield rejections
        now = time.time()
        online = sum(
            1 for at in ctx.bus.relays_seen().values() if now - at < ctx.settings.offline_after_s
        )
        yield GaugeMetricFamily("smib_boards_online", "Boards heard recently", value=online)
        yield GaugeMetricFamily(
            "smib_broker_connected", "1 when connected to the MQTT broker", value=stats.connected
        )
        figures = self._database_figures(ctx)
        if not figures:
            return
        slots = CounterMetricFamily(
            "smib_collection_slots",
            "Scheduled meter readings stored, by result (read or failed)",
            labels=["result"],
        )
        slots.add_metric(["read"], figures["slots_read"])
        slots.add_metric(["failed"], figures["slots_failed"])
        yield slots
        rollouts = GaugeMetricFamily(
            "smib_rollouts", "Firmware rollouts, by state", labels=["state"]
        )
        for state in ROLLOUT_STATES:
            rollouts.add_metric([state], figures["rollouts"].get(state, 0))
        yield rollouts

    def _database_figures(self, ctx: Any) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._db_at < DB_CACHE_S and self._db_figures:
                return self._db_figures
            try:
                snapshots = ctx.db["meter_snapshots"]
                read = snapshots.count_documents({"slot": {"$exists": True}, "ok": True})
                failed = snapshots.count_documents({"slot": {"$exists": True}, "ok": False})
                by_state: dict[str, int] = {}
                for doc in ctx.db["rollouts"].find({}, {"state": 1}):
                    state = str(doc.get("state", ""))
                    by_state[state] = by_state.get(state, 0) + 1
            except Exception:  # the database is down: /readyz says so; keep what we had
                return self._db_figures
            self._db_figures = {"slots_read": read, "slots_failed": failed, "rollouts": by_state}
            self._db_at = time.monotonic()
            return self._db_figures


REGISTRY.register(SmibCollector())
