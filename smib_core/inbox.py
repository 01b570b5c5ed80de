"""Bounded, thread-safe buffers the device bus fills from paho's network thread.

Contract: memory stays bounded whatever the devices send. `RelayTable` keeps, per
relay, a ring of its most recent messages, when it was last heard and the latest
config it reported; it forgets the least recently heard relay beyond `max_relays`.
`LatencyWindow` keeps the last N reply latencies for percentiles. Every method is
quick and safe to call from any thread; stdlib only, no I/O.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from smib_core.protocol import ConfigReply, DeviceMessage


class InboxEntry(NamedTuple):
    """One device message as routed: `seq` grows by one per message, bus-wide."""

    seq: int
    at: float  # time.time() when it was heard
    message: DeviceMessage


@dataclass(slots=True)
class _RelayState:
    inbox: deque[InboxEntry]
    last_seen: float = 0.0
    config: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)


class AddResult(NamedTuple):
    """What adding one message did: its entry, and what the bounds pushed out."""

    entry: InboxEntry
    dropped_message: bool  # the relay's inbox was full: its oldest message is gone
    evicted_relay: str | None  # the relay map was full: this relay was forgotten


class RelayTable:
    """Per-relay inboxes, last-seen times and latest config, bounded in both directions.

    The inbox of a relay is a ring: when `inbox_size` messages are held, a new one
    pushes the oldest out. The map itself is an LRU: hearing a relay moves it to the
    fresh end, and beyond `max_relays` the stalest relay is forgotten entirely.
    """

    def __init__(self, inbox_size: int = 200, max_relays: int = 5000) -> None:
        if inbox_size < 1 or max_relays < 1:
            raise ValueError("inbox_size and max_relays must be at least 1")
        self.inbox_size = inbox_size
        self.max_relays = max_relays
        self._relays: OrderedDict[str, _RelayState] = OrderedDict()
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._last_seq = 0
        self.dropped = 0  # messages pushed out of a full inbox
        self.evicted = 0  # relays forgotten beyond max_relays

    def __len__(self) -> int:
        return len(self._relays)

    @property
    def last_seq(self) -> int:
        """The seq of the newest message so far (0 before any): a start for polling."""
        return self._last_seq

    def add(self, message: DeviceMessage, at: float | None = None) -> AddResult:
        """Route one message into its relay's inbox; keeps config replies as latest."""
        at = time.time() if at is None else at
        with self._lock:
            state, evicted = self._touch(message.relay, at)
            seq = next(self._seq)
            self._last_seq = seq
            entry = InboxEntry(seq, at, message)
            full = len(state.inbox) == self.inbox_size
            if full:
                self.dropped += 1
            state.inbox.append(entry)
            if isinstance(message, ConfigReply):
                old = state.config.get(message.component)
                fields = dict(old[0]) if old else {}
                fields.update(message.fields)
                state.config[message.component] = (fields, at)
        return AddResult(entry, full, evicted)

    def touch(self, relay: str, at: float | None = None) -> str | None:
        """Mark a relay as heard (e.g. it sent something we refused); returns any evicted."""
        with self._lock:
            return self._touch(relay, time.time() if at is None else at)[1]

    def _touch(self, relay: str, at: float) -> tuple[_RelayState, str | None]:
        state = self._relays.get(relay)
        evicted = None
        if state is None:
            state = _RelayState(deque(maxlen=self.inbox_size))
            self._relays[relay] = state
            if len(self._relays) > self.max_relays:
                evicted, _ = self._relays.popitem(last=False)
                self.evicted += 1
        else:
            self._relays.move_to_end(relay)
        state.last_seen = max(state.last_seen, at)
        return state, evicted

    # --- queries (each returns a copy) ------------------------------------------------

    def relays_seen(self) -> dict[str, float]:
        with self._lock:
            return {relay: state.last_seen for relay, state in self._relays.items()}

    def last_seen(self, relay: str) -> float | None:
        with self._lock:
            state = self._relays.get(relay)
            return state.last_seen if state else None

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        """comp -> (latest value of each field heard, when the comp was last heard).

        Fields are merged across replies so a reply carrying only the fields just
        written does not hide the others. Values are as the board sent them, secrets
        included: mask them (`protocol.mask_secrets`) before showing or logging.
        """
        with self._lock:
            state = self._relays.get(relay)
            if state is None:
                return {}
            return {comp: (dict(fields), at) for comp, (fields, at) in state.config.items()}

    def inbox(self, relay: str) -> list[InboxEntry]:
        with self._lock:
            state = self._relays.get(relay)
            return list(state.inbox) if state else []

    def messages_since(self, relay: str, seq: int) -> list[InboxEntry]:
        """The relay's held messages with a seq above `seq`, oldest first."""
        with self._lock:
            state = self._relays.get(relay)
            if state is None:
                return []
            newer = list(itertools.takewhile(lambda e: e.seq > seq, reversed(state.inbox)))
        newer.reverse()
        return newer


class LatencyWindow:
    """The last `size` latencies (ms), for p50/p99 without unbounded growth."""

    def __init__(self, size: int = 1000) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(ms)

    def percentile(self, pct: float) -> float | None:
        """Nearest-rank percentile of the window; None when empty."""
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return None
        rank = min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered))))
        return ordered[rank - 1]


class WarnThrottle:
    """Allows one log line per `interval_s`, so a flood cannot flood the log too."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._lock = threading.Lock()

    def ready(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self.interval_s
            return True
