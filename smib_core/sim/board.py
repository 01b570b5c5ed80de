"""One simulated SMIB: a pure state machine speaking PROTOCOL.md.

Contract: `Board.handle(command, now)` takes a command as the board receives it (a dict
from `protocol.parse_command`) and the wall time, and returns `Effect`s: messages to
publish after a delay (`Send`), a wake-up to schedule (`Wake`, the end of a reboot) and
a firmware to fetch (`Download`). The board never sleeps, reads a clock or touches a
socket; `fleet.Fleet` carries the effects out. Each board owns a seeded RNG, so a given
seed and command sequence give the same answers.

Strict by default (PROTOCOL.md, "What a board does NOT promise"): no reply to a config
write, `rst`, `ota_ud` or `met_reset`, and no unprompted message after a (re)boot: a
board is back when it answers a question again. What real firmware may also do is a
`Firmware` variant: `ack_writes` (a write is answered with the whole component),
`announce_on_boot` (its `app` reply, unprompted, on every boot), `duplicate_rate`
(a message goes out twice), `reorder_rate` (a message is held back so later ones
overtake it), `ota_keeps_version` (downloads and reboots but keeps its old version) and
`forges_ota` (reports the new version after `ota_ud` without downloading anything: a
test of the console, not firmware anyone should ship). Slow reboots: `reboot_s`.

Lifecycle: `power_on` -> up. `rst` -> rebooting (quiet: no answers, no events) for
`reboot_s`, then `boot`. `ota_ud` -> `Download` of `{otaURL}{bin}`; `ota_finished` ->
reboot; on boot the board runs the version named in the file (`..._v1.5.0.bin`), or its
version with the patch bumped. PROTOCOL.md defines no OTA failure message, so a failed
download (or an injected `ota_fail_rate` failure) is visible only as the board coming
back from the reboot with its OLD version; `last_ota` records the outcome and the fleet logs it.
Every `Send` carries the board's boot `epoch`: one scheduled before a reboot is not
delivered after it.

Resolved ambiguities: a meter reply echoes the poll's address, game and command (the
board forwards the poll to its one machine); games 0 and 1 are the whole machine,
other game numbers answer every meter with size 0 (no such game); a poll a machine
would ignore (bad CRC, length, BCD) is answered `"-1"`. A config write applies the
component's known fields whose JSON type matches (no range checks, like the firmware)
(and answers nothing, unless `ack_writes`); writes to `app` change nothing. Topic and URI changes
are stored and reported, not acted on (the fleet keeps one subscription). After a
meter reset (NVS clear of meters/all, or `met_reset` on a non-SAS board) the board also
emits event 7A, soft meters reset.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smib_core import sas
from smib_core.errors import InvalidInput
from smib_core.protocol import COMPONENTS, Topics
from smib_core.sim import frames
from smib_core.sim.meters import Machine

FIRMWARE = "cloudy"
DEFAULT_OTA_URL = "http://127.0.0.1:8808/firmwares/"
_VERSIONS = ("v1.4.2", "v1.4.1", "v1.3.9")
_VERSION_ODDS = (70, 20, 10)
# Espressif MAC prefixes: simulated relay ids look like real boards' MACs.
_OUIS = ("e831cd", "240ac4", "30aea4", "a4cf12", "7c9ebd", "c8c9a3")


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, per command: rates are probabilities 0..1, delays in seconds.

    A reply waits `reply_delay_s` plus a uniform jitter of up to `jitter_s` (half the
    delay when not given).
    """

    drop_rate: float = 0.0  # the command is ignored
    reply_delay_s: float = 0.0
    jitter_s: float | None = None
    error_rate: float = 0.0  # a meter read answers "-1"
    malformed_rate: float = 0.0  # a message goes out spoiled (frames.malformed)
    ota_fail_rate: float = 0.0  # a successful download still fails to flash

    def __post_init__(self) -> None:
        for name in ("drop_rate", "error_rate", "malformed_rate", "ota_fail_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInput(f"{name} must be between 0 and 1")
        if self.reply_delay_s < 0 or (self.jitter_s is not None and self.jitter_s < 0):
            raise InvalidInput("reply delay and jitter cannot be negative")

    def delay(self, rng: random.Random) -> float:
        jitter = self.reply_delay_s / 2 if self.jitter_s is None else self.jitter_s
        return self.reply_delay_s + (rng.uniform(0.0, jitter) if jitter else 0.0)


@dataclass(frozen=True, slots=True)
class Firmware:
    """How a board's firmware behaves where PROTOCOL.md leaves room (default: strict)."""

    ack_writes: bool = False  # a config write is answered with the whole component
    announce_on_boot: bool = False  # the `app` reply, unprompted, after every (re)boot
    duplicate_rate: float = 0.0  # a message goes out twice
    reorder_rate: float = 0.0  # a message is held back up to `reorder_delay_s`
    reorder_delay_s: float = 1.0
    ota_keeps_version: bool = False  # downloads, reboots, still runs the old version
    forges_ota: bool = False  # reports the new version after `ota_ud`, downloads nothing

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "reorder_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInput(f"{name} must be between 0 and 1")
        if self.reorder_delay_s < 0:
            raise InvalidInput("the reorder delay cannot be negative")


@dataclass(frozen=True, slots=True)
class Send:
    topic: str
    payload: bytes
    delay: float
    epoch: int


@dataclass(frozen=True, slots=True)
class Wake:
    """Call `board.boot(epoch, now)` after `delay` seconds."""

    delay: float
    epoch: int


@dataclass(frozen=True, slots=True)
class Download:
    """Fetch `url`, then call `board.ota_finished(epoch, ok, now)`."""

    url: str
    bin: str
    epoch: int


Effect = Send | Wake | Download


@dataclass(frozen=True, slots=True)
class OtaOutcome:
    bin: str
    ok: bool
    version: str  # what the board runs after its reboot


class Board:
    """One relay: its config, its machine's meters and its lifecycle."""

    def __init__(
        self,
        relay: str,
        machine: Machine,
        config: dict[str, dict[str, Any]],
        *,
        rng: random.Random,
        topics: Topics,
        faults: Faults | None = None,
        firmware: Firmware | None = None,
        reboot_s: float = 5.0,
        time_scale: float = 1.0,
    ) -> None:
        self.relay = relay
        self.behaviour = firmware or Firmware()
        self.machine = machine
        self.config = config
        self.rng = rng
        self.topics = topics
        self.faults = faults or Faults()
        self.reboot_s = reboot_s
        self.time_scale = time_scale
        self.online = True
        self.rebooting = False
        self.epoch = 0
        self.updating: str | None = None  # the bin being downloaded
        self.pending_version: str | None = None
        self.last_ota: OtaOutcome | None = None
        self._clock: float | None = None  # wall time the meters were last advanced to
        self._sim_clock = 0.0  # the machine's own time (faster when time_scale > 1)

    # --- inspection -------------------------------------------------------------------

    @property
    def firmware(self) -> str:
        return str(self.config["app"]["firmware"])

    @property
    def version(self) -> str:
        return str(self.config["app"]["version"])

    @property
    def coms_mode(self) -> int:
        return int(self.config["coms"]["comsMode"])

    @property
    def address(self) -> int:
        return int(self.config["coms"]["comsAddr"])

    @property
    def denom_cents(self) -> int:
        return self.machine.profile.denom_cents

    def quiet(self) -> bool:
        """True while the board answers nothing and emits nothing."""
        return self.rebooting or not self.online

    def deliverable(self, epoch: int) -> bool:
        return not self.quiet() and epoch == self.epoch

    def meter_values(self, now: float) -> dict[str, int]:
        """The machine's meters, played forward to `now`."""
        self._advance(now)
        return self.machine.values()

    # --- lifecycle --------------------------------------------------------------------

    def power_on(self, now: float) -> list[Effect]:
        self._advance(now)
        self.rebooting = False
        return self.announce()

    def announce(self) -> list[Effect]:
        """The unprompted `app` reply of a board that (re)appears: only `announce_on_boot`
        firmware sends one (PROTOCOL.md promises none)."""
        if self.quiet() or not self.behaviour.announce_on_boot:
            return []
        return self._shape([self._message(self.topics.cfg, self._config_reply("app"), 0.0)])

    def set_online(self, online: bool) -> list[Effect]:
        was_online, self.online = self.online, online
        return self.announce() if online and not was_online else []

    def boot(self, epoch: int, now: float) -> list[Effect]:
        """The end of a reboot scheduled by `Wake(epoch)`; stale wakes are ignored."""
        if epoch != self.epoch or not self.rebooting:
            return []
        self.rebooting = False
        if self.pending_version:
            self.config["app"]["version"] = self.pending_version
            self.pending_version = None
        self._advance(now)
        return self.announce()

    def ota_finished(self, epoch: int, ok: bool, now: float) -> list[Effect]:
        """The download of `Download(epoch)` ended; flash (or not), then reboot."""
        if epoch != self.epoch or self.updating is None:
            return []
        bin_name, self.updating = self.updating, None
        if ok and self.rng.random() < self.faults.ota_fail_rate:
            ok = False
        new = frames.version_after_update(bin_name, self.version) if ok else self.version
        if self.behaviour.ota_keeps_version:
            new = self.version
        self.last_ota = OtaOutcome(bin_name, ok, new)
        self.pending_version = new if ok and new != self.version else None
        return self._reboot(now)

    def event(self, now: float) -> list[Effect]:
        """One episode of SAS exceptions (`exp` messages), the first one now."""
        if self.quiet():
            return []
        return [
            self._message(self.topics.sub, {"rly": self.relay, "typ": "exp", "pyd": code}, at)
            for code, at in frames.pick_episode(self.rng)
        ]

    # --- commands ---------------------------------------------------------------------

    def handle(self, command: Mapping[str, Any], now: float) -> list[Effect]:
        """A command from the server; the effects it causes (none when quiet)."""
        if self.quiet() or self.rng.random() < self.faults.drop_rate:
            return []
        return self._shape(self._command(command, now))

    def _command(self, command: Mapping[str, Any], now: float) -> list[Effect]:
        typ = command.get("typ")
        if typ == "cfg":
            return self._config(command)
        if typ == "cmd" and command.get("cmd") == "met_reset":
            return self._meter_reset(now) if self.coms_mode != 0 else []
        if typ == "cmd" and "pyd" in command:
            return [self._message(self.topics.sub, self._meter_reply(command, now))]
        if typ == "sun":
            return self._nvs_clear(command, now)
        if typ == "rst":
            return self._reboot(now)
        if typ == "ota_ud":
            return self._ota(command, now)
        return []

    def _config(self, command: Mapping[str, Any]) -> list[Effect]:
        comp = command.get("comp")
        if not isinstance(comp, str) or comp not in self.config:
            return []
        is_write = any(key not in ("typ", "comp") for key in command)
        for spec in COMPONENTS.get(comp, ()):
            value = command.get(spec.name)
            if spec.name in command and type(value) is spec.kind:
                self.config[comp][spec.name] = value
        if is_write and not self.behaviour.ack_writes:
            return []
        return [self._message(self.topics.cfg, self._config_reply(comp))]

    def _config_reply(self, comp: str) -> dict[str, Any]:
        return {"rly": self.relay, "typ": "cfg", "comp": comp, **self.config[comp]}

    def _meter_reply(self, command: Mapping[str, Any], now: float) -> dict[str, Any]:
        reply: dict[str, Any] = {"rly": self.relay, "typ": "rsp", "sta": "", "pyd": "-1"}
        request = frames.parse_meter_request(command.get("pyd"))
        if request is None or self.rng.random() < self.faults.error_rate:
            return reply
        self._advance(now)
        if request.game in (0, 1):
            meters = self.machine.sas_meters(request.codes)
        else:
            meters = [sas.Meter(code, 0, None) for code in request.codes]
        try:
            frame = sas.encode_meter_reply(
                meters, address=request.address, game=request.game, command=request.command
            )
        except InvalidInput:  # more meters than one reply holds: the machine gives up
            return reply
        reply["pyd"] = frame.hex().upper()
        return reply

    def _shape(self, effects: list[Effect]) -> list[Effect]:
        """The firmware's delivery quirks: some messages held back, some sent twice."""
        shaped: list[Effect] = []
        quirks = self.behaviour
        for effect in effects:
            if not isinstance(effect, Send):
                shaped.append(effect)
                continue
            if quirks.reorder_rate and self.rng.random() < quirks.reorder_rate:
                held = self.rng.uniform(0.0, quirks.reorder_delay_s)
                effect = Send(effect.topic, effect.payload, effect.delay + held, effect.epoch)
            shaped.append(effect)
            if quirks.duplicate_rate and self.rng.random() < quirks.duplicate_rate:
                again = effect.delay + self.rng.uniform(0.0, 0.2)
                shaped.append(Send(effect.topic, effect.payload, again, effect.epoch))
        return shaped

    def _meter_reset(self, now: float) -> list[Effect]:
        self._advance(now)
        self.machine.reset()
        return [self._message(self.topics.sub, {"rly": self.relay, "typ": "exp", "pyd": "7A"})]

    def _nvs_clear(self, command: Mapping[str, Any], now: float) -> list[Effect]:
        pyd = command.get("pyd")
        kind = sas.nvs_kind_of(pyd) if isinstance(pyd, str) else None
        status = sas.NVS_OK if kind is not None else sas.NVS_FAILED
        reply = {"rly": self.relay, "typ": "srsp", "sta": sas.NVS_STATUS, "pyd": status}
        effects: list[Effect] = [self._message(self.topics.sub, reply)]
        if kind in (sas.NvsClear.ALL, sas.NvsClear.METERS):
            effects += self._meter_reset(now)
        return effects

    def _reboot(self, now: float) -> list[Effect]:
        self._advance(now)
        self.epoch += 1
        self.rebooting = True
        self.updating = None
        return [Wake(self.reboot_s, self.epoch)]

    def _ota(self, command: Mapping[str, Any], now: float) -> list[Effect]:
        bin_name = command.get("bin")
        if not isinstance(bin_name, str) or not bin_name or self.updating is not None:
            return []
        if self.behaviour.forges_ota:  # no download: straight to "the new version"
            self.pending_version = frames.version_after_update(bin_name, self.version)
            self.last_ota = OtaOutcome(bin_name, True, self.pending_version)
            return self._reboot(now)
        self.updating = bin_name
        return [Download(f"{self.config['ota']['otaURL']}{bin_name}", bin_name, self.epoch)]

    # --- helpers ----------------------------------------------------------------------

    def _message(self, topic: str, message: dict[str, Any], delay: float | None = None) -> Send:
        """A Send after `delay` (the reply delay of the faults when None), maybe spoiled."""
        rng = self.rng
        wait = self.faults.delay(rng) if delay is None else delay
        spoil = self.faults.malformed_rate and rng.random() < self.faults.malformed_rate
        payload = frames.malformed(message, rng) if spoil else frames.encode(message)
        return Send(topic, payload, wait, self.epoch)

    def _advance(self, now: float) -> None:
        if self._clock is None:
            self._clock, self._sim_clock = now, now
            return
        elapsed = max(0.0, now - self._clock) * self.time_scale
        self.machine.advance(elapsed, self._sim_clock)
        self._clock = max(self._clock, now)
        self._sim_clock += elapsed


def make_boards(
    count: int,
    seed: int = 0,
    *,
    topics: Topics | None = None,
    broker_uri: str = "mqtt://127.0.0.1:1883",
    ota_url: str = DEFAULT_OTA_URL,
    faults: Faults | None = None,
    firmware: Firmware | None = None,
    non_sas: int = 0,
    reboot_s: float = 5.0,
    time_scale: float = 1.0,
) -> list[Board]:
    """`count` boards whose relay ids, configs and machines depend only on `seed`.

    `non_sas` of them (chosen by the seed) have `comsMode` 1; ids stay the same
    whatever `non_sas` is.
    """
    if count < 0 or not 0 <= non_sas <= count:
        raise InvalidInput("the fleet needs 0 or more boards, and at most that many non-SAS")
    topics = topics or Topics()
    master = random.Random(seed)
    seen: set[str] = set()
    identities: list[tuple[str, int]] = []
    while len(identities) < count:
        relay = f"{master.choice(_OUIS)}{master.getrandbits(24):06x}"
        if relay not in seen:
            seen.add(relay)
            identities.append((relay, master.getrandbits(64)))
    non_sas_at = set(random.Random(f"{seed}-non-sas").sample(range(count), non_sas))
    boards = []
    for index, (relay, board_seed) in enumerate(identities):
        rng = random.Random(board_seed ^ 0x5EED)
        config = _default_config(rng, topics, broker_uri, ota_url, index in non_sas_at)
        board = Board(
            relay,
            Machine.from_seed(board_seed),
            config,
            rng=rng,
            topics=topics,
            faults=faults,
            firmware=firmware,
            reboot_s=reboot_s,
            time_scale=time_scale,
        )
        boards.append(board)
    return boards


def _default_config(
    rng: random.Random, topics: Topics, broker_uri: str, ota_url: str, non_sas: bool
) -> dict[str, dict[str, Any]]:
    return {
        "net": {
            "netMode": 1,
            "netStaSSID": "casino-floor",
            "netStaPwd": "sim-wifi-pass",
            "netStaChan": rng.choice((1, 6, 11)),
        },
        "mqtt": {
            "mqttSecure": 1 if broker_uri.startswith("mqtts://") else 0,
            "mqttQOS": 0,
            "mqttURI": broker_uri,
            "mqttSubTopic": topics.pub,
            "mqttPubTopic": topics.sub,
            "mqttCfgTopic": topics.cfg,
            "mqttIdleTimeS": 60,
        },
        "coms": {
            "comsMode": 1 if non_sas else 0,
            "comsAddr": 1 if rng.random() < 0.8 else rng.randint(2, 127),
            "comsRateMs": rng.choice((100, 200, 500)),
            "comsRTE": 1,
            "comsGPC": 0,
        },
        "ota": {"otaURL": ota_url},
        "app": {"firmware": FIRMWARE, "version": rng.choices(_VERSIONS, weights=_VERSION_ODDS)[0]},
    }
