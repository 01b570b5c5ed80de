"""Per-board progress of a batch job: written by worker threads, read by a page.

Contract: `BatchProgress` is the only state shared between a batch's worker threads
and whoever watches it. Every method takes its lock and returns copies (frozen rows,
new DataFrames), so a Streamlit fragment may poll it while workers update it. A board
is in one of `STATES`; the last five are outcomes and never change once reached
(`cancelled`: the job was cancelled before anything was sent to this board).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd

STATES = (
    "queued",
    "sending",
    "waiting",
    "confirmed",
    "not_confirmed",
    "offline",
    "failed",
    "cancelled",
)
OUTCOMES = ("confirmed", "not_confirmed", "offline", "failed", "cancelled")
STATE_LABELS = {
    "queued": "queued",
    "sending": "sending",
    "waiting": "waiting",
    "confirmed": "confirmed",
    "not_confirmed": "not confirmed",
    "offline": "offline",
    "failed": "failed",
    "cancelled": "cancelled",
}
PROGRESS_COLUMNS = ["relay", "cabinet", "state", "detail", "seconds", "updated"]


@dataclass(frozen=True, slots=True)
class BoardProgress:
    relay: str
    state: str
    detail: str
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None

    @property
    def final(self) -> bool:
        return self.state in OUTCOMES

    def seconds(self, now: float) -> float | None:
        """How long the board has been (or was) worked on; None while queued."""
        if self.started_at is None:
            return None
        return (self.finished_at if self.finished_at is not None else now) - self.started_at


class BatchProgress:
    """Each board's state, detail and timestamps; safe to use from any thread."""

    def __init__(self, relays: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        now = clock()
        self._boards = {relay: BoardProgress(relay, "queued", "", now) for relay in relays}
        self._lock = threading.Lock()
        self._finished = threading.Event()

    def set(self, relay: str, state: str, detail: str = "") -> None:
        """Move a board on; an outcome, once reached, is kept."""
        if state not in STATES:
            raise ValueError(f"unknown batch state {state!r}")
        now = self._clock()
        with self._lock:
            board = self._boards[relay]
            if board.final:
                return
            self._boards[relay] = replace(
                board,
                state=state,
                detail=detail,
                started_at=board.started_at if board.started_at is not None else now,
                finished_at=now if state in OUTCOMES else None,
                updated_at=now,
            )

    def claim(self, relay: str) -> bool:
        """A worker takes the board on (queued -> sending); False if it is no longer
        queued (cancelled), and then nothing may be sent to it."""
        with self._lock:
            board = self._boards[relay]
            if board.state != "queued":
                return False
            now = self._clock()
            self._boards[relay] = replace(
                board, state="sending", detail="starting", started_at=now, updated_at=now
            )
            return True

    def cancel_queued(self, detail: str) -> int:
        """Every board still queued ends `cancelled` (no worker may claim it any more);
        returns how many."""
        with self._lock:
            now = self._clock()
            queued = [b for b in self._boards.values() if b.state == "queued"]
            for board in queued:
                self._boards[board.relay] = replace(
                    board, state="cancelled", detail=detail, finished_at=now, updated_at=now
                )
            return len(queued)

    def fail_unfinished(self) -> None:
        """A board somehow left without an outcome when the run ended counts as failed."""
        with self._lock:
            unfinished = [b.relay for b in self._boards.values() if not b.final]
        for relay in unfinished:
            self.set(relay, "failed", "the batch ended before this board was done")

    def finish(self) -> None:
        """The run is over: every board has its outcome, and `wait` returns."""
        self.fail_unfinished()
        self._finished.set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def boards(self) -> list[BoardProgress]:
        with self._lock:
            return list(self._boards.values())

    def states(self) -> dict[str, str]:
        return {b.relay: b.state for b in self.boards()}

    @property
    def total(self) -> int:
        return len(self._boards)

    def finished_count(self) -> int:
        return sum(1 for b in self.boards() if b.final)

    def fraction(self) -> float:
        """Share of boards with an outcome, 0..1 (1 for an empty batch)."""
        return self.finished_count() / self.total if self.total else 1.0

    def counts(self) -> dict[str, int]:
        """Boards per state, every state present (0 when none)."""
        counted = Counter(b.state for b in self.boards())
        return {state: counted.get(state, 0) for state in STATES}

    def outcome_counts(self) -> dict[str, int]:
        counts = self.counts()
        return {state: counts[state] for state in OUTCOMES}

    def frame(self, names: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One row per board in batch order: relay, cabinet, state (in words), detail,
        seconds spent on it and when it last changed (UTC)."""
        now = self._clock()
        names = names or {}
        rows = [
            {
                "relay": b.relay,
                "cabinet": names.get(b.relay, ""),
                "state": STATE_LABELS[b.state],
                "detail": b.detail,
                "seconds": _round(b.seconds(now)),
                "updated": pd.Timestamp(b.updated_at or b.queued_at, unit="s", tz="UTC"),
            }
            for b in self.boards()
        ]
        return pd.DataFrame(rows, columns=PROGRESS_COLUMNS)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
