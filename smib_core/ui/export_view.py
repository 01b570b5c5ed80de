"""The export page's parts: what to export, a preview, the background build with its
progress, and the download of the finished file.

The build runs on a worker thread of the process-wide `ExportJobs` (never `st.*` from
it); this tab keeps the job id and a fragment polls the job's progress every second.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pandas as pd
import streamlit as st

from smib_core.auth import Principal
from smib_core.errors import SmibError
from smib_core.services.export import (
    FORMATS,
    GRANULARITIES,
    MIME_TYPES,
    ExportRequest,
    Format,
    Granularity,
    estimate_rows,
    preview,
)
from smib_core.services.export_jobs import ExportContext, ExportJob
from smib_core.services.local_time import CLOCK, local_text
from smib_core.services.meter_report import ReportPeriod, Scope
from smib_core.ui import resources
from smib_core.ui.plain import escape_markdown
from smib_core.ui.session import live_section

JOB_KEY = "export_job"
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024  # larger files: `smib export` on the server
PREVIEW_ROWS = 20


def choose_request(period: ReportPeriod, scope: Scope) -> ExportRequest | None:
    left, right = st.columns([3, 2])
    granularity = left.radio(
        "Granularity",
        list(GRANULARITIES),
        format_func=GRANULARITIES.__getitem__,
        index=2,
        horizontal=True,
        key="export_granularity",
        help="Raw snapshots: every reading, the meters as the machine counted them "
        "(cumulative), failed readings included. Hourly and daily movement: the play of "
        "each cabinet per hour or gaming day, with net win, meter win, hold and average bet.",
    )
    fmt = right.segmented_control(
        "Format", list(FORMATS), default="csv", format_func=FORMATS.__getitem__, key="export_fmt"
    )
    try:
        chosen = cast(Granularity, granularity), cast(Format, fmt or "csv")
        settings = resources.get_settings()
        return ExportRequest(
            period.start,
            period.end,
            *chosen,
            scope,
            tz=settings.timezone,
            gaming_day_start_hour=settings.gaming_day_start_hour,
        )
    except SmibError as exc:
        st.error(escape_markdown(str(exc)))
        return None


@st.cache_data(ttl=30, show_spinner=False)
def _preview(request: ExportRequest) -> pd.DataFrame:
    return preview(resources.get_meter_store(), request, rows=PREVIEW_ROWS)


def preview_section(request: ExportRequest, cabinets: int) -> bool:
    """Shows the first rows; False when the export would be empty."""
    estimate = estimate_rows(request, cabinets, resources.get_settings().collect_period_s)
    st.subheader("Preview")
    with st.spinner("Reading the first rows…"):
        first = _preview(request)
    if first.empty:
        st.info(
            "No meter readings in this period for these cabinets yet: the collector reads "
            "every board every few minutes (run `smib collect --once` to read them now), or "
            "choose a longer period.",
            icon=":material/hourglass_empty:",
        )
        return False
    shown = f"The first {len(first)} rows of about {estimate:,}"
    if len(first) < PREVIEW_ROWS:
        shown = f"All {len(first)} rows"
    st.caption(
        f"{shown} · columns named with their unit · times in UTC and local time "
        f"({request.tz}) with the gaming day"
    )
    formats = _formats(first)
    st.dataframe(first, hide_index=True, width="stretch", height=280, column_config=formats)
    return True


def _formats(frame: pd.DataFrame) -> dict[str, Any]:
    """Money as dollars, shares as percentages, counts with separators (display only)."""
    config: dict[str, Any] = {}
    for header in frame.columns:
        if header.endswith("($)") and "per credit" not in header:
            config[header] = st.column_config.NumberColumn(format="dollar")
        elif header.endswith("(%)"):
            config[header] = st.column_config.NumberColumn(format="%.2f%%")
        elif pd.api.types.is_integer_dtype(frame[header]):
            config[header] = st.column_config.NumberColumn(format="localized")
    return config


def start_build(
    principal: Principal, request: ExportRequest, cabinets: int, names: dict[str, str]
) -> None:
    context = ExportContext(
        resources.get_meter_store(),
        resources.get_audit(),
        principal,
        cabinets,
        names,
        resources.get_settings(),
    )
    try:
        job = resources.get_export_jobs().start(context, request)
    except SmibError as exc:
        st.error(escape_markdown(str(exc)))
        return
    st.session_state[JOB_KEY] = job.id


def current_job() -> ExportJob | None:
    return resources.get_export_jobs().get(st.session_state.get(JOB_KEY))


@live_section("1s")
def progress_section() -> None:
    """Live while the build runs; reruns the page once it is done."""
    job = current_job()
    if job is None:
        return
    if job.done:
        st.rerun()
    elapsed = time.time() - job.started_at
    text = f"Building {job.request.file_name}: {job.rows:,} rows written ({elapsed:.0f} s)"
    st.progress(job.fraction, text=text)
    if st.button("Cancel", icon=":material/cancel:", key="export_cancel"):
        job.cancel.set()
    st.caption(f"Last updated {local_text(time.time(), resources.time_zone(), CLOCK)}")


def finished_section(job: ExportJob) -> None:
    if not job.ok:
        st.error(f"The export did not finish: {escape_markdown(job.error)}")
        return
    seconds = (job.finished_at or job.started_at) - job.started_at
    st.success(
        f"{job.request.file_name}: {job.rows:,} rows, {job.size / 1024:,.0f} KiB, "
        f"built in {seconds:.1f} s.",
        icon=":material/task_alt:",
    )
    if job.size > MAX_DOWNLOAD_BYTES:
        st.warning(
            f"The file is {job.size / 1024**2:,.0f} MiB, too big to hand through the browser. "
            "On the server, run: `smib export --from ... --to ... -o FILE` (see `smib export "
            "--help`)."
        )
        return
    st.download_button(
        f"Download {job.request.file_name}",
        data=lambda: job.path.read_bytes(),
        file_name=job.request.file_name,
        mime=MIME_TYPES[job.request.format],
        type="primary",
        icon=":material/download:",
        on_click="ignore",
        key=f"export_download_{job.id}",
    )
