"""The collector's memory for the money rules: each cabinet's `analytics.verdicts.History`.

`VerdictBook.judge` gives the verdict on a good meter reply of a cabinet and remembers
it (thread-safe). A cabinet's history starts from its last stored good readings
(`RECENT_READINGS` of them) and the replies the rules refused that were stored with
their meters (`heard`), so a process that takes the collector over judges the next
reply against what the previous holder stored and heard: a replay of a reply that
holder refused is stale for it too. A cabinet the collector knows has nothing stored
(`is_fresh`) starts empty, without a read.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
from pymongo.errors import PyMongoError

from smib_core.analytics.verdicts import (
    COUNTERS,
    RECENT_READINGS,
    History,
    Judgement,
    Reading,
    Verdict,
    history_of,
    judge,
    remember,
)
from smib_core.sas import MeterReading
from smib_core.store.meters import MeterStore

CLOCK_BEHIND_ALERT_AFTER = 3  # refused stamps in a row that raise a `clock_behind` alert
_AHEAD = timedelta(days=1)  # stored readings are read up to now + this (a fast clock's too)

log = logging.getLogger(__name__)


def reading_of(at: datetime, decoded: MeterReading, *, late: bool = False) -> Reading:
    return Reading(
        at,
        decoded.values(),
        {m.code: m.size for m in decoded.meters},
        late=late,
    )


def stored_readings(frame: pd.DataFrame) -> list[Reading]:
    """Good snapshots (a `store.meters` snapshot frame) as verdict readings, time order."""
    readings = []
    for row in frame.sort_values("at").to_dict("records"):
        meters = {
            c: int(row[c])
            for c in COUNTERS
            if c in row and row[c] is not None and not math.isnan(float(row[c]))
        }
        sizes = {}
        for code in COUNTERS:
            size = row.get(f"{code}_size")
            if size is not None and not math.isnan(float(size)):
                sizes[code] = int(size)
        readings.append(Reading(pd.Timestamp(row["at"]).to_pydatetime(), meters, sizes))
    return readings


class VerdictBook:
    def __init__(self, store: MeterStore, *, is_fresh: Callable[[str], bool] | None = None) -> None:
        self._store = store
        self._is_fresh = is_fresh or (lambda _cabinet_id: False)
        self._lock = threading.Lock()
        self._histories: dict[str, History] = {}
        self._clock_behind: Counter[str] = Counter()  # refused stamps in a row, per cabinet
        self.counts: Counter[Verdict] = Counter()

    def _history(self, cabinet_id: str) -> History:
        history = self._histories.get(cabinet_id)
        if history is None and self._is_fresh(cabinet_id):  # nothing stored to read
            return History()
        if history is None:
            until = datetime.now(UTC) + _AHEAD
            frame = self._store.previous_snapshots(cabinet_id, until, RECENT_READINGS)
            refused = self._store.refused_replies(cabinet_id, RECENT_READINGS)
            heard = [
                Reading(pd.Timestamp(d["at"]).to_pydatetime(), dict(d["heard"])) for d in refused
            ]
            stored = stored_readings(frame) if not frame.empty else []
            history = history_of(stored, heard=heard)
        return history

    def judge(self, cabinet_id: str, reading: Reading) -> Judgement:
        """The verdict on `reading`, remembered for the cabinet's next one. A cabinet
        whose stored history cannot be read now (the database away) gets `UNJUDGED`
        and nothing is remembered: judged from nothing, a replay would pass for its
        first reading."""
        try:
            history = self._history(cabinet_id)  # a database read outside the lock
        except PyMongoError as exc:
            log.warning("verdicts: %s: the stored readings cannot be read: %s", cabinet_id, exc)
            with self._lock:
                self.counts[Verdict.UNJUDGED] += 1
            reason = "unjudged: the cabinet's stored readings could not be read (database away)"
            return Judgement(Verdict.UNJUDGED, reason)
        with self._lock:
            history = self._histories.get(cabinet_id, history)
            judgement = judge(history, reading)
            self._histories[cabinet_id] = remember(history, reading, judgement)
            self.counts[judgement.verdict] += 1
            if judgement.verdict is Verdict.CLOCK_BEHIND:
                self._clock_behind[cabinet_id] += 1
            else:
                self._clock_behind.pop(cabinet_id, None)
        return judgement

    def clock_behind_in_a_row(self, cabinet_id: str) -> int:
        with self._lock:
            return self._clock_behind[cabinet_id]

    def forget(self) -> None:
        """Drop every history (e.g. on losing the collector lease: another process
        stores readings meanwhile)."""
        with self._lock:
            self._histories.clear()
