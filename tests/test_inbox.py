"""The bounded buffers behind the device bus: pure, no broker."""

from __future__ import annotations

import threading

import pytest

from smib_core.inbox import LatencyWindow, RelayTable, WarnThrottle
from smib_core.protocol import ConfigReply, EventMessage

R1, R2, R3 = "e831cdfa8384", "e831cdfa8385", "e831cdfa8386"


def event(relay: str, code: str = "7E") -> EventMessage:
    return EventMessage(relay=relay, typ="exp", topic="sas/gy/server", code=code, name="")


def config(relay: str, comp: str, **fields: object) -> ConfigReply:
    return ConfigReply(relay=relay, typ="cfg", topic="smib/config", component=comp, fields=fields)


def test_an_inbox_is_a_ring_of_the_latest_messages() -> None:
    table = RelayTable(inbox_size=3)
    results = [table.add(event(R1, f"{n:02X}"), at=float(n)) for n in range(5)]
    assert [r.dropped_message for r in results] == [False, False, False, True, True]
    codes = [e.message.code for e in table.inbox(R1) if isinstance(e.message, EventMessage)]
    assert codes == ["02", "03", "04"]
    assert [e.seq for e in table.inbox(R1)] == [3, 4, 5]
    assert table.last_seq == 5 and table.dropped == 2


def test_the_relay_map_forgets_the_least_recently_heard() -> None:
    table = RelayTable(inbox_size=2, max_relays=2)
    table.add(event(R1), at=1.0)
    table.add(event(R2), at=2.0)
    table.touch(R1, at=3.0)  # R1 heard again: R2 is now the stalest
    result = table.add(event(R3), at=4.0)
    assert result.evicted_relay == R2
    assert set(table.relays_seen()) == {R1, R3}
    assert len(table) == 2 and table.evicted == 1
    assert table.inbox(R2) == [] and table.last_seen(R2) is None


def test_last_seen_never_goes_back() -> None:
    table = RelayTable()
    table.add(event(R1), at=10.0)
    table.touch(R1, at=5.0)  # a late, out-of-order message
    assert table.last_seen(R1) == 10.0
    table.touch(R1, at=12.0)
    assert table.relays_seen() == {R1: 12.0}


def test_latest_config_merges_fields_per_component() -> None:
    table = RelayTable()
    table.add(config(R1, "net", netMode=1, netStaSSID="casino", netStaChan=6), at=1.0)
    table.add(config(R1, "net", netStaChan=11), at=2.0)  # a reply to a partial write
    table.add(config(R1, "app", firmware="cloudy", version="v0.0.1"), at=3.0)
    latest = table.latest_config(R1)
    assert latest["net"] == ({"netMode": 1, "netStaSSID": "casino", "netStaChan": 11}, 2.0)
    assert latest["app"] == ({"firmware": "cloudy", "version": "v0.0.1"}, 3.0)
    assert latest["net"][0] is not table.latest_config(R1)["net"][0]  # callers get copies
    assert table.latest_config(R2) == {}


def test_messages_since_returns_only_newer_messages_in_order() -> None:
    table = RelayTable(inbox_size=10)
    for n in range(6):
        table.add(event(R1 if n % 2 else R2, f"{n:02X}"))
    seqs = [e.seq for e in table.inbox(R1)]
    assert seqs == [2, 4, 6]
    assert [e.seq for e in table.messages_since(R1, 2)] == [4, 6]
    assert table.messages_since(R1, 6) == []
    assert [e.seq for e in table.messages_since(R1, 0)] == [2, 4, 6]
    assert table.messages_since(R3, 0) == []


def test_concurrent_adds_get_unique_increasing_seqs() -> None:
    table = RelayTable(inbox_size=10_000)

    def add_many(relay: str) -> None:
        for _ in range(2_000):
            table.add(event(relay))

    threads = [threading.Thread(target=add_many, args=(r,)) for r in (R1, R2, R3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e.seq for r in (R1, R2, R3) for e in table.inbox(r)]
    assert sorted(seqs) == list(range(1, 6_001))
    for relay in (R1, R2, R3):
        own = [e.seq for e in table.inbox(relay)]
        assert own == sorted(own)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RelayTable(inbox_size=0)
    with pytest.raises(ValueError):
        RelayTable(max_relays=0)


def test_latency_percentiles_are_nearest_rank_over_a_bounded_window() -> None:
    window = LatencyWindow(size=100)
    assert window.percentile(50) is None
    for ms in range(1, 201):  # only the last 100 (101..200) are kept
        window.add(float(ms))
    assert window.percentile(50) == 150.0
    assert window.percentile(99) == 199.0
    assert window.percentile(100) == 200.0
    assert window.percentile(0) == 101.0


def test_warn_throttle_allows_one_line_per_interval() -> None:
    throttle = WarnThrottle(interval_s=60)
    assert [throttle.ready() for _ in range(3)] == [True, False, False]
    assert WarnThrottle(interval_s=0).ready() and WarnThrottle(interval_s=0).ready()
