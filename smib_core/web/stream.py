"""`GET /api/v1/stream`: board messages and machine events as Server-Sent Events.

Contract: each client gets its own bounded `bus.Subscription` (filtered by the optional
`relay` and `type` parameters) and an asyncio event the bus sets, thread-safely, when a
message is queued. The response sends `event: <type>` / `id: <n>` / `data: <json>` per
message and a `: keep-alive` comment after `KEEPALIVE_S` seconds of silence. A client
that goes away closes only its own subscription (nothing shared is touched); a client
too slow to take what it was sent (`QUEUE_SIZE` messages waiting) is cut off: the stream
sends `event: cut_off` and ends, and its queue is dropped, so memory never grows.
Secret config fields are masked before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from smib_core import protocol
from smib_core.auth import Permission, Principal, require
from smib_core.bus import Subscription
from smib_core.errors import InvalidInput
from smib_core.protocol import ConfigReply, DeviceMessage, EventMessage, MeterReply, NvsReply
from smib_core.web import metrics
from smib_core.web.access import caller, context
from smib_core.web.context import WebContext

KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000
TYPES = ("config", "meters", "nvs", "event")


def message_type(message: DeviceMessage) -> str:
    if isinstance(message, ConfigReply):
        return "config"
    if isinstance(message, MeterReply):
        return "meters"
    if isinstance(message, NvsReply):
        return "nvs"
    if isinstance(message, EventMessage):
        return "event"
    return "other"


def message_data(message: DeviceMessage, at: float) -> dict[str, Any]:
    """What a client is sent of a message: JSON-safe, secrets masked."""
    data: dict[str, Any] = {
        "relay": message.relay,
        "type": message_type(message),
        "typ": message.typ,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
    }
    if isinstance(message, ConfigReply):
        data["component"] = message.component
        data["fields"] = protocol.mask_secrets(message.fields)
    elif isinstance(message, MeterReply):
        data["meters"] = message.reading.to_json() if message.reading else None
        data["failure"] = message.failure
    elif isinstance(message, NvsReply):
        data["ok"] = message.ok
    elif isinstance(message, EventMessage):
        data["code"] = message.code
        data["name"] = message.name
        data["extra"] = dict(message.extra)
    return data


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def event_stream(
    subscription: Subscription, ready: asyncio.Event, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[bytes]:
    """The SSE body of one subscription; closes it however the stream ends (Starlette
    cancels the body of a client that went away: `finally` runs then too)."""
    sent = 0
    metrics.STREAM_CLIENTS.inc()
    try:
        yield b": connected\n\n"
        while True:
            for at, message in subscription.drain():
                sent += 1
                yield sse(message_type(message), message_data(message, at), sent)
            if subscription.cut_off:
                metrics.STREAM_CUT_OFF.inc()
                yield sse("cut_off", {"reason": "the client did not keep up"})
                return
            try:
                await asyncio.wait_for(ready.wait(), keepalive_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
            ready.clear()
    finally:
        subscription.close()
        metrics.STREAM_CLIENTS.dec()


router = APIRouter()


@router.get("/stream", tags=["stream"], response_class=StreamingResponse)
async def stream(
    request: Request,
    principal: Annotated[Principal, Depends(caller)],
    ctx: Annotated[WebContext, Depends(context)],
    relay: Annotated[list[str] | None, Query(description="only these boards")] = None,
    type: Annotated[list[str] | None, Query(description=f"only these: {', '.join(TYPES)}")] = None,
) -> StreamingResponse:
    """Board messages and machine events as they arrive (text/event-stream)."""
    require(principal, Permission.VIEW_FLEET)
    relays = frozenset(protocol.normalize_relay_id(r) for r in relay or [])
    types = frozenset(type or [])
    unknown = types - set(TYPES)
    if unknown:
        raise InvalidInput(f"unknown type {sorted(unknown)[0]!r}: {', '.join(TYPES)}")

    def accept(message: DeviceMessage) -> bool:
        return (not relays or message.relay in relays) and (
            not types or message_type(message) in types
        )

    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(ready.set)

    subscription = ctx.bus.subscribe(QUEUE_SIZE, accept, wake)
    return StreamingResponse(
        event_stream(subscription, ready),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
