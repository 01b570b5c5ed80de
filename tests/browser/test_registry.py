"""Registry page in the browser: upload a machine list, read the preview, confirm, then
download the cabinets (the download itself is audited)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from smib_core.store.registry import Registry
from tests.browser.conftest import ServedApp, screenshot, sign_in

pytestmark = pytest.mark.browser


def test_import_a_machine_list_then_download_the_cabinets(
    served_app: ServedApp, page: Any, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:4]
    floor = f"Import floor {tag}"
    machines = tmp_path / "machines.csv"
    machines.write_text(
        "name,location,denomination,serial,game,par\n"
        f"Imported {tag} 1,{floor},0.01,IMP-{tag}-1,Buffalo Gold,8.5\n"
        f"Imported {tag} 2,{floor},0.25,IMP-{tag}-2,Cleopatra,\n",
        encoding="utf-8",
    )
    page.goto(served_app.url)  # warm up: a sign-in during the app's first run can be lost
    page.get_by_role("heading", name="Sign in").wait_for()
    page.wait_for_timeout(2000)
    sign_in(page, served_app, "tech")
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name="Registry").click()
    page.get_by_role("heading", name="Registry").wait_for()
    page.get_by_role("tab", name="Import and export").click()

    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(machines))
    page.get_by_text("nothing will be imported").wait_for()  # the floor does not exist yet
    page.get_by_text("Create the locations the file names").click()
    page.get_by_text("once imported: 2 added, 0 updated, 0 unchanged; new locations").wait_for()
    grid = page.get_by_test_id("stDataFrame").last
    expect(grid.locator("tr").filter(has_text=f"Imported {tag} 1")).to_contain_text("add")
    screenshot(page, "registry_import_preview")
    page.get_by_role("button", name="Import these changes").click()
    page.get_by_text("Imported machines.csv: 2 added").wait_for()

    registry = Registry(served_app.db())
    place = next(loc for loc in registry.locations() if loc.name == floor)
    cabinets = {c.name: c for c in registry.cabinets(location_id=place.id)}
    assert sorted(cabinets) == [f"Imported {tag} 1", f"Imported {tag} 2"]
    assert cabinets[f"Imported {tag} 1"].par == 8.5

    page.get_by_role("tab", name="Import and export").click()
    with page.expect_download() as caught:
        page.get_by_role("button", name="Download the cabinets (CSV)").click()
    download = caught.value
    assert download.suggested_filename == "cabinets.csv"
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    assert f"Imported {tag} 1,{floor},,0.01,IMP-{tag}-1,,Buffalo Gold,8.5" in text
    exports = served_app.db()["audit"].find({"kind": "cabinet_export", "actor": "tech"})
    assert [d["detail"]["format"] for d in exports] == ["csv"]
