"""The Alembic migrations are the one source of the schema: walk them, compare them, race them."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from store_helpers import json_results

import zexus_bcache
from zexus_bcache import constants
from zexus_bcache.errors import SchemaTooNewError, StoreError
from zexus_bcache.store import Store, alembic_config, head_revision, schema, script_directory

PUT = dict(kind="source", fingerprint="fp1", codec_version=1, n_instructions=3, n_constants=2)




@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or a new PostgreSQL database (skips without a server)."""
    if request.param == "sqlite":
        return str(tmp_path / "m.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(location: str) -> Iterator[sa.Engine]:
    """An engine on ``location``; on SQLite with SQLAlchemy's documented transaction fix."""
    if "://" in location:
        eng = sa.create_engine(location)
    else:
        eng = sa.create_engine(f"sqlite:///{location}")

        @event.listens_for(eng, "connect")
        def _connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(eng, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    yield eng
    eng.dispose()


def migrate(engine: sa.Engine, verb: str, target: str) -> None:
    """Run ``alembic upgrade|downgrade target`` on a connection of ``engine``."""
    with engine.begin() as conn:
        getattr(command, verb)(alembic_config(conn), target)


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def objects(engine: sa.Engine) -> set[tuple[str, str]]:
    """Every (type, name) of table, view, index, trigger and function we could have created."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT type, name FROM sqlite_master").all()
            return {(type_, name) for type_, name in rows if not name.startswith("sqlite_")}
        inspector = sa.inspect(conn)
        found = {("table", name) for name in inspector.get_table_names()}
        found |= {("view", name) for name in inspector.get_view_names()}
        for table in inspector.get_table_names():
            found |= {("index", ix["name"]) for ix in inspector.get_indexes(table)}
        triggers = conn.exec_driver_sql("SELECT trigger_name FROM information_schema.triggers").all()
        found |= {("trigger", name) for (name,) in triggers}
        functions = conn.exec_driver_sql(
            "SELECT proname FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace"
            " WHERE nspname = 'public'"
        ).all()
        return found | {("function", name) for (name,) in functions}


def revisions_base_to_head() -> list[str]:
    return [rev.revision for rev in reversed(list(script_directory().walk_revisions()))]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exactly_one_head_and_every_revision_names_its_release() -> None:
    script = script_directory()
    assert len(script.get_heads()) == 1
    for rev in script.walk_revisions():
        assert "zexus_bcache" in (rev.doc or ""), f"{rev.revision} does not say which release it came with"


def test_stairway_each_revision_up_down_up(engine: sa.Engine) -> None:
    for rev in revisions_base_to_head():
        down = script_directory().get_revision(rev).down_revision
        migrate(engine, "upgrade", rev)
        assert current(engine) == rev
        migrate(engine, "downgrade", down or "base")
        assert current(engine) == down
        migrate(engine, "upgrade", rev)
        assert current(engine) == rev


def test_downgrade_to_base_leaves_only_alembic_version(engine: sa.Engine) -> None:
    migrate(engine, "upgrade", "head")
    assert {("view", v) for v in schema.VIEWS} <= objects(engine)
    assert {("trigger", t) for t in schema.TRIGGERS} <= objects(engine)
    migrate(engine, "downgrade", "base")
    assert objects(engine) == {("table", "alembic_version")}


def test_metadata_matches_migrations_at_head(location: str, engine: sa.Engine) -> None:
    Store(location).close()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []


def test_data_written_at_first_revision_survives_upgrades(location: str, engine: sa.Engine) -> None:
    first = revisions_base_to_head()[0]
    migrate(engine, "upgrade", first)
    # Raw SQL in the first revision's own terms (frozen here, like the revision itself).
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO blobs (checksum, payload) VALUES ('c', :p)"), {"p": b"\0\xff\0"})
        conn.exec_driver_sql(
            "INSERT INTO entries (key, kind, fingerprint, codec_version, checksum, source_hash,"
            " payload_size, n_instructions, n_constants, source_path, created_at, last_access,"
            " access_count) VALUES ('k1', 'file', 'fp', 1, 'c', 'sh', 3, 5, 2, '/a.zx', 1.0, 2.0, 7)"
        )
        conn.exec_driver_sql("UPDATE counters SET value = 42 WHERE name = 'misses'")
        conn.exec_driver_sql("UPDATE settings SET value = 'lfu' WHERE name = 'policy'")
    migrate(engine, "upgrade", "head")
    engine.dispose()
    with Store(location) as store:
        assert not store.migrated
        hit = store.get("k1")
        assert hit is not None and hit.payload == b"\0\xff\0" and hit.source_hash == "sh"
        info = store.info("k1")
        assert info is not None and info["access_count"] == 7 + 1 and info["source_path"] == "/a.zx"
        assert store.counters()["misses"] == 42
        assert store.get_settings()["policy"] == "lfu"


def test_fresh_database_is_migrated_from_base(tmp_path: Path) -> None:
    with Store(tmp_path / "new.db") as store:
        assert store.migrated
        assert store.revision() == head_revision()
    with Store(tmp_path / "new.db") as store:
        assert not store.migrated  # already at head: nothing to do
    # The migrations are the only way tables get made: no create_all anywhere in the package.
    package = Path(zexus_bcache.__file__).parent
    migrations = Path(script_directory().dir)
    for source in [*package.rglob("*.py"), *migrations.rglob("*.py")]:
        assert "create_all" not in source.read_text(), source


def test_a_failed_migration_is_rolled_back_ddl_included(
    location: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def upgrade_then_fail(config: object, revision: str) -> None:
        real_upgrade(config, revision)
        raise RuntimeError("disk on fire")

    real_upgrade = command.upgrade
    monkeypatch.setattr(command, "upgrade", upgrade_then_fail)
    with pytest.raises(StoreError, match="nothing was changed: disk on fire"):
        Store(location)
    assert objects(engine) == set() and current(engine) is None
    monkeypatch.undo()
    with Store(location) as store:
        assert store.migrated and store.revision() == head_revision()


def test_unknown_revision_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    conn.close()
    before, mtime = digest(path), path.stat().st_mtime_ns
    for read_only in (False, True):
        with pytest.raises(SchemaTooNewError, match="upgrade zexus_bcache") as info:
            Store(path, read_only=read_only)
        assert str(path) in str(info.value) and "0099_from_the_future" in str(info.value)
    assert digest(path) == before and path.stat().st_mtime_ns == mtime


def test_garbage_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(3000))
    with pytest.raises(StoreError, match="not a SQLite database") as info:
        Store(garbage)
    assert str(garbage) in str(info.value)
    assert garbage.stat().st_size == 3000

    truncated = tmp_path / "truncated.db"
    with Store(truncated) as store:
        store.put("k", os.urandom(20_000), **PUT)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(StoreError, match="truncated") as info:
        Store(truncated)
    assert str(truncated) in str(info.value)

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(StoreError, match="not a zexus_bcache store"):
        Store(foreign)


def test_read_only_refuses_a_database_that_needs_migrating(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such database"):
        Store(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()

    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="read-only"):
        Store(empty, read_only=True)
    assert empty.stat().st_size == 0

    base = tmp_path / "base.db"
    eng = sa.create_engine(f"sqlite:///{base}")
    migrate(eng, "upgrade", "head")
    migrate(eng, "downgrade", "base")
    eng.dispose()
    before = digest(base)
    with pytest.raises(StoreError, match="needs migrating"):
        Store(base, read_only=True)
    assert digest(base) == before


def test_read_only_store_reads_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    with Store(path) as store:
        store.put("k", b"payload" * 100, **PUT)
    path.chmod(0o444)
    before, mtime = digest(path), path.stat().st_mtime_ns
    try:
        with Store(path, read_only=True) as store:
            for _ in range(300):
                hit = store.get("k")
                assert hit is not None and hit.payload == b"payload" * 100
            assert store.get("missing") is None
            store.add(misses=2)
            store.flush()  # a no-op: a read-only store keeps its counters in memory
            assert store.counters()["misses"] == 2
            with pytest.raises(StoreError, match="read-only"):
                store.put("k2", b"x", **PUT)
            with pytest.raises(StoreError, match="read-only"):
                store.evict(max_entries=0)
        if os.geteuid() != 0:  # root ignores file modes: then mode=ro alone is what protects the file
            with pytest.raises(StoreError):
                Store(path)  # writable open of a 0444 file cannot migrate or write
    finally:
        path.chmod(0o644)
    assert digest(path) == before and path.stat().st_mtime_ns == mtime


OPENER = """
import json, sys, time
from zexus_bcache.store import Store
path, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    with Store(path) as store:
        print(json.dumps({"ok": True, "migrated": store.migrated, "revision": store.revision()}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": repr(exc)}))
"""


def test_eight_processes_opening_a_fresh_database_migrate_it_once(location: str) -> None:
    start = time.time() + 3.0  # every child waits for the same instant, after its imports
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, location, repr(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = json_results(children, timeout=90)
    assert all(r["ok"] for r in results), results
    assert [r["revision"] for r in results] == [head_revision()] * 8
    assert sum(r["migrated"] for r in results) == 1, results


def test_head_revision_constant_matches_alembic() -> None:
    assert head_revision() == schema.HEAD_REVISION == constants.HEAD_REVISION


def test_opening_an_up_to_date_cache_does_not_load_alembic(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    Store(db).close()
    script = (
        "import sys\n"
        "from zexus_bcache.store import Store\n"
        f"s = Store({str(db)!r}); s.put('k', b'x', kind='ast', fingerprint='f', codec_version=1,"
        " n_instructions=1, n_constants=1); assert s.get('k').payload == b'x'; s.close()\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_0001_database_with_data_upgrades_to_0002_and_back_keeping_rows(location: str, engine: sa.Engine) -> None:
    migrate(engine, "upgrade", "0001_initial")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO blobs (checksum, payload) VALUES ('c', :p)"), {"p": b"bytes"})
        for key in ("k1", "k2"):
            conn.execute(
                sa.text(
                    "INSERT INTO entries (key, kind, fingerprint, codec_version, checksum, payload_size,"
                    " n_instructions, n_constants, created_at, last_access, access_count)"
                    " VALUES (:k, 'source', 'fp', 1, 'c', 5, 1, 1, 1.0, 2.0, 3)"
                ),
                {"k": key},
            )
        conn.exec_driver_sql("UPDATE counters SET value = 9 WHERE name = 'puts'")
    migrate(engine, "upgrade", "0002_entry_signature")
    with engine.begin() as conn:
        rows = conn.exec_driver_sql("SELECT key, signature, access_count FROM entries ORDER BY key").all()
        assert [tuple(r) for r in rows] == [("k1", None, 3), ("k2", None, 3)]
        counters = dict(conn.exec_driver_sql("SELECT name, value FROM counters").all())
        assert counters["puts"] == 9 and counters["shared_hits"] == 0 and counters["auth_failures"] == 0
        conn.exec_driver_sql("UPDATE entries SET signature = 'ab' WHERE key = 'k1'")
    with Store(location) as store:  # upgraded to head on open; signatures and counters through the store
        assert store.migrated and store.revision() == head_revision()
        hit = store.get("k1")
        assert hit is not None and hit.signature == "ab" and hit.payload == b"bytes"
        store.add(shared_hits=2)
        store.flush()
        assert store.counters()["shared_hits"] == 2
    migrate(engine, "downgrade", "0001_initial")
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT key FROM entries ORDER BY key")] == ["k1", "k2"]
        assert "signature" not in {c["name"] for c in sa.inspect(conn).get_columns("entries")}
        names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM counters")}
        assert "shared_hits" not in names and "puts" in names
    engine.dispose()


def test_a_counter_missing_from_the_table_is_created_by_the_first_flush(location: str, engine: sa.Engine) -> None:
    Store(location).close()
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM counters WHERE name = 'shared_puts'")
    engine.dispose()
    with Store(location) as store:
        store.add(shared_puts=4)
        store.flush()
        store.add(shared_puts=1)
        store.flush()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM counters WHERE name = 'shared_puts'").scalar_one() == 5


def test_cache_stats_counts_shared_hits_from_0002_and_not_before(engine: sa.Engine) -> None:
    migrate(engine, "upgrade", "head")
    counts = {"front_hits": 1, "store_hits": 2, "shared_hits": 3, "misses": 4, "auth_failures": 5}
    with engine.begin() as conn:
        for name, value in counts.items():
            conn.execute(sa.text("UPDATE counters SET value = :v WHERE name = :n"), {"v": value, "n": name})
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM cache_stats")).mappings().one()
    assert (row["hits"], row["shared_hits"], row["auth_failures"]) == (6, 3, 5)
    assert float(row["hit_rate"]) == 60.0  # 6 hits of 10 lookups

    migrate(engine, "downgrade", "0001_initial")
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM cache_stats")).mappings().one()
    assert "shared_hits" not in row and row["hits"] == 3
    assert float(row["hit_rate"]) == round(100 * 3 / 7, 2)


def test_0002_database_with_data_upgrades_to_0003_with_its_totals_and_back(location: str, engine: sa.Engine) -> None:
    migrate(engine, "upgrade", "0002_entry_signature")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO blobs (checksum, payload) VALUES ('c', :p)"), {"p": b"bytes"})
        for key, size in (("k1", 5), ("k2", 7), ("k3", 11)):
            conn.execute(
                sa.text(
                    "INSERT INTO entries (key, kind, fingerprint, codec_version, checksum, payload_size,"
                    " n_instructions, n_constants, created_at, last_access, access_count)"
                    " VALUES (:k, 'source', 'fp', 1, 'c', :s, 1, 1, 1.0, :t, 0)"
                ),
                {"k": key, "s": size, "t": float(size)},
            )
    migrate(engine, "upgrade", "0003_entry_totals")
    sha256_128 = hashlib.sha256(b"bytes").hexdigest()[:32]  # blobs moved to their new content address
    with engine.connect() as conn:
        assert tuple(conn.exec_driver_sql("SELECT n_entries, total_bytes FROM totals").one()) == (3, 23)
        assert conn.exec_driver_sql("SELECT checksum FROM blobs").all() == [(sha256_128,)]
        assert {c for (c,) in conn.exec_driver_sql("SELECT checksum FROM entries")} == {sha256_128}
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("entries")}
        assert indexes == {"ix_entries_checksum", "ix_entries_last_access"}
    migrate(engine, "upgrade", "head")
    engine.dispose()
    with Store(location) as store:  # at head: the totals the migrations seeded, kept by the triggers
        assert not store.migrated and store.totals() == (3, 23)
        store.set_setting("max_entries", 2)
        assert store.put("k4", b"four", **PUT) == ["k1", "k2"]  # the oldest go in the put's transaction
        assert store.totals() == (2, 11 + 4)
    migrate(engine, "downgrade", "0002_entry_signature")
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT key FROM entries ORDER BY key")] == ["k3", "k4"]
        blake2b_128 = {hashlib.blake2b(p, digest_size=16).hexdigest() for p in (b"bytes", b"four")}
        assert {c for (c,) in conn.exec_driver_sql("SELECT checksum FROM blobs")} == blake2b_128
        assert {c for (c,) in conn.exec_driver_sql("SELECT checksum FROM entries")} == blake2b_128
        inspector = sa.inspect(conn)
        assert "totals" not in inspector.get_table_names()
        restored = {"ix_entries_fingerprint", "ix_entries_source_path"}
        assert {ix["name"] for ix in inspector.get_indexes("entries")} >= restored
    engine.dispose()


def test_0003_database_upgrades_to_inline_payloads_and_back(location: str, engine: sa.Engine) -> None:
    migrate(engine, "upgrade", "0003_entry_totals")
    shared, alone = (hashlib.sha256(p).hexdigest()[:32] for p in (b"shared", b"alone"))  # 0003's addresses
    with engine.begin() as conn:
        for digest, payload in ((shared, b"shared"), (alone, b"alone")):
            conn.execute(sa.text("INSERT INTO blobs (checksum, payload) VALUES (:c, :p)"), {"c": digest, "p": payload})
        for key, digest, size in (("a", shared, 6), ("b", shared, 6), ("c", alone, 5), ("lost", "0" * 32, 9)):
            conn.execute(
                sa.text(
                    "INSERT INTO entries (key, kind, fingerprint, codec_version, checksum, payload_size,"
                    " n_instructions, n_constants, created_at, last_access, access_count)"
                    " VALUES (:k, 'source', 'fp', 1, :c, :s, 1, 1, 1.0, 2.0, 3)"
                ),
                {"k": key, "c": digest, "s": size},
            )
    migrate(engine, "upgrade", "0004_inline_payload")
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT key, checksum, payload, access_count FROM entries ORDER BY key").all()
        # Each entry carries its blob's bytes, checked by CRC-32; one whose blob was missing could
        # never be served: gone.
        crc_shared, crc_alone = (format(zlib.crc32(p), "08x") for p in (b"shared", b"alone"))
        assert [(k, c, bytes(p), n) for k, c, p, n in rows] == [
            ("a", crc_shared, b"shared", 3), ("b", crc_shared, b"shared", 3), ("c", crc_alone, b"alone", 3)
        ]
        assert tuple(conn.exec_driver_sql("SELECT n_entries, total_bytes FROM totals").one()) == (3, 17)
        inspector = sa.inspect(conn)
        assert "blobs" not in inspector.get_table_names()
        assert {ix["name"] for ix in inspector.get_indexes("entries")} == {"ix_entries_last_access"}
        assert set(schema.VIEWS) <= set(inspector.get_view_names())
    engine.dispose()
    with Store(location) as store:
        assert store.get("b") is not None and store.get("b").payload == b"shared"  # type: ignore[union-attr]
        assert store.delete("a") and store.totals() == (2, 11)
        cols, rows = store.query("SELECT entries, total_bytes FROM cache_stats")
        assert rows == [(2, 11)]
    migrate(engine, "downgrade", "0003_entry_totals")
    with engine.begin() as conn:
        blobs = conn.exec_driver_sql("SELECT checksum, payload FROM blobs ORDER BY checksum").all()
        assert [(c, bytes(p)) for c, p in blobs] == sorted([(shared, b"shared"), (alone, b"alone")])
        assert {ix["name"] for ix in sa.inspect(conn).get_indexes("entries")} == {
            "ix_entries_checksum", "ix_entries_last_access"
        }
        conn.exec_driver_sql("DELETE FROM entries WHERE key = 'c'")  # the orphan trigger is back
        assert conn.exec_driver_sql("SELECT checksum FROM blobs").all() == [(shared,)]
        assert tuple(conn.exec_driver_sql("SELECT n_entries, total_bytes FROM totals").one()) == (1, 6)
    if "://" not in location:
        raw = sqlite3.connect(location)
        (ddl,) = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'entries'").fetchone()
        raw.close()
        assert "WITHOUT ROWID" in ddl
    engine.dispose()
