"""fork() while other threads use the cache: every child works and exits (issue 16 item 6).

Locks another thread held at the fork would never be released in the child, and a connection
inherited mid-transaction must not be used there. Real threads, real forks, a real SQLite file.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from zexus_bcache import BytecodeCache, codec, pipeline

CHILDREN = 60
CHILD_DEADLINE_S = 20.0  # per child, generous for a busy machine: a hang is forever, not slow


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_never_hang_while_threads_use_the_cache(tmp_path: Path) -> None:
    bytecode = pipeline.compile_source('let x = 1\nprint("child " + x)\n')
    payload = codec.encode(bytecode)
    cache = BytecodeCache(path=tmp_path / "bcache.db", max_size=50)
    for i in range(20):
        cache.store_value(f"seed-{i}", codec.decode(payload), kind="ast")
    stop = threading.Event()

    def busy(worker: int) -> None:
        n = 0
        while not stop.is_set():
            cache.lookup(f"seed-{n % 20}")  # front hits and store hits under the locks
            cache.store_value(f"w{worker}-{n % 200}", codec.decode(payload), kind="ast")  # store writes
            n += 1

    threads = [threading.Thread(target=busy, args=(w,), daemon=True) for w in range(3)]
    for t in threads:
        t.start()
    hung, failed = 0, 0
    try:
        for _ in range(CHILDREN):
            time.sleep(0.005)
            pid = os.fork()
            if pid == 0:  # the child: use the inherited cache, then leave at once
                code = 1
                try:
                    cache.store_value("from-child", codec.decode(payload), kind="ast")
                    ok = cache.lookup("seed-3") is not None and cache.lookup("from-child") is not None
                    cache.close()
                    code = 0 if ok else 3
                finally:
                    os._exit(code)
            deadline = time.monotonic() + CHILD_DEADLINE_S
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    failed += os.waitstatus_to_exitcode(status) != 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.002)
            if hung:
                break  # one hang proves it; do not wait out the others
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        cache.close()
    assert hung == 0, "a forked child hung"
    assert failed == 0, f"{failed} of {CHILDREN} forked children failed"
