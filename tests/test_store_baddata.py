"""Bad data in the database is a miss or a default with one warning, never a crash (issue 16 item 4),
and the smaller store requests of the CLI (zeroed-at, write_problem, sorts, messages, WAL left behind)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from store_fixtures import sqlite_store_fixture  # noqa: F401
from store_helpers import NO_FLUSH, meta, sql

from zexus_bcache import BytecodeCache, codec, constants, pipeline, store
from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import Store


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)


def test_mem_size_stored_as_text_is_measured_again(tmp_path: Path) -> None:
    db = tmp_path / "bcache.db"
    bytecode = pipeline.compile_source('print("hello")\n')
    with BytecodeCache(path=db) as cache:
        cache.store_value("k" * 32, bytecode, kind="source")
    with Store(db) as s:
        sql(s, "UPDATE entries SET mem_size = 'lots'")
        assert s.get("k" * 32).mem_size == "lots"  # type: ignore[union-attr]  # data, returned as stored
        assert s.info("k" * 32)["mem_size"] == "lots"  # type: ignore[index]
    with BytecodeCache(path=db) as cache:
        value = cache.lookup("k" * 32)
        assert value is not None and codec.encode(value) == codec.encode(bytecode)


def test_a_bad_setting_in_the_table_uses_the_default_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(tmp_path / "c.db", **NO_FLUSH) as s:
        sql(s, "UPDATE settings SET value = 'lots' WHERE name = 'max_entries'")
        sql(s, "UPDATE settings SET value = 'most-recent' WHERE name = 'policy'")
        with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
            for i in range(200):  # more than the put's sampling of the limits
                s.put(f"k{i}", b"x%d" % i, **meta())
            defaults = {name: store.parse_setting(name, v) for name, v in constants.DEFAULT_SETTINGS.items()}
            assert s.get_settings() == defaults
            assert s.evict() == []
        assert s.count() == 200
        assert _warnings(caplog, "max_entries is not valid") == 1
        assert _warnings(caplog, "policy is not valid") == 1
        with pytest.raises(ConfigError):  # what a caller gives is still checked
            s.set_setting("max_entries", "lots")


def test_counters_and_totals_stored_as_text_do_not_break_stats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(tmp_path / "c.db", **NO_FLUSH) as s:
        s.put("k", b"x", **meta())
        s.add(misses=2, puts=1)
        s.flush()
        sql(s, "UPDATE counters SET value = 'many' WHERE name = 'misses'")
        sql(s, "UPDATE counters SET value = '7' WHERE name = 'puts'")
        with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
            counters = s.counters()
            s.counters()
        assert counters["misses"] == 0 and counters["puts"] == 7
        assert _warnings(caplog, "not a whole number") == 1
        sql(s, "UPDATE totals SET n_entries = 'one'")
        assert s.totals() == (0, 1)


def _flip_schema_bits(db: Path) -> None:
    """Flip two bits inside the table names stored in the schema (page 1)."""
    data = bytearray(db.read_bytes())
    at = data.index(b"CREATE TABLE", 100)
    name_at = data.index(b"entries", at)
    data[name_at] ^= 0x80  # not UTF-8 any more
    data[name_at + 3] ^= 0xC0
    db.write_bytes(bytes(data))


def test_flipped_bits_in_the_schema_page_are_a_clean_store_error(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Store(db) as s:
        s.put("k", b"x", **meta())
    _flip_schema_bits(db)
    with pytest.raises(StoreError) as info:
        Store(db)
    assert str(db) in str(info.value)
    with pytest.raises(StoreError):
        Store(db, read_only=True)
    assert store.current_revision is not None
    with pytest.raises(StoreError):
        store.current_revision(db)


def test_counters_zeroed_at_is_recorded_by_reset(tmp_path: Path) -> None:
    with Store(tmp_path / "c.db", **NO_FLUSH) as s:
        assert s.counters_zeroed_at() is None
        s.add(misses=3)
        s.flush()
        import time

        before = time.time()
        s.reset_counters()
        zeroed = s.counters_zeroed_at()
        assert zeroed is not None and before - 0.01 <= zeroed <= time.time() + 0.01
        assert s.counters()["misses"] == 0 and set(s.counters()) == set(constants.COUNTERS)
    with Store(tmp_path / "c.db", read_only=True) as again:
        assert again.counters_zeroed_at() == zeroed


def test_write_problem_is_public_and_the_old_name_works(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    Store(db).close()
    assert store.write_problem(db) is None and store._write_problem(db) is None
    db.chmod(0o444)
    try:
        if store.write_problem(db) is None:
            pytest.skip("running as a user who can write a 0444 file (root)")
        assert "not writable" in str(store._write_problem(db))
    finally:
        db.chmod(0o600)


def test_entries_sort_by_instructions(tmp_path: Path) -> None:
    assert {"n_instructions", "instrs"} <= set(store.SORTS)
    with Store(tmp_path / "c.db", **NO_FLUSH) as s:
        for n in (5, 50, 1):
            s.put(f"k{n}", b"x%d" % n, **meta(n_instructions=n))
        assert [e["n_instructions"] for e in s.entries(sort="n_instructions")] == [50, 5, 1]
        assert [e["n_instructions"] for e in s.entries(sort="instrs", descending=False)] == [1, 5, 50]


def test_read_only_query_names_vacuum(sqlite_store: Store) -> None:
    with pytest.raises(StoreError, match="VACUUM is not allowed") as info:
        sqlite_store.query("VACUUM")
    assert "vacuum command" in str(info.value) and "ATTACH" not in str(info.value)


def test_upgrade_and_downgrade_errors_are_one_clean_line(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    Store(db).close()
    with pytest.raises(StoreError) as info:
        store.upgrade(db, "no_such_revision")
    assert "\n" not in str(info.value) and "no_such_revision" in str(info.value)
    # A schema the migration does not expect (a view it drops is gone): the SQL error, one line.
    conn = sqlite3.connect(db)
    conn.execute("DROP VIEW cache_stats")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as info:
        store.downgrade(db, "0001_initial")
    message = str(info.value)
    assert "\n" not in message and "[SQL" not in message and "Background on this error" not in message
    assert "cache_stats" in message and str(db) in message


def test_a_reader_and_a_writer_leave_the_database_file_alone_holding_everything(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    writer = Store(db, **NO_FLUSH)
    writer.put("k", b"payload", **meta())
    reader = Store(db, read_only=True)
    assert reader.get("k") is not None
    writer.put("k2", b"payload2", **meta())
    writer.close()  # not the last connection: the reader's keeps the WAL
    assert reader.get("k2") is not None
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db"], "the last close removed the -wal and -shm"
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro&immutable=1", uri=True)  # the file alone
    assert sorted(row[0] for row in conn.execute("SELECT key FROM entries")) == ["k", "k2"]
    conn.close()
