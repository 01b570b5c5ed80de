"""CSV that a spreadsheet opens as data, never as formulas. The one way the console writes CSV.

A spreadsheet runs a cell that begins with `=`, `+`, `-` or `@` as a formula (and a tab
or carriage return can hide one), so a cabinet named `=HYPERLINK(...)` or an account
name typed on the sign-in form could act in the reader's spreadsheet. OWASP's rule,
applied here to every text cell: such a cell gets a leading single quote, which the
spreadsheet shows as plain text. Numbers, dates and booleans are written as they are
(a negative meter stays a number). Column-wise with pandas, so an export of millions of
rows pays no Python call per cell.
"""

from __future__ import annotations

import io
from typing import IO, Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_STARTS_RE = "[=+\\-@\t\r]"
LINE_END = "\r\n"


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would run prefixed with `'`.

    Returns `frame` itself when no cell needs it, else a copy; only text columns are
    looked at, so numbers stay numbers.
    """
    changed: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        if not _is_text(column):
            continue
        try:
            risky = column.str.match(_STARTS_RE, na=False).astype(bool)
        except AttributeError:  # an object column holding no text (dates, say)
            continue
        if risky.any():
            column = column.copy()
            column[risky] = "'" + column[risky].astype(str)
            changed[name] = column
    if not changed:
        return frame
    out = frame.copy()
    for name, column in changed.items():
        out[name] = column
    return out


def neutralise_cell(value: Any) -> Any:
    """One value as `neutralise_formulas` writes it (for code that writes rows one by one)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(frame: pd.DataFrame, file: IO[str], **options: Any) -> None:
    """`frame.to_csv(file, **options)` with formulas neutralised, no index and RFC 4180
    line ends (CRLF: a cell holding a carriage return is then quoted, not a row break)."""
    options.setdefault("index", False)
    options.setdefault("lineterminator", LINE_END)
    neutralise_formulas(frame).to_csv(file, **options)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` as UTF-8 CSV bytes, formulas neutralised: for a download button or a file."""
    out = io.StringIO()
    write_csv(frame, out)
    return out.getvalue().encode("utf-8")


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or isinstance(column.dtype, pd.StringDtype)
