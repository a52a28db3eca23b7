"""SQLite: file checks, connection setup, and the hot statements as literal SQL on raw connections.

* ``get`` runs one prepared SELECT on a raw ``sqlite3`` connection held per thread: SQLAlchemy
  Core costs ~15 µs more per statement. A warm start never imports SQLAlchemy (~160 ms a process):
  opening an up-to-date database, ``get``, ``put`` and the flush of hits and counters run the
  literal SQL below; the Core engine is created the first time anything else needs it.
* Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``): SQLAlchemy's documented
  pysqlite fix (``isolation_level = None`` at connect, our own ``BEGIN`` in the ``begin`` event)
  with the BEGIN variant chosen by an execution option of the write engine.
* The file is checked before it is opened (:mod:`.sqlite_files`): a cache another user could
  have planted bytecode in is refused; one this process cannot write is opened read-only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import trust
from ..errors import ConfigError, StoreError
from .backend import Backend, is_locked
from .limits import Candidates, evict_after_put, over_limits
from .queries import SETTING_NAMES
from .readonly import read_only_query
from .sqlite_files import check_trust, peek_revision, sqlite_files, sqlite_uri, write_problem
from .sqlite_sql import (
    SQL_BUMP,
    SQL_DELETE_KEY,
    SQL_INSERT_ENTRY,
    SQL_LIMITS,
    SQL_PUT_ENTRY,
    SQL_SELECT_ENTRY,
    SQL_TOUCH,
    SQL_VICTIMS,
)

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

    from .pending import Accesses, Pending

log = logging.getLogger("zexus_bcache")

BEGIN_OPTION = "zexus_bcache_begin"
CACHE_KIB = 32 * 1024  # SQLite page cache per connection (diskcache uses the same)
MMAP_BYTES = 64 * 1024 * 1024  # memory-mapped reads: no read() call per page (as diskcache)

# -- connections -----------------------------------------------------------------------------------

_PRAGMA_VALUE = re.compile(r"-?[0-9]+|[A-Za-z_]+")


def checked_pragmas(pragmas: Mapping[str, int | str] | None) -> dict[str, int | str]:
    """Extra per-connection PRAGMAs, validated: they are formatted into SQL, which binds no PRAGMA value."""
    checked: dict[str, int | str] = {}
    for name, value in (pragmas or {}).items():
        if not name.isidentifier() or isinstance(value, bool) or not _PRAGMA_VALUE.fullmatch(str(value)):
            raise ConfigError(f"bad PRAGMA {name!r} = {value!r}")
        checked[name] = value
    return checked


def configure(
    conn: sqlite3.Connection, *, busy_ms: int, read_only: bool, pragmas: Mapping[str, int | str] | None = None
) -> None:
    """Per-connection setup: our own transaction control, WAL, NORMAL sync, busy timeout (and ``pragmas``)."""
    conn.isolation_level = None  # sqlite3 must not BEGIN on its own; emit_begin does
    conn.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
    # A page cache and memory-mapped reads for a working set of blobs (as diskcache does).
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB:d}")
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES:d}")
    if read_only:
        # Also on a read-write connection of a read-only store (see SQLiteBackend.uri).
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    for name, value in (pragmas or {}).items():
        conn.execute(f"PRAGMA {name} = {value}")


def emit_begin(conn: Connection) -> None:
    """Our own BEGIN (pysqlite emits none with isolation_level=None): IMMEDIATE for writers."""
    conn.exec_driver_sql(conn.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


def sqlite_engine(uri: str, *, busy_ms: int, read_only: bool, pragmas: Mapping[str, int | str], pooled: bool) -> Engine:
    """A Core engine on a SQLite file, its connections set up as the raw ones are."""
    import sqlalchemy as sa
    from sqlalchemy import event

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=busy_ms / 1000, check_same_thread=not pooled)

    pool = sa.pool.QueuePool if pooled else sa.pool.NullPool
    engine = sa.create_engine("sqlite+pysqlite://", creator=connect, poolclass=pool)
    # Listeners hold no reference to the store, so a dropped store is freed (and flushed) at once.
    setup = functools.partial(configure, busy_ms=busy_ms, read_only=read_only, pragmas=pragmas)
    event.listen(engine, "connect", lambda dbapi_connection, _record: setup(dbapi_connection))
    event.listen(engine, "begin", emit_begin)
    return engine


class _ThreadConnection:
    """One thread's raw connection and cursor for the hot statements; closed when the thread ends."""

    __slots__ = ("__weakref__", "connection", "cursor")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.cursor = connection.cursor()

    def close(self) -> None:
        self.connection.close()

    # sqlite3 connections sit in a reference cycle: without this, a finished thread's connection
    # (and its file descriptors) would live on until the cyclic garbage collector ran.
    __del__ = close


_FORK_ORPHANS: list[object] = []  # in a forked child: the parents' raw connections, never closed


class SQLiteBackend(Backend):
    """A SQLite file: raw per-thread connections for the hot statements, Core for the rest."""

    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool,
        busy_timeout_ms: int,
        pragmas: Mapping[str, int | str] | None,
        allow_world_writable: bool,
    ) -> None:
        super().__init__(str(path), read_only=read_only, busy_timeout_ms=busy_timeout_ms)
        self.path: Path = path
        self.pragmas = checked_pragmas(pragmas)
        self.allow_world_writable = allow_world_writable
        self._local = threading.local()
        # Weakly held: a thread's connection closes when the thread ends (its local goes), or on dispose().
        self._raw: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._raw_lock = threading.Lock()
        self._writable_file = False  # read-only store on a file we could write (see uri())

    def uri(self) -> str:
        """The URI every connection of this store opens.

        A read-only store on a file this process may write opens it read-write under
        ``query_only``: SQLite checkpoints and removes the -wal when the last connection closes,
        which a ``mode=ro`` connection cannot do (the database file alone then lacks what the WAL holds).
        """
        if self.read_only and self._writable_file:
            return self.path.as_uri() + "?mode=rw"
        return sqlite_uri(self.path, read_only=self.read_only)

    @property
    def url(self) -> sa.URL:
        import sqlalchemy as sa

        return sa.make_url(f"sqlite:///{self.path}")

    # -- opening -------------------------------------------------------------------------------

    def revision_at_open(self) -> str | None:
        """Refuse a file anyone could have planted bytecode in; open one we cannot write read-only."""
        self._check_trust()
        problem = write_problem(self.path)
        if not self.read_only and problem:
            self.read_only = True
            self.degraded = problem
            message = "%s: %s; using the cache read-only: hits are served, nothing is written"
            log.warning(message, self.path, problem)
        self._writable_file = self.read_only and problem is None and self.path.exists()
        return peek_revision(self.path, busy_s=self.busy_s, must_exist=self.read_only)

    def prepare_writing(self) -> None:
        trust.create_private(self.path)
        self._check_trust()  # again: what we did not create ourselves may have appeared meanwhile

    def ready(self) -> None:
        # Open this thread's read connection now: the first get of a warm start is then one
        # SELECT, and a file that cannot be read fails here, not in the middle of a run.
        self.thread_cursor()

    def _check_trust(self) -> None:
        if not self.allow_world_writable:
            check_trust(self.path)

    def create_engines(self) -> tuple[Engine, Engine]:
        busy_ms, read_only = self.busy_timeout_ms, self.read_only
        engine = sqlite_engine(self.uri(), busy_ms=busy_ms, read_only=read_only, pragmas=self.pragmas, pooled=True)
        return engine, engine.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})

    def maintenance_engine(self) -> Engine:
        import sqlalchemy as sa

        try:
            check_trust(self.path)
            peek_revision(self.path, busy_s=self.busy_s, must_exist=self.read_only)
            if not self.read_only:
                trust.create_private(self.path)
            uri = sqlite_uri(self.path, read_only=self.read_only)
            busy_ms, read_only = self.busy_timeout_ms, self.read_only
            engine = sqlite_engine(uri, busy_ms=busy_ms, read_only=read_only, pragmas={}, pooled=False)
        except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.name}: open failed: {exc}") from exc
        return engine if self.read_only else engine.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})

    # -- raw connections -----------------------------------------------------------------------

    def thread_cursor(self) -> sqlite3.Cursor:
        """This thread's raw connection and cursor for the hot statements (same pragmas as the engine's)."""
        if self.closed:
            raise StoreError(f"{self.name}: the store is closed")
        try:
            conn = sqlite3.connect(
                self.uri(),
                uri=True,
                timeout=self.busy_s,
                check_same_thread=False,  # close() may run in another thread
            )
            configure(conn, busy_ms=self.busy_timeout_ms, read_only=self.read_only, pragmas=self.pragmas)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.name}: connect failed: {exc}") from exc
        held = _ThreadConnection(conn)
        self._local.held = held
        self._local.cursor = held.cursor
        with self._raw_lock:
            self._raw.add(held)
        return held.cursor

    @contextlib.contextmanager
    def raw_transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction on this thread's raw connection (BEGIN IMMEDIATE, as the write engine's)."""
        try:
            cursor = self._local.cursor
        except AttributeError:
            cursor = self.thread_cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise

    def dispose(self) -> None:
        with self._raw_lock:
            held, self._raw = list(self._raw), weakref.WeakSet()
        for connection in held:
            connection.close()
        super().dispose()

    def release_connections(self) -> None:
        """Close every connection before a fork (forks.py); each thread opens a new one on its next use."""
        self.dispose()
        self._local = threading.local()

    def after_fork_in_child(self) -> None:
        # Normally the parent closed its connections before the fork (release_connections). If it
        # could not, they must not be used or closed here (closing could checkpoint and delete a WAL
        # the parent still uses): kept referenced, never freed; the child opens its own on demand.
        _FORK_ORPHANS.append((self._local, list(self._raw)))
        self._local = threading.local()
        self._raw = weakref.WeakSet()
        self._raw_lock = threading.Lock()
        super().after_fork_in_child()

    # -- the hot operations --------------------------------------------------------------------

    def fetch_entry(self, key: str) -> Any:
        try:
            cursor = self._local.cursor
        except AttributeError:
            cursor = self.thread_cursor()
        try:
            return cursor.execute(SQL_SELECT_ENTRY, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.name}: get failed: {exc}") from exc

    def put(self, entry: tuple[Any, ...], pending: Pending, *, replace: bool = True) -> list[str]:
        # The transaction written out (not raw_transaction()): a put is the other hot path.
        try:
            cursor = self._local.cursor
        except AttributeError:
            cursor = self.thread_cursor()
        taken = None
        cursor.execute("BEGIN IMMEDIATE")
        try:
            if replace:
                cursor.execute(SQL_PUT_ENTRY, entry)
            elif cursor.execute(SQL_INSERT_ENTRY, entry).fetchone() is None:
                cursor.execute("COMMIT")  # replace=False: the entry already there is kept
                return []
            over = over_limits(cursor.execute(SQL_LIMITS, SETTING_NAMES).fetchone())
            evicted: list[str] = []
            if over is not None:
                # Save this process's recorded hits first, so that the order sees them (as evict() does).
                taken = pending.take()
                self._write_pending_raw(cursor, *taken)
                evicted = evict_after_put(entry[0], entry[7], over, self._candidates(cursor), self._deleter(cursor))
                if evicted:
                    cursor.execute(SQL_BUMP, ("evictions", len(evicted)))
            cursor.execute("COMMIT")
            return evicted
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            if taken is not None:
                pending.restore(*taken, self.name)
            raise

    @staticmethod
    def _candidates(cursor: sqlite3.Cursor) -> Candidates:
        return lambda policy, n: cursor.execute(SQL_VICTIMS[policy], (n, 0)).fetchall()

    @staticmethod
    def _deleter(cursor: sqlite3.Cursor) -> Callable[[list[str]], None]:
        def delete(keys: list[str]) -> None:
            cursor.executemany(SQL_DELETE_KEY, [(key,) for key in keys])

        return delete

    def write_pending(self, accesses: Accesses, deltas: Mapping[str, int], *, wait: bool = True) -> bool:
        if wait:
            with self.raw_transaction() as cursor:
                self._write_pending_raw(cursor, accesses, deltas)
            return True
        # From a lookup: try the write lock once, without the busy handler (a lookup must never
        # wait for another process's write); busy, the caller keeps the records for later.
        try:
            cursor = self._local.cursor
        except AttributeError:
            cursor = self.thread_cursor()
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            with self.raw_transaction() as cursor:
                self._write_pending_raw(cursor, accesses, deltas)
        except sqlite3.OperationalError as exc:
            if is_locked(exc):
                return False
            raise
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms:d}")
        return True

    @staticmethod
    def _write_pending_raw(cursor: sqlite3.Cursor, accesses: Accesses, deltas: Mapping[str, int]) -> None:
        # Rows go to the driver as tuples: Core's per-row parameter processing costs more than
        # SQLite's UPDATE itself (~5.4 vs ~3.1 µs a row, measured).
        if accesses:
            cursor.executemany(SQL_TOUCH, [(t, t, n, key) for key, (t, n) in accesses.items()])
        if deltas:
            cursor.executemany(SQL_BUMP, list(deltas.items()))

    # -- maintenance --------------------------------------------------------------------------

    def query(
        self, statement: str, params: dict[str, Any], timeout: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        conn = sqlite3.connect(sqlite_uri(self.path, read_only=True), uri=True, timeout=self.busy_s)
        try:
            configure(conn, busy_ms=self.busy_timeout_ms, read_only=True)
            return read_only_query(conn, statement, params, self.name, timeout)
        finally:
            conn.close()

    def integrity_check(self) -> list[str]:
        with self.engine().connect() as conn:
            messages = list(conn.exec_driver_sql("PRAGMA integrity_check").scalars())
        return [] if messages == ["ok"] else messages

    def vacuum(self) -> None:
        # VACUUM cannot run inside a transaction: use the DBAPI connection, which never BEGINs by itself.
        raw = self.engine().raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            driver.execute("VACUUM")
            driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()

    def file_size(self) -> int | None:
        return sum(p.stat().st_size for p in sqlite_files(self.path) if p.exists())


