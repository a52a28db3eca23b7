"""What differs between the databases a store can live in, behind one interface chosen at open.

A :class:`Backend` owns the connections to one database and runs the operations whose SQL or
connection handling depends on the database: the hot read, the put, the flush of recorded
accesses, caller-written queries, integrity checks, VACUUM, the migration lock. The store above
it never asks which database it talks to. The defaults here run SQLAlchemy Core (what a server
database uses); :class:`.sqlite.SQLiteBackend` replaces the hot ones with literal SQL on raw
``sqlite3`` connections.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from . import queries
from .limits import evict_after_put, over_limits

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

    from .pending import Accesses, Pending


def database_errors() -> tuple[type[BaseException], ...]:
    """What a database operation can raise: SQLAlchemy's and Alembic's errors once they are loaded."""
    extra: tuple[type[BaseException], ...] = ()
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None:
        extra += (sa_exc.SQLAlchemyError,)
    alembic_util = sys.modules.get("alembic.util")
    if alembic_util is not None:
        extra += (alembic_util.CommandError,)
    # UnicodeDecodeError: text a damaged page turned into bytes that are not UTF-8.
    return (sqlite3.Error, OSError, UnicodeDecodeError, *extra)


def one_line(exc: BaseException) -> str:
    """What a database error says, in one line: the driver's message, without SQLAlchemy's SQL and links."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def is_locked(exc: BaseException) -> bool:
    """Whether a database error is SQLite's "database is locked" / "busy" (directly or wrapped by SQLAlchemy)."""
    cause = getattr(exc, "orig", None) or exc
    return isinstance(cause, sqlite3.OperationalError) and any(
        word in str(cause).lower() for word in ("database is locked", "database table is locked", "busy")
    )


def current_revision_of(conn: Connection) -> str | None:
    """The schema revision recorded in the database on ``conn`` (None: empty)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


class Backend:
    """One database's connections and dialect-specific operations (this base: SQLAlchemy Core)."""

    dialect = ""
    path: Path | None = None

    def __init__(self, name: str, *, read_only: bool, busy_timeout_ms: int = 30000) -> None:
        self.name = name
        self.read_only = read_only
        self.degraded: str | None = None  # why a store asked to write was opened read-only
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.closed = False  # set by the store's close(): nothing may open a connection any more
        # The Core engine, and its variant whose transactions take the write lock: made on first use.
        self._engine: Engine | None = None
        self._write_engine: Engine | None = None
        self._engine_lock = threading.Lock()

    @property
    def busy_s(self) -> float:
        return self.busy_timeout_ms / 1000.0

    @property
    def url(self) -> sa.URL:
        raise NotImplementedError

    # -- connections -------------------------------------------------------------------------

    def create_engines(self) -> tuple[Engine, Engine]:
        """A new (engine, write engine) pair for this database."""
        raise NotImplementedError

    def engine(self) -> Engine:
        """The Core engine, created the first time a statement needs it (importing SQLAlchemy)."""
        engine = self._engine
        if engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine, self._write_engine = self.create_engines()
                engine = self._engine
        return engine

    def write_engine(self) -> Engine:
        """The Core engine for writing: on SQLite its transactions take the write lock up front."""
        self.engine()
        assert self._write_engine is not None
        return self._write_engine

    def maintenance_engine(self) -> Engine:
        """A pool-less engine for the Alembic commands, checked as opening a store checks the database."""
        raise NotImplementedError

    def dispose(self) -> None:
        """Close every connection."""
        if self._engine is not None:
            self._engine.dispose()

    def release_connections(self) -> None:
        """Close every connection before a fork (see forks.py); they are opened again on demand."""
        self.dispose()

    def after_fork_in_child(self) -> None:
        """A forked child must not use its parent's connections (nor close them)."""
        self._engine_lock = threading.Lock()
        if self._engine is not None:
            self._engine.dispose(close=False)

    # -- opening -----------------------------------------------------------------------------

    def revision_at_open(self) -> str | None:
        """Check what opening needs checked; return the database's schema revision (None: empty)."""
        with self.engine().connect() as conn:
            return current_revision_of(conn)

    def prepare_writing(self) -> None:
        """Make what writing needs (after the revision was found acceptable)."""

    def lock_for_migration(self, conn: Connection) -> None:
        """Serialise migrations across processes (beyond what the write transaction does)."""

    def ready(self) -> None:
        """The store is open: warm what its first operation will need."""

    # -- the hot operations -------------------------------------------------------------------

    def fetch_entry(self, key: str) -> Any:
        """The hit row (queries.HIT_COLUMNS, then the payload) of ``key``, or None."""
        if self.closed:
            raise StoreError(f"{self.name}: the store is closed")
        try:
            with self.engine().connect() as conn:
                return conn.execute(queries.statements(self.dialect).select_entry, {"key": key}).first()
        except database_errors() as exc:
            raise StoreError(f"{self.name}: get failed: {exc}") from exc

    def fetch_limited(self, key: str, max_payload: int) -> Any:
        """The hit row of ``key`` with its payload only if at most ``max_payload`` bytes, then its size; or None."""
        with self.engine().connect() as conn:
            return conn.execute(queries.select_limited(self.dialect), {"key": key, "max": int(max_payload)}).first()

    def put(self, entry: tuple[Any, ...], pending: Pending, *, replace: bool = True) -> list[str]:
        """Write an entry (``entry``: queries.ENTRY_COLUMNS' values, the payload last), then evict what
        the limits require, in one transaction; return the evicted keys (``pending``: hits saved first).

        ``replace=False``: an entry already under the key is kept, and nothing is written."""
        statements = queries.statements(self.dialect)
        taken = None
        values = dict(zip(queries.ENTRY_COLUMNS, entry, strict=True))
        try:
            with self.write_engine().begin() as conn:
                if replace:
                    conn.execute(statements.put_entry, values)
                elif conn.execute(statements.insert_entry, values).first() is None:
                    return []
                row = conn.execute(statements.limits).first()
                over = over_limits(None if row is None else tuple(row))
                if over is None:
                    return []
                taken = pending.take()  # saved first, so that the order sees them (as evict() does)
                self._write_pending(conn, *taken)

                def candidates(policy: str, n: int) -> list[tuple[str, int]]:
                    return [(key, size) for key, size in conn.execute(statements.victims[policy], {"n": n})]

                def delete(keys: list[str]) -> None:
                    conn.execute(statements.delete_key, [{"k": key} for key in keys])

                evicted = evict_after_put(entry[0], entry[7], over, candidates, delete)
                if evicted:
                    conn.execute(statements.bump, [{"c": "evictions", "d": len(evicted)}])
                return evicted
        except BaseException:
            if taken is not None:
                pending.restore(*taken, self.name)
            raise

    def write_pending(self, accesses: Accesses, deltas: Mapping[str, int], *, wait: bool = True) -> bool:
        """Save recorded accesses and counter deltas in one transaction; True if saved.

        ``wait=False`` (a flush from a lookup): False, nothing written, when the rows are locked.
        """
        try:
            with self.write_engine().begin() as conn:
                if not wait:
                    self.no_lock_wait(conn)
                self._write_pending(conn, accesses, deltas)
        except database_errors() as exc:
            if not wait and self.is_lock_timeout(exc):
                return False
            raise
        return True

    def no_lock_wait(self, conn: Connection) -> None:
        """Make this transaction fail at once, not wait, on a lock another transaction holds."""

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Whether ``exc`` is what :meth:`no_lock_wait` makes a busy lock raise."""
        return is_locked(exc)

    def _write_pending(self, conn: Connection, accesses: Accesses, deltas: Mapping[str, int]) -> None:
        statements = queries.statements(self.dialect)
        if accesses:
            conn.execute(statements.touch, [{"k": key, "t": t, "n": n} for key, (t, n) in accesses.items()])
        if deltas:
            conn.execute(statements.bump, [{"c": name, "d": delta} for name, delta in deltas.items()])

    # -- maintenance ------------------------------------------------------------------------

    def query(
        self, statement: str, params: dict[str, Any], timeout: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one caller-written statement so that it can only read, for at most ``timeout`` seconds."""
        raise NotImplementedError

    def integrity_check(self) -> list[str]:
        """What the database reports as damaged (empty: fine, or it checks its own pages)."""
        return []

    def vacuum(self) -> None:
        raise NotImplementedError

    def file_size(self) -> int | None:
        """Bytes the database takes on disk; None for a server database."""
        return None


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction on ``engine``."""
    with engine.connect() as conn, conn.begin():
        yield conn
