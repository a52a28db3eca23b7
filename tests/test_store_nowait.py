"""Lookups never wait on another process's write lock (issue 16 item 5).

Another process holds SQLite's write lock (BEGIN IMMEDIATE) for seconds while this one does front
hits (``touch``) and store hits (``get``) past the flush threshold: each flush they trigger tries the
lock once and keeps the records when it is busy. Afterwards every recorded access is saved.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from store_helpers import meta, sql

from zexus_bcache.store import Store

HOLD_S = 3.0
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def test_lookups_do_not_wait_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    keys = [f"k{i}" for i in range(20)]
    with Store(db, busy_timeout_ms=30000, flush_every=50, flush_interval=0.2) as store:
        for key in keys:
            store.put(key, key.encode() * 100, **meta())
        store.flush()
        command = [sys.executable, "-c", HOLDER, str(db), str(HOLD_S)]
        holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            worst, lookups = 0.0, 0
            deadline = time.monotonic() + HOLD_S - 0.5  # all while the lock is held
            while time.monotonic() < deadline:
                key = keys[lookups % len(keys)]
                start = time.perf_counter()
                if lookups % 2:
                    store.touch(key, "front_hits")  # a front hit, as the cache records it
                else:
                    assert store.get(key) is not None  # a store hit
                worst = max(worst, time.perf_counter() - start)
                lookups += 1
            still_locked = holder.poll() is None
            assert holder.wait(timeout=HOLD_S + 30) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        assert still_locked, "the lock was held throughout the lookups"
        print(f"nowait: {lookups} lookups while another process held the write lock, max {worst * 1000:.1f} ms")
        assert lookups > 1000
        assert worst < 0.05, f"a lookup waited {worst * 1000:.0f} ms for the write lock"
        store.flush()  # the lock is free: what was kept is saved now
        ((saved,),) = sql(store, "SELECT sum(access_count) FROM entries")
        assert saved == lookups, f"{lookups - saved} accesses were lost"
        assert store.counters()["front_hits"] == lookups // 2
