"""Collection slots: when each board is due to be read, and whether a window of
snapshots holds exactly one record per slot. Pure: stdlib only, no I/O.

With period P (seconds) a board (relay) is read at its own moment of the period,
`offset_s(relay, P)`; its k-th scheduled read is due at `k * P + offset_s(relay, P)`,
and the slot of an instant t is `slot_of(relay, t, P) = floor((t - offset) / P)`.
Every snapshot the periodic collector stores (good, failed, or `missed`: nobody could
read it) carries `slot` and `period_s` and has the `_id` `slot_id(cabinet_id, P, slot)`,
so a slot is stored at most once whoever stores it. A long gap may be recorded as one
`missed` snapshot covering `slot_from..slot_to` (its `slot` is `slot_from`).

`audit_slots` checks a window of such snapshots: per cabinet, the slots with no
record and the slots recorded more than once.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def offset_s(relay: str, period_s: float) -> float:
    """Where in the period a board is read: stable for a relay, spread evenly in
    `[0, period_s)` over many relays."""
    digest = hashlib.sha256(relay.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * period_s


def slot_of(relay: str, t: float, period_s: float) -> int:
    """The slot of `relay` that instant `t` (epoch seconds) falls in."""
    return math.floor((t - offset_s(relay, period_s)) / period_s)


def slot_due(relay: str, slot: int, period_s: float) -> float:
    """When (epoch seconds) the read of `slot` is due."""
    return slot * period_s + offset_s(relay, period_s)


def slot_id(cabinet_id: str, period_s: float, slot: int) -> str:
    """The `_id` of the snapshot of a cabinet's slot."""
    return f"{cabinet_id}:{int(period_s)}:{slot}"


def slots_covered(doc: Mapping[str, Any]) -> range:
    """The slots a snapshot document accounts for (none for an unscheduled reading)."""
    if doc.get("slot") is None:
        return range(0)
    first = int(doc.get("slot_from", doc["slot"]))
    last = int(doc.get("slot_to", doc["slot"]))
    return range(first, last + 1)


@dataclass(frozen=True, slots=True)
class SlotAudit:
    """One cabinet's slots over a window: first and last expected, what is missing,
    what is recorded more than once."""

    cabinet_id: str
    first: int
    last: int
    missing: tuple[int, ...]
    duplicated: tuple[int, ...]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.duplicated


def audit_slots(
    docs: Iterable[Mapping[str, Any]],
    period_s: float,
    *,
    start: float | None = None,
    end: float | None = None,
    cabinets: Mapping[str, str] | None = None,
) -> dict[str, SlotAudit]:
    """Per cabinet, the missing and duplicated slots among the snapshot `docs` (dicts
    with `cabinet_id`, `relay`, `slot`, `period_s`, maybe `slot_from`/`slot_to`).

    Only scheduled snapshots of period `period_s` count. The slots expected of a cabinet
    are those due in `[start, end)` (epoch seconds) when both are given, else those from
    its first to its last recorded slot. `cabinets` (cabinet_id -> relay) names cabinets
    expected even if no doc mentions them (needs `start` and `end`). A slot's reading
    may be taken up to a period after it is due (a takeover reads at once), so fetch the
    docs of `[start, end + period_s)` for a window `[start, end)`."""
    counts: dict[str, Counter[int]] = {}
    relays: dict[str, str] = dict(cabinets or {})
    for doc in docs:
        if doc.get("slot") is None or float(doc.get("period_s", 0)) != float(period_s):
            continue
        cabinet = str(doc["cabinet_id"])
        relays.setdefault(cabinet, str(doc.get("relay", "")))
        counts.setdefault(cabinet, Counter()).update(slots_covered(doc))
    report: dict[str, SlotAudit] = {}
    for cabinet in sorted(set(counts) | set(relays)):
        seen = counts.get(cabinet, Counter())
        if start is not None and end is not None:
            offset = offset_s(relays[cabinet], period_s)
            first = math.ceil((start - offset) / period_s)
            last = math.ceil((end - offset) / period_s) - 1
        elif seen:
            first, last = min(seen), max(seen)
        else:
            continue
        expected = range(first, last + 1)
        missing = tuple(k for k in expected if seen[k] == 0)
        duplicated = tuple(sorted(k for k in expected if seen[k] > 1))
        report[cabinet] = SlotAudit(cabinet, first, last, missing, duplicated)
    return report
