"""The page list, built per role: a person only sees the pages their role may use.

Hiding a page is a convenience, not a permission: every page checks its permission
again (`page_principal`) and every action re-checks on the server side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from smib_core.auth import Permission, Principal

PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"  # the Streamlit script and its pages


@dataclass(frozen=True, slots=True)
class PageSpec:
    file: str
    title: str
    icon: str
    permission: Permission | None  # None: every signed-in person
    section: str


PAGES: tuple[PageSpec, ...] = (
    PageSpec("home.py", "Home", ":material/home:", None, "Console"),
    PageSpec("fleet.py", "Fleet", ":material/lan:", Permission.VIEW_FLEET, "Boards"),
    PageSpec("cabinet.py", "Cabinet", ":material/casino:", Permission.VIEW_FLEET, "Boards"),
    PageSpec("registry.py", "Registry", ":material/inventory_2:", Permission.VIEW_FLEET, "Boards"),
    PageSpec(
        "batch.py",
        "Batch work",
        ":material/dynamic_feed:",
        Permission.CONFIGURE_BOARD,
        "Boards",
    ),
    PageSpec("status.py", "Bus status", ":material/sensors:", Permission.VIEW_FLEET, "Boards"),
    PageSpec(
        "dashboard.py",
        "Dashboard",
        ":material/monitoring:",
        Permission.VIEW_DASHBOARD,
        "Meters",
    ),
    PageSpec("export.py", "Export", ":material/download:", Permission.EXPORT, "Meters"),
    PageSpec("events.py", "Events", ":material/bolt:", Permission.VIEW_EVENTS, "Machines"),
    PageSpec("alerts.py", "Alerts", ":material/notifications:", Permission.VIEW_EVENTS, "Machines"),
    PageSpec(
        "firmware.py",
        "Firmware library",
        ":material/memory:",
        Permission.MANAGE_FIRMWARE,
        "Firmware",
    ),
    PageSpec("rollouts.py", "Rollouts", ":material/system_update_alt:", Permission.OTA, "Firmware"),
    PageSpec("accounts.py", "Accounts", ":material/group:", Permission.MANAGE_ACCOUNTS, "Admin"),
    PageSpec("audit.py", "Audit trail", ":material/history:", Permission.VIEW_AUDIT, "Admin"),
)


def visible_pages(principal: Principal) -> list[PageSpec]:
    """The pages this person may open (and that exist in this build)."""
    return [
        spec
        for spec in PAGES
        if (spec.permission is None or principal.can(spec.permission))
        and (PAGES_DIR / spec.file).exists()
    ]


def signed_out_pages(render: Callable[[], None]) -> list[st.Page]:
    """Every page's address leads to the sign-in form while signed out, so a deep link
    survives signing in (and no "page not found" covers the form)."""
    pages = [st.Page(render, title="Sign in", default=True)]
    for spec in PAGES:
        stem = Path(spec.file).stem
        if stem != "home":
            pages.append(st.Page(render, title="Sign in", url_path=stem))
    return pages


def navigation(principal: Principal) -> dict[str, list[st.Page]]:
    sections: dict[str, list[st.Page]] = {}
    for spec in visible_pages(principal):
        page = st.Page(
            str(PAGES_DIR / spec.file),
            title=spec.title,
            icon=spec.icon,
            default=spec.file == "home.py",
        )
        sections.setdefault(spec.section, []).append(page)
    return sections
