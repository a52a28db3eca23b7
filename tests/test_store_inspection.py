"""Reading and repairing what a store holds: invalidation, listing, caller SQL, integrity, orphans, vacuum.

The dialect-neutral tests run on SQLite and, given a server, on PostgreSQL (see store_fixtures.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from store_fixtures import location_fixture, sqlite_store_fixture, store_fixture  # noqa: F401
from store_helpers import meta, set_access

from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import (
    Store,
    checksum,
)


def test_invalidate_criteria(store: Store) -> None:
    store.put("old", b"1", **meta(fingerprint="fpA", source_path="/p/a.zx", kind="file"))
    store.put("new", b"2", **meta(fingerprint="fpB", source_path="/p/b.zx"))
    store.put("ast", b"3", **meta(fingerprint="fpB", kind="ast"))
    store.put("b2", b"4", **meta(fingerprint="fpB", source_path="/p/b.zx"))
    set_access(store, "old", time.time() - 7200)

    with pytest.raises(ConfigError, match="at least one"):
        store.invalidate()
    assert store.invalidate(older_than=3600) == 1
    assert store.keys() == ["ast", "b2", "new"]
    assert store.invalidate(source_path=Path("/p/b.zx"), kind="source") == 2
    assert store.keys() == ["ast"]
    store.put("x", b"5", **meta(fingerprint="fpC"))
    assert store.invalidate(other_than_fingerprints=["fpC"]) == 1
    assert store.keys() == ["x"]
    assert store.invalidate(fingerprint="fpC") == 1
    assert store.count() == 0


def test_invalidate_older_than_sees_pending_hits(store: Store) -> None:
    store.put("k", b"x", **meta())
    set_access(store, "k", time.time() - 7200)
    store.get("k")  # used just now, recorded only in memory
    assert store.invalidate(older_than=3600) == 0


def test_delete_and_clear(store: Store) -> None:
    store.put("a", b"1", **meta())
    store.put("b", b"2", **meta())
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.clear() == 1
    assert store.count() == 0 and store.total_bytes() == 0 and store.keys() == []


def test_keys_info_and_entries(store: Store) -> None:
    store.put("s1", b"x" * 30, **meta(source_path="/src/one.zx"))
    store.put("s2", b"x" * 10, **meta(source_path="/src/lib/two.zx"))
    store.put("a1", b"x" * 20, **meta(kind="ast"))
    set_access(store, "s1", 300.0, 1)
    set_access(store, "s2", 100.0, 7)
    set_access(store, "a1", 200.0, 3)

    assert store.keys() == ["a1", "s1", "s2"]
    assert store.keys(kind="ast") == ["a1"]
    assert [e["key"] for e in store.entries()] == ["s1", "a1", "s2"]  # most recent first
    assert [e["key"] for e in store.entries(descending=False)] == ["s2", "a1", "s1"]
    assert [e["key"] for e in store.entries(sort="size")] == ["s1", "a1", "s2"]
    assert [e["key"] for e in store.entries(sort="access_count", limit=2)] == ["s2", "a1"]
    assert [e["key"] for e in store.entries(kind="source")] == ["s1", "s2"]
    assert [e["key"] for e in store.entries(path_glob="/src/*/*.zx")] == ["s2"]
    assert [e["key"] for e in store.entries(path_glob="/src/*", limit=1)] == ["s1"]
    assert [e["key"] for e in store.entries(older_than=time.time() - 250)] == ["a1", "s2"]
    assert store.entries(limit=0) == []
    first = store.entries(limit=1)[0]
    assert first == store.info("s1")
    with pytest.raises(ConfigError, match="sort"):
        store.entries(sort="payload")


def test_keys_by_prefix_and_delete_many(store: Store) -> None:
    for key in ("ab1", "ab2", "a_x", "b1"):
        store.put(key, key.encode(), **meta())
    assert store.keys(prefix="ab") == ["ab1", "ab2"]
    assert store.keys(prefix="a_") == ["a_x"]  # LIKE wildcards are escaped
    assert store.keys(prefix="zz") == []
    assert store.delete_many(["ab1", "b1", "missing", "b1"]) == 2
    assert store.keys() == ["a_x", "ab2"]


def test_invalidate_keeps_a_set_of_fingerprints(store: Store) -> None:
    for key, fingerprint in (("a", "fpA"), ("b", "fpB"), ("c", "fpC")):
        store.put(key, key.encode(), **meta(fingerprint=fingerprint))
    assert store.invalidate(other_than_fingerprints={"fpA", "fpB"}) == 1
    assert store.keys() == ["a", "b"]


def test_query_binds_parameters_and_only_reads(sqlite_store: Store, tmp_path: Path) -> None:
    sqlite_store.put("k1", b"x" * 5, **meta())
    sqlite_store.put("k2", b"y" * 50, **meta())
    columns, rows = sqlite_store.query("SELECT key, payload_size FROM entries WHERE payload_size > :n", {"n": 10})
    assert columns == ["key", "payload_size"] and rows == [("k2", 50)]
    injected = "'; DROP TABLE entries; --"
    assert sqlite_store.query("SELECT :v AS v", {"v": injected})[1] == [(injected,)]
    assert sqlite_store.query("PRAGMA table_info(settings)")[1]
    assert sqlite_store.query("SELECT name FROM pragma_table_info('totals')")[1] == [("id",), ("n_entries",), ("total_bytes",)]
    attached = tmp_path / "other.db"
    for statement, what in [
        ("INSERT INTO counters VALUES ('x', 1)", "INSERT"),
        ("UPDATE entries SET kind = 'ast'", "UPDATE"),
        ("DELETE FROM entries", "DELETE"),
        ("DROP TABLE entries", "a schema change"),
        ("CREATE TEMP TABLE t (a)", "a schema change"),
        (f"ATTACH '{attached}' AS other", "ATTACH"),
        ("PRAGMA query_only = OFF", "PRAGMA query_only"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
        ("BEGIN", "TRANSACTION"),
    ]:
        with pytest.raises(StoreError, match=f"read-only query refused: {what}"):
            sqlite_store.query(statement)
    assert not attached.exists()
    assert sqlite_store.count() == 2
    with pytest.raises(StoreError, match="syntax error"):
        sqlite_store.query("SELEC 1")
    with pytest.raises(StoreError, match="binding parameter"):
        sqlite_store.query("SELECT :missing")


def test_integrity_and_every_payload_a_page_at_a_time(sqlite_store: Store) -> None:
    for key in "cab":
        sqlite_store.put(key, f"payload {key}".encode(), **meta())
    assert sqlite_store.integrity_check() == []
    rows = list(sqlite_store.iter_payloads(page=2))  # pages of 2, 1
    assert rows == [(key, checksum(f"payload {key}".encode()), f"payload {key}".encode()) for key in "abc"]
    assert sqlite_store.payload_page("a", page=1) == [rows[1]]
    assert sqlite_store.payload_page("c") == []


def test_vacuum_gives_space_back(sqlite_store: Store) -> None:
    for i in range(50):
        sqlite_store.put(f"k{i}", os.urandom(4000), **meta())
    sqlite_store.clear()
    before = sqlite_store.file_size()
    sqlite_store.vacuum()
    after = sqlite_store.file_size()
    assert before is not None and after is not None and after < before / 2
