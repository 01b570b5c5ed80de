"""Export files written chunk by chunk: CSV, Excel (.xlsx) and Parquet. No streamlit.

`write_export(chunks, granularity, fmt, path)` opens one writer and hands it the typed
chunks of `export.export_chunks` one at a time: CSV rows are appended, XlsxWriter's
constant-memory workbook streams rows to disk (a sheet holds at most 1,048,575 rows; more
go on a next sheet), and pyarrow's `ParquetWriter` writes one row group per chunk with
the schema fixed up front (`export.column_spec`). So memory holds one chunk whatever
the export's size; the next chunks are read on a thread meanwhile (`prefetched`), so
the database and the writer work at the same time. `progress(rows_done,
estimated_total)` is called after each chunk and `should_stop()` before each one.
"""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xlsxwriter

from smib_core.errors import SmibError
from smib_core.services.export import Format, Granularity, Kind, column_spec

Progress = Callable[[int, int], None]
EXCEL_MAX_ROWS = 1_048_575  # a sheet's rows after the header
_ARROW: dict[str, pa.DataType] = {
    "time": pa.timestamp("ns"),
    "date": pa.date32(),
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}


class ExportCancelled(SmibError):
    """The person who started the export stopped it (the partial file is dropped)."""


class _CsvWriter:
    def __init__(self, path: Path, headers: list[str]) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        csv.writer(self._file).writerow(headers)

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self._file, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S")

    def close(self) -> None:
        self._file.close()


class _ExcelWriter:
    """XlsxWriter in constant-memory mode streams each row to disk as it is written
    (measured 11,000 rows/s against openpyxl's write-only 7,500 on 28 columns)."""

    def __init__(self, path: Path, headers: list[str]) -> None:
        options = {
            "constant_memory": True,
            "remove_timezone": True,
            "default_date_format": "yyyy-mm-dd hh:mm:ss",
        }
        self._book = xlsxwriter.Workbook(str(path), options)
        self._headers = headers
        self._sheets = 0
        self._rows = EXCEL_MAX_ROWS
        self._current: Any = None

    def _sheet(self) -> Any:
        if self._rows >= EXCEL_MAX_ROWS:
            self._sheets += 1
            title = "Meters" if self._sheets == 1 else f"Meters ({self._sheets})"
            self._current = self._book.add_worksheet(title)
            for index, header in enumerate(self._headers):
                self._current.set_column(index, index, max(10, len(header) + 2))
            self._current.freeze_panes(1, 0)
            self._current.write_row(0, 0, self._headers)
            self._rows = 0
        return self._current

    def write(self, frame: pd.DataFrame) -> None:
        cells = frame.astype(object).where(frame.notna(), None)
        for row in cells.itertuples(index=False, name=None):
            self._sheet().write_row(self._rows + 1, 0, row)
            self._rows += 1

    def close(self) -> None:
        if self._sheets == 0:
            self._sheet()
        self._book.close()


class _ParquetWriter:
    def __init__(self, path: Path, spec: list[tuple[str, str, Kind]]) -> None:
        self._schema = pa.schema([(header, _ARROW[kind]) for _, header, kind in spec])
        self._writer = pq.ParquetWriter(path, self._schema, compression="snappy")

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def write_export(
    chunks: Iterable[pd.DataFrame],
    granularity: Granularity,
    fmt: Format,
    path: Path,
    *,
    estimated_total: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Write `chunks` into `path` one at a time; returns the rows written."""
    spec = column_spec(granularity)
    headers = [header for _, header, _ in spec]
    writer: _CsvWriter | _ExcelWriter | _ParquetWriter
    if fmt == "csv":
        writer = _CsvWriter(path, headers)
    elif fmt == "xlsx":
        writer = _ExcelWriter(path, headers)
    else:
        writer = _ParquetWriter(path, spec)
    rows = 0
    try:
        for chunk in prefetched(chunks):
            if should_stop is not None and should_stop():
                raise ExportCancelled("the export was cancelled")
            writer.write(chunk)
            rows += len(chunk)
            if progress is not None:
                progress(rows, max(rows, estimated_total))
    finally:
        writer.close()
    return rows


_DONE = object()


def prefetched(chunks: Iterable[pd.DataFrame], depth: int = 2) -> Iterator[pd.DataFrame]:
    """The chunks, read ahead on a thread while the caller writes the current one.

    The database (another process) and the writer then work at the same time. At most
    `depth` chunks wait in the queue, so memory stays bounded; an error while reading
    is raised here, and stopping early (an error or a cancel while writing) ends the
    reading thread before this returns.
    """
    waiting: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_DONE)
        except Exception as exc:  # handed to the writing side, which raises it
            put(exc)

    reader = threading.Thread(target=read, name="smib-export-read", daemon=True)
    reader.start()
    try:
        while (item := waiting.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield cast(pd.DataFrame, item)
    finally:
        stop.set()
        reader.join()
