"""Settings from the environment: the one place env vars are read (README lists each)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from smib_core.errors import InvalidInput
from smib_core.protocol import Topics


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, uri: str) -> BrokerAddress:
        """`mqtt://user:pass@host:1883` or `mqtts://...`; raises InvalidInput otherwise."""
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            raise InvalidInput("MQTT_URI is not a valid URI (check the port)") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise InvalidInput("MQTT_URI must look like mqtt://user:pass@host:1883 or mqtts://")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def uri(self) -> str:
        """The URI with the password hidden: safe to show and log."""
        user = (
            f"{self.username}:••••••@"
            if self.password
            else (f"{self.username}@" if self.username else "")
        )
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Settings:
    mqtt_uri: str | None = field(default=None, repr=False)
    mqtt_ca_file: Path | None = None
    mongo_uri: str | None = field(default=None, repr=False)
    mongo_db: str = "smib"
    topics: Topics = field(default_factory=Topics)
    data_dir: Path = Path("data")
    offline_after_s: float = 120.0
    heartbeat_s: float = 30.0
    session_idle_min: float = 30.0
    collect_period_s: float = 300.0
    gaming_day_start_hour: int = 0  # in local time (`timezone`)
    timezone: str = "UTC"  # the casino's IANA time zone: gaming days, pages, exports
    firmware_bind: str = "127.0.0.1"
    firmware_port: int = 8808
    firmware_base_url: str | None = None
    sim_relays: int = 20
    alert_offline_s: float = 0.0  # 0: twice offline_after_s
    batch_restart_timeout_s: float = 60.0  # a restarted board must answer again within this
    audit_settle_after_s: float = 300.0  # a `sent` audit record older than this is settled
    worker_mode: str = "off"  # SMIB_WORKER: "inprocess" runs a Worker in the web server
    api_rate_per_min: float = 120.0  # API requests a token may make per minute

    def mqtt_tls_context(self) -> ssl.SSLContext | None:
        """How an `mqtts://` broker's certificate is checked: against `MQTT_CA_FILE` (a
        casino's own CA, PEM) when set, else the system's CAs (None here)."""
        if self.mqtt_ca_file is None:
            return None
        if not self.mqtt_ca_file.is_file():
            raise InvalidInput(f"MQTT_CA_FILE {self.mqtt_ca_file} is not a file")
        try:
            return ssl.create_default_context(cafile=str(self.mqtt_ca_file))
        except (ssl.SSLError, ValueError) as exc:
            message = f"MQTT_CA_FILE {self.mqtt_ca_file} holds no usable CA: {exc}"
            raise InvalidInput(message) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = Topics()
        topics = Topics(
            pub=env.get("MQTT_PUB_TOPIC", defaults.pub),
            cfg=env.get("MQTT_CFG_TOPIC", defaults.cfg),
            sub=env.get("MQTT_SUB_TOPIC", defaults.sub),
            gli=env.get("MQTT_GLI_TOPIC", defaults.gli),
        )
        return cls(
            mqtt_uri=env.get("MQTT_URI") or None,
            mqtt_ca_file=Path(env["MQTT_CA_FILE"]) if env.get("MQTT_CA_FILE") else None,
            mongo_uri=env.get("MONGO_URI") or None,
            mongo_db=env.get("MONGO_DB", "smib"),
            topics=topics,
            data_dir=Path(env.get("SMIB_DATA_DIR", "data")),
            offline_after_s=_number(env, "SMIB_OFFLINE_AFTER_S", 120.0),
            heartbeat_s=_number(env, "SMIB_HEARTBEAT_S", 30.0),
            session_idle_min=_number(env, "SMIB_SESSION_IDLE_MIN", 30.0),
            collect_period_s=_number(env, "SMIB_COLLECT_PERIOD_S", 300.0),
            gaming_day_start_hour=_start_hour(env),
            timezone=_zone(env, "SMIB_TIMEZONE"),
            firmware_bind=env.get("FIRMWARE_BIND", "127.0.0.1"),
            firmware_port=int(_number(env, "FIRMWARE_PORT", 8808)),
            firmware_base_url=env.get("FIRMWARE_BASE_URL") or None,
            sim_relays=int(_number(env, "SMIB_SIM_RELAYS", 20)),
            alert_offline_s=_number(env, "SMIB_ALERT_OFFLINE_S", 0.0),
            batch_restart_timeout_s=_number(env, "SMIB_BATCH_RESTART_TIMEOUT_S", 60.0),
            audit_settle_after_s=_number(env, "SMIB_AUDIT_SETTLE_AFTER_S", 300.0),
            worker_mode=_choice(env, "SMIB_WORKER", ("off", "inprocess")),
            api_rate_per_min=_number(env, "SMIB_API_RATE_PER_MIN", 120.0),
        )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, got {raw!r}") from None


def _start_hour(env: Mapping[str, str]) -> int:
    hour = _number(env, "SMIB_GAMING_DAY_START_HOUR", 0)
    if hour != int(hour) or not 0 <= hour <= 23:
        raise InvalidInput(f"SMIB_GAMING_DAY_START_HOUR must be a whole hour 0..23, got {hour:g}")
    return int(hour)


def _zone(env: Mapping[str, str], name: str) -> str:
    """An IANA time zone name (Europe/Paris, America/Los_Angeles); unset or empty is UTC."""
    raw = env.get(name, "").strip()
    if not raw:
        return "UTC"
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"{name} must be an IANA time zone such as America/Los_Angeles, got {raw!r}"
        ) from None
    return raw


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when unset or empty); InvalidInput otherwise."""
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}, got {raw[:32]!r}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A yes/no setting: 1/true/yes/on (any case) is yes; unset or empty is no."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InvalidInput(f"{name} must be true or false, got {raw!r}")
