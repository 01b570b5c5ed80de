"""Machine events (SAS exceptions reported by the boards), stored with their names.

Contract: one document per event in the `events` collection:
`{at, relay, code, event, kind, cabinet_id, cabinet, location_id, location, details}`.
`at` is when the server received it (boards send no time); the cabinet and location
are those the registry gave the relay at that moment, so history keeps reading right
after a board moves. Writes come in batches (`record_many`, at most `MAX_BATCH` per
insert); reads are by indexed fields and a time range and come back as a DataFrame,
newest first. `kind` groups codes for filtering (`EVENT_KINDS`; anything else is
"other").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from smib_core.protocol import EventMessage
from smib_core.sas import event_name
from smib_core.store.documents import as_utc, batches, insert_new, time_range, utc_now

EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "door": ("11", "12", "13", "14", "15", "16", "19", "1A", "1B", "1C"),
    "power": ("17", "18"),
    "bill": ("4F", "28", "29", "27"),
    "game": ("7E", "7F"),
    "handpay": ("51", "52"),
    "meters": ("7A",),
    "tilt": ("20",),
    "operator": ("84", "85"),
}
OTHER_KIND = "other"
KINDS: tuple[str, ...] = (*EVENT_KINDS, OTHER_KIND)
_KIND_OF_CODE = {code: kind for kind, codes in EVENT_KINDS.items() for code in codes}

EVENT_COLUMNS = ["at", "relay", "cabinet", "location", "kind", "code", "event", "details"]
MAX_BATCH = 500
MAX_QUERY_ROWS = 50_000


def event_kind(code: str) -> str:
    """The filter group of a SAS exception code: door, power, bill, ... or other."""
    return _KIND_OF_CODE.get(code.strip().upper(), OTHER_KIND)


@dataclass(frozen=True, slots=True)
class CabinetContext:
    """Where a relay was installed when its event arrived (empty: not registered)."""

    cabinet_id: str = ""
    cabinet: str = ""
    location_id: str = ""
    location: str = ""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event ready to store: the message, when it was heard and where."""

    message: EventMessage
    received_at: datetime
    context: CabinetContext = field(default_factory=CabinetContext)
    # Given once, when the process heard it: a write repeated after a failure part-way
    # (the database went away before it answered) stores each event once.
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def document(self) -> dict[str, Any]:
        code = self.message.code.strip().upper()[:16]
        return {
            "_id": self.event_id,
            "at": as_utc(self.received_at),
            "relay": self.message.relay,
            "code": code,
            "event": event_name(code),
            "kind": event_kind(code),
            "cabinet_id": self.context.cabinet_id,
            "cabinet": self.context.cabinet,
            "location_id": self.context.location_id,
            "location": self.context.location,
            "details": {str(k)[:32]: _short(v) for k, v in self.message.extra.items()},
        }


def _short(value: Any) -> Any:
    return value[:256] if isinstance(value, str) else value


class EventStore:
    def __init__(self, db: Database[Any], collection: str = "events") -> None:
        self._col = db[collection]
        self._col.create_index([("at", DESCENDING)])
        self._col.create_index([("relay", ASCENDING), ("at", DESCENDING)])
        self._col.create_index([("code", ASCENDING)])
        self._col.create_index([("location_id", ASCENDING), ("at", DESCENDING)])

    def record(
        self,
        message: EventMessage,
        context: CabinetContext | None = None,
        received_at: datetime | None = None,
    ) -> None:
        """Store one event (the recorder batches: prefer `record_many`)."""
        at = received_at if received_at is not None else utc_now()
        self.record_many([EventRecord(message, at, context or CabinetContext())])

    def record_many(self, records: Iterable[EventRecord]) -> int:
        """Store events in inserts of at most MAX_BATCH; returns how many were stored
        now (an event whose `event_id` is stored already is not stored again)."""
        docs = (record.document() for record in records)
        return sum(len(insert_new(self._col, batch)) for batch in batches(docs, MAX_BATCH))

    def heard_since(
        self, relays: Iterable[str], since: datetime
    ) -> list[tuple[str, str, datetime]]:
        """(relay, code, at) of the stored events of `relays` from `since` on, oldest first:
        what a recorder taking over compares its standby buffer with."""
        filt = {"relay": {"$in": sorted(set(relays))}, "at": {"$gte": as_utc(since)}}
        docs = self._col.find(filt, {"relay": 1, "code": 1, "at": 1}).sort("at", ASCENDING)
        return [(d["relay"], d["code"], as_utc(d["at"])) for d in docs]

    def query(
        self,
        location_ids: Sequence[str] = (),
        relays: Sequence[str] = (),
        kinds: Sequence[str] = (),
        codes: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 5_000,
    ) -> pd.DataFrame:
        """Events matching every given filter (an empty one matches all; `until`
        excluded), newest first, at most `limit` rows."""
        filt: dict[str, Any] = {}
        if location_ids:
            filt["location_id"] = {"$in": list(location_ids)}
        if relays:
            filt["relay"] = {"$in": list(relays)}
        if kinds:
            filt["kind"] = {"$in": list(kinds)}
        if codes:
            filt["code"] = {"$in": [c.strip().upper() for c in codes]}
        if period := time_range(since, until):
            filt["at"] = period
        limit = max(1, min(int(limit), MAX_QUERY_ROWS))
        cursor = self._col.find(filt).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return events_frame(_row(doc) for doc in cursor)

    def count(self) -> int:
        return self._col.estimated_document_count()


def events_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=EVENT_COLUMNS)
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


def _row(doc: Mapping[str, Any]) -> dict[str, Any]:
    details = doc.get("details") or {}
    return {
        "at": as_utc(doc["at"]),
        "relay": doc.get("relay", ""),
        "cabinet": doc.get("cabinet", ""),
        "location": doc.get("location", ""),
        "kind": doc.get("kind", OTHER_KIND),
        "code": doc.get("code", ""),
        "event": doc.get("event", ""),
        "details": ", ".join(f"{k}={v}" for k, v in sorted(details.items())),
    }
