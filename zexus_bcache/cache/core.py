"""BytecodeCache: the seed's API over an in-memory front layer and a persistent store.

This is the only module that knows the tiers. A hit is served from the front layer
(``front.FrontCache``) or, for persistent caches, from the store (``store.Store``) and decoded
(``codec.decode``), or, when a shared tier is configured (``shared.SharedTier``, a team's server),
from there: verified, decoded and copied into the store and the front layer. ``put`` writes
through to the front layer and the store, and queues the entry for the shared tier. Any failure
of a tier becomes a miss or a skipped write with one warning through ``logging``: a cache never
breaks the program using it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import codec, keys
from ..errors import BcacheError, CodecError, ConfigError, StoreError
from ..front import FrontCache, deep_sizeof
from ..location import DB_NAME
from .sources import SourcesMixin
from .stats import _LOCAL_COUNTERS, _MB, _STORE_COUNTERS, StatsMixin

log = logging.getLogger("zexus_bcache")



def _shape(value: Any) -> tuple[int, int]:
    """(instructions, constants) of a cached value: one Bytecode or a file's list of them."""
    bytecodes = value if isinstance(value, list) else [value]
    return sum(len(b.instructions) for b in bytecodes), sum(len(b.constants) for b in bytecodes)


def resolve_location(
    *, persistent: bool, cache_dir: str | os.PathLike[str] | None, path: str | os.PathLike[str] | None, url: str | None
) -> str | Path | None:
    """Where the store lives: url or path, else cache_dir/bcache.db, else the configured default; None: memory only."""
    if url is not None and path is not None:
        raise ConfigError("give either path or url, not both")
    if url is not None:
        return url
    if path is not None:
        return Path(path)
    if not persistent:
        return None
    if cache_dir is not None:
        return Path(cache_dir) / DB_NAME
    from .. import config

    return config.resolve()["path"].value


class BytecodeCache(StatsMixin, SourcesMixin):
    """LRU cache of compiled bytecode; persistent caches keep every entry in a SQL store too."""

    def __init__(
        self,
        max_size: int = 1000,
        max_memory_mb: float = 100,
        persistent: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        debug: bool = False,
        *,
        path: str | os.PathLike[str] | None = None,
        url: str | None = None,
        read_only: bool = False,
        strict: bool = False,
        optimize: bool = True,
        compiler: str = "vm",
        shared: str | None = None,
        shared_read_only: bool = False,
        shared_key: bytes | str | None = None,
        shared_options: dict[str, Any] | None = None,
    ) -> None:
        """``shared`` (a PostgreSQL URL) puts a team's shared tier behind this cache (docs/SHARED.md):
        its HMAC key is ``shared_key``, else ``$ZEXUS_BCACHE_SHARED_KEY`` or the file named by
        ``$ZEXUS_BCACHE_SHARED_KEY_FILE``; ``shared_read_only`` never writes to it;
        ``shared_options`` are :class:`~zexus_bcache.shared.SharedTier`'s timeouts and queue size."""
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ConfigError(f"max_size must be a whole number >= 0, not {max_size!r}")
        if isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, (int, float)) or not max_memory_mb >= 0:
            raise ConfigError(f"max_memory_mb must be a number >= 0, not {max_memory_mb!r}")
        self.max_size = max_size
        self.max_memory_bytes = int(max_memory_mb * _MB)
        self.debug = debug
        self.optimize = optimize
        self.compiler = compiler
        self.fingerprint = keys.compiler_fingerprint(optimize=optimize, compiler=compiler)
        self._front = FrontCache(max_size, self.max_memory_bytes)
        self._lock = threading.Lock()
        _LIVE.add(self)
        self._counts = dict.fromkeys(_LOCAL_COUNTERS, 0)
        self._front_hits_reset = 0
        self._warned: set[str] = set()
        self._file_keys: dict[str, set[str]] = {}
        self.store: Any = None
        self.store_error: str | None = None
        self.shared: Any = None
        self.shared_error: str | None = None
        configured = persistent and path is None and url is None and cache_dir is None
        location = resolve_location(persistent=persistent, cache_dir=cache_dir, path=path, url=url)
        self.location = location
        self.persistent = location is not None
        self.cache_dir = Path(location).parent if isinstance(location, Path) else None
        self.read_only = read_only
        if location is not None:
            from ..store import Store

            try:
                self.store = Store(location, read_only=read_only)
                # A file this process cannot write is opened read-only (the store warned once):
                # then no write is attempted, rather than one failing per put.
                self.read_only = read_only or self.store.read_only
            except Exception as exc:
                if not isinstance(exc, BcacheError):
                    exc = StoreError(f"cannot open a cache at {str(location)!r}: {exc}")
                if strict:
                    raise exc from None
                self.store_error = str(exc)
                self._warn("open", f"bytecode cache disabled, compiling as if uncached: {exc}")
        if configured:
            from .. import config

            self.apply_settings(config.resolve())
        if shared:
            self._open_shared(shared, shared_read_only, shared_key, shared_options or {}, strict)

    @classmethod
    def from_config(
        cls, command_line: Mapping[str, Any] | None = None, *, start: str | os.PathLike[str] | None = None,
        **explicit: Any,
    ) -> BytecodeCache:
        """The configured cache, opened as ``zexus-bcache run`` and ``integration.install()`` open it.

        Location, front bound and shared tier come from, first to last: ``explicit`` keyword arguments
        of the constructor, ``command_line`` (setting names to values, None = not given), the
        environment, ``<project root of start>/.zexus/bcache.toml``, the database, the defaults. Store
        limits that the environment or the config file set are written to the database, so every
        process enforces them. ``BytecodeCache(persistent=True)`` without a location takes the same
        location and limits (not the shared tier: pass ``shared=`` for that).
        """
        from .. import config

        settings = config.resolve(command_line, start=start)
        cache = cls(**{**config.cache_arguments(settings), **explicit})
        cache.apply_settings(settings)
        return cache

    def apply_settings(self, settings: Mapping[str, Any]) -> None:
        """Store the limits that the environment or the config file set (a failure is one warning)."""
        if self.store is None or self.read_only:
            return
        from .. import config

        try:
            config.apply_settings(self.store, settings)
        except BcacheError as exc:  # the cache still works with the limits already stored
            self._warn("settings", f"cannot store the configured limits: {exc}")

    def _open_shared(
        self, url: str, read_only: bool, key: bytes | str | None, options: dict[str, Any], strict: bool
    ) -> None:
        """The shared tier, or (not strict) one warning and none: it must never stop the program."""
        from ..config import shared_key_from_env
        from ..shared import SharedTier

        try:
            if key is None:
                key = shared_key_from_env()
            self.shared = SharedTier(url, key=key, read_only=read_only, count=self._count, **options)
        except BcacheError as exc:
            if strict:
                raise
            self.shared_error = str(exc)
            self._warn("shared", f"shared tier disabled, using the local cache only: {exc}")

    # ------------------------------------------------------------------ plumbing

    def _warn(self, what: str, message: str) -> None:
        """Log one warning per kind of failure, not one per call."""
        if what not in self._warned:
            self._warned.add(what)
            log.warning("zexus_bcache: %s", message)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n
        if self.store is not None and name in _STORE_COUNTERS:
            try:
                self.store.add(**{name: n})
            except StoreError as exc:
                self._warn("count", f"cannot record statistics: {exc}")

    def _failed(self, what: str, exc: StoreError) -> None:
        """A store failure becomes one warning per kind (and a write error); the caller carries on uncached."""
        self._warn(what, f"cache {what} failed, carrying on without it: {exc}")
        if what in ("put", "evict"):
            # Through the store too: stats read the shared counters, which must include this.
            self._count("write_errors")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """``_failed`` as a with-block, for the paths off the front-hit fast path."""
        try:
            yield
        except StoreError as exc:
            self._failed(what, exc)

    def key_for(self, ast_node: Any) -> str:
        """The cache key of an AST node (structural, position-free, with the compiler fingerprint)."""
        return keys.ast_key(ast_node, self.fingerprint)

    # ------------------------------------------------------------------ tiers by key

    def lookup(self, key: str, fingerprint: str | None = None) -> Any | None:
        """Bytecode under key from the front layer, else the store; counts the hit or miss."""
        return self._lookup(key, fingerprint or self.fingerprint)[0]

    def _lookup(self, key: str, fingerprint: str) -> tuple[Any | None, str | None]:
        value = self._front.get(key)  # counts the front hit itself
        if value is not None:
            if self.store is not None:
                try:  # not _guard: a generator context manager would double a front hit's cost
                    self.store.touch(key, "front_hits")
                except StoreError as exc:
                    self._failed("get", exc)
            return value, "front"
        if not keys.storable(key):  # off the fast path: such a key was never stored, so it is a miss
            self._count("misses")
            return None, None
        if self.store is not None:
            value = self._load(key, fingerprint)
            if value is not None:
                self._count("store_hits")
                return value, "store"
        if self.shared is not None:
            value = self._load_shared(key, fingerprint)
            if value is not None:
                self._count("shared_hits")
                return value, "shared"
        self._count("misses")
        return None, None

    def _load_shared(self, key: str, fingerprint: str) -> Any | None:
        """A verified shared entry, decoded and copied into the store and the front layer; or None."""
        entry = self.shared.get(key, fingerprint)  # verified before we see it: never decode what failed
        if entry is None:
            return None
        try:
            value = codec.decode(entry.payload)
        except CodecError as exc:
            self._count("corrupt")
            self._warn("shared-corrupt", f"a shared entry {key[:12]} is signed but cannot be decoded: {exc}")
            return None
        if self.store is not None and not self.read_only:
            n_instructions, n_constants = _shape(value)
            self._store_put(
                key, entry.payload, kind=entry.kind, fingerprint=entry.fingerprint, codec_version=entry.codec_version,
                n_instructions=n_instructions, n_constants=n_constants, mem_size=entry.mem_size,
                source_path=None, source_hash=entry.source_hash,
            )
        self._front_put(key, value, entry.mem_size)
        return value

    def _load(self, key: str, fingerprint: str) -> Any | None:
        entry = None
        with self._guard("get"):
            entry = self.store.get(key)
        if entry is None:
            return None
        if entry.fingerprint != fingerprint:
            return None  # keys include the fingerprint; a row made by another compiler is never served
        try:
            value = codec.decode(entry.payload)
        except CodecError as exc:
            self._count("corrupt")
            self._warn("corrupt", f"dropping a corrupt cache entry {key[:12]}: {exc}")
            if not self.read_only:
                with self._guard("put"):
                    self.store.delete(key)
            return None
        self._front_put(key, value, entry.mem_size)
        return value

    def _front_put(self, key: str, value: Any, size: int | None) -> None:
        if type(size) is not int or size <= 0:
            size = None  # a stored size is data: a negative or non-integer one is measured again
        evicted = self._front.put(key, value, size)
        if evicted:
            self._count("front_evictions", len(evicted))
            if self.store is None:
                self._count("evictions", len(evicted))

    def store_value(
        self,
        key: str,
        value: Any,
        *,
        kind: str,
        skip_disk: bool = False,
        source_path: str | None = None,
        source_hash: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Put value under key in the front layer and (unless skip_disk) write it through to the store."""
        if not keys.storable(key):
            raise ConfigError(f"a cache key must be a str of encodable characters, not {key!r}")
        self._count("puts")
        local = self.store is not None and not self.read_only
        shared = self.shared is not None and not self.shared.read_only
        size = None
        if (local or shared) and not skip_disk:
            # One walk: the payload, the measured in-memory size and the shape together.
            size = self._write_through(key, value, kind, fingerprint or self.fingerprint, source_path, source_hash)
        if size is None:
            size = deep_sizeof(value)
        if size > self._front.max_bytes and self._front.max_entries:
            self._oversized(size, self._front.max_bytes)
        # Only now: a front hit from another thread records an access, which must find the row.
        self._front_put(key, value, size)

    def _write_through(
        self, key: str, value: Any, kind: str, fingerprint: str, source_path: str | None, source_hash: str | None
    ) -> int | None:
        """Encode value and write it to the store and the shared tier; its measured size (None: not encodable)."""
        try:
            encoded = codec.encode_measured(value)
        except CodecError as exc:
            self._warn("encode", f"not persisting bytecode the codec cannot encode exactly: {exc}")
            return None
        meta: dict[str, Any] = dict(
            kind=kind, fingerprint=fingerprint, codec_version=codec.FORMAT_VERSION,
            n_instructions=encoded.n_instructions, n_constants=encoded.n_constants, mem_size=encoded.mem_size,
            source_hash=source_hash,
        )
        if self.store is not None and not self.read_only:
            self._store_put(key, encoded.payload, source_path=source_path, **meta)
        if self.shared is not None:
            self.shared.put(key, encoded.payload, **meta)  # queued: never waits for the network
        return encoded.mem_size

    def _store_put(self, key: str, payload: bytes, **meta: Any) -> None:
        """Write one entry to the store (a failure is a warning and a write error).

        The store enforces its limits in the put's own transaction; what it evicted leaves the front layer too.
        """
        with self._guard("put"):
            for gone in self.store.put(key, payload, **meta):
                self._front.pop(gone)

    def discard(self, key: str) -> bool:
        """Remove key from both tiers; True if it was in either."""
        found = self._front.pop(key)
        if self.store is not None and not self.read_only and keys.storable(key):
            with self._guard("put"):
                found = self.store.delete(key) or found
        return found

    # ------------------------------------------------------------------ the seed's API

    def get(self, ast_node: Any) -> Any | None:
        """Cached bytecode for an AST node, or None."""
        return self.lookup(self.key_for(ast_node))

    def put(self, ast_node: Any, bytecode: Any, skip_disk: bool = False) -> None:
        """Cache bytecode for an AST node (write-through unless skip_disk)."""
        self.store_value(self.key_for(ast_node), bytecode, kind="ast", skip_disk=skip_disk)

    def invalidate(self, ast_node: Any) -> None:
        """Remove the entry of an AST node from every tier."""
        self.discard(self.key_for(ast_node))

    def clear(self) -> None:
        """Remove every entry from every tier, patterns included (statistics are kept; see reset_stats)."""
        self._front.clear()
        self._pattern_front().clear()
        self._file_keys.clear()
        if self.store is not None and not self.read_only:
            with self._guard("put"):
                self.store.clear()

    def evict(self) -> list[str]:
        """Enforce the store's limits (read fresh from its settings) now; return evicted keys."""
        if self.store is None or self.read_only:
            return []
        evicted: list[str] = []
        with self._guard("evict"):
            evicted = self.store.evict()
        for key in evicted:
            self._front.pop(key)
        return evicted

    def contains(self, ast_node: Any) -> bool:
        """Whether an AST node has an entry (not counted as a hit)."""
        return self.contains_key(self.key_for(ast_node))

    def contains_key(self, key: str) -> bool:
        if key in self._front:
            return True
        if self.store is None or not keys.storable(key):
            return False
        with self._guard("get"):
            return self.store.info(key) is not None
        return False

    def __contains__(self, ast_node: Any) -> bool:
        return self.contains(ast_node)

    def flush(self) -> None:
        """Write queued shared puts (waiting a bounded time), then pending access times and counters."""
        if self.shared is not None:
            self.shared.flush()
        if self.store is not None:
            with self._guard("flush"):
                self.store.flush()

    def close(self) -> None:
        """Flush and release the tiers (shared puts drain for a bounded time); then memory only."""
        if self.shared is not None:
            self.shared.close()
            self.shared = None
        if self.store is not None:
            with self._guard("flush"):
                self.store.close()
            self.store = None

    def __enter__(self) -> BytecodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.location) if self.location is not None else "memory"
        stats = self.stats
        return (
            f"BytecodeCache(size={stats.total_entries}/{self.max_size}, "
            f"memory={self.memory_usage_mb():.2f}MB, hit_rate={stats.hit_rate:.1f}%, store={where})"
        )


_LIVE: weakref.WeakSet[BytecodeCache] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    """A forked child has only the forking thread: a counter lock another thread held would never be released."""
    for cache in list(_LIVE):
        cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_after_fork)
