"""`smib export` against the embedded database: gaming days, a location by name, the
format from the file name, progress on stderr, audited as the CLI user; bad input is
one clear line and no file."""

from __future__ import annotations

import csv
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest

from smib_core.cli import main
from smib_core.services.meter_seed import SeedCabinet, seed_history
from smib_core.store.audit import AuditTrail
from smib_core.store.meters import MeterStore
from smib_core.store.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_db(mongo_db: Any, embedded_mongo: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    return mongo_db


@pytest.fixture
def seeded(cli_db: Any) -> Any:
    """Two registered cabinets in two locations, two days of simulated readings."""
    mongo_db = cli_db
    registry = Registry(mongo_db)
    cabinets = []
    for n, place in enumerate(("Main floor", "VIP room")):
        location = registry.add_location(place, actor="test")
        cabinet = registry.add_cabinet(
            {
                "name": f"Slot {n}",
                "location_id": location.id,
                "denomination": 0.05,
                "relay": f"cd000000000{n}",
            },
            actor="test",
        )
        cabinets.append(
            SeedCabinet(cabinet.id, cabinet.name, location.id, place, cabinet.relay or "", n, 0.05)
        )
    seed_history(MeterStore(mongo_db), cabinets, datetime(2024, 5, 13, tzinfo=UTC), 2 * 288)
    return mongo_db


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def test_daily_export_of_one_location(
    seeded: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vip.parquet"
    argv = ["export", "--from", "2024-05-13", "--to", "2024-05-14", "--location", "vip room"]
    assert _run([*argv, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 rows" in captured.out and "exported 2 rows" in captured.err
    back = pd.read_parquet(out)
    assert back["Cabinet"].tolist() == ["Slot 1", "Slot 1"]
    assert [str(d) for d in back["Gaming day"]] == ["2024-05-13", "2024-05-14"]
    assert (back["Coin in ($)"] > 0).all()
    record = AuditTrail(seeded).query(kind="export").iloc[0]
    assert record["actor"].startswith("cli:") and record["outcome"] == "ok"
    assert "VIP room" in record["detail"] and '"rows": 2' in record["detail"]
    assert not list(tmp_path.glob("*.partial"))


def test_raw_csv_between_two_times(seeded: Any, tmp_path: Path) -> None:
    out = tmp_path / "raw.data"
    argv = ["export", "--from", "2024-05-13T10:00", "--to", "2024-05-13T11:00", "--format", "csv"]
    assert _run([*argv, "--granularity", "raw", "-o", str(out), "--chunk-rows", "7"]) == 0
    back = pd.read_csv(out)
    assert len(back) == 2 * 12
    assert back["Time (UTC)"].min() == "2024-05-13 10:00:00"
    assert back["Time (UTC)"].max() == "2024-05-13 10:55:00"


def test_times_without_an_offset_are_the_casinos_local_time(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMIB_TIMEZONE", "Europe/Paris")  # UTC+2 in May
    out = tmp_path / "raw.csv"
    argv = ["export", "--from", "2024-05-13T12:00", "--to", "2024-05-13T13:00"]
    assert _run([*argv, "--granularity", "raw", "-o", str(out)]) == 0
    back = pd.read_csv(out)
    assert back["Time (UTC)"].min() == "2024-05-13 10:00:00"
    assert back["Time (local)"].min() == "2024-05-13 12:00:00"
    assert set(back["Time zone"]) == {"Europe/Paris"}
    assert set(back["Gaming day"]) == {"2024-05-13"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "2024-05-14", "--to", "2024-05-13"], "the last day comes before"),
        (["--from", "yesterday", "--to", "2024-05-13"], "is not an ISO date"),
        (["--from", "2024-05-13", "--to", "2024-05-13", "--location", "Mars"], "no location"),
        (["--from", "2024-05-13", "--to", "2024-05-13T05:00"], "both as dates or both"),
    ],
)
def test_bad_input_is_one_line_and_no_file(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "x.csv"
    assert _run(["export", *argv, "-o", str(out)]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_format_must_be_known(cli_db: Any, tmp_path: Path) -> None:
    argv = ["export", "--from", "2024-05-13", "--to", "2024-05-13", "-o", str(tmp_path / "x.txt")]
    assert _run(argv) == 1


HOSTILE_NAMES = ("=1+1", "@SUM(1)", "+cmd|' /C calc'!A0", "-2+3")


@pytest.fixture
def hostile(cli_db: Any) -> Any:
    """Cabinets and a location whose names a spreadsheet would run as formulas."""
    registry = Registry(cli_db)
    location = registry.add_location('=HYPERLINK("http://evil.example","x")', actor="test")
    cabinets = []
    for n, name in enumerate(HOSTILE_NAMES):
        relay = f"ee000000000{n}"
        values = {"name": name, "location_id": location.id, "denomination": 0.01, "relay": relay}
        cabinet = registry.add_cabinet(values, actor="test")
        cabinets.append(SeedCabinet(cabinet.id, name, location.id, location.name, relay, n, 0.01))
    seed_history(MeterStore(cli_db), cabinets, datetime(2024, 5, 13, tzinfo=UTC), 3)
    return cli_db


def test_csv_export_writes_formula_names_as_text(hostile: Any, tmp_path: Path) -> None:
    out = tmp_path / "raw.csv"
    argv = ["export", "--from", "2024-05-13", "--to", "2024-05-13", "--granularity", "raw"]
    assert _run([*argv, "-o", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    header, body = rows[0], rows[1:]
    assert len(body) == 4 * 3
    cells = [cell for row in body for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))]
    minus = [c for c in cells if c.startswith("-")]
    assert all(float(c) < 0 for c in minus)  # only numbers may start with a minus
    names = {row[header.index("Cabinet")] for row in body}
    assert names == {"'" + name for name in HOSTILE_NAMES}
    assert {row[header.index("Location")] for row in body} == {
        '\'=HYPERLINK("http://evil.example","x")'
    }


def test_excel_export_holds_formula_names_as_plain_strings(hostile: Any, tmp_path: Path) -> None:
    out = tmp_path / "raw.xlsx"
    argv = ["export", "--from", "2024-05-13", "--to", "2024-05-13", "--granularity", "raw"]
    assert _run([*argv, "-o", str(out)]) == 0
    sheet = openpyxl.load_workbook(out)["Meters"]
    header = [c.value for c in sheet[1]]
    column = header.index("Cabinet") + 1
    cells = [sheet.cell(row, column) for row in range(2, sheet.max_row + 1)]
    assert {c.value for c in cells} == set(HOSTILE_NAMES)
    assert {c.data_type for c in cells} == {"s"}  # strings, never formulas ("f")
    with zipfile.ZipFile(out) as book:
        assert "<f>" not in book.read("xl/worksheets/sheet1.xml").decode()
