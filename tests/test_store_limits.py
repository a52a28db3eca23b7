"""Limits hold after every put: eviction in the put's own transaction, totals kept by triggers.

The dialect-neutral tests run on SQLite and, given a server, on PostgreSQL (see store_fixtures.py).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from store_fixtures import location_fixture, store_fixture  # noqa: F401
from store_helpers import NO_FLUSH, json_results, meta, set_access, sql

from zexus_bcache.errors import StoreError
from zexus_bcache.store import Store


def scanned(store: Store) -> tuple[int, int]:
    """What COUNT(*) and SUM(payload_size) say, read from outside the store."""
    ((count, total),) = sql(store, "SELECT COUNT(*), COALESCE(SUM(payload_size), 0) FROM entries")
    return int(count), int(total)


def test_max_entries_holds_after_every_put_lru_order(store: Store) -> None:
    store.set_setting("max_entries", 4)
    evicted: list[str] = []
    for i in range(12):
        evicted += store.put(f"k{i:02d}", f"payload {i}".encode(), **meta())
        assert store.count() == min(i + 1, 4) == scanned(store)[0]
        set_access(store, f"k{i:02d}", last_access=1000.0 + i)  # a strict order, whatever the clock says
    assert evicted == [f"k{i:02d}" for i in range(8)]  # oldest first
    assert store.keys() == ["k08", "k09", "k10", "k11"]
    assert store.counters()["evictions"] == 8
    assert sql(store, "SELECT COUNT(payload) FROM entries") == [(4,)]  # the payloads went with their rows


def test_max_bytes_never_exceeded_after_a_put(store: Store) -> None:
    store.set_setting("max_entries", 0)
    store.set_setting("max_bytes", 1000)
    rng = random.Random(7)
    for i in range(60):
        store.put(f"k{i}", rng.randbytes(rng.randint(1, 400)), **meta())
        entries, total = store.totals()
        assert total <= 1000 and (entries, total) == scanned(store)
    kept = store.keys()
    # Larger than the whole budget: it goes alone and pushes nothing else out.
    assert store.put("huge", b"h" * 1001, **meta()) == ["huge"]
    assert store.keys() == kept and store.get("huge") is None


def test_a_put_sees_hits_not_saved_yet(store: Store) -> None:
    store.set_setting("max_entries", 2)
    store.put("a", b"a", **meta())
    store.put("b", b"b", **meta())
    set_access(store, "a", 100.0)
    set_access(store, "b", 200.0)
    assert store.get("a") is not None  # recorded in memory only (NO_FLUSH)
    assert store.put("c", b"c", **meta()) == ["b"]  # a's hit was saved in the put's transaction first
    assert store.keys() == ["a", "c"]
    assert store.info("a")["access_count"] == 1  # type: ignore[index]


def test_lfu_and_settings_read_fresh_by_every_put(location: str) -> None:
    with Store(location, **NO_FLUSH) as one, Store(location, **NO_FLUSH) as two:
        for key in ("a", "b", "c"):
            one.put(key, key.encode(), **meta())
        set_access(one, "a", 100.0, access_count=9)
        set_access(one, "b", 101.0, access_count=1)
        set_access(one, "c", 102.0, access_count=5)
        two.set_setting("policy", "lfu")
        two.set_setting("max_entries", 3)
        # d arrives with no use at all: under LFU the newcomer is the least used, and goes.
        assert one.put("d", b"d", **meta()) == ["d"]
        two.set_setting("max_entries", 2)
        set_access(one, "c", 102.0, access_count=0)
        assert one.put("e", b"e", **meta(), source_path="/x.zx") == ["c", "e"]
        assert one.keys() == ["a", "b"]


def test_totals_equal_a_scan_after_every_kind_of_change(store: Store) -> None:
    def check() -> None:
        assert store.totals() == scanned(store)

    check()
    for i in range(10):
        store.put(f"k{i}", bytes([i]) * (10 + i), **meta(fingerprint="old" if i < 3 else "new"))
        check()
    store.put("k0", b"a longer payload than before", **meta())  # replaced: another size
    check()
    store.put("copy", bytes([1]) * 11, **meta())  # the same payload as k1, under another key
    check()
    assert store.delete("k1")
    check()
    assert store.delete_many(["k2", "k3", "missing"]) == 2
    check()
    assert store.evict(max_entries=4, max_bytes=0, policy="lru")
    check()
    assert store.invalidate(fingerprint="new") > 0
    check()
    sql(store, "DELETE FROM entries WHERE key = 'copy'")  # behind the store's back: the triggers still count
    check()
    store.put("x", b"x" * 5, **meta())
    store.put("y", b"y" * 6, **meta())
    assert sql(store, "UPDATE entries SET payload_size = 50 WHERE key = 'x'") == []  # by hand: resized
    check()
    store.set_setting("max_entries", 1)
    store.put("z", b"z" * 7, **meta())
    check()
    assert store.count() == 1
    store.clear()
    check()
    assert store.totals() == (0, 0)


def test_recount_repairs_the_totals(store: Store) -> None:
    store.put("a", b"12345", **meta())
    store.put("b", b"123", **meta())
    sql(store, "UPDATE totals SET n_entries = 99, total_bytes = 7")
    assert store.totals() == (99, 7)
    assert store.recount() == (2, 8) == scanned(store)
    sql(store, "DELETE FROM totals")
    with pytest.raises(StoreError, match="recount"):
        store.put("c", b"c", **meta())
    assert store.recount() == (2, 8)
    store.put("c", b"c", **meta())
    assert store.totals() == (3, 9)


PUTTER = """
import json, sys, time
from zexus_bcache.store import Store
path, name, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
while time.time() < start:
    time.sleep(0.001)
worst = 0
with Store(path) as store:
    for i in range(n):
        store.put(f"{name}-{i:04d}", f"{name} {i}".encode() * 20, kind="source", fingerprint="f",
                  codec_version=1, n_instructions=1, n_constants=1)
        worst = max(worst, store.count())
print(json.dumps({"worst": worst}))
"""


@pytest.mark.parametrize("location", ["sqlite"], indirect=True)
def test_two_processes_putting_at_once_leave_exactly_max_entries(location: str) -> None:
    with Store(location) as store:
        store.set_setting("max_entries", 4)
    start = time.time() + 2.0  # both children start putting at the same instant, after their imports
    children = [
        subprocess.Popen(
            [sys.executable, "-c", PUTTER, location, name, repr(start), "150"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("one", "two")
    ]
    results = json_results(children, timeout=120)
    assert [r["worst"] for r in results] == [4, 4]  # never more than the limit after a put returned
    with Store(location) as store:
        assert store.count() == 4 == scanned(store)[0]
        assert store.counters()["evictions"] == 2 * 150 - 4
        assert sql(store, "SELECT COUNT(payload) FROM entries") == [(4,)]

