"""The column-wise .xlsx writer: every part is well-formed XML, openpyxl (an independent
reader) reads back the exact values, types and styles, text is escaped, missing values
are empty cells, and a sheet that fills up continues on the next one."""

from __future__ import annotations

import zipfile
from datetime import date, datetime
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openpyxl
import pandas as pd
import pytest

from smib_core.xlsx import CellKind, XlsxStream, column_letter, render_rows

HEADERS = ["Time (UTC)", "Day", "Cabinet", "Games", "Coin in ($)", "OK", "Hold (%)"]
KINDS: list[CellKind] = ["time", "date", "text", "int", "money", "bool", "float"]


def frame(rows: int = 3, first: int = 0) -> pd.DataFrame:
    numbers = np.arange(first, first + rows)
    return pd.DataFrame(
        {
            "Time (UTC)": pd.Timestamp("2024-05-13 06:00:00.250")
            + pd.to_timedelta(numbers, unit="min"),
            "Day": [date(2024, 5, 13)] * rows,
            "Cabinet": pd.Series([f"Buffalo {n}" for n in numbers], dtype="string"),
            "Games": pd.array(numbers * 1_000_003, dtype="Int64"),
            "Coin in ($)": numbers * 0.1 + 12_345_678.91,
            "OK": pd.array([n % 2 == 0 for n in numbers], dtype="boolean"),
            "Hold (%)": numbers / 3,
        }
    )


def write(path: Path, *frames: pd.DataFrame, max_rows: int = 1_048_575) -> Path:
    book = XlsxStream(path, HEADERS, KINDS, "Meters", max_rows=max_rows)
    for part in frames:
        book.write(part)
    book.close()
    return path


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702, 16383)] == [
        "A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA", "XFD"
    ]  # fmt: skip


def test_every_part_is_well_formed_xml_and_declared(tmp_path: Path) -> None:
    path = write(tmp_path / "m.xlsx", frame(5))
    with zipfile.ZipFile(path) as package:
        assert package.testzip() is None
        names = package.namelist()
        for name in names:
            ElementTree.fromstring(package.read(name))
        types = package.read("[Content_Types].xml").decode()
    assert {"xl/workbook.xml", "xl/styles.xml", "xl/worksheets/sheet1.xml"} <= set(names)
    assert "/xl/worksheets/sheet1.xml" in types and "/xl/styles.xml" in types


def test_openpyxl_reads_back_values_types_and_styles(tmp_path: Path) -> None:
    written = frame(4)
    path = write(tmp_path / "m.xlsx", written.iloc[:2], written.iloc[2:])
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Meters"]
    sheet = book["Meters"]
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == HEADERS
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert len(rows) == 5
    for got, (_, want) in zip(rows[1:], written.iterrows(), strict=True):
        assert abs(got[0] - want["Time (UTC)"].to_pydatetime()).total_seconds() < 0.001
        assert got[1] == datetime(2024, 5, 13)
        assert got[2] == want["Cabinet"]
        assert got[3] == want["Games"] and isinstance(got[3], int)
        assert got[4] == want["Coin in ($)"]  # shortest repr: the same double back
        assert got[5] is bool(want["OK"])
        assert got[6] == want["Hold (%)"]
    assert sheet["A2"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert sheet["B2"].number_format == "yyyy-mm-dd"
    assert sheet["C2"].number_format == "General"
    assert sheet["E2"].number_format == "#,##0.00"  # money: the value stays whole
    assert sheet["G2"].number_format == "General"


def test_pandas_reads_the_same_frame_back(tmp_path: Path) -> None:
    written = frame(50)
    back = pd.read_excel(write(tmp_path / "m.xlsx", written), sheet_name="Meters")
    assert back["Time (UTC)"].dt.round("ms").tolist() == written["Time (UTC)"].tolist()
    assert back["Games"].tolist() == written["Games"].tolist()
    assert back["Coin in ($)"].tolist() == written["Coin in ($)"].tolist()
    assert back["Cabinet"].tolist() == written["Cabinet"].tolist()


def test_text_is_escaped_and_unwritable_characters_dropped(tmp_path: Path) -> None:
    tricky = frame(4)
    tricky["Cabinet"] = pd.Series(
        ["A & B <VIP>", "  spaced  ", "bell\x07 and tab\t", "]]> \"quoted\" 'single'"],
        dtype="string",
    )
    path = write(tmp_path / "m.xlsx", tricky)
    got = [row[0] for row in openpyxl.load_workbook(path)["Meters"].iter_rows(2, 5, 3, 3, True)]
    assert got == ["A & B <VIP>", "  spaced  ", "bell and tab\t", "]]> \"quoted\" 'single'"]


def test_missing_and_non_finite_values_are_empty_cells() -> None:
    holes = frame(2)
    holes.loc[0, "Time (UTC)"] = pd.NaT
    holes.loc[0, "Cabinet"] = pd.NA
    holes.loc[0, "Games"] = pd.NA
    holes.loc[0, "Coin in ($)"] = np.nan
    holes.loc[1, "Coin in ($)"] = np.inf
    holes.loc[0, "OK"] = pd.NA
    xml = render_rows(holes, KINDS, 2)
    first, second = xml.split("</row>")[:2]
    assert '<c r="B2"' in first
    assert all(f'r="{col}2"' not in first for col in "ACDEF")
    assert '<c r="G2"><v>0.0</v></c>' in first
    assert 'r="E3"' not in second and 'r="D3"' in second
    assert "nan" not in xml and "inf" not in xml and "NA" not in xml


def test_a_full_sheet_continues_on_the_next(tmp_path: Path) -> None:
    path = write(tmp_path / "m.xlsx", frame(5), frame(4, first=5), max_rows=4)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Meters", "Meters (2)", "Meters (3)"]
    cabinets = []
    for sheet in book:
        rows = list(sheet.iter_rows(values_only=True))
        assert list(rows[0]) == HEADERS and len(rows) <= 5
        cabinets += [row[2] for row in rows[1:]]
    assert cabinets == [f"Buffalo {n}" for n in range(9)]


def test_an_empty_export_is_a_header_only_workbook(tmp_path: Path) -> None:
    path = write(tmp_path / "m.xlsx")
    rows = list(openpyxl.load_workbook(path)["Meters"].iter_rows(values_only=True))
    assert rows == [tuple(HEADERS)]


def test_a_frame_must_match_the_declared_columns() -> None:
    with pytest.raises(ValueError, match="7 columns but 2 kinds"):
        render_rows(frame(1), ["time", "text"], 2)
    with pytest.raises(ValueError, match="headers"):
        XlsxStream(Path("unused.xlsx"), HEADERS, ["time"])
