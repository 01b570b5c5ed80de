"""Firmware rollouts: the plan, each board's progress, and the firmware server's download log.

Contract: a rollout is one document in `rollouts` (firmware, targets, batch size, success
threshold, per-board timeout, the principal who started it, its state) and one document
per target board in `rollout_boards` (`_id` = `{rollout}:{relay}`: batch, state, reason,
versions, a time per state reached). Everything a runner needs to carry on after an app
restart is in these documents.

Times are float epoch seconds (`time.time()`), never datetimes: the runner changes these
documents with `$set` many times a second, and nx-27017 (the embedded database) stores a
datetime given to `$set` as text. Pages convert them for display.

Rollout states: pending -> running <-> paused, then completed | halted (the share of
confirmed boards in finished batches fell below the threshold) | cancelled. Board
states: queued -> url_set -> command_sent -> downloaded -> back_online -> confirmed, or
skipped (already on the target version), failed (with a reason), timed_out, not_started
(the rollout was cancelled or halted first). Pause, resume and cancel are audited.

Each board of a rollout gets a secret `ota_token` (random, per rollout and board) that
its OTA URL carries; `ota_token_ok` is the firmware server's check, a constant-time
comparison with the tokens of the board's rollouts still under way. The token is kept
only here: `ota_url` holds the URL masked. The `ota_start` audit record of a board
(`ota_audit_id`) is settled with the board's outcome (confirmed, failed, timed_out, or
cancelled when it was never started after all).
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from smib_core.auth import Permission, Principal, Role, require
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.protocol import normalize_relay_id
from smib_core.store.audit import AuditTrail
from smib_core.store.firmware import FirmwareInfo

ROLLOUT_STATES = ("pending", "running", "paused", "cancelled", "completed", "halted")
ACTIVE_STATES = ("pending", "running", "paused")
BOARD_STATES = (
    "queued",
    "skipped",
    "url_set",
    "command_sent",
    "downloaded",
    "back_online",
    "confirmed",
    "failed",
    "timed_out",
    "not_started",
)
IN_FLIGHT = ("url_set", "command_sent", "downloaded", "back_online")
BOARD_DONE = ("skipped", "confirmed", "failed", "timed_out", "not_started")
# How a board's outcome settles its `ota_start` audit record.
OTA_AUDIT_OUTCOMES = {
    "confirmed": "confirmed",
    "failed": "failed",
    "timed_out": "timed_out",
    "not_started": "cancelled",
    "skipped": "cancelled",
}
MAX_TARGETS = 5000
MAX_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    firmware_id: str
    product: str
    version: str
    filename: str
    relays: tuple[str, ...]
    batch_size: int
    min_success_pct: float
    timeout_s: float
    actor: str
    role: str
    source: str
    state: str
    reason: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    current_batch: int = 0

    @property
    def principal(self) -> Principal:
        """Who the runner acts as: the person who started the rollout, with that role."""
        return Principal(self.actor, Role(self.role), self.source)  # type: ignore[arg-type]

    @property
    def batches(self) -> int:
        return -(-len(self.relays) // self.batch_size)

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES


@dataclass(frozen=True, slots=True)
class BoardState:
    rollout_id: str
    relay: str
    position: int
    batch: int
    state: str
    reason: str = ""
    previous_version: str = ""
    version: str = ""
    command_at: float | None = None
    download_at: float | None = None
    download_client: str = ""
    ota_url: str = ""  # masked: the token is a secret
    ota_token: str = ""
    ota_audit_id: str = ""
    times: Mapping[str, float] = field(default_factory=dict)
    updated_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in BOARD_DONE


def _number(name: str, value: object, low: float, high: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"the {name} must be a number") from None
    if not low <= number <= high:
        raise InvalidInput(f"the {name} must be between {low:g} and {high:g}")
    return number


class RolloutStore:
    def __init__(self, db: Database[Any], audit: AuditTrail | None = None) -> None:
        self._rollouts = db["rollouts"]
        self._boards = db["rollout_boards"]
        self._audit = audit if audit is not None else AuditTrail(db)
        self._rollouts.create_index([("state", ASCENDING)])
        self._rollouts.create_index([("created_at", DESCENDING)])
        self._boards.create_index([("rollout_id", ASCENDING)])
        self._boards.create_index([("state", ASCENDING)])
        self._boards.create_index([("relay", ASCENDING)])

    # --- the plan ----------------------------------------------------------------------

    def create(
        self,
        firmware: FirmwareInfo,
        relays: Sequence[str],
        *,
        batch_size: int,
        min_success_pct: float,
        timeout_s: float,
        principal: Principal | None,
    ) -> Rollout:
        """Record a rollout (state pending) and its boards in batches, in the given order."""
        detail = {"firmware": f"{firmware.product} {firmware.version}", "boards": len(relays)}
        who = self._admit(principal, "rollout_start", detail, relays)
        targets = list(dict.fromkeys(normalize_relay_id(r) for r in relays))
        if not targets:
            raise InvalidInput("choose at least one board to update")
        if len(targets) > MAX_TARGETS:
            raise InvalidInput(f"a rollout updates at most {MAX_TARGETS} boards")
        if firmware.archived:
            raise InvalidInput(
                f"{firmware.product} {firmware.version} is archived: not for updates"
            )
        size = int(_number("batch size", batch_size, 1, MAX_TARGETS))
        now = time.time()
        doc = {
            "_id": f"r{uuid.uuid4().hex[:11]}",
            "firmware_id": firmware.id,
            "product": firmware.product,
            "version": firmware.version,
            "filename": firmware.filename,
            "relays": targets,
            "batch_size": size,
            "min_success_pct": _number("minimum success %", min_success_pct, 0, 100),
            "timeout_s": _number("timeout in seconds", timeout_s, 1, MAX_TIMEOUT_S),
            "actor": who.name,
            "role": who.role.value,
            "source": who.source,
            "state": "pending",
            "reason": "",
            "created_at": now,
            "current_batch": 0,
        }
        self._rollouts.insert_one(doc)
        self._boards.insert_many(
            [
                {
                    "_id": f"{doc['_id']}:{relay}",
                    "rollout_id": doc["_id"],
                    "relay": relay,
                    "position": i,
                    "batch": i // size,
                    "state": "queued",
                    "reason": "",
                    "times": {"queued": now},
                    "updated_at": now,
                }
                for i, relay in enumerate(targets)
            ]
        )
        self._audit.record(
            who.name,
            "rollout_start",
            targets,
            {
                **detail,
                "id": doc["_id"],
                "batch_size": size,
                "min_success_pct": doc["min_success_pct"],
                "timeout_s": doc["timeout_s"],
            },
            "ok",
        )
        return _rollout(doc)

    def get(self, rollout_id: str) -> Rollout | None:
        doc = self._rollouts.find_one({"_id": str(rollout_id)})
        return None if doc is None else _rollout(doc)

    def recent(self, limit: int = 50) -> list[Rollout]:
        """The most recent rollouts, newest first."""
        docs = self._rollouts.find({}).sort([("created_at", DESCENDING)]).limit(max(1, limit))
        return [_rollout(doc) for doc in docs]

    def boards(self, rollout_id: str) -> list[BoardState]:
        docs = self._boards.find({"rollout_id": str(rollout_id)})
        return sorted((_board(doc) for doc in docs), key=lambda b: b.position)

    def to_drive(self) -> list[Rollout]:
        """Rollouts a runner must look at: active ones, and finished ones whose boards are
        still updating (their outcome is still to be recorded)."""
        ids = {doc["_id"] for doc in self._rollouts.find({"state": {"$in": list(ACTIVE_STATES)}})}
        ids |= {doc["rollout_id"] for doc in self._boards.find({"state": {"$in": list(IN_FLIGHT)}})}
        found = (self.get(rollout_id) for rollout_id in ids)
        return sorted((r for r in found if r is not None), key=lambda r: r.created_at)

    # --- people's controls -------------------------------------------------------------

    def pause(self, rollout_id: str, principal: Principal | None) -> Rollout:
        """Start no more boards; boards already updating are still followed."""
        return self._control(
            rollout_id, principal, "rollout_pause", ("pending", "running"), "paused"
        )

    def resume(self, rollout_id: str, principal: Principal | None) -> Rollout:
        return self._control(rollout_id, principal, "rollout_resume", ("paused",), "running")

    def cancel(self, rollout_id: str, principal: Principal | None) -> Rollout:
        """Stop for good: queued boards are not started; boards updating are followed."""
        rollout = self._control(rollout_id, principal, "rollout_cancel", ACTIVE_STATES, "cancelled")
        self.skip_queued(rollout.id, f"the rollout was {rollout.reason}")
        return rollout

    def _control(
        self,
        rollout_id: str,
        principal: Principal | None,
        kind: str,
        allowed_from: Iterable[str],
        to: str,
    ) -> Rollout:
        rollout = self.get(rollout_id)
        if rollout is None:
            raise InvalidInput(f"there is no rollout {rollout_id!r}")
        who = self._admit(principal, kind, {"id": rollout.id}, rollout.relays)
        finished_at = time.time() if to == "cancelled" else None
        reason = f"{to} by {who.name}"
        extra = {} if finished_at is None else {"finished_at": finished_at}
        if not self.set_state(rollout.id, allowed_from, to, reason, **extra):
            raise InvalidInput(f"the rollout is {rollout.state}: it cannot be {to} now")
        self._audit.record(who.name, kind, [], {"id": rollout.id}, "ok")
        return replace(rollout, state=to, reason=reason, finished_at=finished_at)

    def _admit(
        self,
        principal: Principal | None,
        kind: str,
        detail: Mapping[str, Any],
        relays: Sequence[str],
    ) -> Principal:
        try:
            return require(principal, Permission.OTA)
        except PermissionDenied as exc:
            name = principal.name if principal is not None else "(not signed in)"
            given = [str(r)[:32] for r in relays][:MAX_TARGETS]
            self._audit.record(name, kind, given, {**detail, "reason": str(exc)}, "refused")
            raise

    # --- the runner's changes ----------------------------------------------------------

    def set_state(
        self, rollout_id: str, allowed_from: Iterable[str], to: str, reason: str = "", **extra: Any
    ) -> bool:
        """Move the rollout to `to` only if it is in one of `allowed_from` (atomic)."""
        if to not in ROLLOUT_STATES:
            raise InvalidInput(f"unknown rollout state {to!r}")
        query = {"_id": rollout_id, "state": {"$in": list(allowed_from)}}
        fields = {"state": to, "reason": reason, "updated_at": time.time(), **extra}
        return bool(self._rollouts.update_one(query, {"$set": fields}).matched_count)

    def set_fields(self, rollout_id: str, **fields: Any) -> None:
        self._rollouts.update_one({"_id": rollout_id}, {"$set": fields})

    def update_board(
        self, board: BoardState, state: str, reason: str | None = None, **fields: Any
    ) -> BoardState:
        """Record that a board reached `state` (and when); `fields` are stored with it."""
        if state not in BOARD_STATES:
            raise InvalidInput(f"unknown board state {state!r}")
        now = time.time()
        change: dict[str, Any] = {"state": state, "updated_at": now, f"times.{state}": now}
        if reason is not None:
            change["reason"] = reason
        change.update(fields)
        self._boards.update_one({"_id": f"{board.rollout_id}:{board.relay}"}, {"$set": change})
        times = {**board.times, state: now}
        kept = {k: v for k, v in change.items() if not k.startswith("times.")}
        updated = replace(board, **kept, times=times)
        if updated.ota_audit_id and state in OTA_AUDIT_OUTCOMES:
            result = {"rollout": board.rollout_id, "state": state, "reason": updated.reason}
            self._audit.settle(updated.ota_audit_id, OTA_AUDIT_OUTCOMES[state], result)
        return updated

    def ota_token(self, board: BoardState) -> tuple[BoardState, str]:
        """The board's OTA token for this rollout, made (and stored) on first use."""
        if board.ota_token:
            return board, board.ota_token
        token = secrets.token_hex(16)
        self._boards.update_one(
            {"_id": f"{board.rollout_id}:{board.relay}"}, {"$set": {"ota_token": token}}
        )
        return replace(board, ota_token=token), token

    def ota_token_ok(self, relay: str, token: str) -> bool:
        """Whether `token` is the OTA token of a rollout still updating board `relay` (the
        firmware server's `board_token`); compared in constant time."""
        if not token:
            return False
        wanted = token.encode()
        docs = self._boards.find(
            {"relay": str(relay), "state": {"$in": ["queued", *IN_FLIGHT]}}, {"ota_token": 1}
        )
        found = False
        for doc in docs:
            stored = str(doc.get("ota_token") or "")
            found |= bool(stored) and hmac.compare_digest(stored.encode(), wanted)
        return found

    def skip_queued(self, rollout_id: str, reason: str) -> int:
        """Queued boards will never start: `not_started` with `reason`; how many."""
        now = time.time()
        result = self._boards.update_many(
            {"rollout_id": rollout_id, "state": "queued"},
            {
                "$set": {
                    "state": "not_started",
                    "reason": reason,
                    "updated_at": now,
                    "times.not_started": now,
                }
            },
        )
        return int(result.modified_count)


def _rollout(doc: Mapping[str, Any]) -> Rollout:
    return Rollout(
        id=str(doc["_id"]),
        firmware_id=str(doc["firmware_id"]),
        product=str(doc["product"]),
        version=str(doc["version"]),
        filename=str(doc["filename"]),
        relays=tuple(doc.get("relays", ())),
        batch_size=int(doc["batch_size"]),
        min_success_pct=float(doc["min_success_pct"]),
        timeout_s=float(doc["timeout_s"]),
        actor=str(doc.get("actor", "")),
        role=str(doc.get("role", Role.ANALYST.value)),
        source=str(doc.get("source", "local")),
        state=str(doc["state"]),
        reason=str(doc.get("reason", "")),
        created_at=float(doc["created_at"]),
        started_at=_maybe_float(doc.get("started_at")),
        finished_at=_maybe_float(doc.get("finished_at")),
        current_batch=int(doc.get("current_batch", 0)),
    )


def _board(doc: Mapping[str, Any]) -> BoardState:
    return BoardState(
        rollout_id=str(doc["rollout_id"]),
        relay=str(doc["relay"]),
        position=int(doc.get("position", 0)),
        batch=int(doc.get("batch", 0)),
        state=str(doc["state"]),
        reason=str(doc.get("reason", "")),
        previous_version=str(doc.get("previous_version", "")),
        version=str(doc.get("version", "")),
        command_at=_maybe_float(doc.get("command_at")),
        download_at=_maybe_float(doc.get("download_at")),
        download_client=str(doc.get("download_client", "")),
        ota_url=str(doc.get("ota_url", "")),
        ota_token=str(doc.get("ota_token", "")),
        ota_audit_id=str(doc.get("ota_audit_id", "")),
        times={str(k): float(v) for k, v in dict(doc.get("times") or {}).items()},
        updated_at=float(doc.get("updated_at", 0.0)),
    )


def _maybe_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
