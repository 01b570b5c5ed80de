"""Leases on the embedded database: one holder at a time, expiry, renewal, release."""

from __future__ import annotations

from typing import Any

import pytest

from smib_core.errors import InvalidInput
from smib_core.sim.faults import SkewedClock
from smib_core.store.clock import DeploymentClock
from smib_core.store.leases import Lease, process_owner

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_one_holder_until_release(mongo_db: Any) -> None:
    clock = Clock()
    first = Lease(mongo_db, "job", "a", 10, clock=clock)
    second = Lease(mongo_db, "job", "b", 10, clock=clock)
    assert first.acquire()
    assert not second.acquire()
    assert first.acquire(), "acquiring a lease you hold renews it"
    assert first.held and not second.held
    holder = second.holder()
    assert holder is not None and holder.owner == "a" and holder.expires_at == 1_010.0
    first.release()
    assert first.holder() is None
    assert second.acquire() and second.held


def test_expired_lease_is_taken_over_and_the_old_owner_cannot_renew(mongo_db: Any) -> None:
    clock = Clock()
    old = Lease(mongo_db, "job", "old", 5, clock=clock)
    new = Lease(mongo_db, "job", "new", 5, clock=clock)
    assert old.acquire()
    clock.now += 3
    assert old.renew(), "renewing before expiry keeps the lease"
    clock.now += 6  # 1 s after the renewed expiry
    assert old.holder() is None
    assert new.acquire()
    assert not old.renew(), "a lease taken over is lost for its old owner"
    assert not old.acquire()
    old.release()  # releasing a lease that is not ours changes nothing
    assert new.held


def test_leases_are_independent_by_name(mongo_db: Any) -> None:
    assert Lease(mongo_db, "rollouts", "a", 5).acquire()
    assert Lease(mongo_db, "collector", "b", 5).acquire()
    assert not Lease(mongo_db, "rollouts", "b", 5).acquire()


def test_an_expired_lease_is_taken_only_under_its_own_name(mongo_db: Any) -> None:
    """A dead worker leaves every lease of its expired: each is taken by the service of
    its name, never by another service's acquire (the embedded database ignored `_id`
    beside `$or` in an update, so the batch runner's acquire took the collector lease)."""
    clock = Clock()
    dead = {name: Lease(mongo_db, name, f"dead-{name}", 5, clock=clock) for name in ("a", "b")}
    assert all(lease.acquire() for lease in dead.values())
    clock.now += 10  # the worker died: both expired
    assert Lease(mongo_db, "b", "alive-b", 5, clock=clock).acquire()
    owners = {doc["_id"]: doc["owner"] for doc in mongo_db["leases"].find()}
    assert owners == {"a": "dead-a", "b": "alive-b"}
    assert Lease(mongo_db, "a", "alive-a", 5, clock=clock).acquire()
    assert not dead["a"].renew() and not dead["b"].renew()


def test_bad_arguments_and_owner_names(mongo_db: Any) -> None:
    with pytest.raises(InvalidInput):
        Lease(mongo_db, "job", "a", 0)
    with pytest.raises(InvalidInput):
        Lease(mongo_db, "", "a", 5)
    one, two = process_owner("runner:"), process_owner("runner:")
    assert one.startswith("runner:") and one != two


def test_a_keeper_keeps_a_held_lease_alive_and_never_takes_one(mongo_db: Any) -> None:
    import time

    from smib_core.store.leases import LeaseKeeper

    held = Lease(mongo_db, "long-job", "me", 1.0)
    assert held.acquire()
    keeper = LeaseKeeper(held, every_s=0.2)
    keeper.start()
    try:
        time.sleep(1.6)  # past the TTL: only the keeper's renewals keep it
        assert held.held
        held.release()
        time.sleep(0.5)
        assert held.holder() is None, "a released lease stays released"
    finally:
        keeper.stop()


def test_leases_run_on_the_databases_clock_so_a_fast_clock_takes_no_live_lease(
    mongo_db: Any,
) -> None:
    holder = Lease(mongo_db, "job", "holder", 5)  # the default: the database's clock
    assert holder.acquire()
    fast = SkewedClock(30.0)  # a replica whose clock runs 30 s ahead
    checked = DeploymentClock(mongo_db, fast)
    checked.check()  # whoever gives a lease its clock checks it
    assert not Lease(mongo_db, "job", "fast", 5, clock=checked).acquire()
    assert holder.held
    assert Lease(mongo_db, "job", "naive", 5, clock=fast).acquire()  # its own clock: taken


def test_a_clock_stepped_after_its_check_neither_takes_nor_loses_a_lease(mongo_db: Any) -> None:
    holder_clock = DeploymentClock(mongo_db, SkewedClock(120.0))  # runs ahead
    standby_clock = DeploymentClock(mongo_db, SkewedClock(-120.0))  # runs behind
    holder_clock.check()
    standby_clock.check()
    holder = Lease(mongo_db, "job", "holder", 5, clock=holder_clock)
    standby = Lease(mongo_db, "job", "standby", 5, clock=standby_clock)
    assert holder.acquire() and not standby.acquire()
    assert isinstance(holder_clock.process, SkewedClock)
    assert isinstance(standby_clock.process, SkewedClock)
    holder_clock.process.step(-120.0)  # NTP steps, between two checks
    standby_clock.process.step(+120.0)
    assert holder.renew()
    assert not standby.acquire(), "a stepped standby took a live lease"
    assert holder.held


def test_the_deployment_clock_keeps_the_databases_time_across_a_step(mongo_db: Any) -> None:
    import time

    process = SkewedClock(-400.0)
    clock = DeploymentClock(mongo_db, process)
    assert abs(clock() - (time.time() - 400)) < 1  # unchecked: the process clock
    assert -401 < clock.check() < -399
    process.step(-3600.0)
    assert abs(clock() - time.time()) < 1 and not clock.due(60)
