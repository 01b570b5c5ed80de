"""The one server: Streamlit's pages, the HTTP API and the operations endpoints on one
port, as an ASGI application (`st.App`, built in app.py).

`app.py` holds `app = st.App("pages/console.py", routes=routes(), lifespan=lifespan)`:
`streamlit run app.py` finds that object and serves it with uvicorn, `uvicorn app:app`
serves it directly, and `smib serve` runs `streamlit run app.py`. The Streamlit script,
`pages/console.py`, lives beside the pages it navigates: Streamlit takes a `pages/`
folder next to the script as automatic navigation, and there is none next to this one,
so the console's `st.navigation` is the only navigation from the very first request.

The lifespan builds the process's `WebContext` (settings, database, bus) and, when
`SMIB_WORKER=inprocess`, starts a `services.worker.Worker` in this process and stops it
at shutdown. The default (`off`) runs none: `smib serve` starts its own worker process,
and a deployment that runs `streamlit run app.py` or uvicorn alone runs `smib worker`
beside it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pymongo
from pymongo.errors import PyMongoError
from starlette.routing import BaseRoute, Mount

from smib_core.errors import SmibError
from smib_core.services.worker import Worker
from smib_core.settings import Settings
from smib_core.web import ops, sessions
from smib_core.web.context import WebContext, close_process_context, process_context

log = logging.getLogger(__name__)


def routes() -> list[BaseRoute]:
    """The routes served beside Streamlit's: the API under /api/v1 and the operations."""
    from smib_core.web.api import build_api

    return [Mount("/api/v1", app=build_api()), *ops.ROUTES, *sessions.ROUTES]


def start_worker(settings: Settings) -> Worker:
    """A started `services.worker.Worker` for this deployment (as `smib worker` runs)."""
    worker = Worker(settings)
    worker.start()
    return worker


def _prepare(ctx: WebContext) -> None:
    with pymongo.timeout(5.0):
        ctx.prepare()


@asynccontextmanager
async def lifespan(_app: object) -> AsyncIterator[dict[str, Any]]:
    settings = Settings.from_env()
    ctx = process_context(settings)
    try:
        await anyio.to_thread.run_sync(_prepare, ctx)
    except (PyMongoError, SmibError) as exc:  # built on first use; /readyz says 503
        log.warning("the database is not reachable yet (%s); serving anyway", exc)
    worker = None
    if settings.worker_mode == "inprocess":
        worker = await anyio.to_thread.run_sync(start_worker, settings)
        log.info("SMIB_WORKER=inprocess: the background services run in the web server")
    try:
        yield {}
    finally:
        if worker is not None:
            await anyio.to_thread.run_sync(worker.stop)
        await anyio.to_thread.run_sync(close_process_context)
