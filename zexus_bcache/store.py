"""The persistent tier: opaque encoded bytecode in SQLite (or PostgreSQL) through SQLAlchemy Core.

All SQL lives here and in :mod:`zexus_bcache.schema`. Three things shape this module:

* ``get`` is the hot path and never writes. On SQLite it runs one prepared SELECT on a raw
  ``sqlite3`` connection held per thread (SQLAlchemy Core costs ~15 µs more per statement).
  Hits are recorded in memory (last access, +1 count) and flushed in batches, so LRU/LFU order
  stays right without a write transaction per read.
* A warm start never imports SQLAlchemy (~160 ms a process): on SQLite, opening an up-to-date
  database, ``get``, ``put`` and the flush of hits and counters run literal SQL (below, checked
  against the Core statements built from :mod:`zexus_bcache.schema` by the tests) on those raw
  connections. The Core engine is created the first time anything else needs it.
* Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``): SQLAlchemy's documented
  pysqlite fix (``isolation_level = None`` at connect, our own ``BEGIN`` in the ``begin`` event)
  with the BEGIN variant chosen by an execution option of the write engine.
* The schema is owned by the Alembic migrations shipped in ``zexus_bcache.migrations``; a fresh
  database is migrated from base under a lock, exactly once however many processes open it.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import functools
import hashlib
import importlib.util
import logging
import os
import random
import re
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from . import constants, trust
from .errors import BcacheError, ConfigError, SchemaTooNewError, StoreError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

# Alembic is imported only when a database needs migrating or a migration command runs: opening
# an up-to-date cache (every warm start) compares its revision with constants.HEAD_REVISION and
# never pays for importing Alembic (~80 ms).

log = logging.getLogger("zexus_bcache")

MIGRATIONS_PACKAGE = "zexus_bcache.migrations"
_BEGIN_OPTION = "zexus_bcache_begin"
_PG_MIGRATION_LOCK = 0x7A65_7875_7362_63  # pg_advisory_xact_lock key: "zexusbc"
_MAX_PENDING_KEYS = 100_000
_CHUNK = 500  # keys per IN (...) list
_CACHE_KIB = 32 * 1024  # SQLite page cache per connection (diskcache uses the same)
_MMAP_BYTES = 64 * 1024 * 1024  # memory-mapped reads: no read() call per page (as diskcache)

_COUNTER_NAMES = frozenset(constants.COUNTERS)


class Orphans(NamedTuple):
    """Rows that lost their other half: entries whose blob is missing, blobs no entry uses."""

    entries: list[str]
    blobs: list[str]


class StoredEntry(NamedTuple):
    """What serving a hit needs: the payload and what says whether it is usable (the rest: ``info``).

    A NamedTuple, not a dataclass, and only these columns: this is built on every store hit, and
    each extra column or a frozen dataclass costs the hot path measurable time (see bench_store.py).
    """

    key: str
    kind: str
    fingerprint: str
    codec_version: int
    checksum: str
    source_hash: str | None
    mem_size: int | None
    signature: str | None
    payload: bytes


_make_entry: Callable[[Iterable[Any]], StoredEntry] = functools.partial(tuple.__new__, StoredEntry)

SORTS = ("last_access", "created_at", "size", "access_count", "key", "source_path")
"""What :meth:`Store.entries` can sort by."""

# -- the hot statements on SQLite, written out -------------------------------------------------
# So that a warm start never imports SQLAlchemy. Each is exactly what SQLAlchemy compiles for
# SQLite from the Core statement of the same name in _statements(), built from schema.py: a test
# compiles those and compares (tests/test_store.py), so the schema stays the one source of truth.
# Parameters are positional, in the order noted.

_ENTRY_COLUMNS = (
    "key", "kind", "fingerprint", "codec_version", "checksum", "source_hash", "mem_size", "payload_size",
    "n_instructions", "n_constants", "source_path", "created_at", "last_access", "access_count", "signature",
)  # schema.entries' columns, in order: the parameters of _SQL_PUT_ENTRY

# (key); returns StoredEntry's fields between key and payload, then the payload.
_SQL_SELECT_ENTRY = (
    "SELECT entries.kind, entries.fingerprint, entries.codec_version, entries.checksum,"
    " entries.source_hash, entries.mem_size, entries.signature, blobs.payload"
    " FROM entries JOIN blobs ON blobs.checksum = entries.checksum"
    ' WHERE entries."key" = ?'
)
# (checksum, payload)
_SQL_PUT_BLOB = (
    "INSERT INTO blobs (checksum, payload) VALUES (?, ?)"
    " ON CONFLICT (checksum) DO UPDATE SET payload = excluded.payload"
    " WHERE blobs.payload IS NOT excluded.payload"
)
# (*_ENTRY_COLUMNS)
_SQL_PUT_ENTRY = (
    'INSERT INTO entries ("key", kind, fingerprint, codec_version, checksum, source_hash, mem_size,'
    " payload_size, n_instructions, n_constants, source_path, created_at, last_access, access_count,"
    " signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ' ON CONFLICT ("key") DO UPDATE SET kind = excluded.kind, fingerprint = excluded.fingerprint,'
    " codec_version = excluded.codec_version, checksum = excluded.checksum,"
    " source_hash = excluded.source_hash, mem_size = excluded.mem_size,"
    " payload_size = excluded.payload_size, n_instructions = excluded.n_instructions,"
    " n_constants = excluded.n_constants, source_path = excluded.source_path,"
    " last_access = CASE WHEN (entries.last_access > excluded.last_access)"
    " THEN entries.last_access ELSE excluded.last_access END, signature = excluded.signature"
)
# (t, t, n, k): a key's last use and how many more uses
_SQL_TOUCH = (
    "UPDATE entries SET last_access=CASE WHEN (entries.last_access < ?) THEN ? ELSE entries.last_access END,"
    ' access_count=(entries.access_count + ?) WHERE entries."key" = ?'
)
# (c, d): add d to counter c (an upsert: a counter the database does not have yet starts at d)
_SQL_BUMP = (
    "INSERT INTO counters (name, value) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = (counters.value + excluded.value)"
)

# What an eviction report says about each entry it removes.
_REPORT_COLUMNS = ("key", "kind", "source_path", "payload_size", "last_access", "access_count")


class _Core(NamedTuple):
    """The tables and what is built from them: loaded the first time a Core statement is needed."""

    entries: sa.Table
    blobs: sa.Table
    counters: sa.Table
    settings: sa.Table
    victim_order: dict[str, tuple[sa.ColumnElement[Any], ...]]
    sorts: dict[str, sa.ColumnElement[Any]]


@functools.cache
def _core() -> _Core:
    """The schema's tables, with the eviction orders and sorts over them (imports SQLAlchemy)."""
    from . import schema

    e = schema.entries.c
    # Eviction policies are data: the order in which entries go first (the rest is shared SQL).
    victim_order = {
        "lru": (e.last_access, e.key),
        "lfu": (e.access_count, e.last_access, e.key),
    }
    assert set(victim_order) == set(constants.POLICIES)
    sorts = {
        "last_access": e.last_access,
        "created_at": e.created_at,
        "size": e.payload_size,
        "access_count": e.access_count,
        "key": e.key,
        "source_path": e.source_path,
    }
    assert tuple(sorts) == SORTS
    return _Core(schema.entries, schema.blobs, schema.counters, schema.settings, victim_order, sorts)


class _Statements(NamedTuple):
    """The store's Core statements for one dialect (on SQLite the hot ones run as the _SQL_* text)."""

    insert: Callable[..., Any]  # the dialect's INSERT, which has on_conflict_do_update
    put_blob: Any
    put_entry: Any
    select_entry: Any
    touch: Any
    bump: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    """Build the Core statements of ``dialect`` ("sqlite" or "postgresql") from the schema."""
    import sqlalchemy as sa

    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    core = _core()
    entries, blobs, e = core.entries, core.blobs, core.entries.c
    # A re-put repairs a damaged blob: same checksum, different bytes on disk.
    blob = insert(blobs)
    put_blob = blob.on_conflict_do_update(
        index_elements=[blobs.c.checksum],
        set_={"payload": blob.excluded.payload},
        where=blobs.c.payload.is_distinct_from(blob.excluded.payload),
    )
    entry = insert(entries)
    replaced = {
        c.name: entry.excluded[c.name] for c in e if c.name not in ("key", "created_at", "access_count", "last_access")
    }
    # A put is a use, but never moves last_access back: a put that waited for the write lock
    # commits after hits of other processes that were flushed meanwhile (LRU order would regress).
    new_access = entry.excluded.last_access
    replaced["last_access"] = sa.case((e.last_access > new_access, e.last_access), else_=new_access)
    put_entry = entry.on_conflict_do_update(index_elements=[e.key], set_=replaced)
    hit_columns = [e[name] for name in StoredEntry._fields[1:-1]] + [blobs.c.payload]
    select_entry = (
        sa.select(*hit_columns).join_from(entries, blobs, blobs.c.checksum == e.checksum).where(e.key == sa.bindparam("key"))
    )
    t = sa.bindparam("t", type_=sa.Float)
    touch = (
        sa.update(entries)
        .where(e.key == sa.bindparam("k"))
        .values(
            last_access=sa.case((e.last_access < t, t), else_=e.last_access),
            access_count=e.access_count + sa.bindparam("n", type_=sa.Integer),
        )
    )
    counters = core.counters
    # An upsert: a counter that a database does not have yet starts there (no migration needed).
    counter = insert(counters).values(name=sa.bindparam("c"), value=sa.bindparam("d", type_=sa.BigInteger))
    bump = counter.on_conflict_do_update(
        index_elements=[counters.c.name], set_={"value": counters.c.value + counter.excluded.value}
    )
    return _Statements(insert, put_blob, put_entry, select_entry, touch, bump)


def checksum(payload: bytes) -> str:
    """The hex blake2b-128 digest stored next to every payload (what ``doctor`` compares)."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for our shipped migrations, running on ``connection`` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", f"{MIGRATIONS_PACKAGE}:")
    config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped with this package (loaded once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def _current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _errors() -> tuple[type[BaseException], ...]:
    """What a database operation can raise: SQLAlchemy's and Alembic's errors once they are loaded."""
    extra: tuple[type[BaseException], ...] = ()
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None:
        extra += (sa_exc.SQLAlchemyError,)
    alembic_util = sys.modules.get("alembic.util")
    if alembic_util is not None:
        extra += (alembic_util.CommandError,)
    return (sqlite3.Error, OSError, *extra)


def _is_locked(exc: BaseException) -> bool:
    """Whether a database error is SQLite's "database is locked" / "busy" (directly or wrapped by SQLAlchemy)."""
    cause = getattr(exc, "orig", None) or exc
    return isinstance(cause, sqlite3.OperationalError) and any(
        word in str(cause).lower() for word in ("database is locked", "database table is locked", "busy")
    )


def head_revision() -> str:
    """The newest revision this package knows."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in script_directory().walk_revisions())


def parse_setting(name: str, value: object) -> int | str:
    """Validate one setting; return it typed (int limits, 0 = unlimited; policy 'lru'|'lfu')."""
    if name not in constants.DEFAULT_SETTINGS:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(constants.DEFAULT_SETTINGS)}")
    if name == "policy":
        policy = str(value).strip().lower()
        if policy not in constants.POLICIES:
            raise ConfigError(f"policy must be one of {', '.join(constants.POLICIES)}, not {value!r}")
        return policy
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}")
    return number


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _public(method: Callable[Concatenate[Store, _P], _R]) -> Callable[Concatenate[Store, _P], _R]:
    """Refuse calls on a closed store and turn database errors into StoreError."""

    @functools.wraps(method)
    def wrapper(self: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._closed:
            raise StoreError(f"{self.name}: the store is closed")
        try:
            return method(self, *args, **kwargs)
        except BcacheError:
            raise
        except _errors() as exc:
            raise self._error(method.__name__, exc) from exc

    return wrapper


class Store:
    """Opaque bytecode blobs with metadata, counters and settings in one database."""

    def __init__(
        self,
        url_or_path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        busy_timeout_ms: int = 30000,
        flush_every: int = 1024,
        flush_interval: float = 2.0,
        pragmas: Mapping[str, int | str] | None = None,
        allow_world_writable: bool | None = None,
    ) -> None:
        """Open (and, unless read-only, create or migrate) the database at a path or URL.

        A SQLite file that this process cannot write is opened read-only (one warning); one that
        every user can write is refused unless ``allow_world_writable`` (default: the environment
        variable ``ZEXUS_BCACHE_ALLOW_WORLD_WRITABLE=1``). ``pragmas`` are extra SQLite PRAGMAs set
        on every connection (tests use ``max_page_count`` to simulate a full disk).
        """
        self.read_only = read_only
        self.degraded: str | None = None  # why a store asked to write was opened read-only
        self.pragmas = _checked_pragmas(pragmas)
        if allow_world_writable is None:
            allow_world_writable = trust.allowed_by_env()
        self.allow_world_writable = allow_world_writable
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.flush_every = max(1, int(flush_every))
        self.flush_interval = float(flush_interval)
        self.migrated = False  # whether this instance ran the migrations
        self._closed = True  # until opened
        self._lock = threading.Lock()  # pending data
        self._flush_lock = threading.Lock()  # one flush at a time
        self._pending: dict[str, list[Any]] = {}  # key -> [last access time, hits]
        self._pending_counters: dict[str, int] = {}
        self._n_pending = 0
        self._next_flush = time.time() + self.flush_interval
        self._flush_failing = False
        self._local = threading.local()
        # Weakly held: a thread's connection closes when the thread ends (its local goes), or on close().
        self._raw: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._raw_sql = False  # whether the hot statements run as literal SQL on raw connections (SQLite)

        self.path, self._server_url = _locate(url_or_path)
        if self._server_url is None:
            self.name, self.dialect = str(self.path), "sqlite"
        else:
            # Without the query (connection options): the name is for messages.
            self.name = self._server_url.set(query={}).render_as_string(hide_password=True)
            self.dialect = self._server_url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"{self.name}: unsupported database {self.dialect!r} (SQLite or PostgreSQL)")
        # The Core engine, and its variant whose transactions BEGIN IMMEDIATE: made on first use.
        self._engine: Engine | None = None
        self._immediate_engine: Engine | None = None
        self._engine_lock = threading.Lock()
        # SQLite can answer "database is locked" at once, without waiting in the busy handler, to a
        # process opening a database that others are creating and converting to WAL at the same
        # instant (seen: 3 of 4 processes started together in bench/bench_load.py). Opening is
        # idempotent (the migration re-checks the revision under the write lock): try again until
        # the busy timeout is spent.
        deadline = time.monotonic() + self._busy_s
        delay = 0.005
        while True:
            try:
                self._open()
                break
            except BcacheError:
                self._dispose()
                raise
            except _errors() as exc:
                self._dispose()
                if self.path is None or not _is_locked(exc) or time.monotonic() + delay > deadline:
                    raise self._error("open", exc) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)
        self._closed = False
        _LIVE.add(self)
        if self._raw_sql:
            # Open this thread's read connection now: the first get of a warm start is then one
            # SELECT, and a file that cannot be read fails here, not in the middle of a run.
            self._thread_cursor()

    # -- opening and migrating ---------------------------------------------------------------

    def _open(self) -> None:
        head = constants.HEAD_REVISION
        if self.path is not None:
            self._check_sqlite_access()
            current = self._peek_sqlite_revision()
            self._check_revision(current, head)
            if not self.read_only:
                trust.create_private(self.path)
                self._check_trust()  # again: what we did not create ourselves may have appeared meanwhile
        else:
            with self._core_engine().connect() as conn:
                current = _current_revision(conn)
            self._check_revision(current, head)
        if current != head:
            self._migrate(head)
        self._raw_sql = self.path is not None

    def _check_sqlite_access(self) -> None:
        """Refuse a file anyone could have planted bytecode in; open one we cannot write read-only."""
        assert self.path is not None
        self._check_trust()
        if not self.read_only:
            problem = _write_problem(self.path)
            if problem:
                self.read_only = True
                self.degraded = problem
                message = "%s: %s; using the cache read-only: hits are served, nothing is written"
                log.warning(message, self.path, problem)

    def _check_trust(self) -> None:
        """Refuse a cache another user could have planted bytecode in (docs/TRUST.md)."""
        assert self.path is not None
        if not self.allow_world_writable:
            refusal = trust.refusal(self.path, "cache", side_files=_SIDE_SUFFIXES)
            if refusal:
                raise StoreError(refusal)

    def _check_revision(self, current: str | None, head: str) -> None:
        if current == head:
            return
        if current is not None and current not in _known_revisions():
            raise SchemaTooNewError(
                f"{self.name}: the database is at schema revision {current!r}, which this"
                f" zexus_bcache does not know (newest known: {head!r}); it was written by a newer"
                " zexus_bcache: upgrade zexus_bcache (pip install -U zexus-bcache). Nothing was changed."
            )
        if self.read_only:
            state = "is empty" if current is None else f"is at an older schema revision ({current!r})"
            fix = f"{self.degraded}: let its owner open it once" if self.degraded else "open it once without read_only"
            raise StoreError(
                f"{self.name}: the database {state} and needs migrating to {head!r}, which a"
                f" read-only store cannot do; {fix} to upgrade it"
            )

    def _peek_sqlite_revision(self) -> str | None:
        """Read the revision through a read-only connection (so refusing writes nothing)."""
        assert self.path is not None
        return _peek_sqlite_revision(self.path, busy_s=self._busy_s, must_exist=self.read_only)

    def _migrate(self, head: str) -> None:
        """Upgrade to head once: under SQLite's write lock or a PostgreSQL advisory lock."""
        with self._write_engine.connect() as conn, conn.begin():
            if self.dialect == "postgresql":
                import sqlalchemy as sa

                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            # Another process may have migrated while we waited for the lock.
            current = _current_revision(conn)
            self._check_revision(current, head)
            if current == head:
                return
            log.info("%s: migrating schema %s -> %s", self.name, current or "(empty)", head)
            from alembic import command

            try:
                command.upgrade(alembic_config(conn), "head")
            except Exception as exc:  # the transaction rolls back: DDL included, nothing changed
                message = f"{self.name}: migrating to {head!r} failed, nothing was changed: {exc}"
                raise StoreError(message) from exc
            self.migrated = True

    def _create_engine(self) -> Engine:
        import sqlalchemy as sa
        from sqlalchemy import event

        if self.path is None:
            options = {"postgresql_readonly": True} if self.read_only else {}
            return sa.create_engine(self.url, execution_options=options)
        uri = _sqlite_uri(self.path, read_only=self.read_only)
        busy_s = self._busy_s

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=busy_s, check_same_thread=False)

        engine = sa.create_engine("sqlite+pysqlite://", creator=connect, poolclass=sa.pool.QueuePool)
        # Listeners hold no reference to the store, so a dropped store is freed (and flushed) at once.
        busy_ms, read_only = self.busy_timeout_ms, self.read_only
        configure = functools.partial(_configure_sqlite, busy_ms=busy_ms, read_only=read_only, pragmas=self.pragmas)
        event.listen(engine, "connect", lambda dbapi_connection, _record: configure(dbapi_connection))
        event.listen(engine, "begin", _emit_begin)
        return engine

    # -- the hot path ------------------------------------------------------------------------

    def get(self, key: str) -> StoredEntry | None:
        """The entry stored under ``key`` or None; reads only (the hit is recorded in memory)."""
        if not self._raw_sql:
            row = self._get_core(key)
        else:
            try:
                cursor = self._local.cursor
            except AttributeError:
                cursor = self._thread_cursor()
            try:
                row = cursor.execute(_SQL_SELECT_ENTRY, (key,)).fetchone()
            except sqlite3.Error as exc:
                raise self._error("get", exc) from exc
        if row is None:
            return None
        self.touch(key)
        return _make_entry((key, *row))

    def touch(self, key: str, counter: str | None = None) -> None:
        """Record one use of ``key`` (time, +1 count), and +1 on ``counter`` if given, in memory; no I/O."""
        if self._closed:
            return
        now = time.time()
        with self._lock:
            if counter is not None:
                self._pending_counters[counter] = self._pending_counters.get(counter, 0) + 1
            if self.read_only:
                return  # access times could never be saved; counters stay in memory
            hit = self._pending.get(key)
            if hit is None:
                self._pending[key] = [now, 1]
            else:
                if now > hit[0]:  # another thread may have recorded a later use while we waited
                    hit[0] = now
                hit[1] += 1
            self._n_pending += 1
            due = self._n_pending >= self.flush_every or now >= self._next_flush
        if due:
            self._auto_flush()

    def _get_core(self, key: str) -> Any:
        """The hot SELECT through Core (dialects other than SQLite)."""
        if self._closed:
            raise StoreError(f"{self.name}: the store is closed")
        try:
            with self._core_engine().connect() as conn:
                return conn.execute(_statements(self.dialect).select_entry, {"key": key}).first()
        except _errors() as exc:
            raise self._error("get", exc) from exc

    def _thread_cursor(self) -> sqlite3.Cursor:
        """This thread's raw connection and cursor for the hot statements (same pragmas as the engine's)."""
        if self._closed:
            raise StoreError(f"{self.name}: the store is closed")
        assert self.path is not None
        try:
            conn = sqlite3.connect(
                _sqlite_uri(self.path, read_only=self.read_only),
                uri=True,
                timeout=self._busy_s,
                check_same_thread=False,  # close() may run in another thread
            )
            _configure_sqlite(conn, busy_ms=self.busy_timeout_ms, read_only=self.read_only, pragmas=self.pragmas)
        except sqlite3.Error as exc:
            raise self._error("connect", exc) from exc
        held = _ThreadConnection(conn)
        self._local.held = held
        self._local.cursor = held.cursor
        with self._lock:
            self._raw.add(held)
        return held.cursor

    # -- writing -----------------------------------------------------------------------------

    @_public
    def put(
        self,
        key: str,
        payload: bytes,
        *,
        kind: str,
        fingerprint: str,
        codec_version: int,
        n_instructions: int,
        n_constants: int,
        source_path: str | os.PathLike[str] | None = None,
        source_hash: str | None = None,
        mem_size: int | None = None,
        signature: str | None = None,
    ) -> None:
        """Insert or replace the entry under ``key`` (payload size and checksum computed here).

        ``signature`` is what the shared tier stores with an entry (see :mod:`zexus_bcache.shared`).
        """
        if kind not in constants.KINDS:
            raise ConfigError(f"kind must be one of {', '.join(constants.KINDS)}, not {kind!r}")
        self._require_writable("put")
        payload = bytes(payload)
        digest = checksum(payload)
        now = time.time()
        source = None if source_path is None else os.fspath(source_path)
        # In schema.entries column order (_ENTRY_COLUMNS).
        entry = (key, kind, fingerprint, codec_version, digest, source_hash, mem_size, len(payload))
        entry += (n_instructions, n_constants, source, now, now, 0, signature)
        if not self._raw_sql:
            statements = _statements(self.dialect)
            with self._write_engine.begin() as conn:
                conn.execute(statements.put_blob, {"checksum": digest, "payload": payload})
                conn.execute(statements.put_entry, dict(zip(_ENTRY_COLUMNS, entry)))
        else:
            with self._raw_transaction() as cursor:
                cursor.execute(_SQL_PUT_BLOB, (digest, payload))
                cursor.execute(_SQL_PUT_ENTRY, entry)
        if self._n_pending and (self._n_pending >= self.flush_every or now >= self._next_flush):
            self._auto_flush()

    @_public
    def delete(self, key: str) -> bool:
        """Remove one entry; True if it existed."""
        import sqlalchemy as sa

        entries = _core().entries
        self._require_writable("delete")
        with self._write_engine.begin() as conn:
            deleted = conn.execute(sa.delete(entries).where(entries.c.key == key)).rowcount
        self._forget([key])
        return deleted > 0

    @_public
    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove the entries under the given keys in one transaction; return how many existed."""
        import sqlalchemy as sa

        entries = _core().entries
        self._require_writable("delete")
        keys = list(dict.fromkeys(keys))
        deleted = 0
        with self._write_engine.begin() as conn:
            for chunk in _chunks(keys):
                deleted += conn.execute(sa.delete(entries).where(entries.c.key.in_(chunk))).rowcount
        self._forget(keys)
        return deleted

    @_public
    def invalidate(
        self,
        *,
        fingerprint: str | None = None,
        older_than: float | None = None,
        source_path: str | os.PathLike[str] | None = None,
        kind: str | None = None,
        other_than_fingerprints: Collection[str] | None = None,
    ) -> int:
        """Delete the entries matching every given criterion; return how many went.

        ``other_than_fingerprints`` keeps the entries made by any of the given compilers.
        """
        import sqlalchemy as sa

        entries = _core().entries
        conditions = _filters(
            fingerprint=fingerprint,
            other_than_fingerprints=other_than_fingerprints,
            older_than=older_than,
            source_path=source_path,
            kind=kind,
        )
        if not conditions:
            raise ConfigError("invalidate needs at least one criterion (use clear() to remove everything)")
        self._require_writable("invalidate")
        if older_than is not None:
            self.flush()  # recent hits still in memory must count
        with self._write_engine.begin() as conn:
            return conn.execute(sa.delete(entries).where(*conditions)).rowcount

    @_public
    def clear(self) -> int:
        """Delete every entry; return how many went (counters and settings stay)."""
        import sqlalchemy as sa

        entries = _core().entries
        self._require_writable("clear")
        with self._write_engine.begin() as conn:
            deleted = conn.execute(sa.delete(entries)).rowcount
        with self._lock:
            self._pending.clear()
        return deleted

    @_public
    def evict(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        policy: str | None = None,
        *,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Remove entries beyond the limits in policy order; return their keys, first evicted first.

        Limits and policy not given are read fresh from the ``settings`` table; 0 = unlimited.
        See :meth:`evict_report` for ``older_than`` and ``dry_run``.
        """
        report = self.evict_report(max_entries, max_bytes, policy, older_than=older_than, dry_run=dry_run)
        return [row["key"] for row in report]

    @_public
    def evict_report(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        policy: str | None = None,
        *,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Evict like :meth:`evict`; return a row per entry (key, kind, source_path, payload_size,
        last_access, access_count and a ``reason``: ``"age"`` or ``"limits"``), first evicted first.

        ``older_than`` (seconds) first removes every entry unused for that long, then the limits
        are enforced on the rest. ``dry_run`` computes the same rows and deletes nothing (it also
        works on a read-only store).
        """
        import sqlalchemy as sa

        entries = _core().entries
        if not dry_run:
            self._require_writable("evict")
        if max_entries is not None:
            max_entries = int(parse_setting("max_entries", max_entries))
        if max_bytes is not None:
            max_bytes = int(parse_setting("max_bytes", max_bytes))
        if policy is not None:
            policy = str(parse_setting("policy", policy))
        if older_than is not None and not float(older_than) >= 0:
            raise ConfigError(f"older_than must be a number of seconds >= 0, not {older_than!r}")
        self.flush()  # so the order sees this process's recent hits
        engine = self._core_engine() if dry_run else self._write_engine
        with engine.begin() as conn:
            if max_entries is None or max_bytes is None or policy is None:
                current = _read_settings(conn)
                max_entries = current["max_entries"] if max_entries is None else max_entries
                max_bytes = current["max_bytes"] if max_bytes is None else max_bytes
                policy = current["policy"] if policy is None else policy
            victims: list[dict[str, Any]] = []
            remaining: list[sa.ColumnElement[bool]] = []
            if older_than is not None:
                (too_old,) = _filters(older_than=older_than)
                query = sa.select(*(entries.c[name] for name in _REPORT_COLUMNS)).where(too_old)
                query = query.order_by(entries.c.last_access, entries.c.key)
                victims += [dict(row._mapping, reason="age") for row in conn.execute(query)]
                remaining.append(sa.not_(too_old))
            victims += _victims(conn, int(max_entries), int(max_bytes), str(policy), remaining)
            keys = [row["key"] for row in victims]
            if not dry_run:
                for chunk in _chunks(keys):
                    conn.execute(sa.delete(entries).where(entries.c.key.in_(chunk)))
                if keys:
                    conn.execute(_statements(self.dialect).bump, [{"c": "evictions", "d": len(keys)}])
        if not dry_run:
            self._forget(keys)
        return victims

    # -- reading -----------------------------------------------------------------------------

    @_public
    def count(self) -> int:
        """How many entries are stored."""
        import sqlalchemy as sa

        entries = _core().entries
        return int(self._scalar(sa.select(sa.func.count()).select_from(entries)))

    @_public
    def total_bytes(self) -> int:
        """The sum of all payload sizes."""
        import sqlalchemy as sa

        entries = _core().entries
        return int(self._scalar(sa.select(sa.func.coalesce(sa.func.sum(entries.c.payload_size), 0))))

    @_public
    def keys(self, kind: str | None = None, prefix: str | None = None) -> list[str]:
        """Every stored key (of one kind, starting with a prefix, if given), sorted."""
        import sqlalchemy as sa

        entries = _core().entries
        query = sa.select(entries.c.key).where(*_filters(kind=kind, prefix=prefix)).order_by(entries.c.key)
        with self._core_engine().connect() as conn:
            return list(conn.scalars(query))

    @_public
    def info(self, key: str) -> dict[str, Any] | None:
        """Every column but the payload, with this process's unflushed hits applied; None if absent."""
        import sqlalchemy as sa

        entries = _core().entries
        query = sa.select(*entries.c).where(entries.c.key == key)
        with self._core_engine().connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._with_pending(row._asdict())

    @_public
    def entries(
        self,
        *,
        sort: str = "last_access",
        descending: bool = True,
        kind: str | None = None,
        path_glob: str | None = None,
        older_than: float | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """List entries like :meth:`info`, filtered, sorted (last_access/created_at/size/...) and limited.

        ``path_glob`` is an fnmatch pattern on source_path; ``older_than`` is seconds since last access.
        The order is the database's: unflushed hits of this process are shown but do not reorder.
        """
        import sqlalchemy as sa

        core = _core()
        entries = core.entries
        sorts = core.sorts
        if sort not in sorts:
            raise ConfigError(f"sort must be one of {', '.join(sorts)}, not {sort!r}")
        if limit is not None and limit < 0:
            raise ConfigError(f"limit must be >= 0, not {limit!r}")
        column = sorts[sort]
        order = [column.desc(), entries.c.key.desc()] if descending else [column, entries.c.key]
        query = (
            sa.select(*entries.c)
            .where(*_filters(kind=kind, older_than=older_than, fingerprint=fingerprint))
            .order_by(*order)
        )
        if path_glob is None:
            query = query.limit(limit)
        else:
            query = query.where(entries.c.source_path.is_not(None))
        out: list[dict[str, Any]] = []
        with self._core_engine().connect() as conn:
            for row in conn.execute(query):
                if limit is not None and len(out) >= limit:
                    break
                if path_glob is None or fnmatch.fnmatchcase(row.source_path, path_glob):
                    out.append(self._with_pending(row._asdict()))
        return out

    @_public
    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self._core_engine().connect() as conn:
            return _current_revision(conn)

    # -- maintenance and inspection ----------------------------------------------------------

    @_public
    def query(
        self, statement: str, params: Mapping[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one caller-written statement on a read-only connection; return (column names, rows).

        Parameters are bound (``:name``), never interpolated. On SQLite the connection is opened
        with ``mode=ro`` and ``PRAGMA query_only``, and an authorizer refuses anything but reading
        (writes, DDL, ATTACH, transactions, PRAGMAs that set a value) before it runs.
        """
        params = dict(params or {})
        if self.path is None:
            return self._query_server(statement, params)
        conn = sqlite3.connect(_sqlite_uri(self.path, read_only=True), uri=True, timeout=self._busy_s)
        try:
            _configure_sqlite(conn, busy_ms=self.busy_timeout_ms, read_only=True)
            conn.execute("PRAGMA query_only = ON")
            refused: list[str] = []
            conn.set_authorizer(functools.partial(_read_only_authorizer, refused))
            try:
                cursor = conn.execute(statement, params)
                rows = cursor.fetchall()
            except sqlite3.Error as exc:
                if refused or "readonly database" in str(exc):
                    what = refused[0] if refused else "a write"
                    raise StoreError(f"{self.name}: read-only query refused: {what} is not allowed") from exc
                raise
            columns = [column[0] for column in cursor.description or ()]
            return columns, rows
        finally:
            conn.close()

    def _query_server(self, statement: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """query() on PostgreSQL: one prepared statement (so never several) in a READ ONLY transaction."""
        import psycopg
        import sqlalchemy as sa

        engine = self._core_engine()
        compiled = sa.text(statement).compile(dialect=engine.dialect)
        values = compiled.construct_params(params)
        raw = engine.raw_connection()
        try:
            driver = raw.driver_connection
            driver.rollback()
            driver.read_only = True  # every statement runs in BEGIN READ ONLY
            try:
                with driver.cursor() as cursor:
                    # Prepared: the extended protocol, which refuses a string of several statements
                    # (with the simple one, "COMMIT; DELETE ..." would leave the read-only transaction).
                    cursor.execute(str(compiled), values, prepare=True)
                    if cursor.description is None:
                        raise StoreError(f"{self.name}: read-only query refused: the statement returns no rows")
                    columns = [column.name for column in cursor.description]
                    rows = [tuple(row) for row in cursor.fetchall()]
            except psycopg.errors.ReadOnlySqlTransaction:
                verb = statement.split(None, 1)[0].upper() if statement.strip() else "it"
                raise StoreError(f"{self.name}: read-only query refused: {verb} is not allowed") from None
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if "multiple commands" in message:
                    message = "read-only query refused: give one statement"
                raise StoreError(f"{self.name}: {message}") from None
            finally:
                driver.rollback()
                driver.read_only = False
        finally:
            raw.close()
        return columns, rows

    @_public
    def integrity_check(self) -> list[str]:
        """What SQLite's ``PRAGMA integrity_check`` reports as wrong (empty: fine; other dialects: empty)."""
        if self.dialect != "sqlite":
            return []
        with self._core_engine().connect() as conn:
            messages = list(conn.exec_driver_sql("PRAGMA integrity_check").scalars())
        return [] if messages == ["ok"] else messages

    def iter_blobs(self, page: int = 256) -> Iterator[tuple[str, bytes]]:
        """Every (checksum, payload) in the blobs table, read a page at a time in checksum order."""
        after = ""
        while rows := self.blob_page(after, page):
            yield from rows
            after = rows[-1][0]

    @_public
    def blob_page(self, after: str = "", page: int = 256) -> list[tuple[str, bytes]]:
        """Up to ``page`` (checksum, payload) rows with checksums after ``after``, in checksum order."""
        import sqlalchemy as sa

        b = _core().blobs.c
        query = sa.select(b.checksum, b.payload).where(b.checksum > after).order_by(b.checksum).limit(page)
        with self._core_engine().connect() as conn:
            return [(str(digest), bytes(payload)) for digest, payload in conn.execute(query)]

    @_public
    def orphans(self) -> Orphans:
        """Entries whose blob is missing, and blobs that no entry refers to."""
        import sqlalchemy as sa

        core = _core()
        e, b = core.entries.c, core.blobs.c
        no_blob = sa.select(e.key).where(~sa.exists().where(b.checksum == e.checksum)).order_by(e.key)
        unused = sa.select(b.checksum).where(~sa.exists().where(e.checksum == b.checksum)).order_by(b.checksum)
        with self._core_engine().connect() as conn:
            return Orphans(list(conn.scalars(no_blob)), list(conn.scalars(unused)))

    @_public
    def remove_blobs(self, checksums: Iterable[str]) -> int:
        """Delete blobs and every entry that refers to them (damaged payloads); return the entries removed."""
        import sqlalchemy as sa

        core = _core()
        entries = core.entries
        blobs = core.blobs
        self._require_writable("remove_blobs")
        checksums = list(dict.fromkeys(checksums))
        removed = 0
        with self._write_engine.begin() as conn:
            for chunk in _chunks(checksums):
                removed += conn.execute(sa.delete(entries).where(entries.c.checksum.in_(chunk))).rowcount
                conn.execute(sa.delete(blobs).where(blobs.c.checksum.in_(chunk)))
        return removed

    @_public
    def vacuum(self) -> None:
        """Rebuild the database file to give free pages back (and, on SQLite, empty the WAL)."""
        self._require_writable("vacuum")
        self.flush()
        engine = self._core_engine()
        if self.dialect != "sqlite":
            # VACUUM cannot run inside a transaction block: autocommit. ANALYZE: fresh planner statistics.
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE)")
            return
        # VACUUM cannot run inside a transaction: use the DBAPI connection, which never BEGINs by itself.
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM")
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()

    def file_size(self) -> int | None:
        """Bytes the SQLite database takes on disk (file and WAL); None for a server database."""
        if self.path is None:
            return None
        return sum(p.stat().st_size for p in _sqlite_files(self.path) if p.exists())

    # -- counters and settings ---------------------------------------------------------------

    def add(self, **deltas: int) -> None:
        """Add to cumulative counters (buffered in memory, flushed with the hits)."""
        now = time.time()
        with self._lock:
            for name, delta in deltas.items():
                if name not in _COUNTER_NAMES:
                    raise ConfigError(f"unknown counter {name!r}; known: {', '.join(constants.COUNTERS)}")
                self._pending_counters[name] = self._pending_counters.get(name, 0) + int(delta)
            self._n_pending += 1
            due = self._n_pending >= self.flush_every or now >= self._next_flush
        if due and not self.read_only:
            self._auto_flush()

    @_public
    def counters(self) -> dict[str, int]:
        """Every counter: what all processes persisted plus this process's unflushed deltas."""
        import sqlalchemy as sa

        counters = _core().counters
        with self._core_engine().connect() as conn:
            persisted = dict(conn.execute(sa.select(counters.c.name, counters.c.value)).all())
        with self._lock:
            pending = dict(self._pending_counters)
        return {name: int(persisted.get(name, 0)) + pending.get(name, 0) for name in constants.COUNTERS}

    @_public
    def reset_counters(self) -> None:
        """Zero every counter, persisted and pending."""
        import sqlalchemy as sa

        counters = _core().counters
        self._require_writable("reset_counters")
        with self._write_engine.begin() as conn:
            conn.execute(sa.update(counters).values(value=0))
        with self._lock:
            self._pending_counters.clear()

    @_public
    def get_settings(self) -> dict[str, int | str]:
        """The current settings, read fresh from the database (max_entries, max_bytes, policy)."""
        with self._core_engine().connect() as conn:
            return _read_settings(conn)

    @_public
    def set_setting(self, name: str, value: int | str) -> None:
        """Validate and store one setting; every process sees it on its next use."""
        typed = parse_setting(name, value)
        self._require_writable("set_setting")
        settings = _core().settings
        upsert = _statements(self.dialect).insert(settings).values(name=name, value=str(typed))
        upsert = upsert.on_conflict_do_update(index_elements=[settings.c.name], set_={"value": upsert.excluded.value})
        with self._write_engine.begin() as conn:
            conn.execute(upsert)

    # -- flushing and closing ----------------------------------------------------------------

    @_public
    def flush(self) -> None:
        """Write pending hits and counter deltas in one transaction; on failure keep them and raise."""
        if self.read_only:
            return  # nothing can be written; read-only stores keep counters in memory only
        with self._flush_lock:
            self._flush_locked()

    def _auto_flush(self) -> None:
        """Flush from a hot path: never raise, never wait for another thread's flush."""
        if self._closed or not self._flush_lock.acquire(blocking=False):
            return
        try:
            self._flush_locked()
        except Exception as exc:  # the hot path must not fail because bookkeeping could not be saved
            if not self._flush_failing:
                log.warning(
                    "%s: could not save access times and counters (%s); keeping them in memory"
                    " and retrying with later flushes",
                    self.name,
                    exc,
                )
            self._flush_failing = True
        else:
            if self._flush_failing:
                log.info("%s: saving access times and counters works again", self.name)
            self._flush_failing = False
        finally:
            self._flush_lock.release()

    def _flush_locked(self) -> None:
        with self._lock:
            accesses, self._pending = self._pending, {}
            deltas, self._pending_counters = self._pending_counters, {}
            self._n_pending = 0
            self._next_flush = time.time() + self.flush_interval
        deltas = {name: delta for name, delta in deltas.items() if delta}
        if not accesses and not deltas:
            return
        try:
            if self._raw_sql:
                # Rows go to the driver as tuples: Core's per-row parameter processing costs more
                # than SQLite's UPDATE itself (~5.4 vs ~3.1 µs a row, measured).
                with self._raw_transaction() as cursor:
                    if accesses:
                        cursor.executemany(_SQL_TOUCH, [(t, t, n, key) for key, (t, n) in accesses.items()])
                    if deltas:
                        cursor.executemany(_SQL_BUMP, list(deltas.items()))
            else:
                statements = _statements(self.dialect)
                with self._write_engine.begin() as conn:
                    if accesses:
                        rows = [{"k": key, "t": t, "n": n} for key, (t, n) in accesses.items()]
                        conn.execute(statements.touch, rows)
                    if deltas:
                        conn.execute(statements.bump, [{"c": name, "d": delta} for name, delta in deltas.items()])
        except BaseException:
            self._restore(accesses, deltas)
            raise

    def drop_pending(self) -> int:
        """Forget the access records and counter deltas not saved yet (a server that is gone); return how many."""
        with self._lock:
            lost = len(self._pending) + len(self._pending_counters)
            self._pending.clear()
            self._pending_counters.clear()
            self._n_pending = 0
        return lost

    def _restore(self, accesses: dict[str, list[Any]], deltas: dict[str, int]) -> None:
        """Put back what a failed flush took, merged with what arrived meanwhile."""
        with self._lock:
            for key, (when, hits) in accesses.items():
                hit = self._pending.get(key)
                if hit is None:
                    self._pending[key] = [when, hits]
                else:
                    hit[0] = max(hit[0], when)
                    hit[1] += hits
            for name, delta in deltas.items():
                self._pending_counters[name] = self._pending_counters.get(name, 0) + delta
            if len(self._pending) > _MAX_PENDING_KEYS:
                log.warning("%s: dropping %d unsaved access records", self.name, len(self._pending))
                self._pending.clear()

    def close(self) -> None:
        """Flush (best effort: a failure is logged and the pending data dropped) and release everything."""
        if self._closed:
            return
        try:
            self.flush()
        except StoreError as exc:
            with self._lock:
                lost = len(self._pending)
            log.warning("%s: closing without saving %d access records and counters: %s", self.name, lost, exc)
        self._closed = True
        _LIVE.discard(self)
        self._dispose()

    def _dispose(self) -> None:
        with self._lock:
            held, self._raw = list(self._raw), weakref.WeakSet()
            self._pending.clear()
            self._pending_counters.clear()
        for connection in held:
            connection.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __del__(self) -> None:
        # A store dropped without close() still saves what it recorded (best effort, like close()).
        if not getattr(self, "_closed", True):
            self.close()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"<Store {self.name} {mode}{' closed' if self._closed else ''}>"

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _busy_s(self) -> float:
        return self.busy_timeout_ms / 1000.0

    @property
    def url(self) -> sa.URL:
        """The database's URL (for SQLite, made on demand: building one imports SQLAlchemy)."""
        if self._server_url is not None:
            return self._server_url
        import sqlalchemy as sa

        return sa.make_url(f"sqlite:///{self.path}")

    def _core_engine(self) -> Engine:
        """The Core engine, created the first time a statement needs it (importing SQLAlchemy)."""
        engine = self._engine
        if engine is None:
            with self._engine_lock:
                if self._engine is None:
                    engine = self._create_engine()
                    if self.dialect == "sqlite":
                        self._immediate_engine = engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                    else:
                        self._immediate_engine = engine
                    self._engine = engine
                engine = self._engine
        return engine

    @property
    def _write_engine(self) -> Engine:
        """The Core engine for writing: on SQLite its transactions take the write lock up front."""
        self._core_engine()
        assert self._immediate_engine is not None
        return self._immediate_engine

    def _cursor(self) -> sqlite3.Cursor:
        """This thread's raw cursor (SQLite), opened on first use."""
        try:
            return self._local.cursor  # type: ignore[no-any-return]
        except AttributeError:
            return self._thread_cursor()

    @contextlib.contextmanager
    def _raw_transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction on this thread's raw connection (BEGIN IMMEDIATE, as the write engine's)."""
        cursor = self._cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise

    def _scalar(self, query: sa.Select[Any]) -> Any:
        with self._core_engine().connect() as conn:
            return conn.execute(query).scalar_one()

    def _require_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.name}: {what} needs a writable store (opened read-only)")

    def _with_pending(self, info: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            hit = self._pending.get(info["key"])
            if hit is not None:
                info["last_access"] = max(info["last_access"], hit[0])
                info["access_count"] += hit[1]
        return info

    def _forget(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.name}: {what} failed: {exc}")

    def _after_fork_in_child(self) -> None:
        """A forked child must not use its parent's connections, locks or pending data."""
        # Nor close them: SQLite connections must not cross a fork, so the parent's are kept
        # referenced (never freed, hence never closed) and the child opens its own on demand.
        _FORK_ORPHANS.append((self._local, list(self._raw)))
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._local = threading.local()
        self._raw = weakref.WeakSet()
        self._pending = {}
        self._pending_counters = {}
        self._n_pending = 0
        if self._engine is not None:
            self._engine.dispose(close=False)


class _ThreadConnection:
    """One thread's raw connection and cursor for the hot statements; closed when the thread ends."""

    __slots__ = ("connection", "cursor", "__weakref__")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.cursor = connection.cursor()

    def close(self) -> None:
        self.connection.close()

    # sqlite3 connections sit in a reference cycle: without this, a finished thread's connection
    # (and its file descriptors) would live on until the cyclic garbage collector ran.
    __del__ = close


# -- module helpers ----------------------------------------------------------------------------


def _locate(url_or_path: str | os.PathLike[str]) -> tuple[Path, None] | tuple[None, sa.URL]:
    """A SQLite file path (from a plain path or a sqlite:/// URL), or another database's URL.

    Only a URL is parsed by SQLAlchemy: a plain path (every warm start) does not import it.
    """
    if isinstance(url_or_path, str) and "://" in url_or_path:
        import sqlalchemy as sa

        try:
            url = sa.make_url(normalize_url(url_or_path))
        except sa.exc.ArgumentError:
            raise ConfigError("not a database URL (expected e.g. postgresql://user:password@host/db)") from None
        if url.get_backend_name() != "sqlite":
            if url.get_driver_name() == "psycopg" and importlib.util.find_spec("psycopg") is None:
                raise ConfigError("a PostgreSQL cache needs psycopg 3: pip install 'zexus-bcache[pg]'")
            return None, url
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise ConfigError(f"{url_or_path}: give the SQLite database as a file path")
        url_or_path = url.database
    return Path(os.path.abspath(os.fsdecode(os.fspath(url_or_path)))), None


def normalize_url(url: str) -> str:
    """A database URL with our PostgreSQL driver: plain ``postgresql://`` (SQLAlchemy's default
    driver is psycopg2, which we do not depend on) and ``postgres://`` mean psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _peek_sqlite_revision(path: Path, *, busy_s: float, must_exist: bool) -> str | None:
    """Read the revision through a read-only connection (so refusing writes nothing).

    The file is only ever opened by SQLite: closing a descriptor of our own on it would drop
    the POSIX locks of every SQLite connection of this process to it (SQLite's docs, "How To
    Corrupt An SQLite Database File", 2.2), letting another process delete a live WAL.
    """
    if not path.exists():
        if must_exist:
            raise StoreError(f"{path}: no such database")
        return None
    size = path.stat().st_size
    if size == 0:
        return None
    conn = sqlite3.connect(_sqlite_uri(path, read_only=True), uri=True, timeout=busy_s)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        versions = []
        if "alembic_version" in names:
            versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a SQLite database, or a damaged one ({exc})") from exc
    finally:
        conn.close()
    if size % page_size:
        raise StoreError(f"{path}: the SQLite database is truncated or damaged")
    if "alembic_version" not in names and names:
        raise StoreError(
            f"{path}: a SQLite database of something else (no alembic_version;"
            f" has {', '.join(sorted(names)[:5])}); not a zexus_bcache store"
        )
    if len(versions) > 1:
        raise StoreError(f"{path}: several schema heads {versions}; not a zexus_bcache store")
    return versions[0] if versions else None


def sqlite_path(url_or_path: str | os.PathLike[str]) -> Path | None:
    """The file of a SQLite location (a path or a sqlite:/// URL); None for a server database."""
    return _locate(url_or_path)[0]


def _sqlite_files(path: Path) -> list[Path]:
    """The database file and its WAL and shared-memory files, the WAL first."""
    return [path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), path]


def move_aside(path: str | os.PathLike[str]) -> Path:
    """Rename a broken SQLite database, with its -wal and -shm, to ``<name>.broken-<UTC time>``.

    The WAL goes first: a fresh database created at the old path must never find the old WAL
    next to it (SQLite would replay it into the new file). Stop other users of the cache first.
    Returns the new path of the database file.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while any(p.exists() for p in _sqlite_files(target)):
        n += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    for source, destination in zip(_sqlite_files(path), _sqlite_files(target)):
        if source.exists():
            os.replace(source, destination)
    return target


def current_revision(url_or_path: str | os.PathLike[str]) -> str | None:
    """The schema revision of an existing database (None: empty), read without migrating anything."""
    with _maintenance_connection(url_or_path, read_only=True) as conn:
        return _current_revision(conn)


def upgrade(url_or_path: str | os.PathLike[str], revision: str = "head") -> tuple[str | None, str | None]:
    """Run the migrations up to ``revision`` (creating the database if needed); return (before, after)."""
    return _run_alembic(url_or_path, revision, down=False)


def downgrade(url_or_path: str | os.PathLike[str], revision: str) -> tuple[str | None, str | None]:
    """Run the migrations down to ``revision`` (``"base"``: nothing left); return (before, after)."""
    return _run_alembic(url_or_path, revision, down=True)


def _run_alembic(url_or_path: str | os.PathLike[str], revision: str, *, down: bool) -> tuple[str | None, str | None]:
    import sqlalchemy as sa

    with _maintenance_connection(url_or_path, read_only=False) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
        before = _current_revision(conn)
        if before is not None and before not in _known_revisions():
            raise SchemaTooNewError(
                f"the database is at schema revision {before!r}, which this zexus_bcache does not"
                f" know (newest known: {head_revision()!r}): upgrade zexus_bcache. Nothing was changed."
            )
        from alembic import command
        from alembic.util import CommandError

        try:
            (command.downgrade if down else command.upgrade)(alembic_config(conn), revision)
        except CommandError as exc:
            raise StoreError(f"cannot {'downgrade' if down else 'upgrade'} to {revision!r}: {exc}") from exc
        after = _current_revision(conn)
    return before, after


@contextlib.contextmanager
def _maintenance_connection(
    url_or_path: str | os.PathLike[str], *, read_only: bool, busy_timeout_ms: int = 30000
) -> Iterator[Connection]:
    """A connection in one transaction (BEGIN IMMEDIATE when writing), without opening a Store.

    For the Alembic commands, which must see the database as it is (a Store migrates on open).
    A SQLite file is checked first as a Store checks it (a missing file is created only for writing;
    another program's database is refused).
    """
    import sqlalchemy as sa
    from sqlalchemy import event

    path, url = _locate(url_or_path)
    name = str(path) if path else url.render_as_string(hide_password=True)
    engine: Engine
    try:
        if path is None:
            options = {"postgresql_readonly": True} if read_only else {}
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool, execution_options=options)
        else:
            refusal = trust.refusal(path, "cache", side_files=_SIDE_SUFFIXES)
            if refusal:
                raise StoreError(refusal)
            _peek_sqlite_revision(path, busy_s=busy_timeout_ms / 1000, must_exist=read_only)
            if not read_only:
                trust.create_private(path)
            uri = _sqlite_uri(path, read_only=read_only)
            engine = sa.create_engine(
                "sqlite+pysqlite://",
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000),
                poolclass=sa.pool.NullPool,
            )
            configure = functools.partial(_configure_sqlite, busy_ms=busy_timeout_ms, read_only=read_only)
            event.listen(engine, "connect", lambda dbapi_connection, _record: configure(dbapi_connection))
            event.listen(engine, "begin", _emit_begin)
            if not read_only:
                engine = engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
    except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise StoreError(f"{name}: open failed: {exc}") from exc
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    except BcacheError as exc:
        raise type(exc)(f"{name}: {exc}") from exc
    except _errors() as exc:
        raise StoreError(f"{name}: {exc}") from exc
    finally:
        engine.dispose()


# sqlite3's authorizer action codes by name, for the message that says what a read-only query tried.
_AUTH_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER"
        " CREATE_TEMP_VIEW CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE DROP_TEMP_INDEX"
        " DROP_TEMP_TABLE DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER DROP_VIEW INSERT PRAGMA READ"
        " SELECT TRANSACTION UPDATE ATTACH DETACH ALTER_TABLE REINDEX ANALYZE CREATE_VTABLE"
        " DROP_VTABLE FUNCTION SAVEPOINT RECURSIVE"
    ).split()
    if hasattr(sqlite3, f"SQLITE_{name}")
}
_READ_ACTIONS = frozenset(
    getattr(sqlite3, f"SQLITE_{name}") for name in ("SELECT", "READ", "FUNCTION", "RECURSIVE") if hasattr(sqlite3, f"SQLITE_{name}")
)
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"})
# PRAGMAs whose argument names what to read rather than a value to set.
_READ_PRAGMAS_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}
)


def _read_only_authorizer(
    refused: list[str], action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    """Allow reading only; remember what was refused first (SQLite then fails "not authorized")."""
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or (arg1 or "").lower() in _READ_PRAGMAS_WITH_ARGUMENT):
        return sqlite3.SQLITE_OK
    # Preparing a table-valued PRAGMA function (SELECT ... FROM pragma_table_info('t')) asks for
    # these; a real UPDATE of the schema table is refused by SQLite itself and by mode=ro.
    if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
        return sqlite3.SQLITE_OK
    if arg1 in _SCHEMA_TABLES:  # CREATE and DROP are first seen as edits of the schema table
        refused.append("a schema change (CREATE, DROP)")
    elif action == sqlite3.SQLITE_PRAGMA:
        refused.append(f"PRAGMA {arg1} = {arg2}")
    else:
        what = _AUTH_ACTIONS.get(action, f"action {action}")
        refused.append(f"{what} ({arg1})" if arg1 else what)
    return sqlite3.SQLITE_DENY


def _sqlite_uri(path: Path, *, read_only: bool) -> str:
    if not read_only:
        return path.as_uri() + "?mode=rwc"
    if _needs_immutable(path):
        return path.as_uri() + "?mode=ro&immutable=1"
    return path.as_uri() + "?mode=ro"


def _needs_immutable(path: Path) -> bool:
    """Whether a read-only connection can only open the file as immutable.

    A WAL database is read through its -shm index; when that file does not exist and cannot be
    created (a directory we cannot write, a read-only mount), SQLite refuses a plain mode=ro
    connection. Immutable, it reads the database file alone: what a writer has not checkpointed
    yet is not seen (misses), and a page changed under it fails the read or the payload's
    checksum (misses again); wrong bytecode cannot come out of it.
    """
    shm = path.with_name(path.name + "-shm")
    return path.exists() and not shm.exists() and not os.access(path.parent, os.W_OK | os.X_OK)


ALLOW_WORLD_WRITABLE_ENV = trust.ALLOW_ENV
_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def _write_problem(path: Path) -> str | None:
    """Why this process cannot write the existing SQLite database at path; None if it can (or it is new)."""
    if not path.exists():
        return None  # creating it says clearly if that is impossible
    if not os.access(path, os.W_OK):
        return "the database file is not writable"
    wal, shm = _sqlite_files(path)[:2]
    for side in (wal, shm):
        if side.exists() and not os.access(side, os.R_OK | os.W_OK):
            return f"{side.name} is not writable"
    if not os.access(path.parent, os.W_OK | os.X_OK) and not (wal.exists() and shm.exists()):
        return "its directory is not writable (SQLite needs to create the -wal and -shm files there)"
    return None


_PRAGMA_VALUE = re.compile(r"-?[0-9]+|[A-Za-z_]+")


def _checked_pragmas(pragmas: Mapping[str, int | str] | None) -> dict[str, int | str]:
    """Extra per-connection PRAGMAs, validated: they are formatted into SQL, which binds no PRAGMA value."""
    checked: dict[str, int | str] = {}
    for name, value in (pragmas or {}).items():
        if not name.isidentifier() or isinstance(value, bool) or not _PRAGMA_VALUE.fullmatch(str(value)):
            raise ConfigError(f"bad PRAGMA {name!r} = {value!r}")
        checked[name] = value
    return checked


def _configure_sqlite(
    conn: sqlite3.Connection, *, busy_ms: int, read_only: bool, pragmas: Mapping[str, int | str] | None = None
) -> None:
    """Per-connection setup: our own transaction control, WAL, NORMAL sync, busy timeout (and ``pragmas``)."""
    conn.isolation_level = None  # sqlite3 must not BEGIN on its own; _emit_begin does
    conn.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
    # A page cache and memory-mapped reads for a working set of blobs (as diskcache does).
    conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB:d}")
    conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES:d}")
    if not read_only:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    for name, value in (pragmas or {}).items():
        conn.execute(f"PRAGMA {name} = {value}")


def _emit_begin(conn: Connection) -> None:
    """Our own BEGIN (pysqlite emits none with isolation_level=None): IMMEDIATE for writers."""
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _filters(
    *,
    fingerprint: str | None = None,
    older_than: float | None = None,
    source_path: str | os.PathLike[str] | None = None,
    kind: str | None = None,
    other_than_fingerprints: Collection[str] | None = None,
    prefix: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    import sqlalchemy as sa

    e = _core().entries.c
    conditions: list[sa.ColumnElement[bool]] = []
    if fingerprint is not None:
        conditions.append(e.fingerprint == fingerprint)
    if other_than_fingerprints is not None:
        conditions.append(e.fingerprint.not_in(list(other_than_fingerprints)))
    if prefix is not None:
        conditions.append(e.key.startswith(prefix, autoescape=True))
    if older_than is not None:
        conditions.append(e.last_access < time.time() - float(older_than))
    if source_path is not None:
        conditions.append(e.source_path == os.fspath(source_path))
    if kind is not None:
        conditions.append(e.kind == kind)
    return conditions


def _read_settings(conn: Connection) -> dict[str, int | str]:
    import sqlalchemy as sa

    settings = _core().settings
    stored = dict(conn.execute(sa.select(settings.c.name, settings.c.value)).all())
    defaults = constants.DEFAULT_SETTINGS
    return {name: parse_setting(name, stored.get(name, default)) for name, default in defaults.items()}


def _victims(
    conn: Connection,
    max_entries: int,
    max_bytes: int,
    policy: str,
    among: Iterable[sa.ColumnElement[bool]] = (),
) -> list[dict[str, Any]]:
    """Entries beyond the limits, in eviction order: rank and running size over the keep order.

    Keeping the newest (LRU) or most used (LFU) entries first, an entry goes when its rank is past
    max_entries or the entries kept up to it pass max_bytes: "evict in policy order until it fits".
    Only the entries matching ``among`` count. Rows as :meth:`Store.evict_report` returns them.
    """
    import sqlalchemy as sa

    core = _core()
    entries = core.entries
    if not max_entries and not max_bytes:
        return []
    victim_order = core.victim_order[policy]
    keep_order = [column.desc() for column in victim_order]
    size = entries.c.payload_size
    # An entry larger than the whole budget goes alone; it does not push every older one out.
    fitting_size = sa.case((size > max_bytes, 0), else_=size) if max_bytes else size
    ranked = (
        sa.select(
            *(entries.c[name] for name in _REPORT_COLUMNS),
            sa.func.row_number().over(order_by=keep_order).label("rank"),
            sa.func.sum(fitting_size).over(order_by=keep_order, rows=(None, 0)).label("kept_bytes"),
        )
        .where(*among)
        .subquery()
    )
    beyond = []
    if max_entries:
        beyond.append(ranked.c.rank > max_entries)
    if max_bytes:
        beyond += [ranked.c.payload_size > max_bytes, ranked.c.kept_bytes > max_bytes]
    query = (
        sa.select(*(ranked.c[name] for name in _REPORT_COLUMNS))
        .where(sa.or_(*beyond))
        .order_by(*(ranked.c[column.name] for column in victim_order))
    )
    return [dict(row._mapping, reason="limits") for row in conn.execute(query)]


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start : start + _CHUNK]


# Every open store, so pending data is flushed at exit and forked children start clean.
_LIVE: weakref.WeakSet[Store] = weakref.WeakSet()
_FORK_ORPHANS: list[object] = []  # in a forked child: the parent's raw connections, never closed


@atexit.register
def _close_all() -> None:
    for store in list(_LIVE):
        try:
            store.close()
        except Exception:  # at exit there is no one left to tell but the log
            log.exception("closing %r at exit", store)


def _reset_after_fork() -> None:
    for store in list(_LIVE):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
