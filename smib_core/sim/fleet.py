"""The simulated fleet on a real broker: many `Board`s behind ONE paho client.

The client subscribes to `{topics.pub}+` (or, when the prefix does not end in `/`, to
each board's own topic) and its message callback only parses the command, lets the
board compute its effects under the fleet lock, and publishes the immediate replies
(QoS 0, like the boards). Anything later (reply delays, follow-up events, the end of a
reboot) goes to one `Scheduler` thread; firmware downloads run on a small pool of
worker threads with a timeout, never on paho's thread. So 1,000 boards cost one
connection, one heap and a few threads.

Events: one Poisson process for the whole fleet, `events_per_minute` per board on
average; each tick picks a board at random, which emits one episode (`frames.EPISODES`).

A failed OTA (download error, HTTP error, empty file, injected `ota_fail_rate`) is
logged here and shows on the wire only as the board coming back with its old version:
PROTOCOL.md defines no failure message.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import ssl
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from smib_core.errors import BusError, InvalidInput
from smib_core.protocol import Topics, normalize_relay_id, parse_command
from smib_core.settings import BrokerAddress
from smib_core.sim.board import (
    DEFAULT_OTA_URL,
    Board,
    Download,
    Effect,
    Faults,
    Firmware,
    Send,
    Wake,
    make_boards,
)
from smib_core.sim.scheduler import Scheduler

log = logging.getLogger(__name__)

MAX_FIRMWARE_BYTES = 16 * 1024 * 1024
ANNOUNCE_SPREAD_S = 1.0  # `announce_on_boot` boards powering on announce within this long,
ANNOUNCE_GAP_S = 0.001  # one after the other at most this far apart


def fetch_firmware(url: str, timeout: float) -> tuple[bool, str]:
    """Download a firmware file as a board would: (ok, what happened)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return False, "the OTA URL is not http(s)"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(MAX_FIRMWARE_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, str(exc) or type(exc).__name__
    if not data:
        return False, "the file is empty"
    if len(data) > MAX_FIRMWARE_BYTES:
        return False, "the file is larger than a board's flash"
    return True, f"{len(data)} bytes"


class Fleet:
    """N simulated boards on the broker at `broker_uri`; thread-safe, start once."""

    def __init__(
        self,
        broker_uri: str,
        topics: Topics | None = None,
        *,
        relays: int = 20,
        seed: int = 0,
        faults: Faults | None = None,
        firmware: Firmware | None = None,
        reboot_s: float = 5.0,
        events_per_minute: float = 1.0,
        non_sas: int = 0,
        ota_url: str = DEFAULT_OTA_URL,
        ota_timeout_s: float = 10.0,
        time_scale: float = 1.0,
        connect_timeout_s: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if events_per_minute < 0 or reboot_s < 0 or time_scale <= 0:
            raise InvalidInput(
                "events per minute and reboot time cannot be negative, "
                "the time scale must be positive"
            )
        self.address = BrokerAddress.parse(broker_uri)
        self._tls_context = tls_context
        self.topics = topics or Topics()
        self.faults = faults or Faults()
        self.firmware = firmware or Firmware()
        self.events_per_minute = events_per_minute
        self.ota_timeout_s = ota_timeout_s
        self.connect_timeout_s = connect_timeout_s
        boards = make_boards(
            relays,
            seed,
            topics=self.topics,
            broker_uri=broker_uri,
            ota_url=ota_url,
            faults=self.faults,
            firmware=self.firmware,
            non_sas=non_sas,
            reboot_s=reboot_s,
            time_scale=time_scale,
        )
        self._boards: dict[str, Board] = {board.relay: board for board in boards}
        self._order = list(self._boards.values())
        self._rng = random.Random(f"{seed}-events")
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._state = "new"  # new -> started -> stopped
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._scheduler = Scheduler()
        self._downloads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="smib-sim-ota")
        self._client = self._make_client()

    # --- inspection and control ------------------------------------------------------

    @property
    def relay_ids(self) -> list[str]:
        return [board.relay for board in self._order]

    def board(self, relay: str) -> Board:
        """The board with this relay id (for inspection; hold `lock` to change it)."""
        board = self._boards.get(normalize_relay_id(relay))
        if board is None:
            raise InvalidInput(f"board {relay} is not in the simulated fleet")
        return board

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def stats(self) -> dict[str, int]:
        """Counts: commands, ignored (not for us / not a command), sent, events, ota_*."""
        with self._lock:
            return dict(self._stats)

    def set_online(self, relay: str, online: bool) -> None:
        """Take a board off the air (it hears and says nothing) or bring it back."""
        board = self.board(relay)
        with self._lock:
            effects = board.set_online(online)
        self._carry_out(board, effects)

    def set_faults(self, relay: str, faults: Faults | None) -> None:
        """Give one board its own faults (None: back to the fleet's)."""
        board = self.board(relay)
        with self._lock:
            board.faults = faults or self.faults

    def set_firmware(self, relay: str, firmware: Firmware | None) -> None:
        """Give one board its own firmware behaviour (None: back to the fleet's)."""
        board = self.board(relay)
        with self._lock:
            board.behaviour = firmware or self.firmware

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Connect, subscribe, power the boards on; BusError if the broker is unreachable."""
        with self._lock:
            if self._state != "new":
                raise BusError("a simulated fleet starts once; create a new one")
            self._state = "started"
        self._scheduler.start()
        self._client.connect_async(self.address.host, self.address.port, keepalive=60)
        self._client.loop_start()
        if not self._subscribed.wait(self.connect_timeout_s):
            self.stop()
            raise BusError(f"the simulator could not reach the broker {self.address.uri()}")
        now = time.time()
        spread = min(ANNOUNCE_GAP_S, ANNOUNCE_SPREAD_S / max(1, len(self._order)))
        for index, board in enumerate(self._order):
            with self._lock:
                effects = board.power_on(now)
            self._carry_out(board, effects, extra_delay=index * spread)
        self._schedule_event()
        log.info("%d simulated boards on %s", len(self._order), self.address.uri())

    def stop(self) -> None:
        """Disconnect and join every thread the fleet started. Idempotent."""
        with self._lock:
            was_started = self._state == "started"
            self._state = "stopped"
        self._scheduler.stop()
        if was_started:
            self._client.disconnect()
            self._client.loop_stop()
        self._downloads.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- paho -------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"smib-sim-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set_context(self._tls_context or ssl.create_default_context())
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _subscriptions(self) -> list[tuple[str, int]]:
        if self.topics.pub.endswith("/"):
            return [(f"{self.topics.pub}+", 0)]
        return [(self.topics.pub + relay, 0) for relay in self._boards]

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("the broker %s refused the simulator: %s", self.address.uri(), reason_code)
            return
        _, self._subscribe_mid = client.subscribe(self._subscriptions())

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        if mid == self._subscribe_mid:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._handle(message.topic, bytes(message.payload))
        except Exception:  # never into paho's loop
            log.exception("the simulator failed on a message for %s", message.topic[:80])

    def _handle(self, topic: str, payload: bytes) -> None:
        board = self._boards.get(topic[len(self.topics.pub) :])
        command = parse_command(payload) if board is not None else None
        if board is None or command is None:
            with self._lock:
                self._stats["ignored"] += 1
            return
        with self._lock:
            self._stats["commands"] += 1
            effects = board.handle(command, time.time())
        self._carry_out(board, effects)

    # --- effects ----------------------------------------------------------------------

    def _carry_out(self, board: Board, effects: Iterable[Effect], extra_delay: float = 0.0) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                delay = effect.delay + extra_delay
                if delay <= 0:
                    self._publish(effect)
                else:
                    self._later(delay, self._deliver, board, effect)
            elif isinstance(effect, Wake):
                self._later(effect.delay + extra_delay, self._wake, board, effect.epoch)
            elif isinstance(effect, Download):
                self._start_download(board, effect)

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self._scheduler.call_later(delay, lambda: fn(*args))

    def _publish(self, send: Send) -> None:
        self._client.publish(send.topic, send.payload, qos=0)
        with self._lock:
            self._stats["sent"] += 1

    def _deliver(self, board: Board, send: Send) -> None:
        with self._lock:
            deliverable = board.deliverable(send.epoch)
        if deliverable:
            self._publish(send)

    def _wake(self, board: Board, epoch: int) -> None:
        with self._lock:
            effects = board.boot(epoch, time.time())
        self._carry_out(board, effects)

    def _start_download(self, board: Board, download: Download) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: the fleet is stopping
            self._downloads.submit(self._download, board, download)

    def _download(self, board: Board, download: Download) -> None:
        ok, detail = fetch_firmware(download.url, self.ota_timeout_s)
        with self._lock:
            if self._state != "started":
                return
            effects = board.ota_finished(download.epoch, ok, time.time())
            if not effects:  # the board restarted meanwhile: this download is moot
                return
            outcome = board.last_ota
            self._stats["ota_ok" if outcome and outcome.ok else "ota_failed"] += 1
        if outcome is not None and outcome.ok:
            log.info(
                "board %s: OTA %s flashed (%s); restarting on %s",
                board.relay,
                download.bin,
                detail,
                outcome.version,
            )
        elif outcome is not None:
            reason = detail if not ok else "flashing failed (injected)"
            log.warning(
                "board %s: OTA %s failed: %s; restarting on %s",
                board.relay,
                download.bin,
                reason,
                outcome.version,
            )
        self._carry_out(board, effects)

    # --- events -----------------------------------------------------------------------

    def _schedule_event(self) -> None:
        rate = self.events_per_minute * len(self._order) / 60.0
        if rate > 0:
            self._scheduler.call_later(self._rng.expovariate(rate), self._event)

    def _event(self) -> None:
        board = self._rng.choice(self._order)
        with self._lock:
            effects = board.event(time.time())
            self._stats["events"] += 1 if effects else 0
        self._carry_out(board, effects)
        self._schedule_event()
