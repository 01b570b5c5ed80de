"""Export files written chunk by chunk: CSV, Excel (.xlsx) and Parquet. No streamlit.

`write_export(chunks, granularity, fmt, path)` opens one writer and hands it the typed
chunks of `export.export_chunks` one at a time: CSV rows are appended, `xlsx.XlsxStream`
renders each chunk's cells column-wise into the open sheet (a sheet holds at most
1,048,575 rows; more go on a next sheet), and pyarrow's `ParquetWriter` writes one row
group per chunk with the schema fixed up front (`export.column_spec`). So memory holds
one chunk whatever the export's size; the next chunks are read on a thread meanwhile
(`prefetched`), so the database and the writer work at the same time. `progress(rows_done,
estimated_total)` is called after each chunk and `should_stop()` before each one.
"""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from smib_core.csvsafe import write_csv
from smib_core.errors import SmibError
from smib_core.services.export import Format, Granularity, Kind, column_spec
from smib_core.xlsx import XlsxStream

Progress = Callable[[int, int], None]
_ARROW: dict[str, pa.DataType] = {
    "time": pa.timestamp("ns"),
    "date": pa.date32(),
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "money": pa.float64(),
    "bool": pa.bool_(),
}


class ExportCancelled(SmibError):
    """The person who started the export stopped it (the partial file is dropped)."""


class _CsvWriter:
    def __init__(self, path: Path, headers: list[str]) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        csv.writer(self._file).writerow(headers)

    def write(self, frame: pd.DataFrame) -> None:
        write_csv(frame, self._file, header=False, date_format="%Y-%m-%d %H:%M:%S")

    def close(self) -> None:
        self._file.close()


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
    writer: _CsvWriter | XlsxStream | _ParquetWriter
    if fmt == "csv":
        writer = _CsvWriter(path, headers)
    elif fmt == "xlsx":  # see smib_core.xlsx for why not XlsxWriter
        writer = XlsxStream(path, headers, [kind for _, _, kind in spec], "Meters")
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
