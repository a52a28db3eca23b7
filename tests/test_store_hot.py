"""The hot path: put and get round trips, reads that never write, the literal SQL a warm start runs.

The dialect-neutral tests run on SQLite and, given a server, on PostgreSQL (see store_fixtures.py).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from store_fixtures import location_fixture, store_fixture  # noqa: F401
from store_helpers import NO_FLUSH, file_state, meta, sql

from zexus_bcache.errors import ConfigError
from zexus_bcache.store import (
    Store,
    StoredEntry,
    checksum,
)


def test_put_get_round_trip(store: Store) -> None:
    payload = bytes(range(256)) * 40
    store.put("k1", payload, **meta(kind="file", source_path=Path("/src/a.zx"), source_hash="sh1", mem_size=9))
    hit = store.get("k1")
    assert hit == StoredEntry("k1", "file", "fp1", 1, format(zlib.crc32(payload), "08x"), "sh1", 9, None, payload)
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
    assert [(bytes(p), c) for p, c in sql(store, "SELECT payload, checksum FROM entries")] == [(b"two!", checksum(b"two!"))]


def test_each_entry_holds_its_own_payload(store: Store) -> None:
    store.put("a", b"same bytes", **meta(kind="ast"))
    store.put("b", b"same bytes", **meta(kind="source"))
    store.put("c", b"other", **meta(kind="file"))
    assert sql(store, "SELECT key, payload FROM entries ORDER BY key") == [
        ("a", b"same bytes"), ("b", b"same bytes"), ("c", b"other")
    ]
    assert store.total_bytes() == 10 + 10 + 5  # what max_bytes limits
    assert store.delete("a")
    assert store.get("b") is not None and store.get("b").payload == b"same bytes"  # type: ignore[union-attr]
    assert store.get("a") is None
    assert store.clear() == 2
    assert sql(store, "SELECT count(*) FROM entries") == [(0,)]


def test_put_validates_kind(store: Store) -> None:
    with pytest.raises(ConfigError, match="kind"):
        store.put("k", b"x", **meta(kind="bytecode"))


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


def _normalized(sql_text: str) -> str:
    return " ".join(sql_text.split())


def test_literal_hot_sql_is_what_core_compiles_from_the_schema() -> None:
    from sqlalchemy.dialects import sqlite

    from zexus_bcache.store import queries, schema
    from zexus_bcache.store import sqlite as store_sqlite

    dialect = sqlite.dialect()
    statements = queries.statements("sqlite")
    assert tuple(schema.entries.c.keys()) == queries.ENTRY_COLUMNS
    compiled = {
        "SQL_SELECT_ENTRY": (statements.select_entry.compile(dialect=dialect), ("key",)),
        "SQL_PUT_ENTRY": (
            statements.put_entry.compile(dialect=dialect, column_keys=list(queries.ENTRY_COLUMNS)),
            queries.ENTRY_COLUMNS,
        ),
        "SQL_INSERT_ENTRY": (
            statements.insert_entry.compile(dialect=dialect, column_keys=list(queries.ENTRY_COLUMNS)),
            queries.ENTRY_COLUMNS,
        ),
        "SQL_TOUCH": (statements.touch.compile(dialect=dialect), ("t", "t", "n", "k")),
        "SQL_BUMP": (statements.bump.compile(dialect=dialect), ("c", "d")),
        "SQL_DELETE_KEY": (statements.delete_key.compile(dialect=dialect), ("k",)),
    }
    for name, (statement, parameters) in compiled.items():
        assert _normalized(getattr(store_sqlite, name)) == _normalized(str(statement)), name
        assert tuple(statement.positiontup or ()) == parameters, name
    # The limits: the totals, then the settings named by the parameters, in queries.SETTING_NAMES' order.
    limits = statements.limits.compile(dialect=dialect)
    assert _normalized(store_sqlite.SQL_LIMITS) == _normalized(str(limits))
    assert [limits.params[name] for name in limits.positiontup or ()] == list(queries.SETTING_NAMES)
    # One victims statement per eviction policy, written out from the same order (parameters: n, 0).
    assert set(store_sqlite.SQL_VICTIMS) == set(statements.victims) == set(queries.EVICTION_ORDER)
    for policy, statement in statements.victims.items():
        victims = statement.compile(dialect=dialect)
        assert _normalized(store_sqlite.SQL_VICTIMS[policy]) == _normalized(str(victims)), policy
        assert [victims.params[name] for name in victims.positiontup or ()] == [None, 0], policy
    # The SELECT returns StoredEntry's fields after the key, in order, with the row's own key
    # before the payload (Store.get compares it with the key asked for, then leaves it out).
    selected = [column.name for column in statements.select_entry.selected_columns]
    assert selected[:-2] + selected[-1:] == list(StoredEntry._fields[1:]) and selected[-2] == "own_key"


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
