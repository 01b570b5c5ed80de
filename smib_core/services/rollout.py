"""The rollout runner: drives firmware rollouts from their MongoDB state, board by board.

Contract: `RolloutRunner.tick()` makes one pass over every rollout that needs driving
(`RolloutStore.to_drive`) and returns at once when another process holds the runner's
lease (`store.leases.Lease`, one runner per deployment). All state is read from and
written to the database on every pass, so a new runner (an app restart, the CLI) takes
over where the last one stopped. `start()` runs passes on a named background thread,
`follow(rollout_id)` runs them in the foreground until one rollout is over (the CLI).
Every board command goes through `BoardActions` as the rollout's principal, so the role
is re-checked, the command validated and audited on every step.

A batch starts when every earlier batch is over and the share of confirmed boards among
the updated boards of the finished batches (skipped boards left out) is at least the
rollout's `min_success_pct`; otherwise the rollout halts. Per board:

1. ask its version (`config_read app`): already the target -> skipped; no answer ->
   failed "offline" (it counts against the share);
2. set `otaURL` to the board's own folder of the firmware server
   (`{ota_url}{relay}/`, see `board_ota_url`) and check the board's reply -> url_set;
3. send `ota_ud` with the file name -> command_sent (the per-board timeout starts);
4. a complete download of the file from the board's folder in the server's log ->
   downloaded (the path names the board, so no guessing by address or order);
5. the board announces its `app` after its reboot -> back_online; then its version is
   asked: the target -> confirmed; another version after a download -> failed "device
   kept version X". While waiting the version is also asked every `probe_every_s`
   (a runner that restarted missed the announcements);
6. at the timeout one last question: the target -> confirmed, another version ->
   failed, no answer -> timed_out.

Versions compare without case and a leading `v` (`v1.5.0` equals `1.5.0`). Times are
`time.time()` floats, as the store keeps them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core import protocol
from smib_core.errors import BusError, InvalidInput, PermissionDenied, RequestTimeout, SmibError
from smib_core.firmware.materialise import materialise
from smib_core.inbox import WarnThrottle
from smib_core.services.actions import BoardActions, CommandBus
from smib_core.store.audit import AuditTrail
from smib_core.store.downloads import DownloadLog
from smib_core.store.firmware import FirmwareLibrary
from smib_core.store.leases import Lease, process_owner
from smib_core.store.rollouts import IN_FLIGHT, BoardState, Rollout, RolloutStore

log = logging.getLogger(__name__)

LEASE_NAME = "rollout-runner"
UPDATED = ("confirmed", "failed", "timed_out")  # the boards the success share counts


class RolloutBus(CommandBus, Protocol):
    """What the runner needs of `smib_core.bus.DeviceBus`."""

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


@dataclass(frozen=True, slots=True)
class RunnerTimings:
    poll_s: float = 0.5  # between passes
    request_timeout_s: float = 3.0  # a version question, the OTA URL write
    probe_every_s: float = 15.0  # ask an updating board's version this often
    lease_ttl_s: float = 20.0


def same_version(reported: object, target: str) -> bool:
    def norm(text: str) -> str:
        return text.strip().lower().removeprefix("v")

    return isinstance(reported, str) and bool(reported.strip()) and norm(reported) == norm(target)


def confirmed_share(boards: Iterable[BoardState]) -> float | None:
    """Percent confirmed among boards that were updated (None: none was)."""
    states = [b.state for b in boards if b.state in UPDATED]
    return None if not states else 100.0 * states.count("confirmed") / len(states)


def board_ota_url(base_url: str, relay: str) -> str:
    """The `otaURL` a rollout gives a board: its own folder of the firmware server, which
    serves the same files there and logs the download under the board's relay."""
    return f"{base_url}{relay}/"


class RolloutRunner:
    """Drives rollouts over `bus`, serving firmware from `folder` at `ota_url`."""

    def __init__(
        self,
        db: Database[Any],
        bus: RolloutBus,
        audit: AuditTrail,
        *,
        ota_url: str,
        folder: Path,
        timings: RunnerTimings | None = None,
        owner: str | None = None,
    ) -> None:
        self.ota_url = ota_url
        self.folder = folder
        self.timings = timings or RunnerTimings()
        self.store = RolloutStore(db, audit)
        self._library = FirmwareLibrary(db)
        self._downloads = DownloadLog(db)
        self._bus = bus
        self._audit = audit
        self.lease = Lease(
            db, LEASE_NAME, owner or process_owner("rollouts:"), self.timings.lease_ttl_s
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = WarnThrottle()
        self._probed: dict[tuple[str, str], float] = {}  # (rollout, relay) -> last answer

    # --- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="rollout-runner", daemon=True)
        self._thread.start()
        log.info("rollout runner started as %s", self.lease.owner)

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the current step, give the lease up and join the thread. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.lease.release()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except PyMongoError as exc:  # the database is away: try again, say so now and then
                if self._warn.ready():
                    log.warning("rollout runner: the database failed: %s", exc)
            except Exception:  # the runner must outlive a failed pass
                if self._warn.ready():
                    log.exception("rollout runner: a pass failed")
            self._stopping.wait(self.timings.poll_s)
        self.lease.release()

    def tick(self) -> bool:
        """One pass over the rollouts to drive; False when another process holds the lease."""
        if not self.lease.acquire():
            return False
        for rollout in self.store.to_drive():
            if self._stopping.is_set():
                break
            try:
                self._drive(rollout)
            except SmibError as exc:
                log.warning("rollout %s: %s", rollout.id, exc)
        return True

    def follow(
        self,
        rollout_id: str,
        on_board: Callable[[BoardState], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Rollout:
        """Drive (or, while another process holds the lease, watch) one rollout until it
        is over and none of its boards is still updating; `on_board` hears each board's
        outcome once."""
        told: set[str] = set()
        try:
            while True:
                self.tick()
                rollout = self.store.get(rollout_id)
                if rollout is None:
                    raise InvalidInput(f"there is no rollout {rollout_id!r}")
                boards = self.store.boards(rollout_id)
                for board in boards:
                    if board.done and board.relay not in told:
                        told.add(board.relay)
                        if on_board is not None:
                            on_board(board)
                if rollout.finished and not any(b.state in IN_FLIGHT for b in boards):
                    return rollout
                if should_stop():
                    return rollout
                time.sleep(self.timings.poll_s)
        finally:
            self.lease.release()

    # --- one rollout ------------------------------------------------------------------

    def _drive(self, rollout: Rollout) -> None:
        actions = BoardActions(self._bus, self._audit, rollout.principal)
        boards = self._note_downloads(rollout, self.store.boards(rollout.id))
        for board in boards:
            if board.state in IN_FLIGHT:
                self._watch(rollout, actions, board)
        if rollout.state == "pending":
            self.store.set_state(rollout.id, ("pending",), "running", started_at=time.time())
        current = self.store.get(rollout.id)
        if current is not None and current.state == "running":
            self._advance(current, actions, self.store.boards(rollout.id))

    def _advance(self, rollout: Rollout, actions: BoardActions, boards: list[BoardState]) -> None:
        """Finish, halt, or start the queued boards of the first unfinished batch."""
        open_batches = sorted({b.batch for b in boards if not b.done})
        if not open_batches:
            self._finish(rollout, "completed", boards)
            return
        batch = open_batches[0]
        share = confirmed_share(b for b in boards if b.batch < batch)
        if share is not None and share < rollout.min_success_pct:
            why = (
                f"only {share:.0f}% of the updated boards were confirmed, below the "
                f"{rollout.min_success_pct:g}% threshold"
            )
            self._finish(rollout, "halted", boards, why)
            return
        if batch != rollout.current_batch:
            self.store.set_fields(rollout.id, current_batch=batch)
        queued = [b for b in boards if b.batch == batch and b.state == "queued"]
        if queued:
            self._start_batch(rollout, actions, queued)

    def _start_batch(
        self, rollout: Rollout, actions: BoardActions, queued: list[BoardState]
    ) -> None:
        try:
            firmware = self._library.by_id(rollout.firmware_id)
            if firmware is None:
                raise InvalidInput(f"{rollout.product} {rollout.version} left the library")
            materialise(self._library, firmware, self.folder)
            for board in queued:
                current = self.store.get(rollout.id)
                if self._stopping.is_set() or current is None or current.state != "running":
                    return
                if not self.lease.renew():
                    return  # another process took over; it carries on from the database
                self._launch(rollout, actions, board)
        except (PermissionDenied, InvalidInput) as exc:
            self._finish(rollout, "halted", self.store.boards(rollout.id), str(exc))
        except BusError as exc:  # not connected: the boards stay queued for the next pass
            log.warning("rollout %s waits for the broker: %s", rollout.id, exc)

    def _finish(
        self, rollout: Rollout, state: str, boards: list[BoardState], reason: str = ""
    ) -> None:
        counts = {s: sum(1 for b in boards if b.state == s) for s in ("confirmed", "skipped")}
        missed = sum(1 for b in boards if b.state not in ("confirmed", "skipped"))
        parts = [f"{counts['confirmed']} confirmed"]
        parts += [f"{counts['skipped']} already on {rollout.version}"] if counts["skipped"] else []
        parts += [f"{missed} not confirmed"] if missed else []
        reason = reason or ", ".join(parts)
        if not self.store.set_state(
            rollout.id, ("running",), state, reason, finished_at=time.time()
        ):
            return
        if state == "halted":
            self.store.skip_queued(rollout.id, f"the rollout halted: {reason}")
        self._audit.record(
            rollout.actor,
            "rollout_finish",
            [],
            {"id": rollout.id, "state": state, "reason": reason},
            "ok",
        )
        log.info("rollout %s %s: %s", rollout.id, state, reason)

    # --- one board --------------------------------------------------------------------

    def _launch(self, rollout: Rollout, actions: BoardActions, board: BoardState) -> None:
        """Version question, OTA URL, `ota_ud`: queued (or url_set) -> command_sent."""
        timeout = self.timings.request_timeout_s
        try:
            reply = actions.request(board.relay, protocol.config_read("app"), timeout)
        except RequestTimeout:
            why = f"offline: no answer to the version question within {timeout:g} s"
            self.store.update_board(board, "failed", why)
            return
        version = str(getattr(reply, "fields", {}).get("version", ""))
        if same_version(version, rollout.version):
            state = "confirmed" if board.previous_version else "skipped"
            why = "" if board.previous_version else f"already on {version}"
            self.store.update_board(board, state, why, version=version)
            return
        url = board_ota_url(self.ota_url, board.relay)
        try:
            reply = actions.request(board.relay, protocol.set_ota_url(url), timeout)
        except RequestTimeout:
            self.store.update_board(
                board,
                "failed",
                "did not confirm the OTA URL",
                previous_version=version,
                version=version,
            )
            return
        taken = getattr(reply, "fields", {}).get("otaURL")
        if taken != url:
            self.store.update_board(
                board,
                "failed",
                f"kept the OTA URL {taken!r}",
                previous_version=version,
                version=version,
            )
            return
        board = self.store.update_board(
            board, "url_set", "", previous_version=version, version=version, ota_url=url
        )
        sent_at = time.time()
        actions.send_command([board.relay], protocol.ota_start(rollout.filename))
        self.store.update_board(board, "command_sent", command_at=sent_at)
        self._probed[(rollout.id, board.relay)] = sent_at

    def _watch(self, rollout: Rollout, actions: BoardActions, board: BoardState) -> None:
        if board.state == "url_set":  # the last runner stopped between URL and command
            if rollout.state == "running":
                self._launch(rollout, actions, board)
            elif rollout.state == "paused":
                self.store.update_board(board, "queued", "")
            else:
                self.store.update_board(board, "not_started", f"the rollout is {rollout.state}")
            return
        now = time.time()
        sent_at = board.command_at or board.updated_at
        key = (rollout.id, board.relay)
        last_answer = self._probed.get(key, 0.0)  # 0: a new runner asks at once
        heard = self._bus.latest_config(board.relay).get("app")
        announced = heard is not None and heard[1] > max(sent_at, last_answer)
        if announced and board.state != "back_online":
            board = self.store.update_board(board, "back_online")
        final = now - sent_at >= rollout.timeout_s
        if announced or final or now - last_answer >= self.timings.probe_every_s:
            self._ask_version(rollout, actions, board, final)

    def _ask_version(
        self, rollout: Rollout, actions: BoardActions, board: BoardState, final: bool
    ) -> None:
        key = (rollout.id, board.relay)
        try:
            reply = actions.request(
                board.relay, protocol.config_read("app"), self.timings.request_timeout_s
            )
        except RequestTimeout:
            self._probed[key] = time.time()
            if final:
                why = f"did not come back within {rollout.timeout_s:g} s"
                self.store.update_board(board, "timed_out", why)
            return
        self._probed[key] = time.time()
        version = str(getattr(reply, "fields", {}).get("version", ""))
        if same_version(version, rollout.version):
            self.store.update_board(board, "confirmed", "", version=version)
            return
        downloaded = board.download_at is not None
        if final or (board.state == "back_online" and downloaded):
            seen = "after downloading" if downloaded else "no download seen of"
            why = f"device kept version {version or '?'} ({seen} {rollout.filename})"
            self.store.update_board(board, "failed", why, version=version)

    def _note_downloads(self, rollout: Rollout, boards: list[BoardState]) -> list[BoardState]:
        """Mark the boards still waiting for their download that the server's log shows
        downloading the whole file from their own folder since they were commanded."""
        waiting = {
            b.relay: b
            for b in boards
            if b.state == "command_sent" and b.download_at is None and b.command_at is not None
        }
        if not waiting:
            return boards
        since = min(b.command_at or 0.0 for b in waiting.values())
        noted: dict[str, BoardState] = {}
        for download in self._downloads.since(rollout.filename, since):
            board = waiting.get(download.relay or "")
            if board is None or not download.complete or download.at < (board.command_at or 0.0):
                continue
            del waiting[board.relay]
            noted[board.relay] = self.store.update_board(
                board, "downloaded", download_at=download.at, download_client=download.client
            )
        return [noted.get(b.relay, b) for b in boards]
