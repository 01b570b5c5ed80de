"""A casino's machine list as a file: read for an import, written for an export.

Columns (headers in any order and case): `name`, `location`, `relay`, `denomination`,
`serial`, `manufacturer`, `game`, `par`; only `name` is required (a file of names and
pars updates the pars). Rows are numbered as a spreadsheet shows them: the header is
row 1. CSV is read as UTF-8 (a BOM is fine; Windows-1252 when it is not UTF-8) with the
delimiter guessed among `,` `;` and tab; Excel (.xlsx) is read with openpyxl (its first
sheet, cell values, not formulas). Blank rows are skipped.

Exports write the same columns: CSV with every cell that a spreadsheet would take for a
formula neutralised (`csvsafe.neutralise_cell`: a leading `'`, which `plain_cell` removes
again on import, so an exported file re-imports unchanged), Excel with
`smib_core.xlsx` (plain values: nothing in it is ever a formula).
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from smib_core.csvsafe import FORMULA_STARTS, neutralise_cell
from smib_core.errors import InvalidInput
from smib_core.store.registry import Registry
from smib_core.xlsx import CellKind, XlsxStream

FILE_COLUMNS = (
    "name",
    "location",
    "relay",
    "denomination",
    "serial",
    "manufacturer",
    "game",
    "par",
)
_KINDS: dict[str, CellKind] = {"denomination": "float", "par": "float"}
FORMATS = ("csv", "xlsx")
MAX_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class FileRow:
    """One data row: its spreadsheet row number and its cells by column name."""

    row: int
    cells: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class CabinetFile:
    """The rows of a machine list and which of the known columns it has."""

    source: str
    columns: tuple[str, ...]
    rows: tuple[FileRow, ...]


class FileRejected(InvalidInput):
    """The file itself cannot be read as a machine list (format, header, size)."""


# --- reading --------------------------------------------------------------------------


def file_format(file_name: str) -> str:
    """`csv` or `xlsx` from the file's name; InvalidInput for anything else."""
    suffix = Path(file_name).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise FileRejected(f"{file_name}: a machine list is a .csv or .xlsx file")
    return suffix


def read_cabinet_file(data: bytes, file_name: str) -> CabinetFile:
    """The machine list in `data` (the bytes of `file_name`: .csv or .xlsx)."""
    table = _csv_table(data) if file_format(file_name) == "csv" else _xlsx_table(data, file_name)
    if not table or not any(_present(cell) for cell in table[0]):
        raise FileRejected(f"{file_name} is empty: its first row names the columns")
    columns = _header(table[0])
    rows = []
    for number, values in enumerate(table[1:], start=2):
        cells = {name: values[i] if i < len(values) else None for i, name in columns}
        if any(_present(v) for v in cells.values()):
            rows.append(FileRow(number, cells))
    if len(rows) > MAX_ROWS:
        raise FileRejected(f"{file_name} has {len(rows):,} rows: import at most {MAX_ROWS:,}")
    return CabinetFile(file_name, tuple(name for _, name in columns), tuple(rows))


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _header(cells: Sequence[object]) -> list[tuple[int, str]]:
    """(position, column name) of the header's columns; FileRejected naming row 1."""
    columns: list[tuple[int, str]] = []
    unknown = []
    for position, cell in enumerate(cells):
        if not _present(cell):
            continue
        name = str(cell).strip().lower()
        if name not in FILE_COLUMNS:
            unknown.append(str(cell).strip())
        elif name in (known for _, known in columns):
            raise FileRejected(f"row 1: the column {name!r} appears twice")
        else:
            columns.append((position, name))
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        raise FileRejected(f"row 1: unknown column {names} (columns: {', '.join(FILE_COLUMNS)})")
    if "name" not in (name for _, name in columns):
        raise FileRejected(
            f"row 1: the column 'name' is missing (columns: {', '.join(FILE_COLUMNS)})"
        )
    return columns


def _csv_table(data: bytes) -> list[list[object]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise FileRejected("the CSV file is not UTF-8 (or Windows-1252) text") from None
    first = text.split("\n", 1)[0]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(first, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        return [list(row) for row in csv.reader(io.StringIO(text, newline=""), dialect)]
    except csv.Error as exc:
        raise FileRejected(f"the CSV file cannot be read: {exc}") from None


def _xlsx_table(data: bytes, file_name: str) -> list[list[object]]:
    from openpyxl import load_workbook  # a main dependency: see README, Dependencies

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        raise FileRejected(f"{file_name} is not an Excel .xlsx file") from None
    try:
        sheet = book.worksheets[0]
        table: list[list[object]] = []
        for values in sheet.iter_rows(values_only=True):
            table.append(list(values))
            if len(table) > MAX_ROWS + 1_000:  # blank rows are skipped later: some slack
                break
        return table
    finally:
        book.close()


def plain_cell(value: object) -> str:
    """A text cell as the registry stores it: trimmed, numbers without a spurious `.0`,
    and the quote `csvsafe.neutralise_cell` put before a formula-like text removed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value).strip()
    if len(text) > 1 and text[0] == "'" and text[1] in FORMULA_STARTS:
        return text[1:]
    return text


def relay_cell(value: object) -> str:
    """A relayId cell: Excel turns an all-digit relayId into a number and drops its
    leading zeros, which are put back (relayIds have 12 characters)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        return str(int(value)).zfill(12)
    return plain_cell(value)


# --- writing --------------------------------------------------------------------------


def cabinets_frame(registry: Registry) -> pd.DataFrame:
    """The registry's active cabinets in the file's columns, by location then name."""
    frame = registry.frame()
    out = frame.reindex(columns=list(FILE_COLUMNS))
    out["relay"] = frame["relay"].fillna("")
    out["par"] = pd.to_numeric(frame["par"], errors="coerce")
    out = out.sort_values(["location", "name"], key=lambda s: s.str.lower(), kind="stable")
    return out.reset_index(drop=True)


def _csv_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(neutralise_cell(str(value)))


def cabinets_csv(frame: pd.DataFrame) -> bytes:
    """The cabinets frame as UTF-8 CSV (with a BOM, so Excel reads the accents)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(FILE_COLUMNS)
    for row in frame[list(FILE_COLUMNS)].itertuples(index=False):
        writer.writerow([_csv_text(v) for v in row])
    return buffer.getvalue().encode("utf-8-sig")


def write_cabinets_xlsx(frame: pd.DataFrame, path: Path) -> None:
    """The cabinets frame as an Excel workbook with one sheet, `Cabinets`."""
    kinds: list[CellKind] = [_KINDS.get(name, "text") for name in FILE_COLUMNS]
    book = XlsxStream(path, list(FILE_COLUMNS), kinds, "Cabinets")
    try:
        book.write(frame[list(FILE_COLUMNS)])
    finally:
        book.close()


def cabinets_file(frame: pd.DataFrame, fmt: str) -> bytes:
    """The cabinets frame as the bytes of a `fmt` (csv or xlsx) file."""
    if fmt == "csv":
        return cabinets_csv(frame)
    if fmt != "xlsx":
        raise InvalidInput("export the cabinets as csv or xlsx")
    with tempfile.TemporaryDirectory(prefix="smib-cabinets-") as folder:
        path = Path(folder) / "cabinets.xlsx"
        write_cabinets_xlsx(frame, path)
        return path.read_bytes()


def export_cabinets(registry: Registry, actor: str, fmt: str) -> tuple[bytes, int]:
    """The registry's active cabinets as a `fmt` file's bytes and how many; audited as
    `cabinet_export` (format, rows). Retired ones are left out: imported back, they
    would come back as new cabinets (an import matches active cabinets only)."""
    frame = cabinets_frame(registry)
    data = cabinets_file(frame, fmt)
    detail = {"format": fmt, "rows": len(frame)}
    registry.audit.record(actor, "cabinet_export", [], detail, "ok")
    return data, len(frame)


def rows_of(records: Iterable[Mapping[str, object]], source: str = "rows") -> CabinetFile:
    """A machine list from records (tests, scripts): row numbers as in a file."""
    rows = tuple(FileRow(n, dict(r)) for n, r in enumerate(records, start=2))
    columns = tuple(c for c in FILE_COLUMNS if any(c in r.cells for r in rows)) or ("name",)
    return CabinetFile(source, columns, rows)
