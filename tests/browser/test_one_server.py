"""One server: a freshly started `streamlit run app.py` (and `uvicorn app:app`) serves the
console, the API and the operations endpoints on one port, and the very first sign-in
(even by a deep link) works: no `pages/` folder is taken as navigation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.api_server import PASSWORD, STREAMLIT_RUN, UVICORN, Served, serve
from tests.servers import EmbeddedMongo, Mosquitto

pytestmark = pytest.mark.browser


@pytest.fixture(params=["streamlit run", "uvicorn"])
def fresh(
    request: pytest.FixtureRequest,
    mosquitto: Mosquitto,
    embedded_mongo: EmbeddedMongo,
    tmp_path: Any,
) -> Iterator[Served]:
    command = STREAMLIT_RUN if request.param == "streamlit run" else UVICORN
    with serve(command, embedded_mongo.uri, mosquitto.uri, tmp_path) as served:
        yield served


@pytest.mark.parametrize("path", ["", "fleet"])
def test_the_first_sign_in_on_a_fresh_server_works(fresh: Served, page: Any, path: str) -> None:
    page.goto(f"{fresh.url}/{path}")  # the server's very first page request
    page.get_by_label("Account name").fill("manager")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for(timeout=20_000)
    if path == "fleet":
        expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    # the sidebar is the role's navigation, not a listing of a pages folder
    expect(page.get_by_role("link", name="Accounts")).to_have_count(0)
    db = fresh.db()
    record = db["audit"].find_one({"actor": "manager", "kind": "sign_in"})
    db.client.close()
    assert record is not None and record["outcome"] == "ok", fresh.log()
    health = httpx.get(f"{fresh.url}/healthz", timeout=5)
    assert health.json() == {"status": "ok"}
