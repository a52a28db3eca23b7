"""What the store tests share: put arguments, and SQL run on a store's database from outside the store."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from zexus_bcache.store import Store

NO_FLUSH: dict[str, Any] = dict(flush_every=10**9, flush_interval=1e9)  # flushes happen only when a test says so


def meta(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a put, with overrides."""
    defaults = dict(kind="source", fingerprint="fp1", codec_version=1, n_instructions=10, n_constants=3)
    return defaults | overrides


def sql(store: Store, statement: str, **params: Any) -> list[Any]:
    """Run raw SQL on the store's database from outside the store (a second connection)."""
    engine = sa.create_engine(store.url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def set_access(store: Store, key: str, last_access: float, access_count: int = 0) -> None:
    statement = "UPDATE entries SET last_access = :t, access_count = :n WHERE key = :k"
    sql(store, statement, t=last_access, n=access_count, k=key)


def fill(store: Store, sizes: dict[str, int]) -> None:
    """Put one entry per key; last_access = 100 + position, so dict order is oldest first."""
    for position, (key, size) in enumerate(sizes.items()):
        store.put(key, key.encode().ljust(size, b"."), **meta())
        set_access(store, key, last_access=100.0 + position)


def file_state(path: Path) -> list[tuple[str, int, int]]:
    return [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.parent.glob(path.name + "*"))
    ]


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


def json_results(children: list[subprocess.Popen[str]], timeout: float) -> list[Any]:
    """The last stdout line of each child as JSON, once each exited 0; any still running is killed."""
    results = []
    try:
        for child in children:
            out, err = child.communicate(timeout=timeout)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return results
