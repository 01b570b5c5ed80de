"""Batches: a config change, template or restart for many boards, kept in MongoDB.

Contract: a batch is one document in `batches` (kind, component and fields, label, the
boards, who submitted it with which role, its state, a cancel request) and one document
per board in `batch_boards` (`_id` = `{batch}:{relay}`: state, detail, the times it was
queued, started, sent to, last changed and finished, and the id of the board's own
audit record). Everything a worker needs to carry on after a restart is in these
documents; the page reads them too.

Batch states: queued -> running -> finished. Board states: queued -> sending -> waiting
-> an outcome (`OUTCOMES`), or straight from queued to offline or cancelled. Every change
is a conditional update (`$set` only from the states it may come from), so running one
twice, or from two processes, changes nothing the second time, and an outcome once
reached is kept.

The fields of a config batch hold the values to write, secrets included: a worker needs
them to carry the change out. They are never returned masked-less to a page (`Batch`
keeps them out of its repr; `masked_fields`), never put in the audit trail in clear, and
erased (masked) from the document once the batch is finished.

Times are float epoch seconds (`time.time()`), never datetimes: nx-27017 stores a
datetime given to `$set` as text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from smib_core.auth import Permission, Principal, Role
from smib_core.errors import InvalidInput
from smib_core.protocol import mask_secrets, secret_fields
from smib_core.store.leases import Lease

BatchKind = Literal["config", "restart"]
BATCH_STATES = ("queued", "running", "finished")
ACTIVE = ("queued", "running")
BOARD_STATES = (
    "queued",
    "sending",
    "waiting",
    "confirmed",
    "not_confirmed",
    "offline",
    "failed",
    "cancelled",
)
IN_FLIGHT = ("sending", "waiting")
OUTCOMES = ("confirmed", "not_confirmed", "offline", "failed", "cancelled")
LEASE_NAME = "batches"


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    kind: BatchKind
    relays: tuple[str, ...]
    comp: str
    fields: Mapping[str, int | str] = field(repr=False)
    label: str
    change: str  # the change in words, secrets masked
    actor: str
    role: str
    source: str
    state: str
    created_at: float
    audit_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested_by: str | None = None
    summary: str = ""

    @property
    def principal(self) -> Principal:
        """Who the worker acts as: the person who submitted the batch, with that role."""
        return Principal(self.actor, Role(self.role), self.source)  # type: ignore[arg-type]

    @property
    def permission(self) -> Permission:
        return Permission.CONFIGURE_BOARD if self.kind == "config" else Permission.RESTART_BOARD

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def masked_fields(self) -> dict[str, Any]:
        return mask_secrets(self.fields)


@dataclass(frozen=True, slots=True)
class BatchBoard:
    batch_id: str
    relay: str
    position: int
    state: str
    detail: str
    queued_at: float
    started_at: float | None = None
    sent_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    audit_id: str = ""

    @property
    def final(self) -> bool:
        return self.state in OUTCOMES

    def seconds(self, now: float) -> float | None:
        """How long the board has been (or was) worked on; None while queued."""
        if self.started_at is None:
            return None
        return (self.finished_at if self.finished_at is not None else now) - self.started_at


class BatchStore:
    def __init__(self, db: Database[Any]) -> None:
        self._db = db
        self._batches = db["batches"]
        self._boards = db["batch_boards"]
        self._batches.create_index([("state", ASCENDING)])
        self._batches.create_index([("created_at", DESCENDING)])
        self._boards.create_index([("batch_id", ASCENDING)])

    # --- submitting and reading -------------------------------------------------------

    def create(
        self,
        kind: BatchKind,
        relays: Sequence[str],
        *,
        principal: Principal,
        comp: str = "",
        fields: Mapping[str, int | str] | None = None,
        label: str = "",
        change: str = "",
        audit_id: str = "",
        batch_id: str | None = None,
    ) -> Batch:
        """Store a batch (queued) and its boards (queued), in the given order."""
        if not relays:
            raise InvalidInput("choose at least one board")
        now = time.time()
        doc = {
            "_id": batch_id or new_batch_id(),
            "kind": kind,
            "relays": list(relays),
            "comp": comp,
            "fields": dict(fields or {}),
            "label": label,
            "change": change,
            "actor": principal.name,
            "role": principal.role.value,
            "source": principal.source,
            "state": "queued",
            "created_at": now,
            "audit_id": audit_id,
            "cancel_requested_by": None,
            "summary": "",
        }
        self._batches.insert_one(doc)
        self._boards.insert_many(
            [
                {
                    "_id": f"{doc['_id']}:{relay}",
                    "batch_id": doc["_id"],
                    "relay": relay,
                    "position": i,
                    "state": "queued",
                    "detail": "",
                    "queued_at": now,
                    "updated_at": now,
                    "audit_id": "",
                }
                for i, relay in enumerate(relays)
            ]
        )
        return _batch(doc)

    def get(self, batch_id: object) -> Batch | None:
        if not isinstance(batch_id, str) or not batch_id:
            return None
        doc = self._batches.find_one({"_id": batch_id})
        return None if doc is None else _batch(doc)

    def recent(self, limit: int = 20) -> list[Batch]:
        """The most recent batches, newest first."""
        docs = self._batches.find({}).sort([("created_at", DESCENDING)]).limit(max(1, limit))
        return [_batch(doc) for doc in docs]

    def active(self) -> list[Batch]:
        """Queued and running batches, oldest first: what a worker carries out."""
        docs = self._batches.find({"state": {"$in": list(ACTIVE)}})
        return sorted((_batch(doc) for doc in docs), key=lambda b: b.created_at)

    def boards(self, batch_id: str) -> list[BatchBoard]:
        docs = self._boards.find({"batch_id": str(batch_id)})
        return sorted((_board(doc) for doc in docs), key=lambda b: b.position)

    def worker_holder(self) -> str | None:
        """Who holds the batch workers' lease now (None: no worker is running batches)."""
        holder = Lease(self._db, LEASE_NAME, "(reader)", 1.0).holder()
        return None if holder is None else holder.owner

    # --- cancel -----------------------------------------------------------------------

    def request_cancel(self, batch_id: str, who: str) -> int:
        """Ask for the batch to be cancelled (kept, so whichever worker runs it honours
        it, after a restart too); boards still queued end `cancelled` at once. Returns how
        many boards were still waiting their turn. The first request names the canceller."""
        now = time.time()
        self._batches.update_one(
            {"_id": batch_id, "state": {"$in": list(ACTIVE)}, "cancel_requested_by": None},
            {"$set": {"cancel_requested_by": who, "cancel_requested_at": now}},
        )
        batch = self.get(batch_id)
        if batch is None or batch.cancel_requested_by is None:
            return 0
        return self.cancel_queued(batch_id, cancelled_detail(batch.cancel_requested_by))

    def cancel_queued(self, batch_id: str, detail: str) -> int:
        now = time.time()
        result = self._boards.update_many(
            {"batch_id": batch_id, "state": "queued"},
            {
                "$set": {
                    "state": "cancelled",
                    "detail": detail,
                    "updated_at": now,
                    "finished_at": now,
                }
            },
        )
        return int(result.modified_count)

    # --- a worker's changes (each conditional, so idempotent) ---------------------------

    def mark_running(self, batch_id: str) -> bool:
        now = time.time()
        result = self._batches.update_one(
            {"_id": batch_id, "state": "queued"},
            {"$set": {"state": "running", "started_at": now}},
        )
        return bool(result.matched_count)

    def claim(self, batch_id: str, relay: str, detail: str) -> bool:
        """queued -> sending, only for the one caller that finds it queued: whoever gets
        True may send; anyone else (a second worker, after a cancel) must not."""
        now = time.time()
        result = self._boards.update_one(
            {"_id": f"{batch_id}:{relay}", "state": "queued"},
            {"$set": {"state": "sending", "detail": detail, "started_at": now, "updated_at": now}},
        )
        return bool(result.matched_count)

    def sent(self, batch_id: str, relay: str, sent_at: float, audit_id: str, detail: str) -> bool:
        """sending -> waiting: the command went out at `sent_at` (its audit record id kept)."""
        result = self._boards.update_one(
            {"_id": f"{batch_id}:{relay}", "state": "sending"},
            {
                "$set": {
                    "state": "waiting",
                    "sent_at": sent_at,
                    "audit_id": audit_id,
                    "detail": detail,
                    "updated_at": time.time(),
                }
            },
        )
        return bool(result.matched_count)

    def finish_board(
        self,
        batch_id: str,
        relay: str,
        outcome: str,
        detail: str,
        from_states: Sequence[str] = ("queued", *IN_FLIGHT),
    ) -> bool:
        """The board's outcome, only from `from_states`; False when it was in none of
        them (e.g. it already had its outcome, which is kept)."""
        if outcome not in OUTCOMES:
            raise InvalidInput(f"unknown batch outcome {outcome!r}")
        now = time.time()
        change: dict[str, Any] = {
            "state": outcome,
            "detail": detail,
            "updated_at": now,
            "finished_at": now,
        }
        query = {"_id": f"{batch_id}:{relay}", "state": {"$in": list(from_states)}}
        board = self._boards.find_one(query)
        if board is None:
            return False
        if board.get("started_at") is None:
            change["started_at"] = now
        return bool(self._boards.update_one(query, {"$set": change}).matched_count)

    def finish(self, batch_id: str, summary: str) -> bool:
        """running -> finished; the secret values are masked in the stored fields."""
        batch = self.get(batch_id)
        if batch is None:
            return False
        secrets = {k: "••••••" for k in batch.fields if k in secret_fields()}
        change: dict[str, Any] = {
            "state": "finished",
            "finished_at": time.time(),
            "summary": summary,
            **{f"fields.{k}": v for k, v in secrets.items()},
        }
        query = {"_id": batch_id, "state": {"$in": list(ACTIVE)}}
        return bool(self._batches.update_one(query, {"$set": change}).matched_count)


def cancelled_detail(who: str) -> str:
    return f"cancelled by {who}: nothing sent"


def new_batch_id() -> str:
    return f"b{uuid.uuid4().hex[:11]}"


def _batch(doc: Mapping[str, Any]) -> Batch:
    return Batch(
        id=str(doc["_id"]),
        kind="restart" if doc.get("kind") == "restart" else "config",
        relays=tuple(doc.get("relays", ())),
        comp=str(doc.get("comp", "")),
        fields=dict(doc.get("fields") or {}),
        label=str(doc.get("label", "")),
        change=str(doc.get("change", "")),
        actor=str(doc.get("actor", "")),
        role=str(doc.get("role", Role.ANALYST.value)),
        source=str(doc.get("source", "local")),
        state=str(doc.get("state", "queued")),
        created_at=float(doc.get("created_at", 0.0)),
        audit_id=str(doc.get("audit_id", "")),
        started_at=_maybe_float(doc.get("started_at")),
        finished_at=_maybe_float(doc.get("finished_at")),
        cancel_requested_by=doc.get("cancel_requested_by") or None,
        summary=str(doc.get("summary", "")),
    )


def _board(doc: Mapping[str, Any]) -> BatchBoard:
    return BatchBoard(
        batch_id=str(doc["batch_id"]),
        relay=str(doc["relay"]),
        position=int(doc.get("position", 0)),
        state=str(doc.get("state", "queued")),
        detail=str(doc.get("detail", "")),
        queued_at=float(doc.get("queued_at", 0.0)),
        started_at=_maybe_float(doc.get("started_at")),
        sent_at=_maybe_float(doc.get("sent_at")),
        updated_at=_maybe_float(doc.get("updated_at")),
        finished_at=_maybe_float(doc.get("finished_at")),
        audit_id=str(doc.get("audit_id", "")),
    )


def _maybe_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
