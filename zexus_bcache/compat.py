"""A drop-in for zexus 2.0's ``zexus.vm.cache``: its names, with the seed's semantics where ours differ.

``from zexus_bcache.compat import BytecodeCache, CacheStats, CacheEntry, FileMetadata, CACHE_VERSION``
gives code written for ``zexus.vm.cache`` everything it imports. :class:`BytecodeCache` here is
ours (same tiers, keys, codec and measured memory accounting) with the three behaviours that
zexus 2.0 defines differently from :class:`zexus_bcache.cache.BytecodeCache`:

* an entry larger than the whole memory limit is kept alone in memory, every other entry evicted
  (ours refuses it); both count it in ``stats.oversized`` and warn once;
* ``clear()`` also resets the statistics (ours keeps them);
* ``get_entry_info()["access_count"]`` counts the put as the first access (ours counts uses).

Where zexus 2.0 has a bug, this module does not copy it; docs/COMPAT.md lists each difference.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from . import cache
from .cache import CacheStats, LiveStats
from .front import FrontCache, FrontEntry

# Bytecode (zexus's class, loaded on first use by __getattr__ below) is importable too.
__all__ = ["CACHE_VERSION", "BytecodeCache", "CacheEntry", "CacheStats", "FileMetadata", "LiveStats"]

CACHE_VERSION = 2
"""The version of zexus's cache format that this API mirrors (zexus 2.0's value). Our own formats
are versioned apart: ``codec.FORMAT_VERSION`` in every key, the schema revision in the database."""


@dataclass
class FileMetadata:
    """Metadata of a source file, as zexus 2.0 records it for its file cache."""

    file_path: str
    mtime: float
    size: int
    content_hash: str


@dataclass
class CacheEntry:
    """An entry of zexus 2.0's memory cache (ours keeps a ``front.FrontEntry``; this is for code that builds them)."""

    bytecode: Any
    timestamp: float
    access_count: int = 0
    size_bytes: int = 0

    def update_access(self) -> None:
        self.timestamp = time.time()
        self.access_count += 1


class _SeedFront(FrontCache):
    """The front layer with the seed's rule for a value larger than the byte bound: keep it alone."""

    def put(self, key: Hashable, value: Any, size: int | None = None) -> list[Hashable] | None:
        if size is None:
            size = self.getsizeof(value)
        if size <= self.max_bytes or self.max_entries == 0:
            return super().put(key, value, size)
        now = time.time()
        with self._lock:
            self._remove(key)
            evicted = list(self._data)  # zexus evicts least recent first until the new entry "fits": all
            self._data.clear()
            self._data[key] = FrontEntry(value, size, now, now)
            self.currsize = size
        return evicted


class BytecodeCache(cache.BytecodeCache):
    """zexus 2.0's BytecodeCache: ours, with the seed's oversized entries, clear() and access_count."""

    OVERSIZED_FATE = "it is kept alone in memory and every other entry is evicted (zexus 2.0's behaviour)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Nothing is cached yet, so swapping the (empty) front layer loses nothing.
        self._front = _SeedFront(self._front.max_entries, self._front.max_bytes)

    def clear(self) -> None:
        """Remove every entry from every tier and reset the statistics (zexus 2.0's clear)."""
        super().clear()
        self.reset_stats()

    def entry_info(self, key: str) -> dict[str, Any] | None:
        """Ours, with ``access_count`` counting the put as the first access (1 after a put, 2 after a get)."""
        info = super().entry_info(key)
        if info is not None:
            info["access_count"] = info.get("access_count", 0) + 1
        return info


def __getattr__(name: str) -> Any:
    # zexus.vm.cache also exposes the Bytecode class it stores; loading it imports zexus (slow, noisy).
    if name == "Bytecode":
        from . import pipeline

        with pipeline.quiet():
            from zexus.vm.bytecode import Bytecode
        return Bytecode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
