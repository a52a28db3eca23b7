"""SQLite files and connections: private new files, locations, errors, locks, threads, fork, moving aside.

The dialect-neutral tests run on SQLite and, given a server, on PostgreSQL (see store_fixtures.py).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_fixtures import location_fixture, sqlite_store_fixture, store_fixture  # noqa: F401
from store_helpers import meta, open_descriptors, sql

from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import (
    Store,
    move_aside,
)


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
    sql(sqlite_store, "DROP TABLE entries")  # damage behind the store's back
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


def test_open_retries_sqlite_lock_errors_until_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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

    def failing(exc: Exception) -> None:
        calls.append(1)
        raise exc

    calls.clear()
    monkeypatch.setattr(Store, "_open", lambda self: failing(sqlite3.OperationalError("disk I/O error")))
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(tmp_path / "b.db")
    assert len(calls) == 1

    calls.clear()
    monkeypatch.setattr(Store, "_open", lambda self: failing(sqlite3.OperationalError("database is locked")))
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="database is locked"):
        Store(tmp_path / "c.db", busy_timeout_ms=200)
    assert time.monotonic() - t0 < 2 and len(calls) >= 2
