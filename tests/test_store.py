"""The persistent store: round trips, read-only hits, batched accesses, eviction, counters, settings.

Every test runs on SQLite; the dialect-neutral ones also on PostgreSQL, each in a database of its
own on the server of ZEXUS_BCACHE_TEST_PG_URL (see conftest.py; they skip without one).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import (
    Store,
    StoredEntry,
    checksum,
    current_revision,
    downgrade,
    head_revision,
    move_aside,
    sqlite_path,
    upgrade,
)

NO_FLUSH = dict(flush_every=10**9, flush_interval=1e9)  # flushes happen only when a test says so


def meta(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a put, with overrides."""
    defaults = dict(kind="source", fingerprint="fp1", codec_version=1, n_instructions=10, n_constants=3)
    return defaults | overrides


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database (skips without a server)."""
    if request.param == "sqlite":
        return str(tmp_path / "cache" / "store.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    with Store(location, **NO_FLUSH) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db", **NO_FLUSH) as s:
        yield s


def sql(store: Store, statement: str, **params: Any) -> list[Any]:
    """Run raw SQL on the store's database from outside the store (a second connection)."""
    engine = sa.create_engine(store.url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def set_access(store: Store, key: str, last_access: float, access_count: int = 0) -> None:
    statement = "UPDATE entries SET last_access = :t, access_count = :n WHERE key = :k"
    sql(store, statement, t=last_access, n=access_count, k=key)


# -- put / get ---------------------------------------------------------------------------------


def test_put_get_round_trip(store: Store) -> None:
    payload = bytes(range(256)) * 40
    store.put("k1", payload, **meta(kind="file", source_path=Path("/src/a.zx"), source_hash="sh1", mem_size=9))
    hit = store.get("k1")
    assert hit == StoredEntry("k1", "file", "fp1", 1, checksum(payload), "sh1", 9, None, payload)
    assert store.get("nope") is None
    store.put("k2", payload, **meta(signature="ab" * 32))
    signed = store.get("k2")
    assert signed is not None and signed.signature == "ab" * 32 and store.info("k2")["signature"] == "ab" * 32  # type: ignore[index]
    store.put("k2", payload, **meta())  # a re-put replaces the signature too
    assert store.get("k2").signature is None  # type: ignore[union-attr]
    info = store.info("k1")
    assert info is not None
    assert "payload" not in info
    assert info["payload_size"] == len(payload) and info["checksum"] == checksum(payload)
    assert info["source_path"] == "/src/a.zx" and (info["n_instructions"], info["n_constants"]) == (10, 3)
    assert info["mem_size"] == 9
    assert info["access_count"] == 1  # the hit above, still pending in memory
    assert store.info("nope") is None


def test_put_replaces_and_accepts_bytes_like(store: Store) -> None:
    store.put("k", bytearray(b"one"), **meta())
    created = store.info("k")["created_at"]  # type: ignore[index]
    store.put("k", memoryview(b"two!"), **meta(fingerprint="fp2", codec_version=2))
    hit = store.get("k")
    assert hit is not None and hit.payload == b"two!" and hit.fingerprint == "fp2" and hit.codec_version == 2
    info = store.info("k")
    assert info is not None and info["created_at"] == created and info["payload_size"] == 4
    assert store.count() == 1 and store.total_bytes() == 4
    assert sql(store, "SELECT count(*) FROM blobs") == [(1,)]  # the old payload went with the old checksum


def test_identical_payloads_are_stored_once(store: Store) -> None:
    store.put("a", b"same bytes", **meta(kind="ast"))
    store.put("b", b"same bytes", **meta(kind="source"))
    store.put("c", b"other", **meta(kind="file"))
    assert sql(store, "SELECT count(*) FROM blobs") == [(2,)]
    assert store.total_bytes() == 10 + 10 + 5  # logical bytes, what max_bytes limits
    assert store.delete("a")
    assert store.get("b") is not None and store.get("b").payload == b"same bytes"  # type: ignore[union-attr]
    assert store.delete("b")
    assert sql(store, "SELECT count(*) FROM blobs") == [(1,)]
    assert store.clear() == 1
    assert sql(store, "SELECT count(*) FROM blobs") == [(0,)]


def test_put_validates_kind(store: Store) -> None:
    with pytest.raises(ConfigError, match="kind"):
        store.put("k", b"x", **meta(kind="bytecode"))


def test_new_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "c.db"
    Store(path).close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_locations_accepted_and_refused(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'u.db'}") as store:
        assert store.path == tmp_path / "u.db"
    with pytest.raises(ConfigError, match="file path"):
        Store("sqlite://")
    with pytest.raises(ConfigError, match="unsupported"):
        Store("mysql+pymysql://u@localhost/db")


# -- the read path does not write ---------------------------------------------------------------


def file_state(path: Path) -> list[tuple[str, int, int]]:
    return [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.parent.glob(path.name + "*"))
    ]


def test_get_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store(path) as store:
        for i in range(20):
            store.put(f"k{i}", os.urandom(5000), **meta())
    observer = sqlite3.connect(path)
    version = observer.execute("PRAGMA data_version").fetchone()
    with Store(path, **NO_FLUSH) as store:
        store.get("k0")  # open this thread's connection (and WAL files) first
        before = file_state(path)
        for _ in range(50):
            for i in range(20):
                assert store.get(f"k{i}") is not None
            assert store.get("missing") is None
        assert file_state(path) == before
        assert observer.execute("PRAGMA data_version").fetchone() == version  # nobody committed
        store.flush()
        assert observer.execute("PRAGMA data_version").fetchone() != version  # ...and this sees writes
    observer.close()


# -- batched accesses ---------------------------------------------------------------------------


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
                hit = store.get("k")  # flushes each time, fails each time
                assert hit is not None
            store.add(store_hits=3)
        assert sum("could not save" in r.getMessage() for r in caplog.records) == 1  # warned once
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


def test_gets_and_puts_from_many_threads(store: Store) -> None:
    for i in range(10):
        store.put(f"k{i}", bytes([i]) * 100, **meta())
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for round_ in range(50):
                key = f"k{(n + round_) % 10}"
                hit = store.get(key)
                assert hit is not None and hit.payload == bytes([int(key[1:])]) * 100
                store.add(store_hits=1)
            store.put(f"t{n}", b"thread", **meta())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    store.flush()
    assert sum(row[0] for row in sql(store, "SELECT access_count FROM entries")) == 8 * 50
    assert store.counters()["store_hits"] == 8 * 50
    assert store.count() == 18


# -- eviction -----------------------------------------------------------------------------------


def fill(store: Store, sizes: dict[str, int]) -> None:
    """Put one entry per key; last_access = 100 + position, so dict order is oldest first."""
    for position, (key, size) in enumerate(sizes.items()):
        store.put(key, key.encode().ljust(size, b"."), **meta())
        set_access(store, key, last_access=100.0 + position)


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


# -- invalidation -------------------------------------------------------------------------------


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


# -- listing ------------------------------------------------------------------------------------


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


# -- counters -----------------------------------------------------------------------------------


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


# -- settings -----------------------------------------------------------------------------------


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


# -- errors -------------------------------------------------------------------------------------


def test_closed_store_raises_store_error(store: Store) -> None:
    store.put("k", b"x", **meta())
    store.close()
    store.close()  # idempotent
    for call in (lambda: store.get("k"), lambda: store.put("k", b"y", **meta()), store.count, store.flush):
        with pytest.raises(StoreError, match="closed"):
            call()


def test_database_errors_are_wrapped(sqlite_store: Store) -> None:
    sqlite_store.put("k", b"x", **meta())
    sql(sqlite_store, "DROP VIEW cache_stats")
    sql(sqlite_store, "DROP TABLE blobs")  # damage behind the store's back
    with pytest.raises(StoreError, match="get failed") as info:
        sqlite_store.get("k")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(StoreError, match="put failed") as info:
        sqlite_store.put("k2", b"y", **meta())
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    sql(sqlite_store, "DROP TABLE counters")
    with pytest.raises(StoreError, match="counters failed") as info:
        sqlite_store.counters()
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)


def test_write_lock_timeout_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store(path, busy_timeout_ms=50) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                store.put("k", b"x", **meta())
            with pytest.raises(StoreError, match="locked"):
                store.set_setting("policy", "lfu")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.put("k", b"x", **meta())
        assert store.count() == 1


def open_descriptors(path: Path) -> int:
    """How many file descriptors of this process point at ``path`` (Linux /proc)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except OSError:
            pass
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_finished_thread_releases_its_connection(sqlite_store: Store) -> None:
    sqlite_store.put("k", b"x", **meta())
    path = sqlite_store.path
    assert path is not None
    before = open_descriptors(path)
    for _ in range(20):
        worker = threading.Thread(target=sqlite_store.get, args=("k",))
        worker.start()
        worker.join()
    assert open_descriptors(path) <= before + 1


FORKED_CHILD_CHECKS = """
import os, sys
from zexus_bcache.store import Store
store = Store(sys.argv[1])
assert store.get("parent") is not None
pid = os.fork()
if pid == 0:  # the child: its own connections, its own pending data
    ok = store.get("parent") is not None
    store.put("child", b"from the child", kind="source", fingerprint="f", codec_version=1,
              n_instructions=1, n_constants=1)
    store.close()
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
hit = store.get("child")
assert hit is not None and hit.payload == b"from the child"
store.put("after", b"parent still works", kind="source", fingerprint="f", codec_version=1,
          n_instructions=1, n_constants=1)
store.close()
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_its_own_connections(tmp_path: Path) -> None:
    path = tmp_path / "fork.db"
    with Store(path) as store:
        store.put("parent", b"p", **meta())
    run = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD_CHECKS, str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    with Store(path) as store:
        assert store.keys() == ["after", "child", "parent"]
        assert sql(store, "PRAGMA integrity_check") == [("ok",)]


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


# -- inspection and maintenance (what the command line needs) ----------------------------------


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


def test_query_binds_parameters_and_only_reads(sqlite_store: Store, tmp_path: Path) -> None:
    sqlite_store.put("k1", b"x" * 5, **meta())
    sqlite_store.put("k2", b"y" * 50, **meta())
    columns, rows = sqlite_store.query("SELECT key, payload_size FROM entries WHERE payload_size > :n", {"n": 10})
    assert columns == ["key", "payload_size"] and rows == [("k2", 50)]
    assert sqlite_store.query("SELECT :v AS v", {"v": "'; DROP TABLE entries; --"})[1] == [("'; DROP TABLE entries; --",)]
    assert sqlite_store.query("PRAGMA table_info(settings)")[1]
    assert sqlite_store.query("SELECT name FROM pragma_table_info('blobs')")[1] == [("checksum",), ("payload",)]
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


def test_integrity_blobs_orphans_and_repairs(sqlite_store: Store) -> None:
    sqlite_store.put("a", b"payload a", **meta())
    sqlite_store.put("b", b"payload b", **meta())
    sqlite_store.put("c", b"payload c", **meta())
    assert sqlite_store.integrity_check() == []
    blobs = list(sqlite_store.iter_blobs(page=2))
    assert sorted(payload for _, payload in blobs) == [b"payload a", b"payload b", b"payload c"]
    assert all(digest == checksum(payload) for digest, payload in blobs)
    assert sqlite_store.orphans() == ([], [])
    sql(sqlite_store, "INSERT INTO blobs VALUES ('unused', x'00')")
    sql(sqlite_store, "DELETE FROM blobs WHERE checksum = :c", c=checksum(b"payload b"))
    assert sqlite_store.orphans() == (["b"], ["unused"])
    assert sqlite_store.remove_blobs([checksum(b"payload a"), "unused"]) == 1
    assert sqlite_store.delete_many(["b"]) == 1
    assert sqlite_store.keys() == ["c"] and sqlite_store.orphans() == ([], [])


def test_vacuum_gives_space_back(sqlite_store: Store) -> None:
    for i in range(50):
        sqlite_store.put(f"k{i}", os.urandom(4000), **meta())
    sqlite_store.clear()
    before = sqlite_store.file_size()
    sqlite_store.vacuum()
    after = sqlite_store.file_size()
    assert before is not None and after is not None and after < before / 2


def test_move_aside_takes_the_wal_along(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    for name in ("c.db", "c.db-wal", "c.db-shm"):
        (tmp_path / name).write_bytes(name.encode())
    moved = move_aside(path)
    assert moved.name.startswith("c.db.broken-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([moved.name, moved.name + "-wal", moved.name + "-shm"])
    assert (tmp_path / (moved.name + "-wal")).read_bytes() == b"c.db-wal"
    path.write_bytes(b"again")
    assert move_aside(path) != moved  # same second: a distinct name


def test_alembic_operations_without_a_store(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with pytest.raises(StoreError, match="no such database"):
        current_revision(path)
    assert not path.exists()
    head = head_revision()
    assert upgrade(path) == (None, head)
    assert current_revision(path) == head
    assert upgrade(path) == (head, head)
    assert downgrade(path, "base") == (head, None)
    with pytest.raises(StoreError, match="read-only"):
        Store(path, read_only=True)
    with pytest.raises(StoreError, match="bogus"):
        upgrade(path, "bogus")
    assert upgrade(path)[1] == head
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        upgrade(garbage)
    assert sqlite_path(f"sqlite:///{path}") == path and sqlite_path("postgresql://u@h/db") is None


# -- the warm path without SQLAlchemy ------------------------------------------------------------


def _normalized(sql_text: str) -> str:
    return " ".join(sql_text.split())


def test_literal_hot_sql_is_what_core_compiles_from_the_schema() -> None:
    from sqlalchemy.dialects import sqlite

    from zexus_bcache import schema, store as store_mod

    dialect = sqlite.dialect()
    statements = store_mod._statements("sqlite")
    assert store_mod._ENTRY_COLUMNS == tuple(schema.entries.c.keys())
    compiled = {
        "_SQL_SELECT_ENTRY": (statements.select_entry.compile(dialect=dialect), ("key",)),
        "_SQL_PUT_BLOB": (statements.put_blob.compile(dialect=dialect, column_keys=["checksum", "payload"]), ("checksum", "payload")),
        "_SQL_PUT_ENTRY": (
            statements.put_entry.compile(dialect=dialect, column_keys=list(store_mod._ENTRY_COLUMNS)),
            store_mod._ENTRY_COLUMNS,
        ),
        "_SQL_TOUCH": (statements.touch.compile(dialect=dialect), ("t", "t", "n", "k")),
        "_SQL_BUMP": (statements.bump.compile(dialect=dialect), ("c", "d")),
    }
    for name, (statement, parameters) in compiled.items():
        assert _normalized(getattr(store_mod, name)) == _normalized(str(statement)), name
        assert tuple(statement.positiontup or ()) == parameters, name
    # The SELECT returns StoredEntry's fields after the key, in order.
    selected = [column.name for column in statements.select_entry.selected_columns]
    assert selected == list(StoredEntry._fields[1:])


def test_a_warm_start_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Store(db) as s:
        s.put("k", b"x", **meta())
    script = (
        "import sys\n"
        "from zexus_bcache.store import Store\n"
        f"s = Store({str(db)!r}, flush_every=1)\n"
        "assert s.get('k').payload == b'x'\n"
        "s.touch('k', 'front_hits'); s.add(store_hits=1, misses=1)\n"
        "s.put('k2', b'y', kind='ast', fingerprint='f', codec_version=1, n_instructions=1, n_constants=1)\n"
        "s.flush(); s.close()\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
    with Store(db) as s:  # what the child wrote through the raw statements is there
        assert s.get("k2") is not None and s.get("k2").payload == b"y"  # type: ignore[union-attr]
        assert s.info("k")["access_count"] == 2  # type: ignore[index]
        counters = s.counters()
    assert counters["front_hits"] == 1 and counters["store_hits"] == 1 and counters["misses"] == 1


def test_open_retries_sqlite_lock_errors_until_the_busy_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite may refuse an open at once ("database is locked") while other processes create the
    # same database: the open is tried again; any other error, or a lock past the timeout, is final.
    real_open = Store._open
    calls: list[int] = []

    def locked_twice(self: Store) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
        real_open(self)

    monkeypatch.setattr(Store, "_open", locked_twice)
    with Store(tmp_path / "a.db") as store:
        store.put("k", b"payload", kind="source", fingerprint="f", codec_version=1, n_instructions=1, n_constants=0)
        assert store.get("k").payload == b"payload"
    assert len(calls) == 3

    calls.clear()
    monkeypatch.setattr(Store, "_open", lambda self: (calls.append(1), (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error"))))
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(tmp_path / "b.db")
    assert len(calls) == 1

    calls.clear()
    monkeypatch.setattr(Store, "_open", lambda self: (calls.append(1), (_ for _ in ()).throw(sqlite3.OperationalError("database is locked"))))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="database is locked"):
        Store(tmp_path / "c.db", busy_timeout_ms=200)
    assert time.monotonic() - t0 < 2 and len(calls) >= 2
