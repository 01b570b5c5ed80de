"""Sessions that survive a reload and open in new tabs; a sign-out in one tab ends the
other; the cookie is HttpOnly and SameSite=Strict."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ServedApp, sign_in

pytestmark = pytest.mark.browser


def _signed_in(page: Any) -> None:
    page.get_by_role("button", name="Sign out").wait_for(timeout=20_000)
    expect(page.get_by_label("Account name")).to_have_count(0)


def test_reload_and_new_tab_keep_the_session_and_sign_out_ends_every_tab(
    served_app: ServedApp, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        first = context.new_page()
        first.set_default_timeout(20_000)
        sign_in(first, served_app, "manager")
        first.wait_for_timeout(1500)  # the page trades its one-time code for the cookie
        cookie = next(c for c in context.cookies() if c["name"] == "smib_session")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

        first.reload()
        _signed_in(first)

        second = context.new_page()
        second.set_default_timeout(20_000)
        second.goto(f"{served_app.url}/fleet")
        _signed_in(second)
        expect(second.get_by_role("heading", name="Fleet")).to_be_visible()

        first.get_by_role("button", name="Sign out").click()
        first.get_by_label("Account name").wait_for()

        # The other tab's next run (its live section's refresh, or a click) ends it too.
        second.get_by_label("Account name").wait_for(timeout=30_000)
        second.reload()
        second.get_by_label("Account name").wait_for()
    finally:
        context.close()
    db = served_app.db()
    ended = db["sessions"].find_one({"name": "manager"}, sort=[("started_at", -1)])
    elsewhere = db["audit"].find_one(
        {"actor": "manager", "kind": "sign_out", "detail.reason": "session ended elsewhere"}
    )
    db.client.close()
    assert ended is not None and ended["ended_at"] is not None and ended["sid"] is None
    assert elsewhere is not None  # the second tab was ended by the session check
