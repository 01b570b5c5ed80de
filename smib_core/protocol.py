"""The SMIB wire protocol (PROTOCOL.md): pure, stdlib only, no I/O.

Contract: relay ids are validated before any topic is built from them; every command
is built here, from the one COMMANDS table of kinds, with each config field's type and
range checked (`InvalidInput` on misuse, nothing to publish); every device message
becomes a typed message or a `Rejection` with a reason. Parsing never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from smib_core import sas
from smib_core.errors import DeviceError, FrameError, InvalidInput

MAX_PAYLOAD_BYTES = 256 * 1024
_RELAY_RE = re.compile(r"\A[0-9a-f]{12}\Z")
_BIN_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.bin\Z")
# A rollout's per-board OTA URL `{base}{relay}/{token}/`: the token is a secret.
_OTA_TOKEN_RE = re.compile(r"(/[0-9a-f]{12}/)[A-Za-z0-9_-]{16,}(?=/|\Z)")


# --- identity and topics ---------------------------------------------------------------


def normalize_relay_id(value: object) -> str:
    """`strip().lower()` of a 12-hex-digit MAC; anything else raises InvalidInput."""
    if not isinstance(value, str):
        raise InvalidInput("a relay id is text of 12 hex digits, e.g. e831cdfa8384")
    relay = value.strip().lower()
    if not _RELAY_RE.match(relay):
        shown = relay[:24].encode("unicode_escape").decode()
        raise InvalidInput(f"'{shown}' is not a relay id (12 hex digits, e.g. e831cdfa8384)")
    return relay


def is_relay_id(value: object) -> bool:
    try:
        normalize_relay_id(value)
    except InvalidInput:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; defaults from PROTOCOL.md, overridable by env vars (see settings)."""

    pub: str = "sas/relay/"
    cfg: str = "smib/config"
    sub: str = "sas/gy/server"
    gli: str = "sas/gli/server/"
    server: str = "sas/server"

    def command_topic(self, relay: str) -> str:
        return f"{self.pub}{normalize_relay_id(relay)}"

    def gli_prefix(self) -> str:
        return self.gli if self.gli.endswith("/") else self.gli + "/"

    def device_topics(self) -> tuple[str, ...]:
        """What the server subscribes to: every device -> server topic."""
        return (self.cfg, self.sub, self.gli_prefix() + "+", self.gli.rstrip("/"), self.server)

    def relay_of_topic(self, topic: str) -> str | None:
        """The relay a per-device topic names (`sas/gli/server/{relayId}`), if any."""
        prefix = self.gli_prefix()
        if topic.startswith(prefix) and is_relay_id(topic[len(prefix) :]):
            return normalize_relay_id(topic[len(prefix) :])
        return None


# --- config components and their fields ----------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    label: str
    kind: type  # int or str
    low: int | None = None
    high: int | None = None
    max_len: int = 128
    secret: bool = False
    help: str = ""

    def parse(self, raw: object) -> int | str:
        """Check and coerce one value (text from a form or CLI is accepted for ints)."""
        if self.kind is int:
            return self._parse_int(raw)
        if not isinstance(raw, str):
            raise InvalidInput(f"{self.label} ({self.name}) must be text")
        if len(raw) > self.max_len:
            raise InvalidInput(f"{self.label} ({self.name}) is longer than {self.max_len}")
        if any(ord(ch) < 32 for ch in raw):
            raise InvalidInput(f"{self.label} ({self.name}) contains control characters")
        return raw

    def _parse_int(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise InvalidInput(f"{self.label} ({self.name}) must be a whole number")
        try:
            value = int(raw.strip()) if isinstance(raw, str) else raw
        except ValueError:
            raise InvalidInput(f"{self.label} ({self.name}) must be a whole number") from None
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise InvalidInput(f"{self.label} ({self.name}) must be {self.low}..{self.high}")
        return value


def _int(name: str, label: str, low: int, high: int, help: str = "") -> FieldSpec:
    return FieldSpec(name, label, int, low, high, help=help)


def _str(name: str, label: str, max_len: int = 128, secret: bool = False) -> FieldSpec:
    return FieldSpec(name, label, str, max_len=max_len, secret=secret)


COMPONENTS: dict[str, tuple[FieldSpec, ...]] = {
    "net": (
        _int("netMode", "Network mode", 0, 1, "1 = WiFi client"),
        _str("netStaSSID", "WiFi network (SSID)", 32),
        _str("netStaPwd", "WiFi password", 63, secret=True),
        _int("netStaChan", "WiFi channel", 1, 14),
    ),
    "mqtt": (
        _int("mqttSecure", "TLS", 0, 1, "0 plain, 1 TLS"),
        _int("mqttQOS", "QoS", 0, 2),
        _str("mqttURI", "Broker URI", 256, secret=True),
        _str("mqttSubTopic", "Command topic"),
        _str("mqttPubTopic", "Data topic"),
        _str("mqttCfgTopic", "Config topic"),
        _int("mqttIdleTimeS", "Idle timeout (s)", 0, 86_400),
    ),
    "coms": (
        _int("comsMode", "Comms mode", 0, 2, "0 SAS, 1 non-SAS, 2 IGT"),
        _int("comsAddr", "SAS address", 1, 127),
        _int("comsRateMs", "Polling period (ms)", 10, 60_000),
        _int("comsRTE", "Real-time events", 0, 1),
        _int("comsGPC", "Game protocol configuration", 0, 255),
    ),
    "ota": (_str("otaURL", "OTA base URL", 256),),
    "app": (),
}
READ_ONLY_FIELDS: dict[str, tuple[str, ...]] = {"app": ("firmware", "version")}
COMS_MODES = {0: "SAS", 1: "non-SAS", 2: "IGT"}


def field_spec(comp: str, name: str) -> FieldSpec:
    check_component(comp)
    for spec in COMPONENTS[comp]:
        if spec.name == name:
            return spec
    if name in READ_ONLY_FIELDS.get(comp, ()):
        raise InvalidInput(f"{comp}.{name} is read only")
    known = ", ".join(s.name for s in COMPONENTS[comp]) or "none"
    raise InvalidInput(f"{comp} has no field {name!r} (fields: {known})")


def check_component(comp: object) -> str:
    if not isinstance(comp, str) or comp not in COMPONENTS:
        raise InvalidInput(f"unknown component {comp!r}: one of {', '.join(COMPONENTS)}")
    return comp


def secret_fields() -> frozenset[str]:
    return frozenset(s.name for specs in COMPONENTS.values() for s in specs if s.secret)


# A field a board reports that is not on the known list (a newer firmware's `netApPass`)
# is a secret when its name says so.
_SECRET_NAME_RE = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)


def is_secret_field(name: str) -> bool:
    """True for the protocol's secret fields and any field whose name looks secret."""
    return name in secret_fields() or _SECRET_NAME_RE.search(name) is not None


def _check_topic_text(name: str, value: str) -> None:
    if not value or any(ch in value for ch in "#+\x00") or " " in value:
        raise InvalidInput(f"{name} must be a topic name without spaces, '#' or '+'")


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidInput(f"{name} is not a valid URL (check the port)") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidInput(f"{name} must look like {schemes[0]}://host:port")
    if port is not None and not 1 <= port <= 65_535:
        raise InvalidInput(f"{name}: port must be 1..65535")


def validate_config(comp: str, fields: Mapping[str, object]) -> dict[str, int | str]:
    """Check a (partial) config write; returns the typed fields or raises InvalidInput."""
    check_component(comp)
    if comp == "app":
        raise InvalidInput("app (firmware and version) is read only")
    if not fields:
        raise InvalidInput(f"nothing to write to {comp}: give at least one field")
    typed = {name: field_spec(comp, name).parse(raw) for name, raw in fields.items()}
    for name in ("mqttSubTopic", "mqttPubTopic", "mqttCfgTopic"):
        if name in typed:
            _check_topic_text(name, str(typed[name]))
    if "mqttURI" in typed:
        _check_url("mqttURI", str(typed["mqttURI"]), ("mqtt", "mqtts"))
    if "otaURL" in typed:
        url = str(typed["otaURL"])
        _check_url("otaURL", url, ("http", "https"))
        if not url.endswith("/"):
            raise InvalidInput("otaURL must end with '/': the board appends the file name")
    if "netStaPwd" in typed and 0 < len(str(typed["netStaPwd"])) < 8:
        raise InvalidInput("the WiFi password must be empty or 8..63 characters")
    return typed


def mask_secrets(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to show or log: passwords replaced, URI credentials hidden."""
    masked: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, str) and "://" in value:
            value = mask_ota_token(value)
        if isinstance(value, str) and (name == "mqttURI" or ("://" in value and "@" in value)):
            masked[name] = mask_uri(value)  # mqttURI, or credentials in any other URL
        elif is_secret_field(name):
            masked[name] = "••••••" if value else ""
        else:
            masked[name] = value
    return masked


def mask_ota_token(url: str) -> str:
    """`…/firmwares/e831cdfa8384/3f9a…/` -> `…/firmwares/e831cdfa8384/••••••/`: the secret
    part of a rollout's per-board OTA URL is never shown or logged."""
    return _OTA_TOKEN_RE.sub(r"\1••••••", url)


def mask_uri(uri: str) -> str:
    """`mqtt://user:pass@host:1883` -> `mqtt://user:••••••@host:1883`.

    Split by hand at the last '@', not by urlsplit: a password holding an unescaped
    '/', '?' or '#' would end urlsplit's netloc early and be shown.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:••••••@{host}"


# --- commands (server -> device) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command ready to publish: its JSON object and the reply it expects, if any."""

    kind: str
    payload: Mapping[str, Any]
    reply_typ: str | None = None
    reply_comp: str = ""

    def encode(self) -> bytes:
        return json.dumps(dict(self.payload), separators=(",", ":")).encode()

    def masked(self) -> dict[str, Any]:
        return mask_secrets(self.payload)


def config_read(comp: str) -> Command:
    check_component(comp)
    return Command("config_read", {"typ": "cfg", "comp": comp}, "cfg", comp)


def config_write(comp: str, fields: Mapping[str, object]) -> Command:
    typed = validate_config(comp, fields)
    return Command("config_write", {"typ": "cfg", "comp": comp, **typed}, "cfg", comp)


def set_ota_url(url: str) -> Command:
    typed = validate_config("ota", {"otaURL": url})
    return Command("ota_url", {"typ": "cfg", "comp": "ota", **typed}, "cfg", "ota")


def ota_start(bin_name: str) -> Command:
    if not isinstance(bin_name, str) or not _BIN_RE.match(bin_name):
        raise InvalidInput("the firmware file name must be letters, digits, '.-_' ending .bin")
    return Command("ota_start", {"typ": "ota_ud", "bin": bin_name})


def restart() -> Command:
    return Command("restart", {"typ": "rst"})


def read_meters() -> Command:
    pyd = sas.STANDARD_METER_REQUEST_HEX
    return Command("meters", {"typ": "cmd", "sta": "", "siz": len(pyd), "pyd": pyd}, "rsp")


def meter_reset() -> Command:
    return Command("meter_reset", {"typ": "cmd", "cmd": "met_reset"})


def nvs_clear(kind: sas.NvsClear | str) -> Command:
    try:
        which = sas.NvsClear(kind)
    except ValueError:
        names = ", ".join(k.value for k in sas.NvsClear)
        raise InvalidInput(f"unknown NVS clear {kind!r}: one of {names}") from None
    pyd = sas.build_nvs_clear(which)
    payload = {"typ": "sun", "sta": sas.NVS_STATUS, "siz": len(pyd), "pyd": pyd}
    return Command(f"nvs_clear_{which.value}", payload, "srsp")


# One table of every command kind, for the CLI, the audit trail and the simulator.
COMMAND_KINDS: dict[str, str] = {
    "config_read": "read one config component",
    "config_write": "write config fields",
    "ota_url": "set the OTA base URL",
    "ota_start": "start an OTA update",
    "restart": "restart the board",
    "meters": "read SAS meters (6F)",
    "meter_reset": "reset meters (non-SAS)",
    **{f"nvs_clear_{k.value}": f"clear NVS: {k.value.replace('_', ' ')}" for k in sas.NvsClear},
}


def parse_command(payload: bytes) -> Mapping[str, Any] | None:
    """A command as a board receives it (the simulator's side); None when unusable."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("typ"), str) else None


# --- device messages (device -> server) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    relay: str
    typ: str
    topic: str

    @property
    def comp(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class ConfigReply(DeviceMessage):
    component: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def comp(self) -> str:
        return self.component


@dataclass(frozen=True, slots=True)
class MeterReply(DeviceMessage):
    pyd: str = ""
    reading: sas.MeterReading | None = None
    failure: str | None = None  # None when `reading` is set
    failure_check: str | None = None  # crc, length, size, bcd, hex, command, device_error


@dataclass(frozen=True, slots=True)
class NvsReply(DeviceMessage):
    pyd: str = ""
    ok: bool = False


@dataclass(frozen=True, slots=True)
class EventMessage(DeviceMessage):
    code: str = ""
    name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A device message we could not use; counted by `reason` and shown, never raised."""

    reason: str
    detail: str
    topic: str
    relay: str | None = None


Parsed = ConfigReply | MeterReply | NvsReply | EventMessage | Rejection


def _relay_or_none(value: object) -> str | None:
    try:
        return normalize_relay_id(value)
    except InvalidInput:
        return None


def _decode_object(payload: bytes) -> dict[str, Any] | str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "oversize"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested [[[...
        return "not_json"
    return obj if isinstance(obj, dict) else "not_object"


def _parse_meter_reply(base: dict[str, Any], pyd: object) -> MeterReply | Rejection:
    if not isinstance(pyd, str):
        return Rejection(
            "bad_field", "a meter reply's pyd must be hex text", base["topic"], base["relay"]
        )
    try:
        reading = sas.decode_meter_reply(pyd)
    except (FrameError, DeviceError) as exc:
        return MeterReply(**base, pyd=pyd[:1024], failure=str(exc), failure_check=exc.check)
    return MeterReply(**base, pyd=pyd, reading=reading)


def parse_device_message(topic: str, payload: bytes, topics: Topics) -> Parsed:
    """Turn one MQTT message from a device into a typed message or a Rejection."""
    obj = _decode_object(payload)
    if isinstance(obj, str):
        return Rejection(
            obj, f"{len(payload)} bytes on {topic[:80]}", topic, topics.relay_of_topic(topic)
        )
    raw_relay = obj.get("rly")
    relay = topics.relay_of_topic(topic) if raw_relay is None else _relay_or_none(raw_relay)
    if relay is None:
        return Rejection("bad_relay", "missing or invalid rly", topic)
    typ = obj.get("typ")
    base: dict[str, Any] = {"relay": relay, "typ": typ, "topic": topic}
    if typ == "cfg":
        comp = obj.get("comp")
        if not isinstance(comp, str) or comp not in COMPONENTS:
            return Rejection("bad_field", f"config reply with comp {comp!r}", topic, relay)
        fields = {k: v for k, v in obj.items() if k not in ("rly", "typ", "comp")}
        return ConfigReply(**base, component=comp, fields=fields)
    if typ == "rsp":
        return _parse_meter_reply(base, obj.get("pyd"))
    if typ == "srsp":
        pyd = obj.get("pyd")
        if not isinstance(pyd, str):
            return Rejection("bad_field", "an NVS reply's pyd must be text", topic, relay)
        return NvsReply(**base, pyd=pyd, ok=pyd.strip().upper() == sas.NVS_OK)
    if typ == "exp":
        code = obj.get("pyd")
        if not isinstance(code, str | int) or not str(code).strip():
            return Rejection(
                "bad_field", "an event's pyd must be a SAS exception code", topic, relay
            )
        code_text = str(code).strip().upper()
        extra = {k: v for k, v in obj.items() if k in ("mac", "tkn")}
        return EventMessage(**base, code=code_text, name=sas.event_name(code_text), extra=extra)
    if not isinstance(typ, str):
        return Rejection("missing_typ", "a message without typ", topic, relay)
    return Rejection("unknown_typ", f"typ {typ[:32]!r}", topic, relay)
