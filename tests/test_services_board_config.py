"""One board's configuration: cards, the seed's form mapping, the diff, the checked write,
the history, and the maintenance actions (restart, NVS, meter reset)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from smib_core import protocol
from smib_core.auth import Principal, Role
from smib_core.errors import InvalidInput, PermissionDenied, RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage, NvsReply
from smib_core.services import board_maintenance as care
from smib_core.services.actions import BoardActions
from smib_core.services.board_config import (
    NOT_ANSWERED,
    await_config,
    config_cards,
    config_history,
    request_live_config,
    worth_asking,
    write_and_confirm,
)
from smib_core.services.config_forms import (
    FieldChange,
    MqttUri,
    diff,
    diff_table,
    edited_fields,
    form_values,
    join_uri,
    prepare_change,
    shown,
    split_uri,
)
from smib_core.services.readback import ReadBackTimings, await_back
from smib_core.store.audit import AuditTrail, mask_detail

RELAY = "e831cdfa8384"
TECH = Principal("tina", Role.TECHNICIAN)
MANAGER = Principal("max", Role.MANAGER)
URI = "mqtt://dev:s3cret-pw@broker.casino:1883"


def board_config() -> dict[str, dict[str, Any]]:
    return {
        "net": {"netMode": 1, "netStaSSID": "floor", "netStaPwd": "wifi-pass-1", "netStaChan": 6},
        "mqtt": {
            "mqttSecure": 0,
            "mqttQOS": 0,
            "mqttURI": URI,
            "mqttSubTopic": "sas/relay/",
            "mqttPubTopic": "sas/gy/server",
            "mqttCfgTopic": "smib/config",
            "mqttIdleTimeS": 60,
        },
        "coms": {"comsMode": 0, "comsAddr": 1, "comsRateMs": 200, "comsRTE": 1, "comsGPC": 0},
    }


@dataclass
class FakeBoardBus:
    """A board behind a bus: applies config writes (unless `stubborn`), answers reads
    (unless `silent`), answers NVS clears with `nvs_ok`."""

    config: dict[str, dict[str, Any]] = field(default_factory=board_config)
    published: list[dict[str, Any]] = field(default_factory=list)
    stubborn: bool = False
    silent: bool = False
    nvs_ok: bool = True
    hides_secrets: bool = False  # reads leave the WiFi password out, as some firmware does

    def send(self, relay: str, command: Command) -> None:
        payload = dict(command.payload)
        self.published.append(payload)
        if command.kind == "config_write" and not self.stubborn:
            fields = {k: v for k, v in payload.items() if k not in ("typ", "comp")}
            self.config[payload["comp"]].update(fields)

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        self.send(relay, command)
        if self.silent:
            raise RequestTimeout(f"board {relay} did not answer within {timeout:.1f} s")
        if command.kind.startswith("nvs_clear"):
            return NvsReply(
                relay, "srsp", "sas/gy/server", "E10101" if self.nvs_ok else "E10100", self.nvs_ok
            )
        comp = command.reply_comp
        fields = dict(self.config[comp])
        if self.hides_secrets:
            fields.pop("netStaPwd", None)
        return ConfigReply(relay, "cfg", "smib/config", comp, fields)


class FakeAudit:
    """The audit trail's write side, masked like the real one."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count()  # reads may be recorded from several threads at once

    def record(self, actor: str, kind: str, relays: Any, detail: Any, outcome: str) -> str:
        record_id = str(next(self._ids))
        self.records[record_id] = {
            "actor": actor,
            "kind": kind,
            "relays": list(relays),
            "detail": mask_detail(detail),
            "outcome": outcome,
        }
        return record_id

    def update_outcome(self, record_id: str, outcome: str, extra: Any = None) -> None:
        self.records[record_id].update(outcome=outcome, result=mask_detail(extra or {}))

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.records.values()]


def gateway(
    who: Principal = TECH, **bus_options: Any
) -> tuple[BoardActions, FakeBoardBus, FakeAudit]:
    bus, audit = FakeBoardBus(**bus_options), FakeAudit()
    return BoardActions(bus, audit, who), bus, audit  # type: ignore[arg-type]


# --- live cards ----------------------------------------------------------------------


def test_request_live_config_sends_one_read_per_component() -> None:
    actions, bus, audit = gateway(MANAGER)
    assert request_live_config(actions, RELAY) == ["net", "mqtt", "coms", "ota", "app"]
    assert sorted(p["comp"] for p in bus.published) == ["app", "coms", "mqtt", "net", "ota"]
    assert all(p == {"typ": "cfg", "comp": p["comp"]} for p in bus.published)
    assert audit.kinds() == ["config_read"] * 5
    outcomes = {r["detail"]["command"]["comp"]: r["outcome"] for r in audit.records.values()}
    assert outcomes == {"net": "confirmed", "mqtt": "confirmed", "coms": "confirmed"} | {
        "ota": "failed",  # this fake board knows no ota nor app component
        "app": "failed",
    }, "each read settles"
    silent, _, silent_audit = gateway(MANAGER, silent=True)
    assert request_live_config(silent, RELAY, timeout=0.1) == ["net", "mqtt", "coms", "ota", "app"]
    assert {r["outcome"] for r in silent_audit.records.values()} == {"timed_out"}


def test_cards_mask_secrets_explain_codes_and_say_who_has_not_answered() -> None:
    config = board_config()
    latest = {
        "net": (config["net"], 100.0),
        "mqtt": (config["mqtt"], 40.0),
        "coms": (config["coms"], 100.0),
    }
    cards = config_cards(latest, now=112.0)
    net = cards["net"]
    assert net.answered and net.age == "12 s ago"
    values = dict(zip(net.fields["field"], net.fields["value"], strict=True))
    assert values["WiFi channel"] == "6"
    assert values["WiFi password"] == "••••••"
    assert values["Network mode"] == "1 (WiFi client)"
    assert set(net.fields["heard"]) == {"12 s ago"}
    mqtt = dict(zip(cards["mqtt"].fields["field"], cards["mqtt"].fields["value"], strict=True))
    assert mqtt["Broker URI"] == "mqtt://dev:••••••@broker.casino:1883"
    assert cards["mqtt"].age == "1 min ago"
    coms = dict(zip(cards["coms"].fields["field"], cards["coms"].fields["value"], strict=True))
    assert coms["Comms mode"] == "0 (SAS)"
    for comp in ("ota", "app"):
        assert not cards[comp].answered
        assert cards[comp].age == NOT_ANSWERED
        assert cards[comp].fields.empty
    everything = " ".join(" ".join(c.fields["value"]) for c in cards.values())
    assert "wifi-pass-1" not in everything and "s3cret-pw" not in everything


def test_await_config_returns_what_was_heard_after_the_request() -> None:
    class Bus:
        def latest_config(self, relay: str) -> dict[str, Any]:
            return {"net": ({}, 10.0), "app": ({}, 3.0)}

    clock = iter(float(t) for t in range(100))
    heard = await_config(
        Bus(),
        RELAY,
        ["net", "app"],
        since=5.0,
        timeout=3.0,
        sleep=lambda _: None,
        clock=lambda: next(clock),
    )
    assert heard == {"net"}


def test_a_page_asks_on_opening_and_again_only_when_what_it_heard_is_stale() -> None:
    fresh = {comp: ({}, 990.0) for comp in ("net", "mqtt", "coms", "ota", "app")}
    assert worth_asking(fresh, now=1000.0, last_asked=None)
    assert not worth_asking({}, now=1000.0, last_asked=980.0)  # asked 20 s ago: wait
    assert not worth_asking(fresh, now=1000.0, last_asked=900.0)  # all heard recently
    assert worth_asking({**fresh, "ota": ({}, 900.0)}, now=1000.0, last_asked=900.0)
    assert worth_asking({"net": ({}, 990.0)}, now=1000.0, last_asked=900.0)


# --- the seed's form mapping ---------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        (URI, MqttUri("mqtt", "broker.casino", 1883, "dev", "s3cret-pw")),
        ("mqtts://10.0.0.5:8883", MqttUri("mqtts", "10.0.0.5", 8883)),
        ("mqtt://u:p/w@d#x@h:1", MqttUri("mqtt", "h", 1, "u", "p/w@d#x")),
        ("mqtt://broker", MqttUri("mqtt", "broker", None)),
        ("mqtt://[::1]:1883/", MqttUri("mqtt", "[::1]", 1883)),
    ],
)
def test_split_uri(uri: str, parts: MqttUri) -> None:
    assert split_uri(uri) == parts


def test_join_uri_round_trips_and_refuses_what_cannot_be_a_uri() -> None:
    assert join_uri(split_uri(URI)) == URI
    assert join_uri(MqttUri("mqtt", "h", 1883, "user")) == "mqtt://user@h:1883"
    assert join_uri(MqttUri("mqtt", "h", 1883, "", "ignored")) == "mqtt://h:1883"
    with pytest.raises(InvalidInput, match=r"MQTT port must be a whole number 1\.\.65535"):
        join_uri(MqttUri("mqtt", "h", 70000))
    with pytest.raises(InvalidInput, match="MQTT host"):
        join_uri(MqttUri("mqtt", "evil/#", 1883))
    with pytest.raises(InvalidInput, match="MQTT username"):
        join_uri(MqttUri("mqtt", "h", 1883, "a:b"))


def test_forms_never_show_a_current_password() -> None:
    config = board_config()
    net = form_values("net", config["net"])
    assert net["netStaPwd"] == "" and net["netStaChan"] == 6
    mqtt = form_values("mqtt", config["mqtt"])
    assert "mqttURI" not in mqtt
    assert (mqtt["mqttHost"], mqtt["mqttPort"], mqtt["mqttUsername"], mqtt["mqttPassword"]) == (
        "broker.casino",
        1883,
        "dev",
        "",
    )
    assert "s3cret-pw" not in repr(mqtt) and "wifi-pass-1" not in repr(net)


def test_a_blank_password_keeps_the_current_one() -> None:
    config = board_config()
    mqtt_form = {**form_values("mqtt", config["mqtt"]), "mqttPort": 8883}
    changes = prepare_change("mqtt", mqtt_form, config["mqtt"])
    assert [(c.field, c.after) for c in changes] == [
        ("mqttURI", "mqtt://dev:s3cret-pw@broker.casino:8883")
    ]
    net_form = {**form_values("net", config["net"]), "netStaChan": 11}
    assert [(c.field, c.after) for c in prepare_change("net", net_form, config["net"])] == [
        ("netStaChan", 11)
    ]


def test_a_new_password_is_written_but_shown_masked() -> None:
    config = board_config()
    form = {**form_values("mqtt", config["mqtt"]), "mqttPassword": "n3w-pw"}
    (change,) = prepare_change("mqtt", form, config["mqtt"])
    assert change.after == "mqtt://dev:n3w-pw@broker.casino:1883"
    table = diff_table("mqtt", [change])
    assert table.to_dict("records") == [
        {
            "field": "Broker URI (mqttURI)",
            "before": "mqtt://dev:••••••@broker.casino:1883",
            "after": "mqtt://dev:••••••@broker.casino:1883 (changed)",
        }
    ]
    wifi = prepare_change(
        "net", {**form_values("net", config["net"]), "netStaPwd": "new-wifi-9"}, config["net"]
    )
    assert diff_table("net", wifi)["after"].tolist() == ["•••••• (changed)"]
    assert "n3w-pw" not in table.to_string() and "new-wifi-9" not in repr(diff_table("net", wifi))


def test_numbers_a_board_sends_as_text_fill_number_inputs() -> None:
    values = form_values("coms", {"comsAddr": "7", "comsRateMs": 200, "comsGPC": "x"})
    assert (values["comsAddr"], values["comsRateMs"], values["comsGPC"]) == (7, 200, "x")
    assert values["comsMode"] is None


def test_diff_keeps_only_changed_fields_compared_as_text() -> None:
    current = {"comsAddr": "1", "comsRateMs": 200, "comsGPC": None}
    edited = {"comsAddr": 1, "comsRateMs": 500, "comsGPC": ""}
    assert diff(current, edited) == [FieldChange("comsRateMs", 200, 500)]
    assert prepare_change("coms", dict(board_config()["coms"]), board_config()["coms"]) == []


@pytest.mark.parametrize(
    ("comp", "form_change", "sentence"),
    [
        ("net", {"netStaChan": 15}, r"WiFi channel \(netStaChan\) must be 1\.\.14"),
        ("mqtt", {"mqttPort": 70000}, r"MQTT port must be a whole number 1\.\.65535"),
        ("mqtt", {"mqttIdleTimeS": -1}, r"Idle timeout \(s\) \(mqttIdleTimeS\) must be 0"),
        ("mqtt", {"mqttPubTopic": "sas/#"}, "mqttPubTopic must be a topic name"),
        ("coms", {"comsAddr": 0}, r"SAS address \(comsAddr\) must be 1\.\.127"),
        ("net", {"netStaPwd": "short"}, "the WiFi password must be empty or 8..63"),
    ],
)
def test_invalid_values_are_refused_with_the_protocols_sentence(
    comp: str, form_change: dict[str, Any], sentence: str
) -> None:
    config = board_config()[comp]
    with pytest.raises(InvalidInput, match=sentence):
        prepare_change(comp, {**form_values(comp, config), **form_change}, config)


# --- write, read back ----------------------------------------------------------------


def test_a_confirmed_change_is_one_partial_write_then_a_read_back() -> None:
    actions, bus, audit = gateway()
    changes = [FieldChange("netStaChan", 6, 11)]
    result = write_and_confirm(actions, RELAY, "net", changes, timeout=1)
    assert result.outcome == "confirmed"
    assert "Confirmed" in result.message and "WiFi channel" in result.message
    assert bus.published == [
        {"typ": "cfg", "comp": "net", "netStaChan": 11},
        {"typ": "cfg", "comp": "net"},
    ]
    write = audit.records[result.audit_id]
    assert write["kind"] == "config_write" and write["outcome"] == "confirmed"
    assert write["detail"]["before"] == {"netStaChan": "6"}
    assert write["detail"]["after"] == {"netStaChan": "11"}
    assert result.table()["confirmed"].tolist() == [True]


def test_a_board_that_keeps_its_old_value_is_not_confirmed() -> None:
    actions, _, audit = gateway(stubborn=True)
    result = write_and_confirm(actions, RELAY, "coms", [FieldChange("comsAddr", 1, 9)], 1)
    assert result.outcome == "not_confirmed"
    assert "SAS address (comsAddr)" in result.message
    assert result.checks[0].reported == "1"
    assert audit.records[result.audit_id]["outcome"] == "not_confirmed"


def test_a_silent_board_times_out_and_the_write_says_so() -> None:
    actions, bus, audit = gateway(silent=True)
    result = write_and_confirm(actions, RELAY, "net", [FieldChange("netStaChan", 6, 1)], 0.2)
    assert result.outcome == "timed_out"
    assert "no answer from the board" in result.message
    assert audit.records[result.audit_id]["outcome"] == "timed_out"
    assert bus.published[0] == {"typ": "cfg", "comp": "net", "netStaChan": 1}


def test_secrets_in_a_write_are_masked_in_the_audit_record() -> None:
    actions, bus, audit = gateway()
    changes = [
        FieldChange("netStaPwd", "wifi-pass-1", "wifi-pass-2"),
        FieldChange("mqttURI", URI, "mqtt://dev:other-pw@broker.casino:1883"),
    ]
    write_and_confirm(actions, RELAY, "net", changes[:1], 1)
    write_and_confirm(actions, RELAY, "mqtt", changes[1:], 1)
    stored = json.dumps(audit.records, ensure_ascii=False)
    for secret in ("wifi-pass-1", "wifi-pass-2", "s3cret-pw", "other-pw"):
        assert secret not in stored
    assert bus.config["net"]["netStaPwd"] == "wifi-pass-2"


def test_a_board_that_hides_its_password_still_confirms_the_write() -> None:
    actions, _bus, audit = gateway(hides_secrets=True)
    changes = [
        FieldChange("netStaChan", 6, 11),
        FieldChange("netStaPwd", "wifi-pass-1", "pass-2-ok"),
    ]
    result = write_and_confirm(actions, RELAY, "net", changes, 1)
    assert result.outcome == "confirmed", result.message
    assert [c.confirmed for c in result.checks] == [True, True]
    assert audit.records[result.audit_id]["outcome"] == "confirmed"
    # The channel is still compared: a board that kept the old one is not confirmed.
    actions, _bus, audit = gateway(hides_secrets=True, stubborn=True)
    assert write_and_confirm(actions, RELAY, "net", changes, 0.5).outcome == "not_confirmed"


def test_invalid_or_unpermitted_writes_publish_nothing() -> None:
    actions, bus, _ = gateway()
    with pytest.raises(InvalidInput):
        write_and_confirm(actions, RELAY, "net", [FieldChange("netStaChan", 6, 99)], 1)
    manager_actions, manager_bus, audit = gateway(MANAGER)
    with pytest.raises(PermissionDenied):
        write_and_confirm(manager_actions, RELAY, "net", [FieldChange("netStaChan", 6, 1)], 1)
    assert bus.published == [] and manager_bus.published == []
    assert [r["outcome"] for r in audit.records.values()] == ["refused"]


@pytest.mark.integration
def test_history_lists_each_changed_field_masked(mongo_db: Any) -> None:
    bus, audit = FakeBoardBus(), AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, TECH)
    write_and_confirm(
        actions,
        RELAY,
        "net",
        [FieldChange("netStaChan", 6, 11), FieldChange("netStaPwd", "wifi-pass-1", "wifi-pass-2")],
        1,
    )
    actions.send_command([RELAY], protocol.config_write("coms", {"comsAddr": 3}))  # the CLI way
    write_and_confirm(actions, "a0b1c2d3e4f5", "net", [FieldChange("netStaChan", 1, 6)], 1)
    history = config_history(audit, RELAY)
    rows = history[["who", "component", "field", "before", "after", "outcome"]]
    assert rows.to_dict("records") == [
        {
            "who": "tina",
            "component": "coms",
            "field": "SAS address (comsAddr)",
            "before": "–",
            "after": "3",
            "outcome": "sent",
        },
        {
            "who": "tina",
            "component": "net",
            "field": "WiFi channel (netStaChan)",
            "before": "6",
            "after": "11",
            "outcome": "confirmed",
        },
        {
            "who": "tina",
            "component": "net",
            "field": "WiFi password (netStaPwd)",
            "before": "••••••",
            "after": "••••••",
            "outcome": "confirmed",
        },
    ]
    assert history["when"].is_monotonic_decreasing
    assert config_history(audit, "0123456789ab").empty


# --- maintenance ---------------------------------------------------------------------


def test_meter_reset_is_refused_on_sas_boards_and_unknown_modes() -> None:
    actions, bus, audit = gateway()
    with pytest.raises(InvalidInput, match="SAS board"):
        care.reset_meters(actions, RELAY, {"coms": ({"comsMode": 0}, 1.0)})
    with pytest.raises(InvalidInput, match="has not reported its comms mode"):
        care.reset_meters(actions, RELAY, {})
    assert bus.published == []
    care.reset_meters(actions, RELAY, {"coms": ({"comsMode": 1}, 1.0)})
    assert bus.published == [{"typ": "cmd", "cmd": "met_reset"}]
    [reset] = [r for r in audit.records.values() if r["kind"] == "meter_reset"]
    assert reset["outcome"] == "not_confirmed" and "no reply to met_reset" in str(reset["result"])


def test_nvs_clears_report_the_boards_answer() -> None:
    actions, bus, _ = gateway()
    done = care.clear_nvs(actions, RELAY, "door", timeout=1)
    assert done.ok and done.message == "The board cleared its door records."
    assert bus.published[-1]["pyd"] == "E101040C81"
    refused, _, _ = gateway(nvs_ok=False)
    assert not care.clear_nvs(refused, RELAY, "all", timeout=1).ok
    silent, _, _ = gateway(silent=True)
    assert "not confirmed" in care.clear_nvs(silent, RELAY, "meters", timeout=0.1).message
    assert set(care.NVS_CLEARS) == set(protocol.sas.NvsClear)


def test_a_restart_is_confirmed_when_the_board_answers_again() -> None:
    now = [100.0]
    asked: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    for silent, outcome in ((False, "confirmed"), (True, "timed_out")):
        actions, bus, audit = gateway(silent=silent)
        bus.config["app"] = {"firmware": "cloudy", "version": "v1.0.0"}
        sent = care.restart(actions, RELAY)
        back = await_back(
            actions, RELAY, 100.0, 10, ReadBackTimings(grace_s=2), clock=lambda: now[0], sleep=sleep
        )
        care.settle_restart(actions, sent, back)
        asked.append(now[0])
        assert back.confirmed is (not silent)
        assert audit.records[sent.audit_id]["outcome"] == outcome
        assert bus.published[1:2] == [{"typ": "cfg", "comp": "app"}], "asked after the grace"
        now[0] = 100.0
    assert asked[0] == 102.0 and asked[1] >= 110.0


def test_restart_and_its_countdown() -> None:
    actions, bus, _ = gateway()
    assert care.restart(actions, RELAY).sent == (RELAY,)
    assert bus.published == [{"typ": "rst"}]
    assert care.countdown(100.0, 100.0) == 15.0
    assert care.countdown(100.0, 110.5) == 4.5
    assert care.countdown(100.0, 200.0) == 0.0
    with pytest.raises(PermissionDenied):
        care.restart(gateway(MANAGER)[0], RELAY)


def test_the_ota_url_form_never_shows_its_password_and_keeps_it_when_unchanged() -> None:
    current = {"otaURL": "http://fw:hunter2-secret@10.0.0.5:8808/firmwares/"}
    values = form_values("ota", current)
    assert values["otaURL"] == "http://fw:••••••@10.0.0.5:8808/firmwares/"
    assert edited_fields("ota", values, current) == current  # nothing typed: kept as is
    typed = {"otaURL": "http://10.0.0.6:8808/firmwares/"}
    assert edited_fields("ota", typed, current) == typed
    assert shown("netApPass", "ap-secret") == "••••••"


def test_a_card_masks_a_secret_field_the_protocol_does_not_know() -> None:
    latest = {"net": ({"netApSSID": "smib-ap", "netApPass": "ap-secret-123"}, 100.0)}
    frame = config_cards(latest, now=101.0, comps=["net"])["net"].fields
    assert dict(zip(frame["field"], frame["value"], strict=True)) == {
        "netApSSID": "smib-ap",
        "netApPass": "••••••",
    }


def test_a_rollouts_ota_token_never_reaches_the_form_and_an_untouched_url_is_kept() -> None:
    url = "http://10.0.0.5:8808/firmwares/e831cdfa8384/5f0c2a9be1d34c7781a0b2c3d4e5f601/"
    values = form_values("ota", {"otaURL": url})
    assert values["otaURL"] == "http://10.0.0.5:8808/firmwares/e831cdfa8384/••••••/"
    assert prepare_change("ota", values, {"otaURL": url}) == []  # left as shown: unchanged
    other = "http://10.0.0.5:8808/firmwares/"
    [change] = prepare_change("ota", {"otaURL": other}, {"otaURL": url})
    assert change.after == other and "5f0c2a9b" not in change.shown_before()
