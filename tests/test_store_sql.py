"""Caller-written SQL (the `sql` command) is time-limited, cancellable and calls no dangerous function
(issue 16 item 8): SQLite always, PostgreSQL when a server is given."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_fixtures import location_fixture, sqlite_store_fixture, store_fixture  # noqa: F401
from store_helpers import meta

from zexus_bcache.errors import StoreError
from zexus_bcache.store import Store

# Runs for minutes without a limit: a recursive count (a join would let SQLite sort in one step).
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
ENDLESS_PG = "SELECT count(*) FROM generate_series(1, 1000000000000)"


def _endless(store: Store) -> str:
    return ENDLESS if store.dialect == "sqlite" else ENDLESS_PG


def test_a_long_query_stops_at_its_time_limit(store: Store) -> None:
    store.put("k", b"x", **meta())
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"time limit of 0\.5 s"):
        store.query(_endless(store), timeout=0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"stopped after {elapsed:.1f} s"
    print(f"sql timeout 0.5 s: stopped after {elapsed:.2f} s ({store.dialect})")
    assert store.query("SELECT count(*) FROM entries")[1] == [(1,)]  # the store works on


def test_a_stopped_query_does_not_pin_the_wal(sqlite_store: Store) -> None:
    for i in range(50):
        sqlite_store.put(f"k{i}", b"x" * 1000 + bytes([i]), **meta())
    with pytest.raises(StoreError, match="time limit"):
        sqlite_store.query(ENDLESS, timeout=0.3)
    assert sqlite_store.path is not None
    conn = sqlite3.connect(sqlite_store.path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    assert busy == 0, "no read transaction is left to hold the WAL"


CANCEL_CHILD = """
import sys, time
from zexus_bcache.store import Store
with Store(sys.argv[1]) as store:
    print("ready", flush=True)
    start = time.monotonic()
    try:
        store.query(sys.argv[2], timeout=600)
    except KeyboardInterrupt:
        print(f"cancelled after {time.monotonic() - start:.2f}", flush=True)
        sys.exit(0)
    print("finished", flush=True)
    sys.exit(1)
"""


def test_ctrl_c_stops_a_query_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    Store(db).close()
    child = subprocess.Popen(
        [sys.executable, "-c", CANCEL_CHILD, str(db), ENDLESS], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # well inside the query
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=20)
        waited = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0 and out.startswith("cancelled"), out
    print(f"sql Ctrl-C: the child was back {waited:.2f} s after SIGINT")
    assert waited < 5


@pytest.mark.parametrize(
    "statement, refused",
    [
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),
        ("SELECT load_extension('/tmp/x.so')", "load_extension"),
        ("SELECT readfile('/etc/passwd')", None),  # not even defined here: an error, never a read
        ("SELECT length(randomblob(1000000000))", "over"),
        ("SELECT length(zeroblob(1000000000) || x'00')", "over"),
        ("VACUUM", "VACUUM"),
    ],
)
def test_only_listed_functions_and_bounded_values_on_sqlite(
    sqlite_store: Store, statement: str, refused: str | None
) -> None:
    with pytest.raises(StoreError) as info:
        sqlite_store.query(statement)
    if refused is not None:
        assert refused in str(info.value)


def test_ordinary_functions_and_views_still_work(store: Store) -> None:
    store.put("k", b"payload", **meta())
    columns, rows = store.query(
        "SELECT count(*) AS n, sum(payload_size) AS b, max(length(key)) AS l, coalesce(NULL, 1) AS c,"
        " round(avg(access_count), 2) AS a, upper(min(kind)) AS k FROM entries"
    )
    assert columns == ["n", "b", "l", "c", "a", "k"] and rows == [(1, 7, 1, 1, 0, "SOURCE")]
    assert store.query("SELECT * FROM cache_stats")[1]
    assert store.query("SELECT * FROM entry_summary")[1]
    if store.dialect == "sqlite":
        assert len(store.query("SELECT hex(randomblob(8)) AS r")[1][0][0]) == 16
        assert store.query("SELECT datetime(0, 'unixepoch') AS d")[1] == [("1970-01-01 00:00:00",)]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pg_terminate_backend(pg_backend_pid())",
        "SELECT pg_cancel_backend(1)",
        "SELECT pg_advisory_lock(42)",
        "SELECT pg_try_advisory_lock(42)",
        "SELECT txid_current()",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT lo_import('/etc/passwd')",
        "SELECT pg_read_file('/etc/passwd')",
        'SELECT "pg_advisory_lock"(42)',
        "SELECT pg_catalog.pg_advisory_lock /* hidden */ (42)",
        "SELECT query_to_xml('select 1', true, true, '')",
        "SELECT nextval('x')",
    ],
)
def test_side_effect_functions_are_refused_on_postgresql(pg_url: str, statement: str) -> None:
    with Store(pg_url) as store:
        with pytest.raises(StoreError, match=r"not allowed|does not exist"):
            store.query(statement)
        with store._backend.engine().connect() as conn:  # nothing was taken: no advisory lock is held
            import sqlalchemy as sa

            # This test's own database only: other tests (other workers) take advisory locks too.
            held = conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )).scalar()
        assert held == 0


def test_pg_sleep_is_bounded_by_the_time_limit(pg_url: str) -> None:
    with Store(pg_url) as store:
        start = time.monotonic()
        with pytest.raises(StoreError, match="time limit"):
            store.query("SELECT pg_sleep(30)", timeout=0.5)
        assert time.monotonic() - start < 5
        assert store.query("SELECT 1 AS one, pg_sleep(0.01)")[1][0][0] == 1
