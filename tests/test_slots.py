"""Collection slots (pure): when a board is due, the slot `_id`s, and the audit of a
window of snapshots (missing and duplicated slots per cabinet)."""

from __future__ import annotations

import math
from typing import Any

from smib_core.slots import audit_slots, offset_s, slot_due, slot_id, slot_of, slots_covered

RELAY = "e831cdfa0001"


def test_a_slot_runs_from_its_due_time_to_the_next() -> None:
    period = 300.0
    for k in (0, 1, 5_900_000, -3):
        due = slot_due(RELAY, k, period)
        assert due == k * period + offset_s(RELAY, period)
        assert slot_of(RELAY, due, period) == k
        assert slot_of(RELAY, due + period - 1e-3, period) == k
        assert slot_of(RELAY, due - 1e-3, period) == k - 1
    now = 1_733_300_000.0
    assert slot_of(RELAY, now, period) == math.floor((now - offset_s(RELAY, period)) / period)


def test_the_id_names_cabinet_period_and_slot() -> None:
    assert slot_id("c42", 300.0, 5_777_000) == "c42:300:5777000"
    assert slot_id("c42", 2.5, 7) == "c42:2:7"


def doc(cabinet: str, slot: int | None, **extra: Any) -> dict[str, Any]:
    return {"cabinet_id": cabinet, "relay": f"r-{cabinet}", "slot": slot, "period_s": 2.0} | extra


def test_a_range_record_covers_its_slots() -> None:
    assert list(slots_covered(doc("a", 3, slot_from=3, slot_to=6))) == [3, 4, 5, 6]
    assert list(slots_covered(doc("a", 3))) == [3]
    assert list(slots_covered(doc("a", None))) == []


def test_the_audit_finds_missing_and_duplicated_slots_per_cabinet() -> None:
    docs = [
        doc("a", 10),
        doc("a", 11),
        doc("a", 13),  # 12 missing
        doc("a", 14, slot_from=14, slot_to=16),
        doc("a", 16),  # 16 twice: in the range and alone
        doc("b", 10),
        doc("b", 11),
        doc("b", 11),  # twice
        doc("b", None),  # an on-demand reading: no slot, not counted
        doc("c", 10, period_s=300.0),  # another period: not counted
    ]
    report = audit_slots(docs, 2.0)
    assert set(report) == {"a", "b"}
    assert (report["a"].first, report["a"].last) == (10, 16)
    assert report["a"].missing == (12,) and report["a"].duplicated == (16,)
    assert report["b"].missing == () and report["b"].duplicated == (11,)
    assert not report["a"].complete and not report["b"].complete
    assert audit_slots([doc("a", 1), doc("a", 2)], 2.0)["a"].complete


def test_a_window_expects_every_slot_due_in_it_even_of_a_silent_cabinet() -> None:
    period = 2.0
    start = slot_due("r-a", 100, period)
    end = slot_due("r-a", 105, period)  # slots 100..104 are due in [start, end)
    docs = [doc("a", k) for k in (100, 101, 103, 104)]
    report = audit_slots(docs, period, start=start, end=end, cabinets={"z": "r-z"})
    assert (report["a"].first, report["a"].last, report["a"].missing) == (100, 104, (102,))
    silent = report["z"]
    assert silent.last - silent.first + 1 in (5, 6) and len(silent.missing) == (
        silent.last - silent.first + 1
    )
