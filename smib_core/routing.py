"""Routing of device messages: everything the device bus does that needs no broker.

Contract: `Router.handle_payload(topic, payload)` takes one MQTT message as received,
parses it (`protocol.parse_device_message`) and routes it: counted, into its relay's
bounded inbox (`inbox.RelayTable`), to the request waiting for it, to listeners; a
refused message is counted by reason. Every method is quick and thread-safe, blocks on
no I/O and never raises for bad input, so paho's thread can call it directly; a replay
or a benchmark may feed it without a broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from smib_core.errors import BusError
from smib_core.inbox import InboxEntry, LatencyWindow, RelayTable, WarnThrottle
from smib_core.protocol import (
    DeviceMessage,
    MeterReply,
    Parsed,
    Rejection,
    Topics,
    parse_device_message,
)

log = logging.getLogger(__name__)

Listener = Callable[[DeviceMessage], None]
_ReplyKey = tuple[str, str, str]  # relay, typ, comp


class LateReply(NamedTuple):
    """A reply that came after its request's timeout, no newer request for it pending."""

    message: DeviceMessage
    published_at: float  # time.time() when the request was handed to the broker client
    arrived_at: float  # time.time() when the reply was routed


LateListener = Callable[[LateReply], None]


class RecentRejection(NamedTuple):
    at: float  # time.time()
    reason: str
    detail: str
    topic: str


@dataclass(frozen=True, slots=True)
class BusStats:
    """A snapshot of the bus for a status page, the CLI or a benchmark."""

    connected: bool
    broker: str  # password masked
    messages_in: int  # every MQTT message received, refused ones included
    messages_out: int
    rejections: Mapping[str, int]  # reason -> count; meter frames that failed: meter_<check>
    recent_rejections: tuple[RecentRejection, ...]
    dropped: int  # messages pushed out of a full per-relay inbox (oldest first)
    relays_evicted: int  # relays forgotten because more than max_relays were heard
    listener_errors: int
    reconnects: int
    relays_known: int
    pending_requests: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    last_message_at: float | None  # time.time()


@dataclass(eq=False, slots=True)
class PendingReply:
    """One request's wait for its reply; resolved from the routing thread."""

    key: _ReplyKey
    event: threading.Event = field(default_factory=threading.Event)
    reply: DeviceMessage | None = None
    replied_at: float = 0.0  # time.perf_counter() when the reply was routed
    error: BusError | None = None
    published_at: float | None = None  # time.time() when armed; None: not published yet
    late_s: float = 0.0  # how long after a timeout a reply is still taken as late

    def wait(self, timeout: float) -> DeviceMessage | None:
        """The reply, or None on timeout; raises the error the bus failed it with."""
        if not self.event.wait(timeout):
            return None
        if self.error is not None:
            raise self.error
        return self.reply


class Router:
    """Counts, routes and remembers what the boards say; see the module contract."""

    def __init__(
        self,
        topics: Topics,
        *,
        inbox_size: int = 200,
        max_relays: int = 5000,
        latency_samples: int = 1000,
        recent_rejections: int = 100,
    ) -> None:
        self.topics = topics
        self.relays = RelayTable(inbox_size, max_relays)
        self.latency = LatencyWindow(latency_samples)
        self._lock = threading.Lock()
        self._message_arrived = threading.Condition(self._lock)
        self._pending: dict[_ReplyKey, list[PendingReply]] = {}
        self._expired: dict[_ReplyKey, tuple[float, float]] = {}  # published_at, late until
        self._late_listeners: tuple[LateListener, ...] = ()
        self._late_replies = 0
        self._closed: BusError | None = None
        self._listeners: tuple[Listener, ...] = ()
        self._rejections: Counter[str] = Counter()
        self._recent: deque[RecentRejection] = deque(maxlen=recent_rejections)
        self._messages_in = 0
        self._messages_out = 0
        self._listener_errors = 0
        self._last_message_at: float | None = None
        self._message_waiters = 0
        self._warn_evicted = WarnThrottle()
        self._warn_listener = WarnThrottle()

    # --- incoming -----------------------------------------------------------------------

    def handle_payload(self, topic: str, payload: bytes) -> Parsed:
        """Parse, count and route one MQTT message as it came off the wire."""
        parsed = parse_device_message(topic, payload, self.topics)
        at = time.time()
        if isinstance(parsed, Rejection):
            self.reject(parsed.reason, parsed.detail, topic, at)
            if parsed.relay is not None and (evicted := self.relays.touch(parsed.relay, at)):
                self._note_eviction(evicted)
        else:
            self.route(parsed, at)
        # Counted last, so whoever waits for N messages finds all N routed.
        with self._lock:
            self._messages_in += 1
            self._last_message_at = at
            if self._message_waiters:
                self._message_arrived.notify_all()
        return parsed

    def route(self, message: DeviceMessage, at: float | None = None) -> InboxEntry:
        """Put a parsed message in its relay's inbox, resolve its waiter, tell listeners."""
        result = self.relays.add(message, at)
        if isinstance(message, MeterReply) and message.failure_check not in (None, "device_error"):
            reason = f"meter_{message.failure_check}"
            self.reject(reason, message.failure or "", message.topic, result.entry.at)
        if result.evicted_relay is not None:
            self._note_eviction(result.evicted_relay)
        self._resolve(message)
        for fn in self._listeners:
            try:
                fn(message)
            except Exception:
                with self._lock:
                    self._listener_errors += 1
                if self._warn_listener.ready():
                    log.exception("a device bus listener failed (%s)", getattr(fn, "__name__", fn))
        return result.entry

    def reject(self, reason: str, detail: str, topic: str, at: float | None = None) -> None:
        """Count a message we could not use (shown by reason, never raised)."""
        at = time.time() if at is None else at
        with self._lock:
            self._rejections[reason] += 1
            self._recent.append(RecentRejection(at, reason, detail, topic[:200]))
        log.debug("refused a device message on %s: %s (%s)", topic[:200], reason, detail)

    def _note_eviction(self, relay: str) -> None:
        if self._warn_evicted.ready():
            log.warning(
                "more than %d relays heard: forgot the least recently heard (%s); "
                "%d forgotten so far",
                self.relays.max_relays,
                relay,
                self.relays.evicted,
            )

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call `fn(message)` for every routed device message; returns its remover."""
        with self._lock:
            self._listeners = (*self._listeners, fn)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(f for f in self._listeners if f is not fn)

        return remove

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Block until `messages_in` reaches `count` (all of them routed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._message_arrived:
            self._message_waiters += 1
            try:
                while self._messages_in < count:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._message_arrived.wait(remaining)
                return True
            finally:
                self._message_waiters -= 1

    # --- requests waiting for replies ---------------------------------------------------

    @contextmanager
    def expect(
        self, relay: str, typ: str, comp: str = "", *, armed: bool = True, late_s: float = 0.0
    ) -> Iterator[PendingReply]:
        """Register a wait for the reply (relay, typ, comp); removed again in `finally`.

        Enter it before publishing the command, so a quick reply cannot be missed. With
        `armed=False` it takes no reply until `arm` (call it just before the publish):
        a message routed before the request was published cannot be its answer (it is
        an older reply, delivered late). Every armed request waiting for the same key is
        resolved by the first such reply. A request that ends unanswered with `late_s`
        > 0 leaves its key expecting a late reply for that long (`add_late_listener`).
        """
        pending = PendingReply((relay, typ, comp), late_s=late_s)
        if armed:
            pending.published_at = time.time()
        with self._lock:
            if self._closed is not None:
                raise self._closed
            self._pending.setdefault(pending.key, []).append(pending)
        try:
            yield pending
        finally:
            with self._lock:
                waiting = self._pending.get(pending.key)
                if waiting and pending in waiting:
                    waiting.remove(pending)
                    if not waiting:
                        del self._pending[pending.key]
                if pending.reply is None and pending.published_at is not None and late_s > 0:
                    self._expired[pending.key] = (pending.published_at, time.time() + late_s)

    def arm(self, pending: PendingReply) -> None:
        """From now on `pending` takes its reply (call just before publishing its
        request); a late reply still expected for its key is no longer wanted."""
        with self._lock:
            pending.published_at = time.time()
            self._expired.pop(pending.key, None)

    def _resolve(self, message: DeviceMessage) -> None:
        if not self._pending and not self._expired:  # the common case
            return
        key = (message.relay, message.typ, message.comp)
        late: tuple[float, float] | None = None
        with self._lock:
            waiting = self._pending.get(key, [])
            armed = [p for p in waiting if p.published_at is not None]
            if armed:
                rest = [p for p in waiting if p.published_at is None]
                if rest:
                    self._pending[key] = rest
                else:
                    del self._pending[key]
            elif not waiting and key in self._expired:
                late = self._expired.pop(key)
                self._late_replies += 1
            listeners = self._late_listeners
        for pending in armed:
            pending.reply = message
            pending.replied_at = time.perf_counter()
            pending.event.set()
        now = time.time()
        if late is not None and now <= late[1]:
            self._tell_late(listeners, LateReply(message, late[0], now))

    def _tell_late(self, listeners: tuple[LateListener, ...], late: LateReply) -> None:
        for fn in listeners:
            try:
                fn(late)
            except Exception:
                with self._lock:
                    self._listener_errors += 1
                if self._warn_listener.ready():
                    log.exception("a late-reply listener failed (%s)", getattr(fn, "__name__", fn))

    def add_late_listener(self, fn: LateListener) -> Callable[[], None]:
        """Call `fn(late)` for each reply that comes after its request's timeout (within
        the request's `late_s`) while no newer request for the same reply is pending
        or published; returns its remover. Runs on the MQTT thread: be quick."""
        with self._lock:
            self._late_listeners = (*self._late_listeners, fn)

        def remove() -> None:
            with self._lock:
                self._late_listeners = tuple(f for f in self._late_listeners if f is not fn)

        return remove

    def close(self, error: BusError) -> None:
        """Fail every waiting request with `error` and refuse new ones."""
        with self._lock:
            self._closed = error
            waiting = [p for ps in self._pending.values() for p in ps]
            self._pending.clear()
        for pending in waiting:
            pending.error = error
            pending.event.set()

    def count_sent(self) -> None:
        with self._lock:
            self._messages_out += 1

    def stats(self, *, connected: bool, broker: str, reconnects: int) -> BusStats:
        """A snapshot of the counters, completed with the link's state by the bus."""
        with self._lock:
            return BusStats(
                connected=connected,
                broker=broker,
                messages_in=self._messages_in,
                messages_out=self._messages_out,
                rejections=dict(self._rejections),
                recent_rejections=tuple(self._recent),
                dropped=self.relays.dropped,
                relays_evicted=self.relays.evicted,
                listener_errors=self._listener_errors,
                reconnects=reconnects,
                relays_known=len(self.relays),
                pending_requests=sum(len(p) for p in self._pending.values()),
                latency_p50_ms=self.latency.percentile(50),
                latency_p99_ms=self.latency.percentile(99),
                last_message_at=self._last_message_at,
            )
