"""Faults by `kill -9` against a running deployment (two `smib worker`s, Mosquitto, the
embedded database, 20 strict simulated boards, a 10 s collection period), and what must
hold afterwards:

- readings lost 0: over a window around the fault, every cabinet has exactly one
  snapshot per collection slot (a reading, a failed reading, or a slot recorded as
  missed), and none has two (stored twice 0);
- a batch and a rollout interrupted by the death of the worker running them finish,
  every board in a final state;
- no audit record is left `sent` once a worker's audit sweeper has run.

Each test measures its recovery time (kill -9 to the first good reading taken after
it stored, or to the batch/rollout finished) and, with SMIB_CHAOS_RESULTS=file, appends
its figures there (the README's table).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from smib_core import embedded
from smib_core.auth import Principal, Role
from tests.chaos.harness import (
    Accounts,
    ChaosError,
    Deployment,
    FaultFigures,
    batch_accounts,
    open_audit,
    record,
    rollout_accounts,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(360)]

TECH = Principal("chaos-tech", Role.TECHNICIAN)
WORKERS = ("worker-a", "worker-b")


def healthy(dep: Deployment) -> None:
    """Both workers running, a collector holding its lease and reading (what an earlier
    failed test left broken is repaired first, and said)."""
    for repair in dep.restore(WORKERS):
        print(f"chaos: {repair}")
    dep.wait_holder("collector", timeout=60)
    since = time.time()
    wait_for(
        "a good meter reading",
        lambda: dep.good_reading_after(since),
        timeout=3 * dep.period_s,
        explain=dep.logs,
    )


def into_window(dep: Deployment) -> int:
    """The window's first slot, once the fault may come (half a period into it)."""
    first = dep.next_slot()
    time.sleep(max(0.0, (first + 0.5) * dep.period_s - time.time()))
    return first


def finished(accounts_of: Callable[[], Accounts]) -> Callable[[], Accounts | None]:
    def probe() -> Accounts | None:
        accounts = accounts_of()
        return accounts if accounts.finished else None

    return probe


def recovered(dep: Deployment, fault_at: float, timeout: float = 90.0) -> float:
    """Seconds from the fault to the first good reading taken after it, stored."""
    wait_for(
        "a good reading taken after the fault",
        lambda: dep.good_reading_after(fault_at),
        timeout,
        explain=dep.logs,
    )
    return time.time() - fault_at


def check_window(
    dep: Deployment, fault: str, first: int, recovery_s: float, accounts: Accounts | None = None
) -> None:
    """Every slot of the window accounted for exactly once; the figures recorded."""
    last = dep.next_slot()
    report = dep.slot_report(first, last)
    note = f"{report.read_ok} read, {report.read_failed} failed, {report.recorded_missed} missed"
    unaccounted = len(accounts.unaccounted) if accounts is not None else 0
    figures = FaultFigures(
        fault, round(recovery_s, 1), report.lost, report.duplicated, unaccounted, note
    )
    record(figures)
    assert report.expected == len(dep.cabinets) * (last - first + 1)
    assert report.lost == 0, f"{report}\n{dep.explain_slots(report)}\n{dep.logs()}"
    assert report.duplicated == 0, f"{report}\n{dep.explain_slots(report)}"
    assert not dep.incomplete_slots(first, last)  # the collector's own check agrees


def no_audit_open(dep: Deployment, timeout: float = 100.0) -> None:
    """No audit record `sent`, once the sweeper has looked (every 30 s, at records older
    than SMIB_AUDIT_SETTLE_AFTER_S)."""
    left: list[object] = []

    def settled() -> bool:
        left[:] = open_audit(dep.db)
        return not left

    try:
        wait_for("every audit record settled", settled, timeout)
    except ChaosError:
        raise AssertionError(f"audit records left sent: {left}\n{dep.logs()}") from None


def test_broker_killed_and_restarted_on_its_port(dep: Deployment) -> None:
    healthy(dep)
    first = into_window(dep)
    fault_at = time.time()
    dep.broker.stop()  # SIGKILL
    dep.broker.start()  # the same port
    recovery = recovered(dep, fault_at)
    dep.check_alive(*WORKERS, "sim")
    check_window(dep, "broker (restarted at once on its port)", first, recovery)


def test_database_killed_comes_back_on_its_port(dep: Deployment) -> None:
    healthy(dep)
    first = into_window(dep)
    fault_at = dep.kill_database()
    wait_for("the database answering again", dep.database_answers, 60, explain=dep.logs)
    back = time.time() - fault_at
    state = embedded.status(dep.data_dir)["database"]
    assert state["port"] == dep.db_port, state
    recovery = recovered(dep, fault_at)
    dep.check_alive(*WORKERS, "sim")
    check_window(dep, f"embedded database (answering again after {back:.1f} s)", first, recovery)


def test_worker_holding_the_leases_killed(dep: Deployment) -> None:
    healthy(dep)
    holder, _ = dep.wait_holder("collector")
    first = into_window(dep)
    fault_at = holder.kill9()
    other, _ = dep.wait_holder("collector", timeout=15, not_pid=holder.pid)
    takeover = time.time() - fault_at
    assert takeover <= 12, f"the lease changed hands after {takeover:.1f} s"
    recovery = recovered(dep, fault_at)
    check_window(
        dep, f"worker holding the leases (taken over in {takeover:.1f} s)", first, recovery
    )
    assert other.alive


def test_worker_killed_mid_batch(dep: Deployment) -> None:
    from smib_core.services.batch import BatchJob, submit_batch
    from smib_core.store.audit import AuditTrail
    from smib_core.store.batches import IN_FLIGHT, BatchStore

    healthy(dep)
    first = dep.next_slot()
    store = BatchStore(dep.db)
    relays = tuple(dep.relays[:12])
    batch = submit_batch(BatchJob("restart", relays), TECH, store, AuditTrail(dep.db))
    holder, _ = dep.wait_holder("batches", timeout=30)

    def under_way() -> bool:
        current = store.get(batch.id)
        states = [b.state for b in store.boards(batch.id)]
        return current is not None and not current.finished and any(s in IN_FLIGHT for s in states)

    wait_for("the batch under way", under_way, 60, every=0.05, explain=dep.logs)
    fault_at = holder.kill9()
    accounts, _ = wait_for(
        "the batch finished by the other worker",
        finished(lambda: batch_accounts(dep.db, batch.id)),
        timeout=120,
        explain=dep.logs,
    )
    recovery = time.time() - fault_at
    assert set(accounts.boards) == set(relays)
    assert not accounts.unaccounted, accounts
    no_audit_open(dep)
    check_window(dep, "worker running a batch (restart of 12 boards)", first, recovery, accounts)


def test_worker_killed_mid_rollout(dep: Deployment) -> None:
    from smib_core.store.firmware import FirmwareLibrary
    from smib_core.store.rollouts import IN_FLIGHT, RolloutStore

    healthy(dep)
    first = dep.next_slot()
    image = b"\xe9" + bytes(4095)
    firmware = FirmwareLibrary(dep.db).add(
        image, filename="chaos.bin", product="cloudy", version="v9.9.9", actor="chaos"
    )
    store = RolloutStore(dep.db)
    relays = dep.relays[:6]
    rollout = store.create(
        firmware, relays, batch_size=2, min_success_pct=0, timeout_s=30, principal=TECH
    )
    holder, _ = dep.wait_holder("rollout-runner", timeout=30)
    wait_for(
        "a board being updated",
        lambda: any(b.state in IN_FLIGHT for b in store.boards(rollout.id)),
        60,
        every=0.1,
        explain=dep.logs,
    )
    fault_at = holder.kill9()
    accounts, _ = wait_for(
        "the rollout finished by the other worker",
        finished(lambda: rollout_accounts(dep.db, rollout.id)),
        timeout=240,
        explain=dep.logs,
    )
    recovery = time.time() - fault_at
    assert set(accounts.boards) == set(relays)
    assert not accounts.unaccounted, accounts
    no_audit_open(dep)
    check_window(
        dep, "worker running a rollout (6 boards, batches of 2)", first, recovery, accounts
    )
