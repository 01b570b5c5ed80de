"""Operations endpoints at the server's root: `/healthz`, `/readyz`, `/metrics`.

`/healthz` answers 200 while the process serves. `/readyz` answers 200 when the broker
is connected and the database answers a ping within a second, else 503; both say what
they checked as JSON. `/metrics` is Prometheus text (`web.metrics`). None needs a token:
they reveal no board data, only counts (put them behind the reverse proxy's rules).
"""

from __future__ import annotations

import anyio
import pymongo
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smib_core.web.context import WebContext, process_context
from smib_core.web.metrics import REGISTRY


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _database_ok(ctx: WebContext) -> bool:
    try:
        with pymongo.timeout(2.0):
            ctx.db.client.admin.command("ping")
    except Exception:
        return False
    return True


async def readyz(_request: Request) -> JSONResponse:
    ctx = process_context()
    broker = ctx.bus.connected
    database = await anyio.to_thread.run_sync(_database_ok, ctx)
    ready = broker and database
    body = {"status": "ready" if ready else "not ready", "broker": broker, "database": database}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(_request: Request) -> Response:
    data = await anyio.to_thread.run_sync(generate_latest, REGISTRY)
    return Response(data, media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
