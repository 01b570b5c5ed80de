"""Sign-in and roles in the browser: what each role sees, and what nobody reaches unsigned."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, ServedApp, screenshot, sign_in

pytestmark = pytest.mark.browser


def _sidebar_links(page: Any) -> set[str]:
    """The navigation's page titles (Streamlit draws no navigation for a single page)."""
    page.wait_for_timeout(500)
    nav = page.locator('[data-testid="stSidebarNav"] a')
    # Each link reads "<icon name>\n\n<title>": keep the title.
    return {text.strip().splitlines()[-1] for text in nav.all_inner_texts()} or {"Home"}


def test_unsigned_request_never_reaches_a_page(served_app: ServedApp, page: Any) -> None:
    for path in ("", "fleet", "status", "accounts", "audit"):
        page.goto(f"{served_app.url}/{path}")
        page.get_by_role("heading", name="Sign in").wait_for()
        page.wait_for_timeout(1000)
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
        assert page.get_by_text("Boards heard").count() == 0
    screenshot(page, "sign-in")


def test_wrong_password_is_refused(served_app: ServedApp, page: Any) -> None:
    page.goto(served_app.url)
    page.get_by_label("Account name").fill("tech")
    page.get_by_label("Password", exact=True).fill("not-" + PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Wrong account name or password").wait_for()
    failures = served_app.db()["audit"].count_documents({"kind": "sign_in_failed"})
    assert failures >= 1


@pytest.mark.parametrize(
    "name, present, absent",
    [
        ("analyst", {"Home"}, {"Fleet", "Bus status", "Accounts", "Audit trail"}),
        ("manager", {"Home", "Fleet", "Bus status"}, {"Accounts", "Audit trail", "Batch work"}),
        ("tech", {"Home", "Fleet", "Bus status", "Firmware library"}, {"Accounts", "Audit trail"}),
        ("admin", {"Home", "Fleet", "Accounts", "Audit trail"}, set()),
    ],
)
def test_each_role_sees_only_its_pages(
    served_app: ServedApp, page: Any, name: str, present: set[str], absent: set[str]
) -> None:
    sign_in(page, served_app, name)
    links = _sidebar_links(page)
    assert present <= links and not (absent & links)
    screenshot(page, f"home-{name}")


def test_a_hidden_page_is_refused_by_url(served_app: ServedApp, page: Any) -> None:
    sign_in(page, served_app, "analyst")
    page.goto(f"{served_app.url}/accounts")
    page.wait_for_timeout(1500)
    assert page.get_by_text("Add an account").count() == 0
    assert page.get_by_role("heading", name="Accounts").count() == 0


def test_bus_status_is_live_and_sign_out_ends_the_session(served_app: ServedApp, page: Any) -> None:
    sign_in(page, served_app, "tech", "status")
    page.get_by_text("Boards heard").wait_for()
    page.get_by_text(served_app.relays[0]).first.wait_for(state="attached", timeout=30_000)
    screenshot(page, "bus-status")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
