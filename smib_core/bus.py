"""The device bus: the one MQTT client between the server and every SMIB board.

Device data enters the server here. One paho-mqtt client (its own named loop thread)
subscribes to every device -> server topic, again on every (re)connect. Its callbacks
do almost nothing: parse (`protocol.parse_device_message`), route the message into its
relay's bounded inbox (`inbox.RelayTable`), resolve a waiting request, call listeners,
and count whatever was refused. They never block paho's thread and never raise into it.

Commands go out only through `send`/`request`, which validate the relay id before any
topic is built from it. Streamlit reaches the bus only through `ui.resources.get_bus`;
nothing here touches Streamlit.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt

from smib_core.embedded import broker_uri
from smib_core.errors import BusError, InvalidInput, RequestTimeout
from smib_core.inbox import InboxEntry, WarnThrottle
from smib_core.protocol import Command, DeviceMessage, Parsed, Topics, normalize_relay_id
from smib_core.routing import BusStats, LateListener, Listener, RecentRejection, Router
from smib_core.settings import BrokerAddress, Settings

__all__ = ["BusStats", "DeviceBus", "InboxEntry", "Listener", "RecentRejection", "Subscription"]

log = logging.getLogger(__name__)


class _AfterDisconnect(logging.Filter):
    """paho 2.2's loop thread runs once more after a clean disconnect and logs "Client is
    not connected" at ERROR; that is not an error (lost connections are logged by
    `_on_disconnect` and counted as reconnects)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_PAHO_LOG = logging.getLogger(f"{__name__}.paho")
_PAHO_LOG.addFilter(_AfterDisconnect())


class Subscription:
    """One consumer's bounded queue of device messages (a live stream's client).

    `offer` runs on paho's thread and never blocks on the consumer: it appends under a
    short lock, or, when `maxsize` messages are already waiting, cuts the subscription
    off (the slow consumer is told by `cut_off` and must go; nothing more is queued, so
    memory never grows). `wake` (if given) is called after each append and on the cut,
    e.g. to set an asyncio event with `loop.call_soon_threadsafe`. Each subscription
    is its own listener: closing one never touches another.
    """

    def __init__(
        self,
        maxsize: int = 1000,
        accept: Callable[[DeviceMessage], bool] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise InvalidInput("a subscription holds at least one message")
        self.maxsize = maxsize
        self._accept = accept
        self._wake = wake
        self._queue: deque[tuple[float, DeviceMessage]] = deque()
        self._lock = threading.Lock()
        self._remove: Callable[[], None] | None = None
        self.cut_off = False
        self.closed = False

    def offer(self, message: DeviceMessage) -> None:
        if self.closed or (self._accept is not None and not self._accept(message)):
            return
        with self._lock:
            if len(self._queue) >= self.maxsize:
                self.cut_off = True
                self._queue.clear()
            else:
                self._queue.append((time.time(), message))
        if self.cut_off:
            self.close()
        if self._wake is not None:
            self._wake()

    def drain(self) -> list[tuple[float, DeviceMessage]]:
        """Every waiting (time heard, message), oldest first; the queue is left empty."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        return items

    def close(self) -> None:
        """Stop receiving (idempotent); the bus forgets this subscription."""
        self.closed = True
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()


def _label(command: Command) -> str:
    """How a command is named in errors: 'cfg net', 'meters', 'restart'."""
    if command.reply_comp:
        return f"{command.payload.get('typ')} {command.reply_comp}"
    return command.kind


class DeviceBus:
    """Talks to the boards over one MQTT connection; thread-safe.

    `send` publishes a command; `request` publishes it and waits for the matching reply
    (same relay, `typ` and `comp`). What the boards say is kept per relay in bounded
    inboxes (`inbox`, `messages_since`), with last-seen times and latest config, and
    handed to listeners. Publishes and subscriptions use `qos` (0 like the production
    CMS). Reconnection is paho's: exponential backoff from `reconnect_min_delay` to
    `reconnect_max_delay` seconds, resubscribing on every connect.
    """

    def __init__(
        self,
        broker_uri: str,
        topics: Topics,
        *,
        client_id_prefix: str = "smib",
        inbox_size: int = 200,
        max_relays: int = 5000,
        qos: int = 0,
        keepalive: int = 60,
        reconnect_min_delay: int = 1,
        reconnect_max_delay: int = 30,
        tls_context: ssl.SSLContext | None = None,
        latency_samples: int = 1000,
        recent_rejections: int = 100,
    ) -> None:
        if qos not in (0, 1, 2):
            raise InvalidInput("MQTT QoS must be 0, 1 or 2")
        self.address = BrokerAddress.parse(broker_uri)
        self.topics = topics
        self.qos = qos
        self.keepalive = keepalive
        self.router = Router(
            topics,
            inbox_size=inbox_size,
            max_relays=max_relays,
            latency_samples=latency_samples,
            recent_rejections=recent_rejections,
        )
        self._lock = threading.Lock()
        self._state = "new"  # new -> started -> stopped
        self._connects = 0
        self._connected = threading.Event()
        self._subscribe_mid: int | None = None
        self._warn_connect = WarnThrottle()
        self._latency_observers: tuple[Callable[[float], None], ...] = ()
        self._client = self._make_client(client_id_prefix, tls_context)
        self._client.reconnect_delay_set(reconnect_min_delay, reconnect_max_delay)

    def _make_client(self, prefix: str, tls_context: ssl.SSLContext | None) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set_context(tls_context or ssl.create_default_context())
        client.enable_logger(_PAHO_LOG)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (paho's loop thread); returns at once."""
        with self._lock:
            if self._state == "started":
                return
            if self._state == "stopped":
                raise BusError("this device bus was stopped; create a new one")
            self._state = "started"
        self._client.connect_async(self.address.host, self.address.port, self.keepalive)
        self._client.loop_start()
        log.info("connecting to the broker %s", self.address.uri())

    def stop(self) -> None:
        """Disconnect and join the loop thread; requests still waiting fail. Idempotent."""
        with self._lock:
            was_started = self._state == "started"
            self._state = "stopped"
        self.router.close(BusError("the device bus was stopped"))
        if was_started:
            self._client.disconnect()
            self._client.loop_stop()
            log.info("disconnected from the broker %s", self.address.uri())
        self._connected.clear()

    def __enter__(self) -> DeviceBus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        """Connected and subscribed to the device topics."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # --- commands -----------------------------------------------------------------------

    def send(self, relay: str, command: Command) -> None:
        """Publish a command to one board; InvalidInput for a bad id, BusError offline."""
        self._publish(normalize_relay_id(relay), command)

    def request(
        self, relay: str, command: Command, timeout: float = 5.0, *, late_s: float = 0.0
    ) -> DeviceMessage:
        """Publish a command and return the board's reply (relay + typ + comp match).

        Only a message that arrives after the command was published can be its reply
        (the protocol has no correlation id; an older reply delivered late is not this
        one's). A meter reply whose frame failed a check is still the reply: look at its
        `failure`. Concurrent requests expecting the same reply all get the first one.
        Raises RequestTimeout when nothing matching arrives within `timeout` seconds;
        with `late_s` > 0 a reply that comes within `late_s` after that, no newer
        request to the board pending, goes to the late listeners (`add_late_listener`).
        """
        relay = normalize_relay_id(relay)
        if command.reply_typ is None:
            raise InvalidInput(f"a board does not answer '{command.kind}': send it instead")
        key = (relay, command.reply_typ, command.reply_comp)
        with self.router.expect(*key, armed=False, late_s=late_s) as pending:
            started = time.perf_counter()
            self.router.arm(pending)
            self._publish(relay, command)
            reply = pending.wait(timeout)
        if reply is None:
            raise RequestTimeout(
                f"board {relay} did not answer '{_label(command)}' within {timeout:.1f} s"
            )
        seconds = pending.replied_at - started
        self.router.latency.add(seconds * 1000)
        for observe in self._latency_observers:
            observe(seconds)
        return reply

    def _publish(self, relay: str, command: Command) -> None:
        topic = self.topics.command_topic(relay)
        if not self.connected:
            raise BusError(
                f"not connected to the broker {self.address.uri()}: "
                f"'{_label(command)}' was not sent to board {relay}"
            )
        try:
            info = self._client.publish(topic, command.encode(), qos=self.qos)
        except ValueError:
            raise InvalidInput(f"{topic!r} is not a topic a command can be sent to") from None
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BusError(
                f"'{_label(command)}' was not sent to board {relay}: {mqtt.error_string(info.rc)}"
            )
        self.router.count_sent()
        log.debug("sent %s to %s: %s", command.kind, relay, command.masked())

    # --- incoming -----------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call `fn(message)` for every device message; returns a function that removes it.

        `fn` runs on the MQTT thread and must be quick (append to a queue, bump a
        counter): while it runs no other message is read. Its exceptions are caught,
        counted (`listener_errors`) and logged.
        """
        return self.router.add_listener(fn)

    def observe_latency(self, fn: Callable[[float], None]) -> None:
        """Call `fn(seconds)` with every answered request's reply latency (e.g. a
        Prometheus histogram's `observe`); on the requesting thread, so keep it quick."""
        with self._lock:
            self._latency_observers = (*self._latency_observers, fn)

    def subscribe(
        self,
        maxsize: int = 1000,
        accept: Callable[[DeviceMessage], bool] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> Subscription:
        """A new bounded subscription to every routed device message `accept` keeps
        (see `Subscription`); `close()` it when done."""
        subscription = Subscription(maxsize, accept, wake)
        subscription._remove = self.add_listener(subscription.offer)
        return subscription

    def add_late_listener(self, fn: LateListener) -> Callable[[], None]:
        """Call `fn(late)` for each reply that came after its request's timeout (see
        `request`'s `late_s`); returns its remover. Runs on the MQTT thread."""
        return self.router.add_late_listener(fn)

    def handle_payload(self, topic: str, payload: bytes) -> Parsed:
        """What the MQTT callback does with one message (also for replaying traffic)."""
        return self.router.handle_payload(topic, payload)

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Block until `messages_in` reaches `count` (e.g. a benchmark awaiting N replies)."""
        return self.router.wait_for_messages(count, timeout)

    # --- paho callbacks (paho's thread: quick, never raise) ----------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: mqtt.ReasonCode,
        properties: mqtt.Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("the broker %s refused us: %s", self.address.uri(), reason_code)
            return
        with self._lock:
            self._connects += 1
        subscriptions = [(topic, self.qos) for topic in self.topics.device_topics()]
        _, self._subscribe_mid = client.subscribe(subscriptions)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[mqtt.ReasonCode],
        properties: mqtt.Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [
            t
            for t, rc in zip(self.topics.device_topics(), reason_codes, strict=False)
            if rc.is_failure
        ]
        if refused:
            log.warning("the broker %s refused subscriptions: %s", self.address.uri(), refused)
        self._connected.set()
        log.info("connected to the broker %s (connect #%d)", self.address.uri(), self._connects)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._warn_connect.ready():
            log.warning("cannot reach the broker %s; retrying", self.address.uri())

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: mqtt.ReasonCode,
        properties: mqtt.Properties | None,
    ) -> None:
        self._connected.clear()
        if self._state != "stopped":
            log.warning("lost the broker %s (%s); reconnecting", self.address.uri(), reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.router.reject("bad_topic", "a topic that is not UTF-8", "?")
            return
        try:
            self.router.handle_payload(topic, bytes(msg.payload))
        except Exception:  # a bug here must not end paho's thread
            self.router.reject("internal_error", "see the log", topic)
            log.exception("failed to handle a message on %s", topic[:200])

    # --- queries ------------------------------------------------------------------------

    def stats(self) -> BusStats:
        with self._lock:
            reconnects = max(0, self._connects - 1)
        return self.router.stats(
            connected=self.connected, broker=self.address.uri(), reconnects=reconnects
        )

    @property
    def last_seq(self) -> int:
        """The newest message's sequence number: where a polling view starts."""
        return self.router.relays.last_seq

    def relays_seen(self) -> dict[str, float]:
        """relay -> when it was last heard (time.time()), for relays still remembered."""
        return self.router.relays.relays_seen()

    def last_seen(self, relay: str) -> float | None:
        return self.router.relays.last_seen(normalize_relay_id(relay))

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        """comp -> (fields, when heard); secrets included: mask before showing."""
        return self.router.relays.latest_config(normalize_relay_id(relay))

    def firmware(self, relay: str) -> tuple[str, str] | None:
        """(firmware, version) from the board's latest `app` reply, if heard."""
        app = self.latest_config(relay).get("app")
        if app is None:
            return None
        return str(app[0].get("firmware", "")), str(app[0].get("version", ""))

    def inbox(self, relay: str) -> list[InboxEntry]:
        """The relay's most recent messages (at most inbox_size), oldest first."""
        return self.router.relays.inbox(normalize_relay_id(relay))

    def messages_since(self, relay: str, seq: int) -> list[InboxEntry]:
        """The relay's messages newer than `seq` (pass the last seq you showed)."""
        return self.router.relays.messages_since(normalize_relay_id(relay), seq)


def bus_for(settings: Settings, client_id_prefix: str) -> DeviceBus:
    """A bus, not started yet, to MQTT_URI or to the embedded broker started (or found)
    for the data folder; an `mqtts://` broker is checked against MQTT_CA_FILE."""
    return DeviceBus(
        broker_uri(settings),
        settings.topics,
        client_id_prefix=client_id_prefix,
        tls_context=settings.mqtt_tls_context(),
    )
