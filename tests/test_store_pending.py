"""Hits and counters recorded in memory: batched flushes, failures that keep them, exit and drop, processes.

The dialect-neutral tests run on SQLite and, given a server, on PostgreSQL (see store_fixtures.py).
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_fixtures import location_fixture, store_fixture  # noqa: F401
from store_helpers import NO_FLUSH, meta, set_access, sql

from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import (
    Store,
)


def test_accesses_are_flushed_in_a_batch(store: Store) -> None:
    store.put("k", b"x", **meta())
    set_access(store, "k", last_access=1000.0, access_count=0)
    for _ in range(3):
        store.get("k")
    assert sql(store, "SELECT last_access, access_count FROM entries") == [(1000.0, 0)]
    assert store.info("k")["access_count"] == 3  # type: ignore[index]
    store.flush()
    ((last_access, count),) = sql(store, "SELECT last_access, access_count FROM entries")
    assert count == 3 and last_access > time.time() - 60
    store.flush()  # nothing pending: no change
    assert sql(store, "SELECT access_count FROM entries") == [(3,)]


def test_touch_records_a_use_without_reading(store: Store) -> None:
    store.put("k", b"x", **meta())
    set_access(store, "k", last_access=1000.0, access_count=0)
    store.touch("k")  # e.g. a hit served by the in-memory front tier
    store.touch("gone")  # unknown keys cost nothing when flushed
    store.flush()
    ((last_access, count),) = sql(store, "SELECT last_access, access_count FROM entries")
    assert count == 1 and last_access > 1000.0


def test_flush_never_moves_last_access_back(store: Store) -> None:
    store.put("k", b"x", **meta())
    store.get("k")
    future = time.time() + 3600
    set_access(store, "k", last_access=future, access_count=5)  # another process saw it later
    store.flush()
    assert sql(store, "SELECT last_access, access_count FROM entries") == [(future, 6)]


def test_automatic_flush_by_count(location: str) -> None:
    with Store(location, flush_every=3, flush_interval=1e9) as store:
        store.put("k", b"x", **meta())
        store.get("k")
        store.get("k")
        assert sql(store, "SELECT access_count FROM entries") == [(0,)]
        store.get("k")
        assert sql(store, "SELECT access_count FROM entries") == [(3,)]


def test_automatic_flush_by_time(location: str) -> None:
    with Store(location, flush_every=10**9, flush_interval=0.05) as store:
        store.put("k", b"x", **meta())
        time.sleep(0.1)
        store.get("k")
        assert sql(store, "SELECT access_count FROM entries") == [(1,)]


def test_close_flushes(location: str) -> None:
    with Store(location, **NO_FLUSH) as store:
        store.put("k", b"x", **meta())
        store.get("k")
        store.add(misses=2)
    with Store(location) as store:
        assert store.info("k")["access_count"] == 1  # type: ignore[index]
        assert store.counters()["misses"] == 2


def test_failed_flush_keeps_pending_and_get_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.db"
    with Store(path, busy_timeout_ms=50, flush_every=1, flush_interval=1e9) as store:
        store.put("k", b"x", **meta())
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
            for _ in range(3):
                hit = store.get("k")  # tries to flush each time, finds the lock busy, does not wait
                assert hit is not None
            store.add(store_hits=3)
        # A busy write lock is not a failure: the records stay in memory for a later flush, unsaid.
        assert sum("could not save" in r.getMessage() for r in caplog.records) == 0
        with pytest.raises(StoreError, match="flush failed") as info:
            store.flush()
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)  # flushed on the raw connection
        assert store.info("k")["access_count"] == 3  # type: ignore[index]
        assert store.counters()["store_hits"] == 3
        blocker.execute("ROLLBACK")
        blocker.close()
        store.flush()
        assert sql(store, "SELECT access_count FROM entries") == [(3,)]
        assert store.counters()["store_hits"] == 3


COUNTING_CHILD = """
import sys
from zexus_bcache.store import Store
with Store(sys.argv[1]) as store:
    store.add(misses=3, store_hits=2)
    store.add(misses=1)
"""


def test_counters_are_summed_across_processes_and_reset(location: str) -> None:
    with Store(location, **NO_FLUSH) as one, Store(location, **NO_FLUSH) as two:
        one.add(front_hits=5, misses=1)
        two.add(front_hits=1)
        child = subprocess.run(
            [sys.executable, "-c", COUNTING_CHILD, location], capture_output=True, text=True, timeout=120
        )
        assert child.returncode == 0, child.stderr
        # persisted (the child's) + each instance's own pending deltas
        assert one.counters()["misses"] == 4 + 1 and one.counters()["front_hits"] == 5
        assert two.counters()["front_hits"] == 1 and two.counters()["store_hits"] == 2
        one.flush()
        two.flush()
        totals = one.counters()
        assert (totals["front_hits"], totals["store_hits"], totals["misses"]) == (6, 2, 5)
        assert two.counters() == totals
        ((hits, misses, hit_rate),) = sql(one, "SELECT hits, misses, hit_rate FROM cache_stats")
        assert (hits, misses, float(hit_rate)) == (8, 5, 61.54)  # a Decimal on PostgreSQL
        one.add(misses=100)
        one.reset_counters()
        assert one.counters() == dict.fromkeys(totals, 0)
        assert sql(one, "SELECT hit_rate FROM cache_stats") == [(0,)]
    with Store(location) as three:
        assert set(three.counters().values()) == {0}


def test_unknown_counter(store: Store) -> None:
    with pytest.raises(ConfigError, match="unknown counter"):
        store.add(hitz=1)


EXITING_CHILD = """
import sys
from zexus_bcache.store import Store
store = Store(sys.argv[1], flush_every=10**9, flush_interval=1e9)
store.get("k")
store.add(misses=1)
# no close(): the interpreter's exit must save what was recorded
"""


def test_pending_data_is_saved_at_exit_and_when_dropped(location: str) -> None:
    with Store(location) as store:
        store.put("k", b"x", **meta())
    child = subprocess.run(
        [sys.executable, "-c", EXITING_CHILD, location], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    dropped = Store(location, **NO_FLUSH)
    dropped.get("k")
    del dropped  # garbage, never closed: freed (and flushed) at once, without waiting for gc
    with Store(location) as store:
        assert store.info("k")["access_count"] == 2  # type: ignore[index]
        assert store.counters()["misses"] == 1
