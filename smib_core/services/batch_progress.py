"""How far a batch is, from its boards as stored: counts, share done, one row per board.

Pure functions over `store.batches.BatchBoard` rows (read from the database by the page,
which polls them), so any process shows the same progress whichever worker runs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pandas as pd

from smib_core.store.batches import BOARD_STATES, OUTCOMES, BatchBoard

STATES = BOARD_STATES
STATE_LABELS = {state: state.replace("_", " ") for state in STATES}
PROGRESS_COLUMNS = ["relay", "cabinet", "state", "detail", "seconds", "updated"]

__all__ = [
    "OUTCOMES",
    "PROGRESS_COLUMNS",
    "STATES",
    "STATE_LABELS",
    "counts",
    "finished_count",
    "fraction",
    "frame",
    "outcome_counts",
]


def counts(boards: Sequence[BatchBoard]) -> dict[str, int]:
    """Boards per state, every state present (0 when none)."""
    counted = Counter(b.state for b in boards)
    return {state: counted.get(state, 0) for state in STATES}


def outcome_counts(boards: Sequence[BatchBoard]) -> dict[str, int]:
    every = counts(boards)
    return {state: every[state] for state in OUTCOMES}


def finished_count(boards: Sequence[BatchBoard]) -> int:
    return sum(1 for b in boards if b.final)


def fraction(boards: Sequence[BatchBoard]) -> float:
    """Share of boards with an outcome, 0..1 (1 for an empty batch)."""
    return finished_count(boards) / len(boards) if boards else 1.0


def frame(
    boards: Sequence[BatchBoard], now: float, names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """One row per board in batch order: relay, cabinet, state (in words), detail,
    seconds spent on it and when it last changed (UTC)."""
    names = names or {}
    rows = [
        {
            "relay": b.relay,
            "cabinet": names.get(b.relay, ""),
            "state": STATE_LABELS.get(b.state, b.state),
            "detail": b.detail,
            "seconds": _round(b.seconds(now)),
            "updated": pd.Timestamp(b.updated_at or b.queued_at, unit="s", tz="UTC"),
        }
        for b in boards
    ]
    return pd.DataFrame(rows, columns=PROGRESS_COLUMNS)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
