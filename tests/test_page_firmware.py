"""The firmware page: empty library, the table, archive with confirmation, role check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.services.firmware import add_firmware
from smib_core.store.firmware import FirmwareLibrary
from smib_core.ui import resources

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "firmware.py")
TECH = Principal("tina", Role.TECHNICIAN)


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch, who: Principal) -> AppTest:
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = who
    return app.run()


def test_empty_library(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(mongo_db, monkeypatch, TECH)
    assert not app.exception
    assert "The library is empty" in app.info[0].value


def test_table_and_archive_with_confirmation(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_firmware(mongo_db, TECH, b"\xe9" * 100, filename="a.bin", product="cloudy", version="v1")
    app = page(mongo_db, monkeypatch, TECH)
    assert not app.exception
    table = app.dataframe[0].value
    assert table[["product", "version", "size"]].values.tolist() == [["cloudy", "v1", 100]]
    archive = next(b for b in app.button if b.label == "Archive")
    assert archive.disabled
    app.checkbox[0].check().run()
    next(b for b in app.button if b.label == "Archive").click().run()
    assert not app.exception
    assert "cloudy v1 archived." in app.success[0].value
    assert FirmwareLibrary(mongo_db).list() == []


def test_a_role_without_the_permission_sees_nothing(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, Principal("ann", Role.ANALYST))
    assert "does not allow" in app.error[0].value
    assert not app.dataframe
