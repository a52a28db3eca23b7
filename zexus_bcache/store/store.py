"""The persistent tier: opaque encoded bytecode with metadata, counters and settings in one database.

The store never asks which database it talks to: opening chooses a backend once (:mod:`.sqlite`
or :mod:`.postgres`), which runs the operations that differ. ``get`` is the hot path and never
writes: hits are recorded in memory (:mod:`.pending`) and flushed in batches. The schema is owned
by the Alembic migrations (:mod:`.migrate`); a fresh database is migrated from base under a lock,
exactly once however many processes open it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import constants, trust
from ..errors import BcacheError, ConfigError, StoreError
from . import forks, migrate, queries
from .backend import database_errors, is_locked
from .base import StoredEntry, checksum, make_entry, public
from .eviction import Eviction
from .inspection import Inspection
from .locate import connect
from .pending import Pending

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("zexus_bcache")

__all__ = ["Store", "StoredEntry", "checksum"]


class Store(Eviction, Inspection):
    """Opaque bytecode payloads with metadata, counters and settings in one database."""

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
        if allow_world_writable is None:
            allow_world_writable = trust.allowed_by_env()
        self._closed = True  # until opened
        self._warned: set[str] = set()
        backend = connect(
            url_or_path, read_only=read_only, busy_timeout_ms=busy_timeout_ms, pragmas=pragmas,
            allow_world_writable=allow_world_writable,
        )  # fmt: skip
        self._backend = backend
        self.name, self.dialect, self.path = backend.name, backend.dialect, backend.path
        self.read_only = read_only
        self.degraded: str | None = None  # why a store asked to write was opened read-only
        self.pragmas = dict(pragmas or {})
        self.allow_world_writable = allow_world_writable
        self.busy_timeout_ms = backend.busy_timeout_ms
        self.migrated = False  # whether this instance ran the migrations
        self._pending = Pending(flush_every, flush_interval)
        self._flush_lock = threading.Lock()  # one flush at a time
        self._flush_failing = False
        self._fetch = backend.fetch_entry
        # SQLite state must not cross a fork mid-use (forks.py); a server's connections may.
        self._gate: contextlib.AbstractContextManager[None] = (
            forks.GATE if backend.dialect == "sqlite" else contextlib.nullcontext()
        )
        # SQLite can answer "database is locked" at once, without waiting in the busy handler, to a
        # process opening a database that others are creating and converting to WAL at the same
        # instant (seen: 3 of 4 processes started together in bench/bench_load.py). Opening is
        # idempotent (the migration re-checks the revision under the write lock): try again until
        # the busy timeout is spent.
        deadline = time.monotonic() + backend.busy_s
        delay = 0.005
        while True:
            try:
                with self._gate:
                    self._open()
                break
            except BcacheError:
                backend.dispose()
                raise
            except database_errors() as exc:
                backend.dispose()
                if self.path is None or not is_locked(exc) or time.monotonic() + delay > deadline:
                    raise self._error("open", exc) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)
        self._closed = False
        _LIVE.add(self)
        backend.ready()

    @property
    def flush_every(self) -> int:
        return self._pending.flush_every

    @property
    def flush_interval(self) -> float:
        return self._pending.flush_interval

    def _open(self) -> None:
        backend = self._backend
        current = backend.revision_at_open()
        self.read_only, self.degraded = backend.read_only, backend.degraded
        self._pending.keep_accesses = not self.read_only
        status = migrate.check_openable(backend, current)
        if not self.read_only:
            backend.prepare_writing()
        if status.needs_upgrade:
            self.migrated = migrate.upgrade_on_open(backend) or self.migrated

    # -- the hot path ------------------------------------------------------------------------

    def get(self, key: str) -> StoredEntry | None:
        """The entry stored under ``key`` or None; reads only (the hit is recorded in memory).

        A row whose own key is not ``key`` (a damaged index led to another entry's row) is a miss,
        counted as ``corrupt``: a valid payload of another program never runs.
        """
        with self._gate:
            row = self._fetch(key)
            if row is None:
                return None
            if row[-2] != key:  # the row's own key, read from the row, not from the index
                self._corrupt(key, "the index led to another entry's row (a damaged index)")
                return None
            if not self._closed and self._pending.hit(key):
                self._auto_flush()
        return make_entry((key, *row[:-2], row[-1]))

    @public
    def get_limited(self, key: str, max_payload: int) -> tuple[StoredEntry | None, int | None]:
        """(entry, payload size) like :meth:`get`, but a payload over ``max_payload`` bytes is not
        fetched: then (None, its size). (None, None): no usable entry."""
        row = self._backend.fetch_limited(key, max_payload)
        if row is None:
            return None, None
        *hit, own, payload, size = row
        if payload is None:
            return None, int(size)
        if own != key:
            self._corrupt(key, "the index led to another entry's row (a damaged index)")
            return None, None
        if self._pending.hit(key):
            self._auto_flush()
        return make_entry((key, *hit, payload)), int(size)

    def _corrupt(self, key: str, why: str) -> None:
        """Count a damaged entry (a miss) and say so once per store."""
        self._pending.add({"corrupt": 1})
        if "corrupt" not in self._warned:
            self._warned.add("corrupt")
            log.warning("%s: entry %s is damaged (%s); treating it as a miss", self.name, key[:12], why)

    def touch(self, key: str, counter: str | None = None) -> None:
        """Record one use of ``key`` (time, +1 count), and +1 on ``counter`` if given, in memory; no I/O."""
        if not self._closed and self._pending.hit(key, counter):
            self._auto_flush()

    # -- writing -----------------------------------------------------------------------------

    @public
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
        replace: bool = True,
    ) -> list[str]:
        """Insert or replace the entry under ``key`` (payload size and checksum computed here); then,
        in the same transaction, evict in policy order until the limits in the settings hold.

        Returns the evicted keys (mostly none). ``signature`` is what the shared tier stores with an
        entry (see :mod:`zexus_bcache.shared`); it puts with ``replace=False``: an entry already
        under the key is kept (a writer without the key cannot overwrite a valid entry).
        """
        if kind not in constants.KINDS:
            raise ConfigError(f"kind must be one of {', '.join(constants.KINDS)}, not {kind!r}")
        self._require_writable("put")
        payload = bytes(payload)
        digest = checksum(payload)
        now = time.time()
        source = None if source_path is None else os.fspath(source_path)
        # In schema.entries column order (queries.ENTRY_COLUMNS).
        entry: tuple[Any, ...] = (key, kind, fingerprint, codec_version, digest, source_hash, mem_size, len(payload))
        entry += (n_instructions, n_constants, source, now, now, 0, signature, payload)
        evicted = self._backend.put(entry, self._pending, replace=replace)
        if evicted:
            self._pending.forget(evicted)
        if self._pending.due(now):
            self._auto_flush()
        return evicted

    @public
    def delete(self, key: str) -> bool:
        """Remove one entry; True if it existed."""
        return self._delete([key]) > 0

    @public
    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove the entries under the given keys in one transaction; return how many existed."""
        return self._delete(list(dict.fromkeys(keys)))

    def _delete(self, keys: list[str]) -> int:
        self._require_writable("delete")
        deleted = 0
        with self._write_engine().begin() as conn:
            for chunk in queries.chunks(keys):
                deleted += conn.execute(queries.delete_keys(chunk)).rowcount
        self._pending.forget(keys)
        return deleted

    @public
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
        conditions = queries.filters(
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
        with self._write_engine().begin() as conn:
            return int(conn.execute(queries.delete_entries(conditions)).rowcount)

    @public
    def clear(self) -> int:
        """Delete every entry; return how many went (counters and settings stay)."""
        self._require_writable("clear")
        with self._write_engine().begin() as conn:
            deleted = int(conn.execute(queries.delete_entries()).rowcount)
        self._pending.forget()
        return deleted

    @public
    def vacuum(self) -> None:
        """Rebuild the database file to give free pages back (and, on SQLite, empty the WAL)."""
        self._require_writable("vacuum")
        self.flush()
        self._backend.vacuum()

    # -- counters and settings ---------------------------------------------------------------

    def add(self, **deltas: int) -> None:
        """Add to cumulative counters (buffered in memory, flushed with the hits)."""
        if self._pending.add(deltas) and not self.read_only:
            self._auto_flush()

    @public
    def reset_counters(self) -> None:
        """Zero every counter, persisted and pending."""
        self._require_writable("reset_counters")
        with self._write_engine().begin() as conn:
            conn.execute(queries.reset_counters())
            # The marker row was zeroed too: the bump makes it now (an upsert: 0 + now).
            zeroed_at = int(time.time() * 1000)
            conn.execute(queries.statements(self.dialect).bump, [{"c": queries.ZEROED_AT, "d": zeroed_at}])
        self._pending.reset_counters()

    @public
    def set_setting(self, name: str, value: int | str) -> None:
        """Validate and store one setting; every process sees it on its next use."""
        typed = queries.parse_setting(name, value)
        self._require_writable("set_setting")
        with self._write_engine().begin() as conn:
            conn.execute(queries.upsert_setting(self.dialect, name, str(typed)))

    # -- flushing and closing ----------------------------------------------------------------

    @public
    def flush(self) -> None:
        """Write pending hits and counter deltas in one transaction; on failure keep them and raise."""
        if self.read_only:
            return  # nothing can be written; read-only stores keep counters in memory only
        with self._flush_lock:
            self._flush_locked()

    def _auto_flush(self) -> None:
        """Flush from a hot path: never raise, never wait (for another thread's flush, or for another
        process's write lock: busy, the records stay in memory for a later flush)."""
        if self._closed or not self._flush_lock.acquire(blocking=False):
            return
        try:
            with self._gate:
                self._flush_locked(wait=False)
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

    def _flush_locked(self, *, wait: bool = True) -> None:
        accesses, deltas = self._pending.take()
        if not accesses and not deltas:
            return
        try:
            written = self._backend.write_pending(accesses, deltas, wait=wait)
        except BaseException:
            self._pending.restore(accesses, deltas, self.name)
            raise
        if not written:  # the write lock was busy and this flush may not wait: keep them for later
            self._pending.restore(accesses, deltas, self.name)

    def drop_pending(self) -> int:
        """Forget the access records and counter deltas not saved yet (a server that is gone); return how many."""
        return self._pending.drop()

    def close(self) -> None:
        """Flush (best effort: a failure is logged and the pending data dropped) and release everything."""
        if self._closed:
            return
        with self._gate:
            self._close()

    def _close(self) -> None:
        try:
            self.flush()
        except StoreError as exc:
            lost = self._pending.n_accesses()
            log.warning("%s: closing without saving %d access records and counters: %s", self.name, lost, exc)
        self._closed = True
        _LIVE.discard(self)
        self._backend.closed = True
        self._pending.drop()
        self._backend.dispose()

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
    def url(self) -> sa.URL:
        """The database's URL (for SQLite, made on demand: building one imports SQLAlchemy)."""
        return self._backend.url

    def _after_fork_in_child(self) -> None:
        """A forked child must not use its parent's connections, locks or pending data."""
        self._flush_lock = threading.Lock()
        self._pending.reset()
        self._backend.after_fork_in_child()


# Every open store, so pending data is flushed at exit and forked children start clean.
_LIVE: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for store in list(_LIVE):
        try:
            store.close()
        except Exception:  # at exit there is no one left to tell but the log
            log.exception("closing %r at exit", store)


def _release_before_fork() -> None:
    for store in list(_LIVE):
        if store.dialect == "sqlite":
            store._backend.release_connections()


def _reset_after_fork() -> None:
    for store in list(_LIVE):
        store._after_fork_in_child()


forks.register(before=_release_before_fork, after_in_child=_reset_after_fork)


