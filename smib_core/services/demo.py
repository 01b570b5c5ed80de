"""Register a simulated fleet as cabinets, so a new user's dashboards have machines.

The locations and cabinets made here carry `demo: true` (`services.demo_history` seeds
their past only while the database holds nothing else)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from smib_core.store.registry import Registry

DEMO_LOCATIONS = ("Main floor", "High limit room", "Terrace")
_GAMES = [
    ("Aristocrat", "Buffalo Gold"),
    ("IGT", "Cleopatra"),
    ("Konami", "China Shores"),
    ("Light & Wonder", "Dancing Drums"),
    ("Novomatic", "Book of Ra"),
]
_DENOMINATIONS = (0.01, 0.01, 0.05, 0.25, 1.0)


def register_demo_fleet(
    registry: Registry,
    relays: Sequence[str],
    actor: str,
    *,
    denominations: Mapping[str, float] | None = None,
) -> int:
    """Give every unregistered relay a cabinet in one of the demo locations; returns how many.

    `denominations`: the simulated machines' own, by relay, so the money the dashboard
    shows matches their bets (a penny machine registered at $1 would take $25 bets);
    a relay without one gets a random denomination."""
    locations = {loc.name: loc for loc in registry.locations()}
    for name in DEMO_LOCATIONS:
        if name not in locations:
            locations[name] = registry.add_location(name, actor, demo=True)
    rng = random.Random(0)
    added = 0
    for number, relay in enumerate(relays, start=1):
        if registry.cabinet_for_relay(relay) is not None:
            continue
        maker, game = rng.choice(_GAMES)
        location = locations[DEMO_LOCATIONS[(number - 1) % len(DEMO_LOCATIONS)]]
        values = {
            "name": f"Cabinet {number:03d}",
            "location_id": location.id,
            "relay": relay,
            "denomination": (denominations or {}).get(relay, rng.choice(_DENOMINATIONS)),
            "manufacturer": maker,
            "game": game,
            "serial": f"SN{rng.randrange(10**7):07d}",
        }
        registry.add_cabinet(values, actor, demo=True)
        added += 1
    return added
