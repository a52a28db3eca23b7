"""The cache's statistics and what it reports about itself: counters per tier, summed over processes.

``CacheStats`` is the seed's dataclass; ``cache.stats`` is a :class:`LiveStats` view that is current on
every read and settable (as the seed's object is). :class:`StatsMixin` gives BytecodeCache its seed
methods that count and report (get_stats, reset_stats, size, memory_usage, entry info).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .. import constants, keys
from ..errors import StoreError

if TYPE_CHECKING:
    from ..front import FrontCache

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


# Front hits are counted by the front layer (under the lock it takes anyway) and, for a persistent
# cache, by the store's touch(); the rest here.
# Counters the store keeps (summed over processes); front evictions are per process.
_STORE_COUNTERS = frozenset(constants.COUNTERS)
_LOCAL_COUNTERS = (*(name for name in constants.COUNTERS if name != "front_hits"), "front_evictions")



class StatsMixin:
    """BytecodeCache's counting and reporting; the tiers themselves are in :mod:`.core`."""

    _front: FrontCache
    _lock: threading.Lock
    _counts: dict[str, int]
    _front_hits_reset: int
    store: Any
    read_only: bool

    if TYPE_CHECKING:

        def _warn(self, what: str, message: str) -> None: ...
        def _guard(self, what: str) -> AbstractContextManager[None]: ...
        def _pattern_front(self) -> FrontCache: ...
        def key_for(self, ast_node: Any) -> str: ...

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
        if self.store is not None and keys.storable(key):
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
        return [str(k) for k in self._front.keys()]  # noqa: SIM118 - FrontCache is not iterable
