"""One thread that runs callbacks at their time: the fleet's reply delays, reboots and
events, however many boards (a heap, not a timer thread per board).

Callbacks run on the scheduler's thread one after another, so they must be quick; an
exception in one is logged and the others still run. After `stop()` nothing more runs
and `call_later` is a no-op.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, name: str = "smib-sim-scheduler") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Drop what is pending and join the thread."""
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        entry = (time.monotonic() + max(0.0, delay), next(self._order), callback)
        with self._cond:
            if self._stopping:
                return
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _due(self) -> list[Callable[[], None]] | None:
        """Wait for the next due callbacks (all of them); None once stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    due = []
                    while self._heap and self._heap[0][0] <= now:
                        due.append(heapq.heappop(self._heap)[2])
                    return due
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _run(self) -> None:
        while (due := self._due()) is not None:
            for callback in due:
                if self._stopping:
                    return
                try:
                    callback()
                except Exception:
                    log.exception("a simulator callback failed")
