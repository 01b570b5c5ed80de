"""The audit trail: who did what to which boards and accounts, when, and how it ended.

Contract: every command sent to a board and every change to accounts, the registry,
templates and firmware is one document in the `audit` collection:
`{at, actor, kind, relays, detail, outcome, result?, finished_at?}`. `detail` and
`result` are masked (`mask_detail`) before they are stored, so no password, token or
URI credential ever reaches the database. Reads come back as a DataFrame, newest first.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from smib_core.csvsafe import csv_bytes
from smib_core.errors import InvalidInput
from smib_core.protocol import (
    COMMAND_KINDS,
    is_secret_field,
    mask_ota_token,
    mask_secrets,
    mask_uri,
    normalize_relay_id,
)
from smib_core.store.documents import as_utc, time_range, utc_now

# Kinds this module's neighbours write; commands use their protocol.COMMAND_KINDS name.
ACCOUNT_KINDS = (
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "account_create",
    "account_set_password",
    "account_set_role",
    "account_disable",
    "account_enable",
    "identity_map",
    "identity_unmap",
    "token_create",
    "token_revoke",
    "session_end",
)
KNOWN_KINDS = (*COMMAND_KINDS, *ACCOUNT_KINDS)
OUTCOMES = (
    "sent",
    "confirmed",
    "not_confirmed",
    "failed",
    "timed_out",
    "refused",
    "cancelled",
    "ok",
)
AUDIT_COLUMNS = ["at", "actor", "kind", "relays", "outcome", "detail", "result", "id"]
MASK = "••••••"
MAX_TEXT = 2_000


def os_actor() -> str:
    """How CLI commands appear in the audit trail: `cli:<operating-system user>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


def _mask_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return mask_detail(value)
    if isinstance(value, list | tuple):
        return [_mask_value(item) for item in value]
    if isinstance(value, str):
        text = mask_ota_token(value) if "://" in value else value
        text = mask_uri(text) if "://" in text and "@" in text else text
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
    return value


def mask_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to store: `protocol.mask_secrets` at every level, plus any key naming
    a password, secret or token, plus credentials in any URI-looking text."""
    masked = mask_secrets({str(k): v for k, v in detail.items()})
    for key, value in masked.items():
        if not is_secret_field(key):  # mask_secrets has hidden those (mqttURI's password)
            masked[key] = _mask_value(value)
    return masked


def _check_outcome(outcome: str) -> str:
    if outcome not in OUTCOMES:
        raise InvalidInput(f"unknown audit outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
    return outcome


class AuditTrail:
    """Append-only records of actions; `update_outcome` is the only change allowed."""

    def __init__(self, db: Database[Any], collection: str = "audit") -> None:
        self._col = db[collection]
        for key in ("at", "actor", "relays", "kind", "outcome"):
            self._col.create_index([(key, ASCENDING)])

    def record(
        self,
        actor: str,
        kind: str,
        relays: Sequence[str],
        detail: Mapping[str, Any],
        outcome: str,
        at: datetime | None = None,
    ) -> str:
        """Store one action (detail masked first) and return its id."""
        doc = {
            "at": as_utc(at) if at is not None else utc_now(),
            "actor": str(actor)[:256],
            "kind": str(kind)[:64],
            "relays": [str(r) for r in relays],
            "detail": mask_detail(detail),
            "outcome": _check_outcome(outcome),
        }
        return str(self._col.insert_one(doc).inserted_id)

    def update_outcome(
        self, record_id: str, outcome: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Set how an action ended (e.g. sent -> confirmed); `extra` is stored masked."""
        try:
            oid = ObjectId(record_id)
        except (InvalidId, TypeError):
            raise InvalidInput(f"{record_id!r} is not an audit record id") from None
        fields: dict[str, Any] = {"outcome": _check_outcome(outcome), "finished_at": utc_now()}
        if extra:
            fields["result"] = mask_detail(extra)
        # A replace, not `$set`: nx-27017 stores a datetime given to `$set` as text.
        doc = self._col.find_one({"_id": oid})
        if doc is None:
            raise InvalidInput(f"there is no audit record {record_id}")
        self._col.replace_one({"_id": oid}, {**doc, **fields})

    def settle(self, record_id: str, outcome: str, extra: Mapping[str, Any] | None = None) -> bool:
        """Like `update_outcome`, but only for a record still `sent`: False (nothing
        changed) when it already has its outcome, so settling twice is harmless."""
        try:
            oid = ObjectId(record_id)
        except (InvalidId, TypeError):
            raise InvalidInput(f"{record_id!r} is not an audit record id") from None
        doc = self._col.find_one({"_id": oid})
        if doc is None or doc.get("outcome") != "sent":
            return False
        fields: dict[str, Any] = {"outcome": _check_outcome(outcome), "finished_at": utc_now()}
        if extra:
            fields["result"] = mask_detail(extra)
        replaced = self._col.replace_one({"_id": oid, "outcome": "sent"}, {**doc, **fields})
        return bool(replaced.matched_count)

    def open_records(
        self, older_than: datetime | None = None, limit: int = 1_000
    ) -> list[dict[str, Any]]:
        """Records still `sent` (their command's outcome unknown yet), oldest first, as
        stored (`id` added); only those recorded before `older_than` when given."""
        filt: dict[str, Any] = {"outcome": "sent"}
        if older_than is not None:
            filt["at"] = {"$lt": as_utc(older_than)}
        cursor = self._col.find(filt).sort([("at", ASCENDING)]).limit(max(1, int(limit)))
        return [{**doc, "id": str(doc["_id"])} for doc in cursor]

    def query(
        self,
        person: str | None = None,
        relay: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 5_000,
    ) -> pd.DataFrame:
        """Records matching every given filter (`until` excluded), newest first."""
        filt: dict[str, Any] = {}
        if person:
            filt["actor"] = person.strip()
        if relay:
            # `$in`, not equality: nx-27017 misses array elements on an indexed equality find.
            filt["relays"] = {"$in": [normalize_relay_id(relay)]}
        if kind:
            filt["kind"] = kind.strip()
        if period := time_range(since, until):
            filt["at"] = period
        cursor = self._col.find(filt).sort([("at", DESCENDING), ("_id", DESCENDING)])
        rows = [_row(doc) for doc in cursor.limit(max(1, int(limit)))]
        frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        return frame


def _compact(value: Any) -> str:
    if not value:
        return ""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _row(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": as_utc(doc["at"]),
        "actor": doc.get("actor", ""),
        "kind": doc.get("kind", ""),
        "relays": ", ".join(doc.get("relays", [])),
        "outcome": doc.get("outcome", ""),
        "detail": _compact(doc.get("detail")),
        "result": _compact(doc.get("result")),
        "id": str(doc["_id"]),
    }


def to_csv(frame: pd.DataFrame) -> bytes:
    """The audit (or any) DataFrame as UTF-8 CSV bytes for a download or a file; an
    actor or detail that a spreadsheet would run as a formula is written as text."""
    return csv_bytes(frame)
