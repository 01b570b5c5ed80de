"""`smib location ...` and `smib cabinet ...` against the embedded database: a machine
list imported from CSV and Excel, a bad row writes nothing and names row and field,
a re-import updates instead of doubling (also after the import was killed midway),
dry runs change nothing, exports round-trip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from smib_core.cli import main
from smib_core.store.audit import os_actor
from smib_core.store.registry import Registry

pytestmark = pytest.mark.integration

GOOD = """name,location,relay,denomination,serial,manufacturer,game,par
Buffalo 7,Main floor,E831CDFA8384,0.01,SN-001,Aristocrat,Buffalo Gold,8.5
Cleo 2,Main floor,,0.25,SN-002,IGT,Cleopatra,
Dragon 1,VIP room,240ac4000001,$1,SN-003,Konami,China Shores,12%
"""


@pytest.fixture
def cli_db(mongo_db: Any, embedded_mongo: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    return mongo_db


def smib(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def floors(db: Any) -> None:
    registry = Registry(db)
    registry.add_location("Main floor", "setup")
    registry.add_location("VIP room", "setup")


def snapshot(db: Any) -> list[dict[str, Any]]:
    """Everything the registry stores, to compare before and after."""
    return sorted(
        (
            {k: v for k, v in doc.items() if k != "_id"}
            for name in ("locations", "cabinets")
            for doc in db[name].find({})
        ),
        key=repr,
    )


def test_locations_add_and_list(cli_db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert smib("location", "list") == 0
    assert "no locations" in capsys.readouterr().out
    assert smib("location", "add", "Main floor", "--notes", "ground level") == 0
    assert smib("location", "add", "main FLOOR") == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("added location Main floor (main-floor-")
    assert "smib: a location named 'main FLOOR' exists already" in captured.err
    assert smib("location", "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["cabinets"], r["notes"]) for r in listed] == [
        ("Main floor", 0, "ground level")
    ]
    audit = list(cli_db["audit"].find({}))
    assert [(d["actor"], d["kind"]) for d in audit] == [(os_actor(), "location_add")]


def test_cabinet_add_and_list_json(cli_db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    floors(cli_db)
    argv = ["cabinet", "add", "Buffalo 7", "--location", "main floor", "--denomination", "0.05"]
    assert smib(*argv, "--relay", "E831CDFA8384", "--par", "8.5", "--game", "Buffalo") == 0
    assert smib("cabinet", "add", "Bad", "--location", "Nowhere", "--denomination", "1") == 1
    vip = ["cabinet", "add", "Bad", "--location", "VIP room", "--denomination", "1"]
    assert smib(*vip, "--par", "120") == 1
    err = capsys.readouterr().err
    assert "there is no location 'Nowhere'" in err
    assert "par (theoretical hold) must be 0 to 100 %" in err
    assert smib("cabinet", "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(listed) == 1
    row = listed[0]
    assert (row["name"], row["location"], row["relay"], row["denomination"], row["par"]) == (
        "Buffalo 7",
        "Main floor",
        "e831cdfa8384",
        0.05,
        8.5,
    )
    assert smib("cabinet", "list", "--location", "VIP room") == 0
    assert "no cabinets" in capsys.readouterr().out


def test_import_a_good_file_then_again_updates_instead_of_doubling(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floors(cli_db)
    machines = tmp_path / "machines.csv"
    machines.write_text(GOOD, encoding="utf-8")
    assert smib("cabinet", "import", str(machines)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "3 added, 0 updated, 0 unchanged"
    registry = Registry(cli_db)
    cabinets = {c.name: c for c in registry.cabinets()}
    assert sorted(cabinets) == ["Buffalo 7", "Cleo 2", "Dragon 1"]
    buffalo, cleo, dragon = cabinets["Buffalo 7"], cabinets["Cleo 2"], cabinets["Dragon 1"]
    assert (buffalo.relay, buffalo.denomination, buffalo.par) == ("e831cdfa8384", 0.01, 8.5)
    assert (cleo.relay, cleo.par, dragon.denomination, dragon.par) == (None, None, 1.0, 12.0)

    # The same machines again, one renamed (matched by its serial), one changed by name.
    again = GOOD.replace("Cleo 2,Main floor,,0.25", "Cleo 2,Main floor,,0.50").replace(
        "Dragon 1,", "Dragon One,"
    )
    machines.write_text(again, encoding="utf-8")
    assert smib("cabinet", "import", str(machines)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "0 added, 2 updated, 1 unchanged"
    assert "row 3     updated      Cleo 2: denomination 0.25 -> 0.5" in out
    assert "row 4     updated      Dragon One: name Dragon 1 -> Dragon One" in out
    after = {c.name: c for c in registry.cabinets()}
    assert sorted(after) == ["Buffalo 7", "Cleo 2", "Dragon One"]
    assert after["Dragon One"].id == dragon.id and after["Cleo 2"].denomination == 0.5

    kinds = [d["kind"] for d in cli_db["audit"].find({}).sort("at", 1)]
    assert kinds.count("cabinet_add") == 3 and kinds.count("cabinet_edit") == 2
    imports = list(cli_db["audit"].find({"kind": "cabinet_import"}).sort("at", 1))
    assert [(d["outcome"], d["detail"]["added"], d["detail"]["updated"]) for d in imports] == [
        ("ok", 3, 0),
        ("ok", 0, 2),
    ]


def test_a_bad_row_writes_nothing_and_names_the_row_and_field(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floors(cli_db)
    bad = GOOD.replace("Cleo 2,Main floor,,0.25", "Cleo 2,Main floor,,cheap").replace(
        "240ac4000001", "not-a-relay"
    )
    machines = tmp_path / "machines.csv"
    machines.write_text(bad, encoding="utf-8")
    before = snapshot(cli_db)
    assert smib("cabinet", "import", str(machines)) == 1
    err = capsys.readouterr().err
    assert err.startswith("smib: 2 rows are bad, nothing was imported: ")
    assert "row 3, denomination: the denomination must be a number" in err
    assert "row 4, relay: " in err
    assert snapshot(cli_db) == before
    failed = list(cli_db["audit"].find({"kind": "cabinet_import"}))
    assert [d["outcome"] for d in failed] == ["failed"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Twin,Main floor,,0.01,SN-001,,,", "row 5, serial: this serial is in row 2 already"),
        ("Buffalo 7,VIP room,,0.01,,,,", "row 5, name: the name 'Buffalo 7' is in row 2 already"),
        ("Other,Main floor,e831cdfa8384,0.01,,,,", "row 5, relay: board e831cdfa8384 is in row 2"),
        ("New one,Main flor,,0.01,,,,", "row 5, location: there is no location 'Main flor'"),
        ("New one,Main floor,,,,,,", "row 5, denomination: a new cabinet needs a denomination"),
        ("New one,Main floor,,0.01,,,,101", "row 5, par: par (theoretical hold) must be 0 to 100"),
    ],
)
def test_rows_that_clash_are_refused(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, message: str
) -> None:
    floors(cli_db)
    machines = tmp_path / "machines.csv"
    machines.write_text(GOOD + row + "\n", encoding="utf-8")
    assert smib("cabinet", "import", str(machines)) == 1
    assert message in capsys.readouterr().err
    assert Registry(cli_db).cabinets() == []


def test_dry_run_prints_the_changes_and_writes_nothing(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floors(cli_db)
    machines = tmp_path / "machines.csv"
    machines.write_text(GOOD, encoding="utf-8")
    assert smib("cabinet", "import", str(machines)) == 0
    machines.write_text(
        GOOD.replace("Buffalo Gold,8.5", "Buffalo Grand,9") + "Terrace 1,Terrace,,0.05,,,,\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    before, audit_before = snapshot(cli_db), cli_db["audit"].count_documents({})
    assert smib("cabinet", "import", str(machines), "--dry-run") == 1  # Terrace is unknown
    assert "row 5, location: there is no location 'Terrace'" in capsys.readouterr().err
    argv = ("cabinet", "import", str(machines), "--dry-run", "--create-locations")
    assert smib(*argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would add location  Terrace"
    assert (
        "row 2     would update Buffalo 7: game Buffalo Gold -> Buffalo Grand; par 8.5 -> 9" in out
    )
    assert "row 3     unchanged    Cleo 2" in out
    new = "row 5     would add    Terrace 1: name Terrace 1; location Terrace; denomination 0.05"
    assert new in out
    assert out[-1] == (
        "dry run, nothing changed: would be 1 added, 1 updated, 2 unchanged; new locations: Terrace"
    )
    assert snapshot(cli_db) == before
    assert cli_db["audit"].count_documents({}) == audit_before

    assert smib("cabinet", "import", str(machines), "--create-locations") == 0
    terrace = [loc for loc in Registry(cli_db).locations() if loc.name == "Terrace"]
    assert len(terrace) == 1
    assert [c.name for c in Registry(cli_db).cabinets(location_id=terrace[0].id)] == ["Terrace 1"]


def test_excel_import_and_export_round_trip(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floors(cli_db)
    book = Workbook()
    sheet = book.active
    sheet.append(["Name", "Location", "Relay", "Denomination", "Serial", "Par"])
    sheet.append(["Buffalo 7", "Main floor", "e831cdfa8384", 0.01, 4711, 8.5])
    sheet.append(["Digits", "VIP room", 123456789, 0.25, "SN-9", None])  # Excel ate the zeros
    sheet.append([None, None, None, None, None, None])  # a blank row is skipped
    sheet.append(["@Lucky -7", "VIP room", None, 1, None, 3])
    source = tmp_path / "machines.xlsx"
    book.save(source)
    assert smib("cabinet", "import", str(source)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 added, 0 updated, 0 unchanged"
    cabinets = {c.name: c for c in Registry(cli_db).cabinets()}
    assert cabinets["Buffalo 7"].serial == "4711"
    assert cabinets["Digits"].relay == "000123456789"

    for fmt in ("xlsx", "csv"):
        exported = tmp_path / f"cabinets.{fmt}"
        assert smib("cabinet", "export", str(exported)) == 0
        assert f"wrote 3 cabinets to {exported}" in capsys.readouterr().out
        before = snapshot(cli_db)
        assert smib("cabinet", "import", str(exported)) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "0 added, 0 updated, 3 unchanged"
        assert snapshot(cli_db) == before

    rows = list(load_workbook(tmp_path / "cabinets.xlsx").active.iter_rows(values_only=True))
    assert rows[0] == (
        "name",
        "location",
        "relay",
        "denomination",
        "serial",
        "manufacturer",
        "game",
        "par",
    )
    assert rows[1][:4] == ("Buffalo 7", "Main floor", "e831cdfa8384", 0.01) and rows[1][7] == 8.5
    text = (tmp_path / "cabinets.csv").read_text(encoding="utf-8-sig")
    assert "\n'@Lucky -7,VIP room," in text  # neutralised: a spreadsheet shows it as text
    exports = list(cli_db["audit"].find({"kind": "cabinet_export"}))
    formats = [(d["detail"]["format"], d["detail"]["rows"]) for d in exports]
    assert formats == [("xlsx", 3), ("csv", 3)]


def test_a_file_that_is_not_a_machine_list_is_one_clear_line(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("name,seriel\nA,1\n", encoding="utf-8")
    assert smib("cabinet", "import", str(odd)) == 1
    fake = tmp_path / "fake.xlsx"
    fake.write_bytes(b"not a zip")
    assert smib("cabinet", "import", str(fake)) == 1
    assert smib("cabinet", "import", str(tmp_path / "machines.txt")) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("smib: row 1: unknown column 'seriel'")
    assert err[1] == "smib: fake.xlsx is not an Excel .xlsx file"
    assert err[2].startswith("smib: ") and "is not a file" in err[2]


def test_an_import_killed_by_sigkill_is_completed_by_importing_again(
    cli_db: Any, embedded_mongo: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floors(cli_db)
    machines = tmp_path / "machines.csv"
    lines = ["name,location,relay,denomination,serial"]
    lines += [f"Slot {n:04d},Main floor,cc{n:010x},0.01,S{n:04d}" for n in range(1500)]
    machines.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ, MONGO_URI=embedded_mongo.uri, MONGO_DB=cli_db.name)
    argv = [sys.executable, "-m", "smib_core", "cabinet", "import", str(machines)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while cli_db["cabinets"].count_documents({}) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    stored = cli_db["cabinets"].count_documents({})
    assert 50 <= stored < 1500, stored
    assert smib("cabinet", "import", str(machines)) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"{1500 - stored} added, 0 updated, {stored} unchanged"
    )
    names = [d["name"] for d in cli_db["cabinets"].find({})]
    assert len(names) == len(set(names)) == 1500
    assert cli_db["audit"].count_documents({"kind": "cabinet_import", "outcome": "ok"}) == 1
