"""The seed's configuration form fields <-> a board's config fields, and the diff.

The seed's form edits `networkSSID/Password/Channel`, the MQTT host, port, TLS, idle
timeout, username, password and topics, and the comms fields. Most map one-to-one onto
board fields (PROTOCOL.md); the MQTT host, port, username and password are the parts of
`mqttURI`. A form never shows a current password: a blank password field means
"unchanged". `prepare_change` maps a submitted form, keeps only what changed and checks
it with `protocol.validate_config`, whose sentences a person reads. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from smib_core import protocol
from smib_core.errors import InvalidInput
from smib_core.protocol import COMPONENTS, mask_secrets

READ_ONLY_LABELS = {"firmware": "Firmware", "version": "Version"}
# Coded values shown with their meaning next to the number.
VALUE_MEANINGS: dict[str, Mapping[int, str]] = {
    "netMode": {1: "WiFi client"},
    "mqttSecure": {0: "plain", 1: "TLS"},
    "comsMode": protocol.COMS_MODES,
    "comsRTE": {0: "off", 1: "on"},
}


def short_label(comp: str, name: str) -> str:
    """'WiFi channel'; fields the protocol does not list keep their name."""
    for spec in COMPONENTS.get(comp, ()):
        if spec.name == name:
            return spec.label
    return READ_ONLY_LABELS.get(name, name)


def field_label(comp: str, name: str) -> str:
    """'WiFi channel (netStaChan)': the words and the board's own field name."""
    label = short_label(comp, name)
    return label if label == name or name in READ_ONLY_LABELS else f"{label} ({name})"


def shown(name: str, value: Any) -> str:
    """One value as a person should see it: secrets masked, codes explained."""
    masked = mask_secrets({name: value})[name]
    meanings = VALUE_MEANINGS.get(name, {})
    if isinstance(masked, int) and masked in meanings:
        return f"{masked} ({meanings[masked]})"
    return "" if masked is None else str(masked)


# --- the seed's form fields <-> board fields -----------------------------------------


@dataclass(frozen=True, slots=True)
class MqttUri:
    """The parts of `mqttURI` the seed's form edits separately."""

    scheme: str = "mqtt"
    host: str = ""
    port: int | None = None
    username: str = ""
    password: str = ""


def split_uri(uri: str) -> MqttUri:
    """`mqtt://user:pass@host:1883` -> its parts; split by hand at the last '@' (like
    `protocol.mask_uri`) so a password holding '/', '?' or '#' stays whole."""
    scheme, sep, rest = str(uri).partition("://")
    if not sep:
        scheme, rest = "mqtt", str(uri)
    userinfo, at, hostport = rest.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    hostport = hostport.split("/", 1)[0]
    host, colon, port_text = hostport.rpartition(":")
    if not colon or not port_text.isdigit():
        host, port_text = hostport, ""
    return MqttUri(
        scheme or "mqtt", host, int(port_text) if port_text else None, username, password
    )


def join_uri(parts: MqttUri) -> str:
    """The parts back into a URI; InvalidInput (a sentence naming the form field) when
    the host, port or username cannot be part of one."""
    host = parts.host.strip()
    ipv6 = host.startswith("[") and host.endswith("]")  # [::1]
    bare = host[1:-1] if ipv6 else host
    if not bare or any(ch in bare for ch in " /@?#[]") or (":" in bare and not ipv6):
        raise InvalidInput("MQTT host must be a host name or address, without spaces or '/@:'")
    port = parts.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65_535:
        raise InvalidInput("MQTT port must be a whole number 1..65535")
    username = parts.username.strip()
    if any(ch in username for ch in ":@/ "):
        raise InvalidInput("MQTT username must not contain spaces, ':', '@' or '/'")
    credentials = f"{username}:{parts.password}@" if username and parts.password else ""
    if username and not parts.password:
        credentials = f"{username}@"
    return f"{parts.scheme}://{credentials}{host}:{port}"


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of an edit form: how to ask for it (`kind`: text, password, int, choice)."""

    name: str
    label: str
    kind: str
    choices: tuple[int, ...] = ()
    help: str = ""


_MQTT_PARTS = (
    FormField("mqttHost", "MQTT host", "text", help="Host name or address of the broker"),
    FormField("mqttPort", "MQTT port", "int", help="1..65535"),
    FormField("mqttUsername", "MQTT username", "text", help="Blank: no credentials"),
    FormField(
        "mqttPassword",
        "MQTT password",
        "password",
        help="Blank keeps the current password (it is never shown)",
    ),
)
_MQTT_ORDER = (
    "mqttHost",
    "mqttPort",
    "mqttSecure",
    "mqttIdleTimeS",
    "mqttUsername",
    "mqttPassword",
    "mqttSubTopic",
    "mqttPubTopic",
    "mqttCfgTopic",
    "mqttQOS",
)


def _form_field(spec: protocol.FieldSpec) -> FormField:
    if spec.kind is str:
        if spec.secret:
            return FormField(
                spec.name,
                spec.label,
                "password",
                help="Blank keeps the current password (it is never shown)",
            )
        return FormField(spec.name, spec.label, "text", help=spec.help)
    if spec.low is not None and spec.high is not None and spec.high - spec.low <= 2:
        return FormField(spec.name, spec.label, "choice", tuple(range(spec.low, spec.high + 1)))
    return FormField(spec.name, spec.label, "int", help=f"{spec.low}..{spec.high}")


def form_fields(comp: str) -> tuple[FormField, ...]:
    """The seed's form for a component, in its order; the MQTT URI asked for in parts."""
    fields = [_form_field(spec) for spec in COMPONENTS[protocol.check_component(comp)]]
    if comp != "mqtt":
        return tuple(fields)
    by_name = {f.name: f for f in (*fields, *_MQTT_PARTS)}
    return tuple(by_name[name] for name in _MQTT_ORDER)


def _as_int(value: Any) -> Any:
    """A board's `"6"` as 6 (forms ask for numbers); anything else unchanged."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def form_values(comp: str, current: Mapping[str, Any]) -> dict[str, Any]:
    """What an edit form starts with: the board's fields, the MQTT URI in parts, and
    every password blank (a form never shows the current one)."""
    values: dict[str, Any] = {
        spec.name: _as_int(current.get(spec.name)) if spec.kind is int else current.get(spec.name)
        for spec in COMPONENTS[comp]
    }
    if comp == "net":
        values["netStaPwd"] = ""
    if comp == "ota" and current.get("otaURL"):  # user:password@ and a rollout's token
        values["otaURL"] = _masked_ota_url(str(current["otaURL"]))
    if comp == "mqtt":
        parts = split_uri(str(current.get("mqttURI") or ""))
        del values["mqttURI"]
        values.update(
            mqttHost=parts.host,
            mqttPort=parts.port or 1883,
            mqttUsername=parts.username,
            mqttPassword="",
        )
    return values


def _masked_ota_url(url: str) -> str:
    """The OTA URL as a form shows it: credentials and a rollout's token masked."""
    return protocol.mask_uri(protocol.mask_ota_token(url))


def _port(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = str(raw or "").strip()
    if not text.isdigit():
        raise InvalidInput("MQTT port must be a whole number 1..65535")
    return int(text)


def edited_fields(comp: str, form: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The board fields a submitted form stands for (untyped; `prepare_change` checks).

    A blank password keeps the board's current one; an OTA URL left as shown (its token
    masked) keeps the board's URL.
    """
    protocol.check_component(comp)
    edited = {k: v for k, v in form.items() if k in {s.name for s in COMPONENTS[comp]}}
    if comp == "net" and not form.get("netStaPwd"):
        edited.pop("netStaPwd", None)
        if "netStaPwd" in current:
            edited["netStaPwd"] = current["netStaPwd"]
    if comp == "ota" and current.get("otaURL"):
        kept = str(current["otaURL"])
        if form.get("otaURL") == _masked_ota_url(kept):  # unchanged behind the mask
            edited["otaURL"] = kept
    if comp == "mqtt":
        old = split_uri(str(current.get("mqttURI") or ""))
        parts = MqttUri(
            scheme=old.scheme,
            host=str(form.get("mqttHost") or ""),
            port=_port(form.get("mqttPort")),
            username=str(form.get("mqttUsername") or ""),
            password=str(form.get("mqttPassword") or "") or old.password,
        )
        edited["mqttURI"] = join_uri(parts)
    return edited


# --- the diff ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field to write; the raw values (secrets included) never leave the server."""

    field: str
    before: Any
    after: Any

    def shown_before(self) -> str:
        return shown(self.field, self.before)

    def shown_after(self) -> str:
        after = shown(self.field, self.after)
        if after == self.shown_before() and after != str(self.after):  # behind the mask
            return f"{after} (changed)"
        return after


def same_value(before: Any, after: Any) -> bool:
    """Equal as text (a board's `"6"` is a form's `6`); missing and blank are equal."""
    if before is None or after is None:
        return (before is None or before == "") and (after is None or after == "")
    return str(before) == str(after)


def diff(current: Mapping[str, Any], edited: Mapping[str, Any]) -> list[FieldChange]:
    """The edited fields whose value differs from the board's (compared as text, so the
    board's `"6"` and a form's `6` are the same)."""
    return [
        FieldChange(name, current.get(name), value)
        for name, value in edited.items()
        if not same_value(current.get(name), value)
    ]


def prepare_change(
    comp: str, form: Mapping[str, Any], current: Mapping[str, Any]
) -> list[FieldChange]:
    """Map the form, keep what changed and check it (protocol.validate_config's
    sentences); InvalidInput when a value is refused. An empty list: nothing changed."""
    changes = diff(current, edited_fields(comp, form, current))
    if not changes:
        return []
    typed = protocol.validate_config(comp, {c.field: c.after for c in changes})
    return [FieldChange(c.field, c.before, typed[c.field]) for c in changes]


def diff_table(comp: str, changes: Sequence[FieldChange]) -> pd.DataFrame:
    """field / before / after, secrets masked: what a person checks before sending."""
    rows = [
        {"field": field_label(comp, c.field), "before": c.shown_before(), "after": c.shown_after()}
        for c in changes
    ]
    return pd.DataFrame(rows, columns=["field", "before", "after"])
