"""SMIB Console as one ASGI server: the pages (pages/console.py), the HTTP API under /api/v1
and /healthz, /readyz, /metrics. `streamlit run app.py`, `uvicorn app:app` and
`smib serve` all serve this object (see smib_core/web/asgi.py)."""

from pathlib import Path

import streamlit as st

from smib_core.web.asgi import lifespan, routes

app = st.App(Path(__file__).parent / "pages" / "console.py", routes=routes(), lifespan=lifespan)
