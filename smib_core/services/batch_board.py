"""One board of a persisted batch: its command, then its confirmation by reading back.

Contract: `BoardWork.start` carries a queued board to its outcome; `BoardWork.resume`
checks again a board a stopped worker left in flight. Every step is first persisted
(`store.batches.BatchStore`, conditional updates), and every command goes through
`BoardActions` as the batch's principal (role re-checked, validated, audited). Boards
are strict (PROTOCOL.md): no reply to a config write or `rst`, no announcement on boot.

- online: heard within `offline_after_s`, or it answers a `cfg app` read; else `offline`
  and nothing is sent.
- config: `sending` (persisted) -> the write is published -> `waiting` (send time and
  audit id kept) -> the component is read back (`services.readback.read_back`) until
  `config_timeout_s`: the written values (secrets not compared) -> confirmed; other
  values or no answer -> not_confirmed. Resumed: read back and judge (writing the same
  values twice is harmless, but it is not needed to judge).
- restart: `sending` (persisted) -> `rst` -> `waiting` with the send time. Confirmed when
  the board answers a `cfg app` read after send time + `restart_grace_s`
  (`services.readback.await_back`), asked every `probe_every_s` until
  `restart_timeout_s`; not_confirmed otherwise. A board found `sending` may or may not
  have had its `rst`: it is never sent another; it is asked for `app`, and the detail
  says what is known.

The read-back rule's timings are `BatchTimings.readback`; `stopping` set means a read-back
ends unjudged and the board stays in flight for the next worker.

The board's own audit record (its `config_write` / `restart`) gets the outcome; when a
worker stopped before keeping its id, the open record is found by the batch id the
record carries (`detail.batch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from smib_core import protocol
from smib_core.errors import BusError, PermissionDenied, RequestTimeout, SmibError
from smib_core.services.actions import BoardActions, CommandBus, compared_fields
from smib_core.services.live import ago
from smib_core.services.readback import (
    ReadBack,
    ReadBackTimings,
    any_answer,
    await_back,
    differing,
    read_back,
    reports,
)
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import Batch, BatchBoard, BatchStore

log = logging.getLogger(__name__)


class BatchBus(CommandBus, Protocol):
    """What a batch reads and sends through `smib_core.bus.DeviceBus`."""

    @property
    def connected(self) -> bool: ...

    def last_seen(self, relay: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class BatchTimings:
    offline_after_s: float = 120.0
    max_in_flight: int = 8
    read_timeout_s: float = 2.0  # one `cfg` read
    config_timeout_s: float = 10.0  # read-backs of a config write, all together
    restart_timeout_s: float = 60.0  # a restarted board must answer within this
    restart_grace_s: float = 2.0  # answers before send time + grace do not count
    probe_every_s: float = 1.0  # between two `cfg app` questions to a restarting board
    poll_s: float = 0.5  # between two passes of the worker
    lease_ttl_s: float = 9.0

    @property
    def readback(self) -> ReadBackTimings:
        """These timings as the read-back rule's (`services.readback`)."""
        return ReadBackTimings(
            ask_timeout_s=self.read_timeout_s,
            gap_s=self.probe_every_s,
            disagreements=None,  # other values end a config read-back only at its timeout
            grace_s=self.restart_grace_s,
        )


class BoardWork:
    """Carries one board of one batch on; `stopping` set means: leave it in flight."""

    def __init__(
        self,
        store: BatchStore,
        bus: BatchBus,
        audit: AuditTrail,
        timings: BatchTimings,
        stopping: threading.Event,
        may_send: Callable[[], bool],
    ) -> None:
        self.store = store
        self.bus = bus
        self.audit = audit
        self.timings = timings
        self.stopping = stopping
        self.may_send = may_send  # still the lease holder, not stopping

    # --- a queued board ---------------------------------------------------------------

    def start(self, batch: Batch, relay: str) -> None:
        actions = BoardActions(self.bus, self.audit, batch.principal)
        try:
            if not self._online(batch, actions, relay):
                return
            if not self.may_send():
                return
            if batch.kind == "restart":
                self._restart(batch, actions, relay)
            else:
                self._configure(batch, actions, relay)
        except SmibError as exc:  # refused (role changed), invalid: nothing more to do
            self._end(batch, relay, "failed", str(exc)[:300], from_queued=True)

    def _online(self, batch: Batch, actions: BoardActions, relay: str) -> bool:
        last = self.bus.last_seen(relay)
        now = time.time()
        if last is not None and now - last <= self.timings.offline_after_s:
            return True
        timeout = self.timings.read_timeout_s
        try:
            actions.request(relay, protocol.config_read("app"), timeout)
            return True
        except RequestTimeout:
            heard = "never heard" if last is None else f"last heard {ago(now - last)}"
            why = f"offline: {heard}, no answer to cfg app within {timeout:g} s: nothing sent"
        except BusError as exc:
            why = f"not asked (the broker is away): {exc}"[:300]
            log.warning("batch %s: %s", batch.id, why)
            return False  # stays queued: tried again on a later pass
        self.store.finish_board(batch.id, relay, "offline", why, from_states=("queued",))
        return False

    def _restart(self, batch: Batch, actions: BoardActions, relay: str) -> None:
        if not self.store.claim(batch.id, relay, "sending rst"):
            return  # cancelled, or another worker has it
        sent_at = time.time()
        try:
            result = actions.send_command([relay], protocol.restart(), {"batch": batch.id})
        except (BusError, PermissionDenied) as exc:  # not sent (its audit record says so)
            self._end(batch, relay, "failed", f"rst not sent: {exc}"[:300])
            return
        limit = self.timings.restart_timeout_s
        self.store.sent(
            batch.id, relay, sent_at, result.audit_id, f"rst sent: waiting (up to {limit:g} s)"
        )
        self._confirm_restart(batch, actions, relay, sent_at, result.audit_id)

    def _configure(self, batch: Batch, actions: BoardActions, relay: str) -> None:
        if not self.store.claim(batch.id, relay, f"writing {batch.comp}"):
            return
        write = protocol.config_write(batch.comp, batch.fields)
        sent_at = time.time()
        try:
            result = actions.send_command([relay], write, {"batch": batch.id})
        except (BusError, PermissionDenied) as exc:
            self._end(batch, relay, "failed", f"write not sent: {exc}"[:300])
            return
        detail = f"written: reading {batch.comp} back"
        self.store.sent(batch.id, relay, sent_at, result.audit_id, detail)
        self._confirm_config(batch, actions, relay, result.audit_id, "")

    # --- a board in flight when a worker stopped ---------------------------------------

    def resume(self, batch: Batch, board: BatchBoard) -> None:
        actions = BoardActions(self.bus, self.audit, batch.principal)
        audit_id = board.audit_id or self._open_record(batch, board.relay)
        try:
            if batch.kind == "config":
                note = "" if board.state == "waiting" else "the write may not have gone out; "
                self._confirm_config(batch, actions, board.relay, audit_id, note)
            elif board.state == "waiting" and board.sent_at is not None:
                self._confirm_restart(batch, actions, board.relay, board.sent_at, audit_id)
            else:
                self._unknown_restart(batch, actions, board, audit_id)
        except SmibError as exc:
            self._end(batch, board.relay, "failed", str(exc)[:300], audit_id, "failed")

    def _open_record(self, batch: Batch, relay: str) -> str:
        kind = "restart" if batch.kind == "restart" else "config_write"
        for record in self.audit.open_records():
            detail = record.get("detail") or {}
            if (
                record.get("kind") == kind
                and relay in record.get("relays", [])
                and isinstance(detail, Mapping)
                and detail.get("batch") == batch.id
            ):
                return str(record["id"])
        return ""

    def _unknown_restart(
        self, batch: Batch, actions: BoardActions, board: BatchBoard, audit_id: str
    ) -> None:
        """The last worker stopped after recording `sending` and before recording the
        send: the rst may or may not have gone out. Never send another; ask `app`: an
        answer at once says nothing; silence, then an answer, says it restarted."""
        relay, limit = board.relay, self.timings.restart_timeout_s
        since = board.started_at or board.updated_at or time.time()
        now = self._read_back(actions, relay, "app", any_answer, self.timings.read_timeout_s)
        if now.confirmed:  # up at once: that says nothing of the rst
            why = "the last worker stopped while sending rst: unknown whether it went "
            why += "out; the board answers cfg app (no second rst is sent)"
            self._end(batch, relay, "not_confirmed", why, audit_id, "not_confirmed")
            return
        left = since + limit - time.time()
        back = now if now.stopped else self._read_back(actions, relay, "app", any_answer, left)
        if back.stopped:
            return  # left in flight: the next worker asks again
        if back.confirmed:
            why = "the last worker stopped while sending rst; the board went quiet "
            why += "and answers cfg app again: it restarted"
            self._end(batch, relay, "confirmed", why, audit_id, "confirmed")
        else:
            why = "the last worker stopped while sending rst, and the board did not "
            why += f"answer cfg app within {limit:g} s"
            self._end(batch, relay, "not_confirmed", why, audit_id, "timed_out")

    def _read_back(
        self,
        actions: BoardActions,
        relay: str,
        comp: str,
        matches: Callable[[Mapping[str, Any]], bool],
        timeout: float,
    ) -> ReadBack:
        """`readback.read_back` with this batch's timings, ended early by `stopping`."""
        timings = self.timings.readback
        return read_back(actions, relay, comp, matches, timeout, timings, stopping=self.stopping)

    # --- confirming ---------------------------------------------------------------------

    def _confirm_restart(
        self, batch: Batch, actions: BoardActions, relay: str, sent_at: float, audit_id: str
    ) -> None:
        """Ask `cfg app` after send time + grace until it answers or the time is up."""
        limit = self.timings.restart_timeout_s
        timings = self.timings.readback
        back = await_back(actions, relay, sent_at, limit, timings, stopping=self.stopping)
        if back.stopped:
            return  # left in flight: the next worker asks again
        if back.confirmed:
            why = f"back: answered cfg app {time.time() - sent_at:.1f} s after the rst"
            self._end(batch, relay, "confirmed", why, audit_id, "confirmed")
        else:
            why = f"did not answer cfg app within {limit:g} s of the rst"
            self._end(batch, relay, "not_confirmed", why, audit_id, "timed_out")

    def _confirm_config(
        self, batch: Batch, actions: BoardActions, relay: str, audit_id: str, note: str
    ) -> None:
        """Read the component back until it holds the written values or time is up."""
        expected = compared_fields(protocol.config_write(batch.comp, batch.fields))
        limit = self.timings.config_timeout_s
        back = self._read_back(actions, relay, batch.comp, reports(expected), limit)
        if back.stopped:
            return  # left in flight: the next worker reads it back
        if back.confirmed:
            why = f"{note}{batch.comp} read back with the new values"
            self._end(batch, relay, "confirmed", why, audit_id, "confirmed")
        elif not back.answered:
            why = f"{note}no answer to the read-back of {batch.comp} within {limit:g} s"
            self._end(batch, relay, "not_confirmed", why, audit_id, "timed_out")
        else:
            differ = differing(expected, back.fields)
            why = f"{note}the board reports other values for {', '.join(differ)}"
            extra = {"differ": differ}
            self._end(batch, relay, "not_confirmed", why, audit_id, "not_confirmed", extra)

    # --- outcomes -----------------------------------------------------------------------

    def _end(
        self,
        batch: Batch,
        relay: str,
        outcome: str,
        detail: str,
        audit_id: str = "",
        audit_outcome: str = "",
        extra: Mapping[str, Any] | None = None,
        from_queued: bool = False,
    ) -> None:
        """The board's outcome, then its audit record's (both kept once set)."""
        states = ("queued", "sending", "waiting") if from_queued else ("sending", "waiting")
        self.store.finish_board(batch.id, relay, outcome, detail, from_states=states)
        if audit_id and audit_outcome:
            try:
                self.audit.settle(audit_id, audit_outcome, {"detail": detail, **(extra or {})})
            except SmibError as exc:
                log.warning("batch %s: audit record %s not settled: %s", batch.id, audit_id, exc)
