"""The SMIB wire protocol: relay ids, topics, commands, config checks, device messages.

Pure tests, no broker: JSON in, typed messages out, and the reverse. The fuzz test feeds
thousands of hostile payloads (fixed seed) and asserts parsing never raises.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

import pytest

from smib_core import protocol as p
from smib_core import sas
from smib_core.errors import InvalidInput

RELAY = "e831cdfa8384"
TOPICS = p.Topics()
VALID_HEX = (
    "016F2A000024000400413261000004999999990B000400276500A00009000000000089475290050004000103358046"
)
BAD_CRC_HEX = VALID_HEX[:-1] + "7"
SECRET = "s3cr3t-Pa55"


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _parse(obj: object, topic: str = "sas/gy/server") -> p.Parsed:
    return p.parse_device_message(topic, _json(obj), TOPICS)


# --- relay ids and topics ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [RELAY, "E831CDFA8384", " e831cdfa8384 ", "\te831CDfa8384\n", "E831cdFA8384\r\n"],
)
def test_normalize_relay_id_lowercases_and_strips(raw: str) -> None:
    assert p.normalize_relay_id(raw) == RELAY
    assert p.is_relay_id(raw)


BAD_IDS: list[object] = [
    "",
    "   ",
    "e831cdfa838#",
    "#",
    "+",
    "e831cdfa838+",
    "e831cdfa8384/x",
    "e831cdfa/8384",
    "sas/relay/#",
    "e831cdfa8384\x00",
    "\x00e831cdfa8384",
    "e831cd fa8384",
    "e831cdfa838",  # 11
    "e831cdfa83845",  # 13
    "e831cdfa838g",
    "e8:31:cd:fa:83:84",
    "0xe831cdfa83",
    "e831cdfa8384\ne831cdfa8384",
    "\uff45831cdfa8384",  # fullwidth e
    "\u0660" * 12,  # Arabic-Indic digits
    None,
    0xE831CDFA8384,
    b"e831cdfa8384",
    ["e831cdfa8384"],
    {"rly": RELAY},
    True,
]


@pytest.mark.parametrize("raw", BAD_IDS, ids=repr)
def test_normalize_relay_id_refuses(raw: object) -> None:
    with pytest.raises(InvalidInput):
        p.normalize_relay_id(raw)
    assert not p.is_relay_id(raw)


@pytest.mark.parametrize("raw", BAD_IDS, ids=repr)
def test_command_topic_never_built_from_an_invalid_id(raw: object) -> None:
    with pytest.raises(InvalidInput):
        TOPICS.command_topic(raw)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        p.Topics(pub="site1/relay/").command_topic(raw)  # type: ignore[arg-type]


def test_command_topic_of_a_valid_id() -> None:
    assert TOPICS.command_topic(" E831CDFA8384 ") == "sas/relay/e831cdfa8384"
    assert p.Topics(pub="x/").command_topic(RELAY) == "x/e831cdfa8384"


def test_default_topics_and_subscriptions() -> None:
    assert (TOPICS.pub, TOPICS.cfg, TOPICS.sub, TOPICS.gli, TOPICS.server) == (
        "sas/relay/",
        "smib/config",
        "sas/gy/server",
        "sas/gli/server/",
        "sas/server",
    )
    assert TOPICS.device_topics() == (
        "smib/config",
        "sas/gy/server",
        "sas/gli/server/+",
        "sas/gli/server",
        "sas/server",
    )
    assert p.Topics(gli="a/b").gli_prefix() == "a/b/"


@pytest.mark.parametrize(
    ("topic", "relay"),
    [
        ("sas/gli/server/e831cdfa8384", RELAY),
        ("sas/gli/server/E831CDFA8384", RELAY),
        ("sas/gli/server/", None),
        ("sas/gli/server/+", None),
        ("sas/gli/server/#", None),
        ("sas/gli/server/e831cdfa8384/x", None),
        ("sas/gy/server", None),
        ("smib/config", None),
    ],
)
def test_relay_of_topic(topic: str, relay: str | None) -> None:
    assert TOPICS.relay_of_topic(topic) == relay


# --- commands: exact JSON --------------------------------------------------------------


@pytest.mark.parametrize("comp", ["net", "mqtt", "coms", "ota", "app"])
def test_config_read_each_component(comp: str) -> None:
    cmd = p.config_read(comp)
    assert cmd.encode() == f'{{"typ":"cfg","comp":"{comp}"}}'.encode()
    assert (cmd.kind, cmd.reply_typ, cmd.reply_comp) == ("config_read", "cfg", comp)


@pytest.mark.parametrize("comp", ["", "NET", "bogus", None, 1])
def test_config_read_unknown_component(comp: object) -> None:
    with pytest.raises(InvalidInput):
        p.config_read(comp)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("comp", "fields", "wire"),
    [
        ("coms", {"comsAddr": 5}, '{"typ":"cfg","comp":"coms","comsAddr":5}'),
        ("coms", {"comsAddr": " 7 "}, '{"typ":"cfg","comp":"coms","comsAddr":7}'),
        ("net", {"netStaChan": "11"}, '{"typ":"cfg","comp":"net","netStaChan":11}'),
        (
            "net",
            {"netMode": 1, "netStaSSID": "Casino-Floor", "netStaPwd": "password123"},
            '{"typ":"cfg","comp":"net","netMode":1,"netStaSSID":"Casino-Floor",'
            '"netStaPwd":"password123"}',
        ),
        (
            "mqtt",
            {"mqttURI": "mqtts://u:p@broker.local:8883", "mqttQOS": 1},
            '{"typ":"cfg","comp":"mqtt","mqttURI":"mqtts://u:p@broker.local:8883","mqttQOS":1}',
        ),
        (
            "mqtt",
            {"mqttSubTopic": "sas/relay/"},
            '{"typ":"cfg","comp":"mqtt","mqttSubTopic":"sas/relay/"}',
        ),
        (
            "ota",
            {"otaURL": "https://fw.local/f/"},
            '{"typ":"cfg","comp":"ota","otaURL":"https://fw.local/f/"}',
        ),
    ],
)
def test_config_write_partial(comp: str, fields: dict[str, object], wire: str) -> None:
    cmd = p.config_write(comp, fields)
    assert cmd.encode() == wire.encode()
    assert (cmd.kind, cmd.reply_typ, cmd.reply_comp) == ("config_write", "cfg", comp)


def test_set_ota_url() -> None:
    cmd = p.set_ota_url("http://192.168.0.211:3000/firmwares/")
    assert (
        cmd.encode()
        == b'{"typ":"cfg","comp":"ota","otaURL":"http://192.168.0.211:3000/firmwares/"}'
    )
    assert (cmd.kind, cmd.reply_typ, cmd.reply_comp) == ("ota_url", "cfg", "ota")


@pytest.mark.parametrize(
    "url",
    [
        "http://host/firmwares",
        "ftp://host/f/",
        "host/f/",
        "http:///f/",
        "http://h:0/f/",
        "http://h:70000/f/",
        "http://h:x/f/",
        "",
        "http://h/f/\n",
    ],
)
def test_set_ota_url_refuses(url: str) -> None:
    with pytest.raises(InvalidInput):
        p.set_ota_url(url)


@pytest.mark.parametrize("name", ["wifi.bin", "cloudy-v0.0.2.bin", "A_1.bin"])
def test_ota_start(name: str) -> None:
    cmd = p.ota_start(name)
    assert cmd.encode() == f'{{"typ":"ota_ud","bin":"{name}"}}'.encode()
    assert cmd.kind == "ota_start" and cmd.reply_typ is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".bin",
        "wifi",
        "wifi.exe",
        "wifi.bin.sh",
        "../wifi.bin",
        "dir/wifi.bin",
        "/wifi.bin",
        "wifi .bin",
        "wifi.bin\n",
        "wifi.bin\x00",
        "-x.bin",
        ".hidden.bin",
        "wifi?.bin",
        "wifi#.bin",
        "w%2F.bin",
        "http://evil/x.bin",
        "a" * 200 + ".bin",
        None,
        1,
        b"wifi.bin",
    ],
    ids=repr,
)
def test_ota_start_refuses_bad_file_names(name: object) -> None:
    with pytest.raises(InvalidInput):
        p.ota_start(name)  # type: ignore[arg-type]


def test_restart_meters_and_met_reset() -> None:
    assert p.restart().encode() == b'{"typ":"rst"}'
    meters = p.read_meters()
    assert meters.encode() == (
        b'{"typ":"cmd","sta":"","siz":54,"pyd":"016F16000000000100040003002200240002000C0005000600E180"}'
    )
    assert meters.reply_typ == "rsp"
    assert p.meter_reset().encode() == b'{"typ":"cmd","cmd":"met_reset"}'


@pytest.mark.parametrize(
    ("kind", "pyd"),
    [
        ("all", "E101015B2C"),
        ("meters", "E1010269B7"),
        ("bill_validator", "E10103783E"),
        ("door", "E101040C81"),
    ],
)
def test_nvs_clears(kind: str, pyd: str) -> None:
    for arg in (kind, sas.NvsClear(kind)):
        cmd = p.nvs_clear(arg)
        assert cmd.encode() == f'{{"typ":"sun","sta":"162","siz":10,"pyd":"{pyd}"}}'.encode()
        assert cmd.kind == f"nvs_clear_{kind}" and cmd.reply_typ == "srsp"


@pytest.mark.parametrize("kind", ["", "ALL", "everything", None])
def test_nvs_clear_unknown_kind(kind: object) -> None:
    with pytest.raises(InvalidInput):
        p.nvs_clear(kind)  # type: ignore[arg-type]


def test_every_built_command_kind_is_in_the_table() -> None:
    built = [
        p.config_read("net"),
        p.config_write("coms", {"comsAddr": 1}),
        p.set_ota_url("http://h/f/"),
        p.ota_start("a.bin"),
        p.restart(),
        p.read_meters(),
        p.meter_reset(),
        *(p.nvs_clear(k) for k in sas.NvsClear),
    ]
    assert {c.kind for c in built} == set(p.COMMAND_KINDS)


def test_parse_command_reads_back_what_was_built() -> None:
    cmd = p.read_meters()
    assert p.parse_command(cmd.encode()) == dict(cmd.payload)
    for junk in (b"", b"[]", b"{}", b'{"typ":1}', b"\xff", b"null", b"[" * 100_000):
        assert p.parse_command(junk) is None


# --- validate_config: every field's type and range ---------------------------------------

GOOD: dict[str, dict[str, list[object]]] = {
    "net": {
        "netMode": [0, 1, "1"],
        "netStaSSID": ["", "Casino", "x" * 32],
        "netStaPwd": ["", "12345678", "x" * 63],
        "netStaChan": [1, 14, " 6 "],
    },
    "mqtt": {
        "mqttSecure": [0, 1],
        "mqttQOS": [0, 1, 2],
        "mqttURI": ["mqtt://user:pass@host:1883", "mqtts://h", "mqtt://10.0.0.1:65535"],
        "mqttSubTopic": ["sas/relay/"],
        "mqttPubTopic": ["sas/gy/server"],
        "mqttCfgTopic": ["smib/config"],
        "mqttIdleTimeS": [0, 60, 86_400],
    },
    "coms": {
        "comsMode": [0, 1, 2],
        "comsAddr": [1, 127],
        "comsRateMs": [10, 60_000],
        "comsRTE": [0, 1],
        "comsGPC": [0, 255],
    },
    "ota": {"otaURL": ["http://h:3000/firmwares/", "https://h/"]},
}

BAD: dict[str, dict[str, list[object]]] = {
    "net": {
        "netMode": [-1, 2, "x", 1.0, True, None],
        "netStaSSID": [1, None, "x" * 33, "a\nb", ["a"]],
        "netStaPwd": ["1234567", "x" * 64, 12345678, "pass\x00word"],
        "netStaChan": [0, 15, "", "1.5", False],
    },
    "mqtt": {
        "mqttSecure": [2, -1],
        "mqttQOS": [3, -1, "2x"],
        "mqttURI": [
            "mqtt://host:0",
            "mqtt://host:70000",
            "mqtt://host:x",
            "http://host:1883",
            "mqtt://",
            "host:1883",
            "",
            1883,
        ],
        "mqttSubTopic": ["", "sas/#", "sas/+/x", "sas relay/", "a\x00"],
        "mqttPubTopic": ["#", "a b"],
        "mqttCfgTopic": ["+", ""],
        "mqttIdleTimeS": [-1, 86_401],
    },
    "coms": {
        "comsMode": [3, -1],
        "comsAddr": [0, 128, 255],
        "comsRateMs": [9, 60_001],
        "comsRTE": [2],
        "comsGPC": [256, -1],
    },
    "ota": {"otaURL": ["http://h/firmwares", "ftp://h/", "", "http://h:70000/"]},
}


def _cases(table: dict[str, dict[str, list[object]]]) -> list[tuple[str, str, object]]:
    return [(c, f, v) for c, fs in table.items() for f, vs in fs.items() for v in vs]


def test_tables_cover_every_writable_field() -> None:
    for table in (GOOD, BAD):
        assert {c: set(fs) for c, fs in table.items()} == {
            c: {s.name for s in specs} for c, specs in p.COMPONENTS.items() if specs
        }


@pytest.mark.parametrize(("comp", "name", "value"), _cases(GOOD), ids=repr)
def test_validate_config_accepts(comp: str, name: str, value: object) -> None:
    typed = p.validate_config(comp, {name: value})
    spec = p.field_spec(comp, name)
    assert type(typed[name]) is spec.kind
    assert typed[name] == (int(value) if spec.kind is int else value)  # type: ignore[call-overload]


@pytest.mark.parametrize(("comp", "name", "value"), _cases(BAD), ids=repr)
def test_validate_config_refuses(comp: str, name: str, value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        p.validate_config(comp, {name: value})
    assert str(info.value)
    with pytest.raises(InvalidInput):
        p.config_write(comp, {name: value})


def test_one_bad_field_refuses_the_whole_write() -> None:
    with pytest.raises(InvalidInput):
        p.validate_config("coms", {"comsAddr": 5, "comsRTE": 2})


@pytest.mark.parametrize(
    ("comp", "fields"),
    [
        ("app", {"firmware": "x"}),
        ("app", {"version": "v1"}),
        ("app", {}),
        ("net", {}),
        ("net", {"comsAddr": 1}),
        ("net", {"bogus": 1}),
        ("coms", {"COMSADDR": 1}),
        ("bogus", {"x": 1}),
        ("", {"x": 1}),
    ],
)
def test_validate_config_refuses_read_only_unknown_and_empty(
    comp: str, fields: dict[str, object]
) -> None:
    with pytest.raises(InvalidInput):
        p.validate_config(comp, fields)


def test_field_spec_says_app_fields_are_read_only() -> None:
    with pytest.raises(InvalidInput, match="read only"):
        p.field_spec("app", "firmware")


def test_refusals_never_echo_a_secret() -> None:
    for fields in ({"netStaPwd": "short"}, {"netStaPwd": SECRET * 10}):
        with pytest.raises(InvalidInput) as info:
            p.validate_config("net", fields)
        assert "short" not in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(InvalidInput) as info:
        p.validate_config("mqtt", {"mqttURI": f"mqtt://u:{SECRET}@h:99999"})
    assert SECRET not in str(info.value)


# --- masking secrets -------------------------------------------------------------------

PASSWORDS = [
    SECRET,
    "p@ss",
    "a:b",
    "pa/ss",
    "pa#ss",
    "pa?ss",
    "p%40ss",
    "xq7",
    "@@@",
    "::",
    "p ass",
    "pa\\ss",
    "pa]ss",
    "[pass",
    "pa@ss#x",
    "a://b",
    "p/a@s?s",
]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "mqtt://user:{}@host:1883",
        "mqtts://user:{}@10.0.0.1",
        "mqtt://:{}@host:1883",
        "mqtt://user:{}@host:1883/path?q#frag",
    ],
)
def test_mask_uri_never_leaks_the_password(template: str, password: str) -> None:
    uri = template.format(password)
    masked = p.mask_uri(uri)
    assert password not in masked
    shown = p.mask_secrets({"mqttURI": uri, "netStaPwd": password, "mqttPassword": password})
    assert password not in repr(shown)


def test_mask_uri_keeps_what_is_not_secret() -> None:
    assert p.mask_uri("mqtt://user:pass@host:1883") == "mqtt://user:••••••@host:1883"
    assert p.mask_uri("mqtt://host:1883") == "mqtt://host:1883"
    assert p.mask_uri("mqtt://user@host:1883") == "mqtt://user@host:1883"
    assert p.mask_uri("mqtts://u:p@h:8883/x?y#z") == "mqtts://u:••••••@h:8883/x?y#z"
    assert p.mask_uri("user:pass@host:1883") == "user:••••••@host:1883"


def test_mask_secrets() -> None:
    fields = {
        "netStaSSID": "Casino",
        "netStaPwd": SECRET,
        "netMode": 1,
        "mqttURI": None,
        "wifiPassword": SECRET,
        "otherPwd": "",
    }
    masked = p.mask_secrets(fields)
    assert masked == {
        "netStaSSID": "Casino",
        "netStaPwd": "••••••",
        "netMode": 1,
        "mqttURI": "",
        "wifiPassword": "••••••",
        "otherPwd": "",
    }
    assert fields["netStaPwd"] == SECRET  # a copy: the input is untouched


def test_masked_commands_hide_secrets() -> None:
    cmd = p.config_write("mqtt", {"mqttURI": f"mqtt://u:{SECRET}@h:1883"})
    assert SECRET not in repr(cmd.masked())
    assert SECRET in cmd.encode().decode()  # the device itself does get it
    cmd = p.config_write("net", {"netStaPwd": SECRET})
    assert cmd.masked()["netStaPwd"] == "••••••"


# --- device messages, each kind of PROTOCOL.md -----------------------------------------------


@pytest.mark.parametrize(
    ("comp", "fields"),
    [
        ("net", {"netMode": 1, "netStaSSID": "Casino", "netStaPwd": "x", "netStaChan": 6}),
        ("mqtt", {"mqttSecure": 0, "mqttQOS": 0, "mqttURI": "mqtt://u:p@h:1883"}),
        ("coms", {"comsMode": 0, "comsAddr": 1, "comsRateMs": 200, "comsRTE": 0, "comsGPC": 0}),
        ("ota", {"otaURL": "http://h:3000/firmwares/"}),
        ("app", {"firmware": "cloudy", "version": "v0.0.1"}),
        ("coms", {}),
    ],
)
def test_config_reply(comp: str, fields: dict[str, Any]) -> None:
    msg = _parse({"rly": RELAY.upper(), "typ": "cfg", "comp": comp, **fields}, "smib/config")
    assert msg == p.ConfigReply(RELAY, "cfg", "smib/config", component=comp, fields=fields)
    assert isinstance(msg, p.ConfigReply) and msg.comp == comp


def test_firmware_version_reply_from_the_seed() -> None:
    payload = (
        b'{"rly":"98f4ab0b1e30","typ":"cfg","comp":"app","firmware":"cloudy","version":"v0.0.1"}'
    )
    msg = p.parse_device_message("smib/config", payload, TOPICS)
    assert isinstance(msg, p.ConfigReply)
    assert msg.relay == "98f4ab0b1e30"
    assert dict(msg.fields) == {"firmware": "cloudy", "version": "v0.0.1"}


@pytest.mark.parametrize("comp", [None, "bogus", 1, ["net"]])
def test_config_reply_with_bad_comp(comp: object) -> None:
    msg = _parse({"rly": RELAY, "typ": "cfg", "comp": comp}, "smib/config")
    assert isinstance(msg, p.Rejection) and msg.reason == "bad_field" and msg.relay == RELAY


def test_meter_reply() -> None:
    msg = _parse({"rly": RELAY, "typ": "rsp", "sta": "", "pyd": VALID_HEX})
    assert isinstance(msg, p.MeterReply)
    assert msg.relay == RELAY and msg.typ == "rsp" and msg.failure is None
    assert msg.reading == sas.decode_meter_reply(VALID_HEX)
    assert msg.reading.values()["0024"] == 413261


@pytest.mark.parametrize(
    ("pyd", "check"),
    [
        ("-1", "device_error"),
        (BAD_CRC_HEX, "crc"),
        ("", "hex"),
        ("0", "hex"),
        ("011A000014513E4D", "command"),
    ],
)
def test_meter_reply_that_failed(pyd: str, check: str) -> None:
    msg = _parse({"rly": RELAY, "typ": "rsp", "sta": "", "pyd": pyd})
    assert isinstance(msg, p.MeterReply)
    assert msg.reading is None and msg.failure and msg.failure_check == check


@pytest.mark.parametrize("pyd", [None, 1, ["01"], {"x": 1}])
def test_meter_reply_with_pyd_not_text(pyd: object) -> None:
    msg = _parse({"rly": RELAY, "typ": "rsp", "pyd": pyd})
    assert isinstance(msg, p.Rejection) and msg.reason == "bad_field"


def test_meter_reply_keeps_at_most_1024_chars_of_a_bad_pyd() -> None:
    msg = _parse({"rly": RELAY, "typ": "rsp", "pyd": "0" * 100_000})
    assert isinstance(msg, p.MeterReply) and len(msg.pyd) == 1024


@pytest.mark.parametrize(
    ("pyd", "ok"),
    [("E10101", True), ("e10101 ", True), ("E10100", False), ("", False), ("junk", False)],
)
def test_nvs_reply(pyd: str, ok: bool) -> None:
    msg = _parse({"rly": RELAY, "typ": "srsp", "sta": "162", "pyd": pyd})
    assert msg == p.NvsReply(RELAY, "srsp", "sas/gy/server", pyd=pyd, ok=ok)


def test_nvs_reply_with_pyd_not_text() -> None:
    msg = _parse({"rly": RELAY, "typ": "srsp", "pyd": 1})
    assert isinstance(msg, p.Rejection) and msg.reason == "bad_field"


@pytest.mark.parametrize(
    ("topic", "obj", "code", "name"),
    [
        ("sas/gy/server", {"rly": RELAY, "typ": "exp", "pyd": "11"}, "11", "Slot door opened"),
        ("sas/gy/server", {"rly": RELAY, "typ": "exp", "pyd": "1a"}, "1A", "Cashbox door closed"),
        ("sas/gy/server", {"rly": RELAY, "typ": "exp", "pyd": 51}, "51", "Handpay pending"),
        ("sas/gli/server/" + RELAY, {"typ": "exp", "pyd": "7E"}, "7E", "Game started"),
        ("sas/server", {"rly": RELAY, "typ": "exp", "pyd": " ee "}, "EE", "Exception EE"),
    ],
)
def test_event(topic: str, obj: dict[str, Any], code: str, name: str) -> None:
    msg = _parse(obj, topic)
    assert msg == p.EventMessage(RELAY, "exp", topic, code=code, name=name, extra={})


def test_event_keeps_mac_and_tkn_only() -> None:
    msg = _parse({"rly": RELAY, "typ": "exp", "pyd": "3D", "mac": "m", "tkn": "t", "x": 1})
    assert isinstance(msg, p.EventMessage) and dict(msg.extra) == {"mac": "m", "tkn": "t"}


@pytest.mark.parametrize("pyd", [None, "", "  ", [], {}, 1.5])
def test_event_with_bad_code(pyd: object) -> None:
    msg = _parse({"rly": RELAY, "typ": "exp", "pyd": pyd})
    assert isinstance(msg, p.Rejection) and msg.reason == "bad_field"


def test_gli_topic_names_the_relay_only_when_rly_is_missing() -> None:
    topic = "sas/gli/server/" + RELAY
    msg = _parse({"typ": "srsp", "pyd": "E10101"}, topic)
    assert isinstance(msg, p.NvsReply) and msg.relay == RELAY
    other = "98f4ab0b1e30"
    msg = _parse({"rly": other, "typ": "srsp", "pyd": "E10101"}, topic)
    assert isinstance(msg, p.NvsReply) and msg.relay == other
    msg = _parse({"rly": "bad", "typ": "srsp", "pyd": "E10101"}, topic)
    assert isinstance(msg, p.Rejection) and msg.reason == "bad_relay"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not_json"),
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_utf8"),
        (b"[1,2]", "not_object"),
        (b'"text"', "not_object"),
        (b"null", "not_object"),
        (b"[" * 100_000, "not_json"),
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "not_json"),
        (b"{" + b" " * p.MAX_PAYLOAD_BYTES + b"}", "oversize"),
        (_json({"typ": "cfg", "comp": "net"}), "bad_relay"),
        (_json({"rly": "+", "typ": "cfg", "comp": "net"}), "bad_relay"),
        (_json({"rly": "#", "typ": "cfg", "comp": "net"}), "bad_relay"),
        (_json({"rly": RELAY + "/x", "typ": "cfg", "comp": "net"}), "bad_relay"),
        (_json({"rly": 1234, "typ": "cfg", "comp": "net"}), "bad_relay"),
        (_json({"rly": RELAY}), "missing_typ"),
        (_json({"rly": RELAY, "typ": None}), "missing_typ"),
        (_json({"rly": RELAY, "typ": ["cfg"]}), "missing_typ"),
        (_json({"rly": RELAY, "typ": "hello"}), "unknown_typ"),
        (_json({"rly": RELAY, "typ": "CFG", "comp": "net"}), "unknown_typ"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_rejections(payload: bytes, reason: str) -> None:
    msg = p.parse_device_message("sas/gy/server", payload, TOPICS)
    assert isinstance(msg, p.Rejection)
    assert msg.reason == reason and msg.detail and msg.topic == "sas/gy/server"


def test_payload_of_exactly_the_limit_is_parsed() -> None:
    head = _json({"rly": RELAY, "typ": "srsp", "pyd": "E10101"})
    payload = head[:-1] + b" " * (p.MAX_PAYLOAD_BYTES - len(head)) + b"}"
    assert len(payload) == p.MAX_PAYLOAD_BYTES
    assert isinstance(p.parse_device_message("sas/gy/server", payload, TOPICS), p.NvsReply)


def test_rejection_on_a_gli_topic_names_the_relay() -> None:
    msg = p.parse_device_message("sas/gli/server/" + RELAY, b"garbage", TOPICS)
    assert isinstance(msg, p.Rejection) and msg.reason == "not_json" and msg.relay == RELAY


# --- fuzz: parsing never raises -----------------------------------------------------------

_KEYS = ["rly", "typ", "comp", "pyd", "sta", "siz", "mac", "tkn", "cmd", "firmware", "x"]
_TYPS = ["cfg", "rsp", "srsp", "exp", "cmd", "sun", "rst", "ota_ud", "", "CFG", "?"]
_RELAYS = [
    RELAY,
    RELAY.upper(),
    " " + RELAY,
    "#",
    "+",
    "/",
    RELAY + "#",
    "sas/+/x",
    "\x00" * 12,
    "e831cdfa838",
    "e831cdfa83845",
    "",
    "e831 cdfa8384",
]
_TOPICS = [
    "sas/gy/server",
    "smib/config",
    "sas/server",
    "sas/gli/server",
    "sas/gli/server/" + RELAY,
    "sas/gli/server/#",
    "sas/gli/server/+",
    "sas/gli/server/a/b",
    "",
    "#",
    "x" * 300,
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randrange(-(2**70), 2**70)
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e308, float("nan"), float("inf")])
    if kind == 4:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(20)))
    if kind == 5:
        return "".join(chr(rng.randrange(0x10FFFF)) for _ in range(rng.randrange(8)))
    if kind == 6:
        return rng.choice(_RELAYS + _TYPS + list(p.COMPONENTS) + ["-1", "E10101", "E10100"])
    if kind in (7, 8):
        frame = bytearray.fromhex(VALID_HEX)
        for _ in range(rng.randrange(3)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        text = frame.hex()
        return text[: rng.randrange(len(text) + 1)] if rng.random() < 0.3 else text
    if kind == 9:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _payload(rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1:
        return json.dumps(_value(rng)).encode()
    if kind == 2:
        return b"{" + b" " * (p.MAX_PAYLOAD_BYTES + rng.randrange(1, 100)) + b"}"
    if kind == 3:
        good = json.dumps({"rly": RELAY, "typ": "rsp", "pyd": VALID_HEX}).encode()
        cut = rng.randrange(len(good))
        return good[:cut] + bytes([rng.randrange(256)]) + good[cut + 1 :]
    obj: dict[str, Any] = {"rly": rng.choice([*_RELAYS, RELAY, RELAY, None, 5, [RELAY]])}
    obj["typ"] = rng.choice([*_TYPS, None, 1, ["rsp"], {"t": 1}])
    for _ in range(rng.randrange(5)):
        obj[rng.choice(_KEYS)] = _value(rng)
    if rng.random() < 0.5:  # well-formed enough to reach the per-typ branches
        obj["comp"] = rng.choice(list(p.COMPONENTS))
        obj["pyd"] = rng.choice([*sas.EVENT_CODES, 17, "E10101", VALID_HEX, "-1"])
    if rng.random() < 0.2:
        obj.pop("rly")
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def test_fuzz_parse_device_message_never_raises() -> None:
    rng = random.Random(20240611)
    kinds: dict[str, int] = {}
    for _ in range(3000):
        topic = rng.choice(_TOPICS)
        msg = p.parse_device_message(topic, _payload(rng), TOPICS)
        kinds[type(msg).__name__] = kinds.get(type(msg).__name__, 0) + 1
        assert isinstance(
            msg, p.ConfigReply | p.MeterReply | p.NvsReply | p.EventMessage | p.Rejection
        )
        if isinstance(msg, p.Rejection):
            assert isinstance(msg.reason, str) and msg.reason
            assert msg.relay is None or p.is_relay_id(msg.relay)
        else:
            assert p.normalize_relay_id(msg.relay) == msg.relay  # no '#', '+', '/' ever
        if isinstance(msg, p.MeterReply):
            assert (msg.reading is None) != (msg.failure is None)
    # The generator reaches every outcome, so the fuzz exercises each branch.
    assert set(kinds) == {"ConfigReply", "MeterReply", "NvsReply", "EventMessage", "Rejection"}


def test_fields_not_on_the_known_list_are_masked_when_their_name_looks_secret() -> None:
    reported = {"netApPass": SECRET, "apiKey": SECRET, "authToken": SECRET, "netApSSID": "ap"}
    masked = p.mask_secrets(reported)
    assert masked == {
        "netApPass": "••••••",
        "apiKey": "••••••",
        "authToken": "••••••",
        "netApSSID": "ap",
    }
    assert p.mask_secrets({"otaURL": f"http://fw:{SECRET}@h/firmwares/"}) == {
        "otaURL": "http://fw:••••••@h/firmwares/"
    }


def test_a_rollouts_ota_token_is_masked_wherever_a_url_is_shown() -> None:
    token = "5f0c2a9be1d34c7781a0b2c3d4e5f601"
    url = f"http://fw:8808/firmwares/e831cdfa8384/{token}/"
    assert p.mask_ota_token(url) == "http://fw:8808/firmwares/e831cdfa8384/••••••/"
    assert p.mask_ota_token(url + "cloudy_v2.bin").endswith("/••••••/cloudy_v2.bin")
    assert p.mask_ota_token("http://fw:8808/firmwares/") == "http://fw:8808/firmwares/"
    masked = p.set_ota_url(url).masked()
    assert token not in str(masked) and masked["otaURL"].endswith("/e831cdfa8384/••••••/")
    shown = p.mask_secrets({"otaURL": f"http://u:s3cr3t@fw/firmwares/e831cdfa8384/{token}/"})
    assert token not in str(shown) and "s3cr3t" not in str(shown)
