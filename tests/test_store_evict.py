"""Eviction: LRU and LFU orders, limits and policy read fresh from the settings, reports and dry runs.

The dialect-neutral tests run on SQLite and, given a server, on PostgreSQL (see store_fixtures.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from store_fixtures import location_fixture, store_fixture  # noqa: F401
from store_helpers import fill, meta, set_access

from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import (
    Store,
)


def test_lru_by_entry_count(store: Store) -> None:
    fill(store, {"a": 10, "b": 10, "c": 10, "d": 10, "e": 10})
    assert store.evict(max_entries=2, max_bytes=0, policy="lru") == ["a", "b", "c"]
    assert store.keys() == ["d", "e"]
    assert store.evict(max_entries=2, max_bytes=0, policy="lru") == []
    assert store.counters()["evictions"] == 3


def test_lru_by_total_bytes(store: Store) -> None:
    fill(store, {"a": 100, "b": 100, "c": 100, "d": 100})
    assert store.evict(max_entries=0, max_bytes=250, policy="lru") == ["a", "b"]
    assert store.total_bytes() == 200
    store.put("big", b"b" * 1000, **meta())  # the newest, but alone larger than the budget
    assert store.evict(max_entries=0, max_bytes=250) == ["big"]
    assert store.keys() == ["c", "d"]


def test_lru_follows_real_accesses(store: Store) -> None:
    fill(store, {"a": 10, "b": 10, "c": 10})
    store.get("a")  # pending in memory: evict must flush it first
    assert store.evict(max_entries=2, max_bytes=0, policy="lru") == ["b"]
    assert store.keys() == ["a", "c"]


def test_lfu_order(store: Store) -> None:
    fill(store, {"a": 10, "b": 10, "c": 10, "d": 10})
    set_access(store, "a", 100.0, access_count=5)
    set_access(store, "b", 101.0, access_count=1)
    set_access(store, "c", 102.0, access_count=1)
    set_access(store, "d", 103.0, access_count=9)
    assert store.evict(max_entries=1, max_bytes=0, policy="lfu") == ["b", "c", "a"]
    assert store.keys() == ["d"]


def test_evict_reads_limits_and_policy_from_settings(store: Store) -> None:
    fill(store, {"a": 10, "b": 10, "c": 10})
    set_access(store, "a", 100.0, access_count=9)
    store.set_setting("max_entries", 2)
    store.set_setting("policy", "lfu")
    assert store.evict() == ["b"]
    store.set_setting("max_entries", 0)
    store.set_setting("max_bytes", 10)
    assert store.evict(policy="lru") == ["a"]
    assert store.keys() == ["c"]


def test_evict_validates_arguments(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.evict(policy="fifo")
    with pytest.raises(ConfigError):
        store.evict(max_entries=-1)


def test_evict_report_dry_run_and_age(store: Store) -> None:
    fill(store, {"a": 10, "b": 10, "c": 10, "d": 10})
    now = time.time()
    set_access(store, "a", now - 7200)
    set_access(store, "b", now - 60)
    set_access(store, "c", now - 30)
    set_access(store, "d", now - 10)
    planned = store.evict_report(max_entries=2, max_bytes=0, policy="lru", older_than=3600, dry_run=True)
    assert [(row["key"], row["reason"]) for row in planned] == [("a", "age"), ("b", "limits")]
    assert set(planned[0]) == {"key", "kind", "source_path", "payload_size", "last_access", "access_count", "reason"}
    assert store.count() == 4 and store.counters()["evictions"] == 0  # a dry run changes nothing
    assert store.evict(max_entries=2, max_bytes=0, policy="lru", older_than=3600) == ["a", "b"]
    assert store.keys() == ["c", "d"] and store.counters()["evictions"] == 2
    with pytest.raises(ConfigError, match="older_than"):
        store.evict(older_than=-1)


def test_evict_dry_run_works_read_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as writer:
        fill(writer, {"a": 10, "b": 10})
    with Store(path, read_only=True) as reader:
        assert [row["key"] for row in reader.evict_report(max_entries=1, dry_run=True)] == ["a"]
        with pytest.raises(StoreError, match="read-only"):
            reader.evict(max_entries=1)


def test_settings_defaults_validation_and_freshness(location: str) -> None:
    with Store(location) as one, Store(location) as two:
        assert one.get_settings() == {"max_entries": 100000, "max_bytes": 256 * 1024 * 1024, "policy": "lru"}
        one.set_setting("max_entries", "500")
        one.set_setting("policy", "LFU")
        assert two.get_settings()["max_entries"] == 500  # the other instance reads it fresh
        assert two.get_settings()["policy"] == "lfu"
        for name, value in [("max_entries", -1), ("max_bytes", "lots"), ("policy", "fifo"),
                            ("max_entries", True), ("colour", "red")]:  # fmt: skip
            with pytest.raises(ConfigError):
                one.set_setting(name, value)
        assert two.get_settings()["max_entries"] == 500
