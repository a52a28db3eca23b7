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

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import codec, constants, integration, keys
from .errors import BcacheError, CodecError, ConfigError, StoreError
from .front import FrontCache, deep_sizeof
from .location import DB_NAME, default_path

log = logging.getLogger("zexus_bcache")

_MB = 1024 * 1024


@dataclass
class CacheStats:
    """Counters as the seed reports them, split by tier (hits = front_hits + store_hits + shared_hits)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    memory_bytes: int = 0
    total_entries: int = 0
    hit_rate: float = 0.0
    front_hits: int = 0
    store_hits: int = 0
    puts: int = 0
    corrupt: int = 0
    write_errors: int = 0
    front_evictions: int = 0
    shared_hits: int = 0
    shared_misses: int = 0
    shared_errors: int = 0
    auth_failures: int = 0
    shared_puts: int = 0
    shared_dropped: int = 0
    file_hits: int = 0  # get_by_file lookups (also counted in hits/misses, by tier)
    file_misses: int = 0
    pattern_hits: int = 0
    oversized: int = 0  # entries larger than the whole in-memory limit

    def update_hit_rate(self) -> None:
        self.hit_rate = constants.hit_rate(self.hits, self.misses)

    def to_dict(self) -> dict[str, Any]:
        self.update_hit_rate()
        return asdict(self)


_STATS_FIELDS = frozenset(CacheStats.__dataclass_fields__)
_DERIVED_STATS = {
    "hit_rate": "it is computed from hits and misses",
    "memory_bytes": "it is measured from the entries held in memory",
    "total_entries": "it is the number of entries held",
}


class LiveStats:
    """``cache.stats``: every read is current and assigning a counter sets it (the seed's live object)."""

    __slots__ = ("_read", "_write")

    def __init__(self, read: Callable[[], CacheStats], write: Callable[[str, int], None]) -> None:
        object.__setattr__(self, "_read", read)
        object.__setattr__(self, "_write", write)

    def __getattr__(self, name: str) -> Any:
        if name in _STATS_FIELDS:
            return getattr(self._read(), name)
        raise AttributeError(f"cache statistics have no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _DERIVED_STATS:
            raise AttributeError(f"cannot set {name}: {_DERIVED_STATS[name]}")
        if name not in _STATS_FIELDS:
            raise AttributeError(f"cache statistics have no field {name!r}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
        self._write(name, value)

    def snapshot(self) -> CacheStats:
        """The statistics now, as a plain CacheStats that later lookups do not change."""
        return self._read()

    def update_hit_rate(self) -> None:
        """Nothing to do: the hit rate is computed on every read."""

    def to_dict(self) -> dict[str, Any]:
        return self._read().to_dict()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LiveStats):
            other = other.snapshot()
        return self._read() == other if isinstance(other, CacheStats) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it stands for

    def __repr__(self) -> str:
        return f"Live{self._read()!r}"


@dataclass
class CompileReport:
    """What compile_source did: the bytecode, the tier that served it (None = compiled), timings in seconds."""

    bytecode: Any
    tier: str | None
    key: str
    timings: dict[str, float]
    program: Any = None  # the parsed AST, when this call parsed it


# Front hits are counted by the front layer (under the lock it takes anyway) and, for a persistent
# cache, by the store's touch(); the rest here.
# Counters the store keeps (summed over processes); front evictions are per process.
_STORE_COUNTERS = frozenset(constants.COUNTERS)
_LOCAL_COUNTERS = (*(name for name in constants.COUNTERS if name != "front_hits"), "front_evictions")


def _shape(value: Any) -> tuple[int, int]:
    """(instructions, constants) of a cached value: one Bytecode or a file's list of them."""
    bytecodes = value if isinstance(value, list) else [value]
    return sum(len(b.instructions) for b in bytecodes), sum(len(b.constants) for b in bytecodes)


def resolve_location(
    *, persistent: bool, cache_dir: str | os.PathLike[str] | None, path: str | os.PathLike[str] | None, url: str | None
) -> str | Path | None:
    """Where the store lives: an explicit url or path, else cache_dir/bcache.db, else the default; None = memory only."""
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
    return default_path()


class BytecodeCache:
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
        evict_every: int = 64,
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
        self.evict_every = max(1, int(evict_every))
        self._front = FrontCache(max_size, self.max_memory_bytes)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_LOCAL_COUNTERS, 0)
        self._front_hits_reset = 0
        self._warned: set[str] = set()
        self._puts_since_evict = 0
        self._file_keys: dict[str, set[str]] = {}
        self.store: Any = None
        self.store_error: str | None = None
        self.shared: Any = None
        self.shared_error: str | None = None
        location = resolve_location(persistent=persistent, cache_dir=cache_dir, path=path, url=url)
        self.location = location
        self.persistent = location is not None
        self.cache_dir = Path(location).parent if isinstance(location, Path) else None
        self.read_only = read_only
        if location is not None:
            from .store import Store

            try:
                self.store = Store(location, read_only=read_only)
                # A file this process cannot write is opened read-only (the store warned once):
                # then no write is attempted, rather than one failing per put.
                self.read_only = read_only or self.store.read_only
            except BcacheError as exc:
                if strict:
                    raise
                self.store_error = str(exc)
                self._warn("open", f"bytecode cache disabled, compiling as if uncached: {exc}")
        if shared:
            self._open_shared(shared, shared_read_only, shared_key, shared_options or {}, strict)

    def _open_shared(
        self, url: str, read_only: bool, key: bytes | str | None, options: dict[str, Any], strict: bool
    ) -> None:
        """The shared tier, or (not strict) one warning and none: it must never stop the program."""
        from .config import shared_key_from_env
        from .shared import SharedTier

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
        """Write one entry to the store (a failure is a warning and a write error); evict now and then."""
        with self._guard("put"):
            self.store.put(key, payload, **meta)
            self._puts_since_evict += 1
            if self._puts_since_evict >= self.evict_every:
                self._puts_since_evict = 0
                self.evict()

    def discard(self, key: str) -> bool:
        """Remove key from both tiers; True if it was in either."""
        found = self._front.pop(key)
        if self.store is not None and not self.read_only:
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

    def get_stats(self) -> dict[str, Any]:
        """Statistics and ``pattern_memory_bytes``; a persistent cache's counters are summed over every process."""
        stats = self._snapshot().to_dict()
        stats["pattern_memory_bytes"] = self._pattern_front().currsize
        return stats

    @property
    def stats(self) -> LiveStats:
        """The statistics as a live object: ``cache.stats.hits`` is always current, ``cache.stats.hits = 0`` sets it."""
        return LiveStats(self._snapshot, self._set_stat)

    @stats.setter
    def stats(self, value: CacheStats | LiveStats) -> None:
        """``cache.stats = CacheStats()`` sets each counter to the given one's (hit rate, memory, entries are not)."""
        given = value.snapshot() if isinstance(value, LiveStats) else value
        if not isinstance(given, CacheStats):
            raise TypeError(f"cache.stats must be set to a CacheStats, not {type(value).__name__}")
        targets = {name: getattr(given, name) for name in (*_LOCAL_COUNTERS, "front_hits")}
        if given.hits != sum(targets[name] for name in constants.HIT_COUNTERS):
            targets.update(self._hits_target(given.hits))
        self._set_counters(targets)

    def _set_stat(self, name: str, value: int) -> None:
        self._set_counters(self._hits_target(value) if name == "hits" else {name: value})

    @staticmethod
    def _hits_target(hits: int) -> dict[str, int]:
        # Hits are a sum over tiers: a bare number of hits is booked to the memory tier.
        return {name: hits if name == "front_hits" else 0 for name in constants.HIT_COUNTERS}

    def _set_counters(self, targets: dict[str, int]) -> None:
        """Move each counter to its target by adding the difference (to the store too, for a persistent cache)."""
        now = self._snapshot()
        for name, target in targets.items():
            delta = int(target) - getattr(now, name)
            if not delta:
                continue
            with self._lock:
                if name == "front_hits":
                    self._front_hits_reset -= delta  # the front layer counts its own hits
                else:
                    self._counts[name] += delta
            if self.store is not None and name in _STORE_COUNTERS:
                with self._guard("put"):
                    self.store.add(**{name: delta})

    def _snapshot(self) -> CacheStats:
        """The statistics now, as a plain CacheStats."""
        with self._lock:
            counts = dict(self._counts)
        counts["front_hits"] = self._front.hits - self._front_hits_reset
        if self.store is not None:
            try:
                shared = self.store.counters()
            except StoreError as exc:
                self._warn("stats", f"cannot read shared statistics: {exc}")
            else:
                counts.update({k: shared.get(k, 0) for k in _STORE_COUNTERS})
        hits = sum(counts[name] for name in constants.HIT_COUNTERS)
        return CacheStats(
            hits=hits,
            hit_rate=constants.hit_rate(hits, counts["misses"]),
            memory_bytes=self._front.currsize,
            total_entries=self.size(),
            **counts,  # every counter is a CacheStats field
        )

    def reset_stats(self) -> None:
        """Zero the counters (everywhere, for a persistent cache); entries are kept."""
        with self._lock:
            self._counts = dict.fromkeys(_LOCAL_COUNTERS, 0)
            self._front_hits_reset = self._front.hits
        if self.store is not None and not self.read_only:
            with self._guard("put"):
                self.store.reset_counters()

    def contains(self, ast_node: Any) -> bool:
        """Whether an AST node has an entry (not counted as a hit)."""
        return self.contains_key(self.key_for(ast_node))

    def contains_key(self, key: str) -> bool:
        if key in self._front:
            return True
        if self.store is None:
            return False
        with self._guard("get"):
            return self.store.info(key) is not None
        return False

    def __contains__(self, ast_node: Any) -> bool:
        return self.contains(ast_node)

    def size(self) -> int:
        """Number of entries: the store's count for a persistent cache, else the front layer's."""
        if self.store is not None:
            with self._guard("get"):
                return int(self.store.count())
        return len(self._front)

    def __len__(self) -> int:
        return self.size()

    def __bool__(self) -> bool:
        return True

    def memory_usage(self) -> int:
        """Bytes held by the in-memory front layer."""
        return self._front.currsize

    def memory_usage_mb(self) -> float:
        return self._front.currsize / _MB

    def get_entry_info(self, ast_node: Any) -> dict[str, Any] | None:
        """What is known about an AST node's entry, or None."""
        return self.entry_info(self.key_for(ast_node))

    def entry_info(self, key: str) -> dict[str, Any] | None:
        front = self._front.peek(key)
        info: dict[str, Any] | None = None
        if self.store is not None:
            with self._guard("get"):
                info = self.store.info(key)
        if front is None and info is None:
            return None
        out: dict[str, Any] = {"key": key, "in_memory": front is not None, "in_store": info is not None}
        if info is not None:
            out.update(
                timestamp=info["last_access"],
                access_count=info["access_count"],
                size_bytes=info["mem_size"],
                instruction_count=info["n_instructions"],
                constant_count=info["n_constants"],
                payload_size=info["payload_size"],
                kind=info["kind"],
                source_path=info["source_path"],
                created_at=info["created_at"],
            )
        if front is not None:
            value = front.value
            bytecodes = value if isinstance(value, list) else [value]
            out.update(
                timestamp=max(front.last_access, out.get("timestamp", 0.0)),
                access_count=max(front.access_count, out.get("access_count", 0)),
                size_bytes=front.size,
                instruction_count=sum(len(b.instructions) for b in bytecodes),
                constant_count=sum(len(b.constants) for b in bytecodes),
            )
        return out

    def get_all_keys(self) -> list[str]:
        """Every key: the store's for a persistent cache, else the front layer's (LRU first)."""
        if self.store is not None:
            with self._guard("get"):
                return list(self.store.keys())
        return [str(k) for k in self._front.keys()]

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

    # ------------------------------------------------------------------ source-level cache (warm starts)

    def compile_source(self, source: str, filename: str | None = None, optimize: bool = True) -> Any:
        """Bytecode for Zexus source: a hit skips lexing, parsing and compiling; a miss compiles and stores."""
        return self.compile_source_report(source, filename, optimize).bytecode

    def compile_file(self, path: str | os.PathLike[str], optimize: bool = True) -> Any:
        """Bytecode for a .zx file, remembered with its path and content hash."""
        return self.compile_file_report(path, optimize).bytecode

    def compile_file_report(self, path: str | os.PathLike[str], optimize: bool = True) -> CompileReport:
        resolved = Path(path).resolve()
        source = resolved.read_text(encoding="utf-8")
        return self.compile_source_report(source, str(resolved), optimize, source_path=str(resolved))

    def compile_source_report(
        self, source: str, filename: str | None = None, optimize: bool = True, *, source_path: str | None = None
    ) -> CompileReport:
        """compile_source, also saying which tier served it and how long each step took."""
        if not isinstance(source, str):
            raise ConfigError(f"source must be a str, not {type(source).__name__}")
        t0 = time.perf_counter()
        fingerprint = keys.compiler_fingerprint(optimize=optimize, compiler="vm")
        key = keys.source_key(source, fingerprint, filename)
        t1 = time.perf_counter()
        bytecode, tier = self._lookup(key, fingerprint)
        t2 = time.perf_counter()
        report = CompileReport(bytecode, tier, key, {"key": t1 - t0, "lookup": t2 - t1})
        if source_path is not None:
            self._file_keys.setdefault(source_path, set()).add(key)
        if bytecode is not None:
            return report
        program = integration.parse(source, filename or "<string>")
        t3 = time.perf_counter()
        report.bytecode = integration.compile_program(program, optimize=optimize)
        t4 = time.perf_counter()
        source_hash = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=32).hexdigest()
        self.store_value(
            key, report.bytecode, kind="source", source_path=source_path, source_hash=source_hash, fingerprint=fingerprint
        )
        report.program = program
        report.timings.update(parse=t3 - t2, compile=t4 - t3, store=time.perf_counter() - t4)
        return report

    # ------------------------------------------------------------------ zexus 2.0's file API
    # A file entry's key covers the file's resolved path and the hash of its content, so an edited
    # file misses by construction (stale detection by content, not mtime).

    def _file_key(self, file_path: str | os.PathLike[str]) -> tuple[str, str, str] | None:
        """(key, resolved path, content hash), or None when the file cannot be read."""
        resolved = Path(file_path).resolve()
        try:
            content = hashlib.blake2b(resolved.read_bytes(), digest_size=32).hexdigest()
        except OSError:
            return None
        key = hashlib.blake2b(f"file\0{self.fingerprint}\0{resolved}\0{content}".encode(), digest_size=32)
        return key.hexdigest(), str(resolved), content

    def get_by_file(self, file_path: str | os.PathLike[str]) -> list[Any] | None:
        """Bytecode cached for a source file's current content, or None."""
        found = self._file_key(file_path)
        if found is None:
            self._count("misses")
            self._count("file_misses")
            return None
        key, resolved, _ = found
        value = self.lookup(key)
        self._count("file_hits" if value is not None else "file_misses")
        if value is None:
            return None
        self._file_keys.setdefault(resolved, set()).add(key)
        return list(value)

    def put_by_file(self, file_path: str | os.PathLike[str], bytecodes: list[Any]) -> None:
        """Cache the bytecode of a source file, remembering its path and content hash."""
        found = self._file_key(file_path)
        if found is None:
            return
        key, resolved, content = found
        self._file_keys.setdefault(resolved, set()).add(key)
        self.store_value(key, list(bytecodes), kind="file", source_path=resolved, source_hash=content)

    def invalidate_file(self, file_path: str | os.PathLike[str]) -> None:
        """Forget every cached version of a source file (file and compile_file entries)."""
        resolved = str(Path(file_path).resolve())
        for key in self._file_keys.pop(resolved, ()):
            self._front.pop(key)
        if self.store is not None and not self.read_only:
            with self._guard("put"):
                self.store.invalidate(source_path=resolved)

    def is_file_cached(self, file_path: str | os.PathLike[str]) -> bool:
        """Whether a source file has bytecode cached for its current content."""
        found = self._file_key(file_path)
        return found is not None and self.contains_key(found[0])

    # ------------------------------------------------------------------ the rest of zexus 2.0's API

    OVERSIZED_FATE = "it is not kept in memory (a persistent cache still stores it and serves it from there)"
    MAX_PATTERNS = 500  # zexus 2.0's bound on the pattern tier

    def _oversized(self, size: int, limit: int, what: str = "an entry") -> None:
        """Count a value larger than the whole in-memory limit, and say once what becomes of it."""
        self._count("oversized")
        self._warn(f"oversized {what}", f"{what} of {size} bytes exceeds the in-memory limit ({limit} bytes): "
                   f"{self.OVERSIZED_FATE}")

    def _hash_ast(self, ast_node: Any) -> str:
        """zexus 2.0's name for :meth:`key_for`."""
        return self.key_for(ast_node)

    def _pattern_front(self) -> FrontCache:
        """The pattern tier (memory only; 500 entries, a quarter of the memory limit, as zexus), made on first use."""
        front = self.__dict__.get("_patterns")
        if front is None:
            # The class of the entries' front layer: compat's keeps an oversized value, as the seed does.
            made = type(self._front)(self.MAX_PATTERNS, max(1, self.max_memory_bytes // 4))
            front = self.__dict__.setdefault("_patterns", made)
        return front

    def get_by_pattern(self, ast_node: Any) -> Any | None:
        """Bytecode that put_by_pattern stored for a tree of the same shape (compiled for *that* tree), or None."""
        from .patterns import pattern_key

        key = pattern_key(ast_node)
        value = None if key is None else self._pattern_front().get(key)
        if value is not None:
            self._count("pattern_hits")
        return value

    def put_by_pattern(self, ast_node: Any, bytecode: Any) -> None:
        """Keep bytecode for every tree of this shape: literals and names masked (see patterns.py), memory only."""
        from .patterns import pattern_key

        key = pattern_key(ast_node)
        if key is None:
            self._warn("pattern", "not keeping bytecode by pattern for a tree that has none (a cycle, mixed dict keys)")
            return
        front = self._pattern_front()
        size = deep_sizeof(bytecode)
        if size > front.max_bytes:
            self._oversized(size, front.max_bytes, "a pattern entry")
        front.put(key, bytecode, size)

    def get_file_cache_info(self, file_path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """zexus 2.0's fields for the bytecode cached for a source file's current content, or None."""
        found = self._file_key(file_path)
        if found is None:
            return None
        key, resolved, content = found
        front = self._front.peek(key)
        if front is not None:
            value, cached_at = front.value, front.created_at
        elif self.store is not None:
            value = cached_at = None
            with self._guard("get"):
                info = self.store.info(key)
                cached_at = None if info is None else info["created_at"]
                # Counting the bytecodes means decoding them; the read counts as a use of the entry.
                value = None if info is None else self._load(key, self.fingerprint)
            if value is None:
                return None
        else:
            return None
        try:
            mtime: float | None = os.stat(resolved).st_mtime
        except OSError:
            mtime = None
        return {"file_path": resolved, "mtime": mtime, "content_hash": content, "bytecode_count": len(value),
                "cached_at": cached_at}
