"""Routing of device messages without a broker: counting, waiting replies, listeners."""

from __future__ import annotations

import ast
import importlib
import json
import threading
from pathlib import Path

import pytest

from smib_core import sas
from smib_core.errors import BusError
from smib_core.protocol import (
    ConfigReply,
    DeviceMessage,
    EventMessage,
    MeterReply,
    Rejection,
    Topics,
)
from smib_core.routing import Router

R1, R2 = "e831cdfa8384", "e831cdfa8385"
TOPICS = Topics()


def payload(**obj: object) -> bytes:
    return json.dumps(obj).encode()


def meter_reply_hex() -> str:
    meters = [sas.Meter("0000", 5, 1234), sas.Meter("0005", 4, 42)]
    return sas.encode_meter_reply(meters).hex().upper()


def test_a_config_reply_is_routed_and_remembered() -> None:
    router = Router(TOPICS)
    parsed = router.handle_payload(
        TOPICS.cfg,
        payload(rly=R1.upper(), typ="cfg", comp="app", firmware="cloudy", version="v0.0.1"),
    )
    assert isinstance(parsed, ConfigReply) and parsed.relay == R1
    [entry] = router.relays.inbox(R1)
    assert entry.message == parsed and entry.seq == 1
    assert router.relays.latest_config(R1)["app"][0] == {"firmware": "cloudy", "version": "v0.0.1"}
    stats = router.stats(connected=False, broker="b", reconnects=0)
    assert stats.messages_in == 1 and stats.rejections == {} and stats.relays_known == 1
    assert stats.last_message_at == entry.at


def test_a_rejection_naming_a_relay_still_proves_it_alive() -> None:
    router = Router(TOPICS)
    parsed = router.handle_payload(TOPICS.sub, payload(rly=R1, typ="hello"))
    assert isinstance(parsed, Rejection) and parsed.reason == "unknown_typ"
    assert router.relays.last_seen(R1) is not None
    assert router.relays.inbox(R1) == []
    stats = router.stats(connected=False, broker="b", reconnects=0)
    assert stats.rejections == {"unknown_typ": 1}
    [recent] = stats.recent_rejections
    assert (recent.reason, recent.topic) == ("unknown_typ", TOPICS.sub)


def test_a_meter_reply_that_failed_a_check_is_routed_and_counted() -> None:
    router = Router(TOPICS)
    bad_crc = meter_reply_hex()[:-4] + "0000"
    parsed = router.handle_payload(TOPICS.sub, payload(rly=R1, typ="rsp", sta="", pyd=bad_crc))
    assert isinstance(parsed, MeterReply) and parsed.failure_check == "crc"
    assert len(router.relays.inbox(R1)) == 1
    assert router.stats(connected=False, broker="b", reconnects=0).rejections == {"meter_crc": 1}


def test_a_reply_resolves_only_the_request_waiting_for_its_relay_typ_and_comp() -> None:
    router = Router(TOPICS)
    with router.expect(R1, "cfg", "net") as net, router.expect(R1, "rsp") as meters:
        router.handle_payload(TOPICS.cfg, payload(rly=R2, typ="cfg", comp="net", netMode=1))
        router.handle_payload(TOPICS.cfg, payload(rly=R1, typ="cfg", comp="mqtt", mqttQOS=0))
        assert net.wait(0) is None and meters.wait(0) is None
        router.handle_payload(TOPICS.cfg, payload(rly=R1, typ="cfg", comp="net", netMode=1))
        reply = net.wait(0)
        assert isinstance(reply, ConfigReply) and (reply.relay, reply.comp) == (R1, "net")
        assert meters.wait(0) is None
        assert router.stats(connected=True, broker="b", reconnects=0).pending_requests == 1
    assert router.stats(connected=True, broker="b", reconnects=0).pending_requests == 0


def test_requests_waiting_for_the_same_reply_all_get_it() -> None:
    router = Router(TOPICS)
    with router.expect(R1, "rsp") as first, router.expect(R1, "rsp") as second:
        router.handle_payload(TOPICS.sub, payload(rly=R1, typ="rsp", sta="", pyd="-1"))
        one, two = first.wait(0), second.wait(0)
    assert one is two and isinstance(one, MeterReply) and one.failure_check == "device_error"


def meter_payload(coin_in: int) -> bytes:
    frame = sas.encode_meter_reply([sas.Meter("0000", 5, coin_in)]).hex().upper()
    return payload(rly=R1, typ="rsp", sta="", pyd=frame)


def test_a_reply_routed_before_the_request_was_published_is_not_its_answer() -> None:
    router = Router(TOPICS)
    with router.expect(R1, "rsp", armed=False) as pending:
        router.handle_payload(TOPICS.sub, meter_payload(100))  # an old reply, late
        assert pending.wait(0) is None
        assert router.stats(connected=True, broker="b", reconnects=0).pending_requests == 1
        router.arm(pending)
        router.handle_payload(TOPICS.sub, meter_payload(150))
        reply = pending.wait(0)
    assert isinstance(reply, MeterReply) and reply.reading is not None
    assert reply.reading.values()["0000"] == 150
    assert len(router.relays.inbox(R1)) == 2  # both still routed and shown


def test_a_reply_after_the_timeout_is_late_only_while_no_newer_request_is_out() -> None:
    router = Router(TOPICS)
    late: list[object] = []
    router.add_late_listener(late.append)
    with router.expect(R1, "rsp", late_s=30) as first:
        assert first.wait(0) is None  # timed out
    router.handle_payload(TOPICS.sub, meter_payload(100))
    [one] = late
    assert one.message.reading.values()["0000"] == 100  # type: ignore[attr-defined]
    assert one.published_at <= one.arrived_at  # type: ignore[attr-defined]
    router.handle_payload(TOPICS.sub, meter_payload(100))  # a duplicate: not late again
    assert len(late) == 1
    with router.expect(R1, "rsp", late_s=30) as second:
        assert second.wait(0) is None
    with router.expect(R1, "rsp", armed=False) as third:
        router.arm(third)  # a newer request is out: the second one's reply is not wanted
        router.handle_payload(TOPICS.sub, meter_payload(120))
        assert third.wait(0) is not None
    assert len(late) == 1
    with router.expect(R1, "rsp", late_s=0.01) as fourth:
        assert fourth.wait(0) is None
    threading.Event().wait(0.05)
    router.handle_payload(TOPICS.sub, meter_payload(130))  # after late_s: nobody's reply
    assert len(late) == 1


def test_close_fails_waiting_requests_and_refuses_new_ones() -> None:
    router = Router(TOPICS)
    results: list[BaseException] = []

    def wait() -> None:
        with router.expect(R1, "cfg", "net") as pending:
            started.set()
            try:
                pending.wait(10)
            except BusError as exc:
                results.append(exc)

    started = threading.Event()
    waiter = threading.Thread(target=wait)
    waiter.start()
    assert started.wait(5)
    router.close(BusError("the device bus was stopped"))
    waiter.join(5)
    assert [str(e) for e in results] == ["the device bus was stopped"]
    with pytest.raises(BusError), router.expect(R1, "cfg", "net"):
        pass


def test_listeners_are_called_and_their_errors_counted() -> None:
    router = Router(TOPICS)
    heard: list[DeviceMessage] = []

    def broken(message: DeviceMessage) -> None:
        raise RuntimeError("bug in a listener")

    router.add_listener(broken)
    remove = router.add_listener(heard.append)
    router.handle_payload(TOPICS.sub, payload(rly=R1, typ="exp", pyd="7E"))
    remove()
    router.handle_payload(TOPICS.sub, payload(rly=R1, typ="exp", pyd="7F"))
    assert [m.code for m in heard if isinstance(m, EventMessage)] == ["7E"]
    assert router.stats(connected=True, broker="b", reconnects=0).listener_errors == 2


def test_wait_for_messages_counts_every_message_in() -> None:
    router = Router(TOPICS)
    assert not router.wait_for_messages(1, timeout=0.01)
    feeder = threading.Timer(
        0.05, lambda: [router.handle_payload(TOPICS.sub, b"x") for _ in range(3)]
    )
    feeder.start()
    assert router.wait_for_messages(3, timeout=5)
    feeder.join()


def test_a_million_messages_keep_memory_bounded() -> None:
    """Pushed straight into the routing function: the broker is not what is tested."""
    router = Router(TOPICS, inbox_size=20, max_relays=100)
    messages = [
        EventMessage(relay=f"{n:012x}", typ="exp", topic=TOPICS.sub, code="7E", name="")
        for n in range(50)
    ]
    route = router.route
    for n in range(1_000_000):
        route(messages[n % 50])
    stats = router.stats(connected=False, broker="b", reconnects=0)
    assert stats.relays_known == 50
    assert {len(router.relays.inbox(r)) for r in router.relays.relays_seen()} == {20}
    assert stats.dropped == 1_000_000 - 50 * 20
    assert router.relays.last_seq == 1_000_000


def imported_modules(module: str) -> set[str]:
    tree = ast.parse(Path(importlib.import_module(module).__file__ or "").read_text())
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    names |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("module", ["smib_core.inbox", "smib_core.routing", "smib_core.bus"])
def test_the_bus_layers_import_no_streamlit_and_only_the_bus_imports_paho(module: str) -> None:
    imported = imported_modules(module)
    assert "streamlit" not in imported
    assert ("paho" in imported) == (module == "smib_core.bus")
