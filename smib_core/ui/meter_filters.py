"""The period picker and the location / cabinet filters of the meter pages.

Both return what the services take (`ReportPeriod`, `Scope`); a choice that makes no
sense (a custom range backwards or too long) is an `st.error` sentence and None.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import streamlit as st

from smib_core.errors import SmibError
from smib_core.services.meter_report import PERIOD_CHOICES, ReportPeriod, Scope, report_period
from smib_core.settings import Settings
from smib_core.ui.plain import escape_markdown


def period_picker(settings: Settings, key: str, default: str = "today") -> ReportPeriod | None:
    """Today / yesterday / this week / last 7 days / this month / custom dates."""
    choice = st.segmented_control(
        "Period",
        list(PERIOD_CHOICES),
        default=default,
        format_func=PERIOD_CHOICES.__getitem__,
        key=f"{key}_period",
    )
    choice = choice or default
    first = last = None
    if choice == "custom":
        today = pd.Timestamp.now(tz=settings.timezone).date()
        picked = st.date_input(
            "Gaming days (first and last, both included)",
            value=(today - timedelta(days=6), today),
            max_value=today,
            key=f"{key}_days",
        )
        days = list(picked) if isinstance(picked, tuple | list) else [picked]
        days = [d for d in days if isinstance(d, date)]
        if not days:
            st.info("Choose the first and the last gaming day.")
            return None
        first, last = days[0], days[-1]
    try:
        return report_period(
            choice,
            pd.Timestamp.now(tz="UTC").floor("min"),  # the dashboard caches a minute's
            first_day=first,
            last_day=last,
            gaming_day_start_hour=settings.gaming_day_start_hour,
            tz=settings.timezone,
        )
    except SmibError as exc:
        st.error(escape_markdown(str(exc)))
        return None


def gaming_day_note(settings: Settings) -> str:
    hour, zone = settings.gaming_day_start_hour, settings.timezone
    start = f"start at {hour:02d}:00" if hour else "run from midnight"
    return f"Gaming days {start} local time ({zone}); times are shown in {zone}."


def scope_picker(registry: pd.DataFrame, key: str) -> Scope:
    """Locations, then cabinets of those locations (none chosen: all of them)."""
    locations = (
        registry.drop_duplicates("location_id").sort_values("location")
        if not registry.empty
        else registry
    )
    location_names = dict(zip(locations["location_id"], locations["location"], strict=True))
    left, right = st.columns(2)
    chosen_locations = left.multiselect(
        "Locations",
        list(location_names),
        format_func=lambda i: location_names.get(i, i),
        placeholder="All locations",
        key=f"{key}_locations",
    )
    cabinets = registry
    if chosen_locations:
        cabinets = registry[registry["location_id"].isin(chosen_locations)]
    ordered = cabinets.sort_values("name")
    labels: dict[str, str] = {
        str(i): f"{name} · {place}"
        for i, name, place in zip(ordered["id"], ordered["name"], ordered["location"], strict=True)
    }
    chosen_cabinets = right.multiselect(
        "Cabinets",
        list(labels),
        format_func=lambda i: labels.get(i, i),
        placeholder="All cabinets",
        key=f"{key}_cabinets",
    )
    return Scope.of(chosen_locations, [str(c) for c in chosen_cabinets if str(c) in labels])


def scope_names(registry: pd.DataFrame) -> dict[str, str]:
    """Location and cabinet ids -> names, for captions and the audit trail."""
    names = dict(zip(registry["location_id"], registry["location"], strict=True))
    names.update(zip(registry["id"], registry["name"], strict=True))
    return names
