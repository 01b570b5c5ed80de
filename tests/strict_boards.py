"""A minimal strict board set for tests: boards exactly as PROTOCOL.md promises, no more.

One paho client plays several boards on `{prefix}sas/relay/{relay}`: a `cfg` read is
answered with the component; a config write is applied and answered with NOTHING; `rst`
is answered with nothing, the board goes quiet for `reboot_s` and comes back WITHOUT an
announcement (it is back when it answers again). Every command each board receives is
recorded, so a test can count the `rst` each board got at the broker.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt

from smib_core.protocol import Topics


def default_config(relay: str) -> dict[str, dict[str, Any]]:
    return {
        "app": {"firmware": "cloudy", "version": "v1.0.0"},
        "net": {"netMode": 1, "netStaSSID": "casino", "netStaPwd": "wifi-secret", "netStaChan": 1},
        "coms": {"comsMode": 0, "comsAddr": 1, "comsRateMs": 200, "comsRTE": 1, "comsGPC": 0},
        "ota": {"otaURL": "http://127.0.0.1:8808/firmwares/"},
        "mqtt": {"mqttQOS": 0, "mqttSecure": 0},
    }


class StrictBoards:
    def __init__(
        self, broker_uri: str, topics: Topics, relays: list[str], reboot_s: float = 1.0
    ) -> None:
        host, port = broker_uri.removeprefix("mqtt://").split(":")
        self.topics = topics
        self.relays = list(relays)
        self.reboot_s = reboot_s
        self.config = {relay: default_config(relay) for relay in relays}
        self.received: list[tuple[str, dict[str, Any], float]] = []
        self.offline: set[str] = set()  # hear nothing, answer nothing
        self.stubborn: set[str] = set()  # ignore config writes
        self._back_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"strict-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._host, self._port = host, int(port)

    def __enter__(self) -> StrictBoards:
        self._client.connect(self._host, self._port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("strict boards: not subscribed")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(f"{self.topics.pub}+", qos=0)

    def rst_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(relay for relay, cmd, _ in self.received if cmd.get("typ") == "rst")

    def kinds(self, relay: str) -> list[str]:
        with self._lock:
            return [str(cmd.get("typ")) for r, cmd, _ in self.received if r == relay]

    def quiet(self, relay: str) -> bool:
        return relay in self.offline or time.time() < self._back_at.get(relay, 0.0)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        relay = msg.topic.rsplit("/", 1)[-1]
        if relay not in self.config:
            return
        try:
            command = json.loads(msg.payload)
        except ValueError:
            return
        now = time.time()
        with self._lock:
            self.received.append((relay, command, now))
        if self.quiet(relay):
            return  # rebooting or off: hears nothing
        if command.get("typ") == "rst":
            self._back_at[relay] = now + self.reboot_s
            return  # no reply, and no announcement when back
        if command.get("typ") != "cfg":
            return
        comp = str(command.get("comp", ""))
        fields = {k: v for k, v in command.items() if k not in ("typ", "comp")}
        if comp not in self.config[relay]:
            return
        if fields:
            if relay not in self.stubborn:
                self.config[relay][comp].update(fields)  # applied, no reply
            return
        reply = {"rly": relay, "typ": "cfg", "comp": comp, **self.config[relay][comp]}
        client.publish(self.topics.cfg, json.dumps(reply))
