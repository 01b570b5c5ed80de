"""The collector's rollups in bulk (`services.rollup_book`): whatever the readings' grouping
into flushes, and whatever the book forgot on the way (a reconciliation, a lost lease),
the hourly and daily rows stored are those of rolling all the readings up afresh: the
golden days (jackpots, a RAM clear, a rollover, a denomination change, a 23-hour day
in New York) and a running cabinet read every 5 minutes over two gaming days."""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import pytest

from smib_core.services.meter_seed import rollups_of
from smib_core.services.rollup_book import LOADS_PER_FLUSH, RollupBook
from smib_core.store.meters import MeterStore
from tests.test_golden_accounting import (
    ZONE,
    denomination_change,
    jackpot_day,
    local,
    ram_clear_day,
    rollover_day,
    running,
    spring_day,
)

pytestmark = pytest.mark.integration

WIDE = (local("2024-03-01").to_pydatetime(), local("2024-03-20").to_pydatetime())
CHECKED = ["coin_in_money", "drop_money", "jackpot_money", "games_played", "intervals"]


def readings() -> list[dict[str, Any]]:
    docs = [*jackpot_day(), *ram_clear_day(), *rollover_day(), *denomination_change()]
    docs += [*spring_day(), *running(local("2024-03-13 06:00"))]
    return sorted(docs, key=lambda d: d["at"])


def expected(store: MeterStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    return rollups_of(store.snapshots(*WIDE), tz=ZONE)


def rows(frame: pd.DataFrame) -> pd.DataFrame:
    keyed = frame.assign(bucket=pd.to_datetime(frame["bucket"], utc=True))
    return keyed.set_index(["cabinet_id", "bucket"])[CHECKED].astype("float64").sort_index()


def feed(store: MeterStore, book: RollupBook, docs: list[dict[str, Any]], seed: int) -> int:
    """Store the readings in random groups, flushing after each (sometimes forgetting a
    cabinet or everything first); returns the flushes made."""
    rng = random.Random(seed)
    flushes, i = 0, 0
    while i < len(docs):
        group = docs[i : i + rng.randint(1, 40)]
        i += len(group)
        store.insert_snapshots(group)
        book.add(group)
        if rng.random() < 0.1:
            book.forget([rng.choice(group)["cabinet_id"]])
        if rng.random() < 0.03:
            book.forget()
        while book.waiting():
            book.flush()
            flushes += 1
    return flushes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_books_rows_are_those_of_all_the_readings_rolled_up(mongo_db: Any, seed: int) -> None:
    store = MeterStore(mongo_db)
    book = RollupBook(store, tz=ZONE)
    docs = readings()
    book.classify((d["relay"], d["cabinet_id"]) for d in docs)
    assert feed(store, book, docs, seed) > 10
    hourly, daily = expected(store)
    pd.testing.assert_frame_equal(rows(store.rollups("h", *WIDE, tz=ZONE)), rows(hourly))
    pd.testing.assert_frame_equal(rows(store.rollups("D", *WIDE, tz=ZONE)), rows(daily))


def test_a_cabinet_with_stored_history_is_loaded_once_then_kept(mongo_db: Any) -> None:
    store = MeterStore(mongo_db)
    docs = [d for d in readings() if d["cabinet_id"] == "P"]
    first, rest = docs[:100], docs[100:]
    store.insert_snapshots(first)
    hourly, daily = expected(store)
    store.upsert_rollups("h", hourly)
    store.upsert_rollups("D", daily)
    book = RollupBook(store, tz=ZONE)
    book.classify([(docs[0]["relay"], "P")])
    assert not book.is_fresh("P")  # readings of it are stored
    for i in range(0, len(rest), 10):
        store.insert_snapshots(rest[i : i + 10])
        book.add(rest[i : i + 10])
        book.flush()
    assert book.cabinets() == 1
    hourly, daily = expected(store)
    pd.testing.assert_frame_equal(rows(store.rollups("h", *WIDE, tz=ZONE)), rows(hourly))
    pd.testing.assert_frame_equal(rows(store.rollups("D", *WIDE, tz=ZONE)), rows(daily))


def test_a_reading_older_than_the_books_latest_is_refreshed_the_exact_way(mongo_db: Any) -> None:
    store = MeterStore(mongo_db)
    book = RollupBook(store, tz=ZONE)
    docs = [d for d in readings() if d["cabinet_id"] == "P"][:60]
    late = docs.pop(30)  # stored after the readings that followed it
    book.classify([(docs[0]["relay"], "P")])
    store.insert_snapshots(docs)
    book.add(docs)
    book.flush()
    store.insert_snapshots([late])
    book.add([late])
    refreshed = book.flush()
    assert refreshed is not None and refreshed.places
    hourly, daily = expected(store)
    pd.testing.assert_frame_equal(rows(store.rollups("h", *WIDE, tz=ZONE)), rows(hourly))
    pd.testing.assert_frame_equal(rows(store.rollups("D", *WIDE, tz=ZONE)), rows(daily))


def test_loads_are_bounded_per_flush_and_the_rest_wait(mongo_db: Any) -> None:
    store = MeterStore(mongo_db)
    count = LOADS_PER_FLUSH + 5
    base = local("2024-03-12 10:00")
    docs = [
        {**doc, "cabinet_id": f"C{i}", "relay": f"r{i}", "_id": f"C{i}:{doc['at']}"}
        for i in range(count)
        for doc in [d for d in running(base) if d["at"] > base - pd.Timedelta(minutes=30)]
    ]
    store.insert_snapshots(docs)
    book = RollupBook(store, tz=ZONE)  # nothing classified: every cabinet is loaded
    book.add(docs)
    book.flush()
    assert book.cabinets() == LOADS_PER_FLUSH
    assert book.waiting() == 5 * len(docs) // count
    book.flush()
    assert book.cabinets() == count and book.waiting() == 0


def test_a_failed_write_leaves_the_readings_queued(mongo_db: Any, monkeypatch: Any) -> None:
    from pymongo.errors import AutoReconnect

    store = MeterStore(mongo_db)
    book = RollupBook(store, tz=ZONE)
    docs = [d for d in readings() if d["cabinet_id"] == "P"][:20]
    book.classify([(docs[0]["relay"], "P")])
    store.insert_snapshots(docs)
    book.add(docs)

    def refuse(*_: Any) -> int:
        raise AutoReconnect("the database went away")

    monkeypatch.setattr(store, "upsert_rollups", refuse)
    with pytest.raises(AutoReconnect):
        book.flush()
    assert book.waiting() == 20 and book.cabinets() == 0
    monkeypatch.undo()
    book.flush()
    hourly, _ = expected(store)
    pd.testing.assert_frame_equal(rows(store.rollups("h", *WIDE, tz=ZONE)), rows(hourly))
