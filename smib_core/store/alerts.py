"""Alerts: conditions on a board someone should look at, kept until acknowledged.

Contract: one document per alert in `alerts`:
`{_id, kind, relay, cabinet_id, cabinet, location_id, location, detail, raised_at,
last_at, count, resolved_at, resolution, acknowledged_at, acknowledged_by, rev}`.

- An alert is *active* while it is neither resolved nor acknowledged. *Resolved* means
  the condition went away (the door closed, the board came back): no longer active,
  still listed until someone acknowledges it. Acknowledging (Permission.ACK_ALERTS,
  audited) records who and when; acknowledged alerts are the history.
- Dedupe: at most one alert per (kind, relay) holds the condition. The holder is a
  document in `alert_keys` whose `_id` is `kind:relay`, so the database refuses a
  second one even when two processes raise at once. Raising again while it is held
  bumps `count` and `last_at` instead. Resolving releases the key. Acknowledging does
  not (a board acknowledged as offline is not alerted again every few seconds), but a
  raise over an acknowledged holder is a new occurrence and takes the key over.
- Changes replace whole documents (`documents.replace_fields`), never `$set`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from smib_core.auth import Permission, Principal
from smib_core.errors import InvalidInput, StoreError
from smib_core.protocol import normalize_relay_id
from smib_core.store.accounts import require_current
from smib_core.store.audit import AuditTrail
from smib_core.store.documents import as_utc, replace_fields, utc_now
from smib_core.store.events import CabinetContext

ALERT_KINDS: dict[str, str] = {
    "board_offline": "Board offline",
    "slot_door_open": "Slot door open",
    "drop_door_open": "Drop door open",
    "cashbox_door_open": "Cashbox door open",
    "ac_power_lost": "AC power lost",
    "ram_clear": "RAM clear",
    "clock_behind": "Clock behind",
    "ota_failure": "OTA failure",
}
ALERT_COLUMNS = [
    "id",
    "kind",
    "alert",
    "status",
    "relay",
    "cabinet",
    "location",
    "since",
    "last",
    "count",
    "detail",
    "resolved_at",
    "resolution",
    "acknowledged_by",
    "acknowledged_at",
]
MAX_DETAIL = 500
STALE_KEY = timedelta(minutes=1)  # a key whose alert never got written (a crash between)


def check_alert_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in ALERT_KINDS:
        raise InvalidInput(f"unknown alert kind {kind!r}: one of {', '.join(ALERT_KINDS)}")
    return kind


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    kind: str
    relay: str
    cabinet: str
    location: str
    detail: str
    raised_at: datetime
    last_at: datetime
    count: int
    resolved_at: datetime | None = None
    resolution: str = ""
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    cabinet_id: str = ""
    location_id: str = ""

    @property
    def label(self) -> str:
        return ALERT_KINDS.get(self.kind, self.kind)

    @property
    def status(self) -> str:
        if self.acknowledged_at is not None:
            return "acknowledged"
        return "resolved" if self.resolved_at is not None else "active"

    @property
    def active(self) -> bool:
        return self.status == "active"


class AlertStore:
    def __init__(self, db: Database[Any], audit: AuditTrail | None = None) -> None:
        self._alerts = db["alerts"]
        self._keys = db["alert_keys"]
        self._audit = audit if audit is not None else AuditTrail(db)
        self._alerts.create_index([("acknowledged_at", ASCENDING)])
        self._alerts.create_index([("relay", ASCENDING)])
        self._alerts.create_index([("raised_at", DESCENDING)])
        self._keys.create_index([("kind", ASCENDING)])

    # --- raising and resolving (the recorder, the evaluator, other services) ----------

    def raise_alert(
        self,
        kind: str,
        relay: str,
        detail: str,
        context: CabinetContext | None = None,
        at: datetime | None = None,
    ) -> tuple[Alert, bool]:
        """The alert holding (kind, relay), and True when this call created it."""
        kind, relay = check_alert_kind(kind), normalize_relay_id(relay)
        at = as_utc(at) if at is not None else utc_now()
        detail = str(detail)[:MAX_DETAIL]
        key = f"{kind}:{relay}"
        for attempt in range(5):
            alert_id = uuid.uuid4().hex[:12]
            key_doc = {"_id": key, "kind": kind, "relay": relay, "alert_id": alert_id, "at": at}
            try:
                self._keys.insert_one(key_doc)
                return self._create(key_doc, detail, context), True
            except DuplicateKeyError:
                pass
            held = self._keys.find_one({"_id": key})
            alert = None if held is None else self._alerts.find_one({"_id": held["alert_id"]})
            if held is None:
                continue  # released meanwhile: take it
            if alert is None:
                self._drop_if_stale(held)  # or another process is writing it: wait a little
                time.sleep(0.05 * (attempt + 1))
                continue
            if _when(alert.get("acknowledged_at")) is not None:
                # Someone acknowledged it while the condition held and it happened again
                # (we missed the event that ended it): a new occurrence, a new alert.
                guard = {"_id": key, "alert_id": held["alert_id"]}
                if self._keys.replace_one(guard, key_doc).matched_count:
                    return self._create(key_doc, detail, context), True
                continue
            fields = {"last_at": at, "count": int(alert.get("count", 1)) + 1}
            doc = replace_fields(self._alerts, {"_id": alert["_id"]}, fields, what="such alert")
            return _alert(doc), False
        raise StoreError(f"the {kind} alert of board {relay} kept changing: try again")

    def _create(
        self, key_doc: Mapping[str, Any], detail: str, context: CabinetContext | None
    ) -> Alert:
        ctx = context or CabinetContext()
        doc = {
            "_id": key_doc["alert_id"],
            "kind": key_doc["kind"],
            "relay": key_doc["relay"],
            "cabinet_id": ctx.cabinet_id,
            "cabinet": ctx.cabinet,
            "location_id": ctx.location_id,
            "location": ctx.location,
            "detail": detail,
            "raised_at": key_doc["at"],
            "last_at": key_doc["at"],
            "count": 1,
            "resolved_at": None,
            "resolution": "",
            "acknowledged_at": None,
            "acknowledged_by": "",
            "rev": 0,
        }
        self._alerts.insert_one(doc)
        return _alert(doc)

    def _drop_if_stale(self, key_doc: Mapping[str, Any]) -> None:
        """A key older than STALE_KEY without its alert: its writer died in between."""
        if utc_now() - as_utc(key_doc["at"]) > STALE_KEY:
            self._keys.delete_one({"_id": key_doc["_id"], "alert_id": key_doc["alert_id"]})

    def resolve(
        self, kind: str, relay: str, resolution: str, at: datetime | None = None
    ) -> Alert | None:
        """Mark the alert holding (kind, relay) resolved; None when there is none."""
        key = f"{check_alert_kind(kind)}:{normalize_relay_id(relay)}"
        key_doc = self._keys.find_one({"_id": key})
        if key_doc is None:
            return None
        self._keys.delete_one({"_id": key, "alert_id": key_doc["alert_id"]})
        if self._alerts.find_one({"_id": key_doc["alert_id"]}) is None:
            return None
        fields = {
            "resolved_at": as_utc(at) if at is not None else utc_now(),
            "resolution": str(resolution)[:MAX_DETAIL],
        }
        doc = replace_fields(self._alerts, {"_id": key_doc["alert_id"]}, fields, what="such alert")
        return _alert(doc)

    def held_relays(self, kind: str) -> set[str]:
        """Relays whose (kind, relay) condition is held by an alert right now."""
        return {d["relay"] for d in self._keys.find({"kind": check_alert_kind(kind)})}

    # --- people ---------------------------------------------------------------------------

    def acknowledge(self, alert_id: str, principal: Principal | None) -> Alert:
        """Record who acknowledged the alert and when (audited); PermissionDenied for a
        role without ACK_ALERTS, InvalidInput for an unknown or already acknowledged one."""
        who = require_current(self._alerts.database, principal, Permission.ACK_ALERTS)
        current = self.get(alert_id)
        if current.acknowledged_at is not None:
            raise InvalidInput(
                f"this alert was acknowledged already by {current.acknowledged_by} "
                f"at {current.acknowledged_at:%Y-%m-%d %H:%M:%S} UTC"
            )
        fields = {"acknowledged_at": utc_now(), "acknowledged_by": who.name}
        doc = replace_fields(self._alerts, {"_id": current.id}, fields, what="such alert")
        detail = {"alert": current.id, "kind": current.kind, "status": current.status}
        self._audit.record(who.name, "alert_ack", [current.relay], detail, "ok")
        return _alert(doc)

    # --- reading --------------------------------------------------------------------------

    def get(self, alert_id: str) -> Alert:
        doc = self._alerts.find_one({"_id": str(alert_id)})
        if doc is None:
            raise InvalidInput(f"there is no alert {str(alert_id)[:40]!r}")
        return _alert(doc)

    def unacknowledged(self, limit: int = 500) -> list[Alert]:
        """Alerts not acknowledged yet: active ones first, then resolved; newest first."""
        docs = self._alerts.find({"acknowledged_at": None}).sort("raised_at", DESCENDING)
        alerts = [_alert(doc) for doc in docs.limit(max(1, limit))]
        return sorted(alerts, key=lambda a: not a.active)

    def active(self, limit: int = 500) -> list[Alert]:
        return [a for a in self.unacknowledged(limit) if a.active]

    def acknowledged(self, since: datetime | None = None, limit: int = 500) -> list[Alert]:
        """Acknowledged alerts (raised since `since`), newest first: the history."""
        filt: dict[str, Any] = {"acknowledged_at": {"$ne": None}}
        if since is not None:
            filt["raised_at"] = {"$gte": as_utc(since)}
        docs = self._alerts.find(filt).sort("raised_at", DESCENDING).limit(max(1, limit))
        return [_alert(doc) for doc in docs]


def alerts_frame(alerts: Iterable[Alert]) -> pd.DataFrame:
    """Alerts as a table (ALERT_COLUMNS), in the order given."""
    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "alert": a.label,
            "status": a.status,
            "relay": a.relay,
            "cabinet": a.cabinet,
            "location": a.location,
            "since": a.raised_at,
            "last": a.last_at,
            "count": a.count,
            "detail": a.detail,
            "resolved_at": a.resolved_at,
            "resolution": a.resolution,
            "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": a.acknowledged_at,
        }
        for a in alerts
    ]
    frame = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    for column in ("since", "last", "resolved_at", "acknowledged_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _when(value: object) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def _alert(doc: Mapping[str, Any]) -> Alert:
    raised = as_utc(doc["raised_at"])
    return Alert(
        id=str(doc["_id"]),
        kind=doc["kind"],
        relay=doc["relay"],
        cabinet=doc.get("cabinet", ""),
        location=doc.get("location", ""),
        detail=doc.get("detail", ""),
        raised_at=raised,
        last_at=_when(doc.get("last_at")) or raised,
        count=int(doc.get("count", 1)),
        resolved_at=_when(doc.get("resolved_at")),
        resolution=doc.get("resolution", ""),
        acknowledged_at=_when(doc.get("acknowledged_at")),
        acknowledged_by=doc.get("acknowledged_by", ""),
        cabinet_id=doc.get("cabinet_id", ""),
        location_id=doc.get("location_id", ""),
    )
