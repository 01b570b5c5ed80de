"""The bus's subscriber hook and the SSE body: bounded, independent, cut off when slow."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from smib_core.bus import DeviceBus
from smib_core.protocol import Topics
from smib_core.web.stream import event_stream
from tests.servers import free_port

TOPICS = Topics()


def _config(relay: str, comp: str = "app") -> bytes:
    return json.dumps({"rly": relay, "typ": "cfg", "comp": comp, "version": "v1"}).encode()


def _feed(bus: DeviceBus, relay: str, comp: str = "app") -> None:
    bus.handle_payload(TOPICS.cfg, _config(relay, comp))


def test_subscriptions_are_filtered_independent_and_closed_alone() -> None:
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", TOPICS)  # never started: fed by hand
    first = bus.subscribe(10, accept=lambda m: m.relay == "aa0000000001")
    second = bus.subscribe(10)
    _feed(bus, "aa0000000001")
    _feed(bus, "aa0000000002")
    first.close()
    _feed(bus, "aa0000000001", "net")
    assert [m.relay for _, m in first.drain()] == ["aa0000000001"]
    assert [(m.relay, m.comp) for _, m in second.drain()] == [
        ("aa0000000001", "app"),
        ("aa0000000002", "app"),
        ("aa0000000001", "net"),
    ]
    assert bus.stats().listener_errors == 0


def test_a_slow_subscription_is_cut_off_and_forgotten_not_grown() -> None:
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", TOPICS)
    woken: list[int] = []
    slow = bus.subscribe(3, wake=lambda: woken.append(1))
    other = bus.subscribe(100)
    for n in range(10):
        _feed(bus, f"aa00000000{n:02d}")
    assert slow.cut_off and slow.closed
    assert slow.drain() == []  # its queue was dropped
    assert len(other.drain()) == 10  # the other one got everything
    assert len(bus.router._listeners) == 1  # the cut subscription is no listener any more
    assert woken  # the consumer was told


def test_the_sse_body_sends_messages_keep_alives_and_a_cut_off() -> None:
    bus = DeviceBus(f"mqtt://127.0.0.1:{free_port()}", TOPICS)

    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        subscription = bus.subscribe(2, wake=lambda: loop.call_soon_threadsafe(ready.set))
        body = event_stream(subscription, ready, keepalive_s=0.05)
        chunks = [await anext(body)]  # ": connected"
        _feed(bus, "aa0000000001")
        chunks.append(await anext(body))
        chunks.append(await anext(body))  # nothing new: a keep-alive comment
        for n in range(5):  # more than it holds, while nobody reads
            _feed(bus, f"aa00000000{n:02d}")
        chunks.extend([chunk async for chunk in body])
        assert subscription.closed
        return chunks

    # A loop of its own on a thread of its own: an earlier test (Playwright's sync API)
    # may leave an event loop running on the main thread, where asyncio.run refuses.
    with ThreadPoolExecutor(1) as runner:
        chunks = runner.submit(asyncio.run, run()).result(timeout=30)
    assert chunks[0] == b": connected\n\n"
    assert chunks[1].startswith(b"event: config\nid: 1\ndata: ")
    assert json.loads(chunks[1].split(b"data: ", 1)[1])["relay"] == "aa0000000001"
    assert chunks[2] == b": keep-alive\n\n"
    assert chunks[-1].startswith(b"event: cut_off\n")
    assert len(bus.router._listeners) == 0
