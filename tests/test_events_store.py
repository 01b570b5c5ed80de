"""The event store on the embedded database: names, kinds, filters, newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from smib_core.protocol import EventMessage
from smib_core.services.events_view import events_per_hour, period_start
from smib_core.store.events import (
    EVENT_COLUMNS,
    CabinetContext,
    EventRecord,
    EventStore,
    event_kind,
)

pytestmark = pytest.mark.integration

R1, R2 = "e831cdfa8384", "e831cdfa8385"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAIN = CabinetContext("c1", "Cabinet 001", "main", "Main floor")
TERRACE = CabinetContext("c2", "Cabinet 002", "terrace", "Terrace")


def event(relay: str, code: str, **extra: Any) -> EventMessage:
    return EventMessage(relay, "exp", "sas/gy/server", code=code, name="", extra=extra)


def test_codes_fall_into_the_kinds_the_filters_offer() -> None:
    assert [event_kind(c) for c in ("11", "1a", "18", "4F", "7e", "51", "7A", "20", "84")] == [
        "door",
        "door",
        "power",
        "bill",
        "game",
        "handpay",
        "meters",
        "tilt",
        "operator",
    ]
    assert event_kind("3D") == event_kind("99") == "other"


@pytest.fixture
def store(mongo_db: Any) -> EventStore:
    store = EventStore(mongo_db)
    store.record_many(
        [
            EventRecord(event(R1, "11"), T0, MAIN),
            EventRecord(event(R1, "12"), T0 + timedelta(minutes=1), MAIN),
            EventRecord(event(R2, "4f", tkn="T-1"), T0 + timedelta(minutes=2), TERRACE),
            EventRecord(event(R2, "7E"), T0 + timedelta(hours=2), TERRACE),
            EventRecord(event(R1, "C3"), T0 + timedelta(hours=3)),
        ]
    )
    return store


def test_events_are_stored_with_their_names_newest_first(store: EventStore) -> None:
    frame = store.query()
    assert list(frame.columns) == EVENT_COLUMNS
    assert frame["event"].tolist() == [
        "Exception C3",
        "Game started",
        "Bill accepted",
        "Slot door closed",
        "Slot door opened",
    ]
    assert frame["at"].is_monotonic_decreasing
    assert str(frame["at"].dt.tz) == "UTC"
    bill = frame[frame["code"] == "4F"].iloc[0]
    assert (bill["cabinet"], bill["location"], bill["details"]) == (
        "Cabinet 002",
        "Terrace",
        "tkn=T-1",
    )
    unregistered = frame.iloc[0]
    assert (unregistered["cabinet"], unregistered["kind"]) == ("", "other")


def test_filters_by_kind_period_location_and_cabinet(store: EventStore) -> None:
    assert store.query(kinds=["door"])["code"].tolist() == ["12", "11"]
    assert store.query(kinds=["bill", "game"])["code"].tolist() == ["7E", "4F"]
    assert store.query(codes=["4f"])["relay"].tolist() == [R2]
    window = store.query(since=T0 + timedelta(minutes=1), until=T0 + timedelta(hours=2))
    assert window["code"].tolist() == ["4F", "12"]
    assert store.query(location_ids=["terrace"])["code"].tolist() == ["7E", "4F"]
    assert store.query(relays=[R1], kinds=["door"], since=T0 + timedelta(seconds=30))[
        "code"
    ].tolist() == ["12"]
    assert store.query(limit=2)["code"].tolist() == ["C3", "7E"]
    assert store.query(location_ids=["nowhere"]).empty


def test_one_event_and_a_large_batch(mongo_db: Any) -> None:
    store = EventStore(mongo_db)
    store.record(event(R1, "18"), MAIN, T0)
    many = [EventRecord(event(R2, "7E"), T0 + timedelta(seconds=i)) for i in range(1_200)]
    assert store.record_many(many) == 1_200
    assert store.count() == 1_201
    assert store.query(kinds=["power"])["event"].tolist() == ["AC power lost"]


def test_events_per_hour_counts_by_kind(store: EventStore) -> None:
    per_hour = events_per_hour(store.query())
    assert per_hour.to_dict("records") == [
        {"hour": pd.Timestamp(T0), "kind": "door", "events": 2},
        {"hour": pd.Timestamp(T0), "kind": "bill", "events": 1},
        {"hour": pd.Timestamp(T0 + timedelta(hours=2)), "kind": "game", "events": 1},
        {"hour": pd.Timestamp(T0 + timedelta(hours=3)), "kind": "other", "events": 1},
    ]
    assert events_per_hour(store.query(kinds=["tilt"])).empty
    assert period_start("Last hour", T0) == T0 - timedelta(hours=1)
    assert period_start("nonsense", T0) == T0 - timedelta(hours=24)
