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
2. write `otaURL` (the board answers nothing) = its own folder of the firmware server
   with a secret token made for this rollout and board (`{ota_url}{relay}/{token}/`,
   see `board_ota_url`), then read `ota` back until it reports that URL
   (`services.readback`) -> url_set; otherwise failed;
3. send `ota_ud` with the file name -> command_sent (the per-board timeout starts; the
   `ota_start` audit record is settled with the board's outcome by the store);
4. a complete download of the file under the board's folder and token in the server's
   log -> downloaded (the server refuses any other token, so nobody downloads in the
   board's name);
5. its version is read back (`cfg app`) every `probe_every_s`, every
   `probe_downloaded_s` once the download was seen; an announcement counts for nothing.
   The target version after its own download -> confirmed; the target version with no
   download seen -> failed "reported the new version without downloading it"; a board
   that went quiet after its download (a question unanswered) and answers another
   version -> back_online, then failed "device kept version X";
6. at the timeout one last question: the target -> confirmed (download seen) or failed,
   another version -> failed, no answer -> timed_out.

Versions compare without case and a leading `v` (`v1.5.0` equals `1.5.0`). Times are
`time.time()` floats, as the store keeps them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pymongo.database import Database
from pymongo.errors import PyMongoError

from smib_core import protocol
from smib_core.errors import BusError, InvalidInput, PermissionDenied, RequestTimeout, SmibError
from smib_core.firmware.materialise import DEFAULT_FOLDER, in_library, materialise
from smib_core.firmware.server import FirmwareServer
from smib_core.inbox import WarnThrottle
from smib_core.protocol import mask_ota_token
from smib_core.services.actions import BoardActions, CommandBus
from smib_core.services.readback import ReadBackTimings, read_back, reports
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.downloads import DownloadLog
from smib_core.store.firmware import FirmwareLibrary
from smib_core.store.leases import Lease, process_owner
from smib_core.store.rollouts import IN_FLIGHT, BoardState, Rollout, RolloutStore

log = logging.getLogger(__name__)

LEASE_NAME = "rollout-runner"
WATCHERS = 8  # boards of a rollout whose versions are asked at the same time
UPDATED = ("confirmed", "failed", "timed_out")  # the boards the success share counts


class RolloutBus(CommandBus, Protocol):
    """What the runner needs of `smib_core.bus.DeviceBus`: to send and to ask, nothing it
    would have to hear unprompted."""


@dataclass(frozen=True, slots=True)
class RunnerTimings:
    poll_s: float = 0.5  # between passes
    request_timeout_s: float = 3.0  # one question (version, OTA URL read-back)
    readback_s: float = 10.0  # the OTA URL write read back for at most this long
    probe_every_s: float = 5.0  # ask an updating board's version this often
    probe_downloaded_s: float = 2.0  # and this often once its download was seen
    lease_ttl_s: float = 20.0


def same_version(reported: object, target: str) -> bool:
    def norm(text: str) -> str:
        return text.strip().lower().removeprefix("v")

    return isinstance(reported, str) and bool(reported.strip()) and norm(reported) == norm(target)


def confirmed_share(boards: Iterable[BoardState]) -> float | None:
    """Percent confirmed among boards that were updated (None: none was)."""
    states = [b.state for b in boards if b.state in UPDATED]
    return None if not states else 100.0 * states.count("confirmed") / len(states)


def board_ota_url(base_url: str, relay: str, token: str) -> str:
    """The `otaURL` a rollout gives a board: its own folder of the firmware server with the
    board's secret token (`{base_url}{relay}/{token}/`). The server serves the same files
    there only for that token and logs the download under the board's relay. A secret:
    shown and logged only through `protocol.mask_ota_token`."""
    return f"{base_url}{relay}/{token}/"


def firmware_server(
    settings: Settings, db: Database[Any], folder: Path = DEFAULT_FOLDER
) -> FirmwareServer:
    """The firmware server of a deployment: library files only, every download logged
    for the rollout runners, per-board URLs checked against the rollouts' OTA tokens."""
    return FirmwareServer.from_settings(
        settings,
        folder=folder,
        allowed=in_library(FirmwareLibrary(db)),
        on_download=DownloadLog(db).record,
        board_token=RolloutStore(db).ota_token_ok,
    )


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
        self._probed: dict[tuple[str, str], float] = {}  # (rollout, relay) -> last question
        self._quiet: dict[tuple[str, str], float] = {}  # -> last question left unanswered

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
        in_flight = [b for b in boards if b.state in IN_FLIGHT]
        if len(in_flight) > 1:  # a rebooting board leaves a question unanswered: not in turn
            workers = min(WATCHERS, len(in_flight))
            with ThreadPoolExecutor(workers, thread_name_prefix="rollout-watch") as pool:
                list(pool.map(lambda board: self._watch(rollout, actions, board), in_flight))
        elif in_flight:
            self._watch(rollout, actions, in_flight[0])
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
        """Version question, OTA URL (read back), `ota_ud`: queued (or url_set) ->
        command_sent."""
        timeout = self.timings.request_timeout_s
        try:
            reply = actions.request(board.relay, protocol.config_read("app"), timeout)
        except RequestTimeout:
            why = f"offline: no answer to the version question within {timeout:g} s"
            self.store.update_board(board, "failed", why)
            return
        version = str(getattr(reply, "fields", {}).get("version", ""))
        if same_version(version, rollout.version):
            if not board.previous_version:
                self.store.update_board(board, "skipped", f"already on {version}", version=version)
                return
            # A runner stopped between URL and command: the board's own download decides.
            board = self._note_downloads(rollout, [board], since=board.times.get("url_set"))[0]
            self._judge_new_version(board, version)
            return
        board, token = self.store.ota_token(board)
        url = board_ota_url(self.ota_url, board.relay, token)
        versions = {"previous_version": version, "version": version}
        sent = actions.send_command([board.relay], protocol.set_ota_url(url))
        back = read_back(
            actions,
            board.relay,
            "ota",
            reports({"otaURL": url}),
            self.timings.readback_s,
            ReadBackTimings(ask_timeout_s=timeout),
        )
        actions.settle(
            sent.audit_id, back.outcome, {} if back.confirmed else {"reason": back.reason}
        )
        if not back.confirmed:
            taken = mask_ota_token(str(back.fields.get("otaURL", "")))
            why = (
                f"did not confirm the OTA URL: {back.reason}"
                if not back.answered
                else f"kept the OTA URL {taken!r}"
            )
            self.store.update_board(board, "failed", why, **versions)
            return
        board = self.store.update_board(
            board, "url_set", "", ota_url=mask_ota_token(url), **versions
        )
        sent_at = time.time()
        command = actions.send_command([board.relay], protocol.ota_start(rollout.filename))
        self.store.update_board(
            board, "command_sent", command_at=sent_at, ota_audit_id=command.audit_id
        )
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
        last_asked = self._probed.get((rollout.id, board.relay), 0.0)  # 0: ask at once
        every = (
            self.timings.probe_downloaded_s
            if board.download_at is not None
            else self.timings.probe_every_s
        )
        final = now - sent_at >= rollout.timeout_s
        if final or now - last_asked >= every:
            self._ask_version(rollout, actions, board, final)

    def _ask_version(
        self, rollout: Rollout, actions: BoardActions, board: BoardState, final: bool
    ) -> None:
        """Read `cfg app` back: the version after the reboot decides, never an announcement.

        A board that went quiet after its download (a question unanswered) and answers
        again is back: on the target version it is confirmed, on another it failed."""
        key = (rollout.id, board.relay)
        try:
            reply = actions.request(
                board.relay, protocol.config_read("app"), self.timings.request_timeout_s
            )
        except RequestTimeout:
            self._probed[key] = time.time()
            if board.download_at is not None:
                self._quiet[key] = time.time()
            if final:
                why = f"did not come back within {rollout.timeout_s:g} s"
                self.store.update_board(board, "timed_out", why)
            return
        self._probed[key] = time.time()
        version = str(getattr(reply, "fields", {}).get("version", ""))
        if board.download_at is None:  # the log may have caught up since this pass began
            board = self._note_downloads(rollout, [board])[0]
        if same_version(version, rollout.version):
            self._judge_new_version(board, version)
            return
        downloaded = board.download_at is not None
        back = downloaded and self._quiet.get(key, 0.0) > (board.download_at or 0.0)
        if back and board.state != "back_online":
            board = self.store.update_board(board, "back_online")
        if final or back:
            seen = "after downloading" if downloaded else "no download seen of"
            why = f"device kept version {version or '?'} ({seen} {rollout.filename})"
            self.store.update_board(board, "failed", why, version=version)

    def _judge_new_version(self, board: BoardState, version: str) -> None:
        """The board reports the target version: confirmed only after its own download."""
        if board.download_at is None:
            why = "reported the new version without downloading it"
            self.store.update_board(board, "failed", why, version=version)
            return
        if board.state != "back_online":
            board = self.store.update_board(board, "back_online")
        self.store.update_board(board, "confirmed", "", version=version)

    def _note_downloads(
        self, rollout: Rollout, boards: list[BoardState], since: float | None = None
    ) -> list[BoardState]:
        """Mark the boards still waiting for their download that the server's log shows
        downloading the whole file from their own folder (token checked by the server)
        since they were commanded (or since `since`)."""
        waiting = {
            b.relay: b
            for b in boards
            if b.download_at is None
            and (
                (b.state == "command_sent" and b.command_at is not None)
                or (since is not None and b.previous_version)
            )
        }
        if not waiting:
            return boards

        def start(board: BoardState) -> float:
            return board.command_at if board.command_at is not None else (since or 0.0)

        noted: dict[str, BoardState] = {}
        for download in self._downloads.since(rollout.filename, min(map(start, waiting.values()))):
            board = waiting.get(download.relay or "")
            if board is None or not download.complete or download.at < start(board):
                continue
            del waiting[board.relay]
            state = "downloaded" if board.state == "command_sent" else board.state
            noted[board.relay] = self.store.update_board(
                board, state, download_at=download.at, download_client=download.client
            )
        return [noted.get(b.relay, b) for b in boards]
