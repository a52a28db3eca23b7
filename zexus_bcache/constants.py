"""The schema's names and values that code needs without the tables (no SQLAlchemy import).

:mod:`zexus_bcache.schema` re-exports them; the warm path (opening an up-to-date cache, hits,
flushes) reads them from here so that it never imports SQLAlchemy.
"""

from __future__ import annotations

HEAD_REVISION = "0004_inline_payload"
"""The newest revision in migrations/: opening an up-to-date cache compares with it instead of
loading Alembic. A test keeps it equal to Alembic's head; a new revision must update it."""

FORMAT_VERSION = 3
"""The codec's payload format (zexus_bcache.codec). Part of every compiler fingerprint, so rows
written by another format are misses; a change to the format must bump it."""

KINDS = ("ast", "source", "file")
"""What an entry's key was computed from."""

COUNTERS = (
    "front_hits", "store_hits", "misses", "puts", "evictions", "corrupt", "write_errors",
    # the shared tier, as seen by the clients of this (local) database
    "shared_hits", "shared_misses", "shared_errors", "auth_failures", "shared_puts", "shared_dropped",
    # zexus 2.0's breakdown (file lookups, pattern hits) and entries too large for the memory tier
    "file_hits", "file_misses", "pattern_hits", "oversized",
)
"""Cumulative statistics, summed over every process that used the database. A counter is a row
of the ``counters`` table, added to with an upsert: a new one needs no migration."""

HIT_COUNTERS = ("front_hits", "store_hits", "shared_hits")
"""The counters whose sum is the number of hits (as the ``cache_stats`` view sums them)."""


def hit_rate(hits: int, misses: int) -> float:
    """Hits in percent of lookups, 2 decimals; 0.0 before any lookup (as the ``cache_stats`` view rounds it)."""
    lookups = hits + misses
    return round(100.0 * hits / lookups, 2) if lookups else 0.0


POLICIES = ("lru", "lfu")
"""Eviction policies the store knows how to order by."""

DEFAULT_SETTINGS = {"max_entries": "100000", "max_bytes": str(256 * 1024 * 1024), "policy": "lru"}
"""Settings seeded by the initial migration; a limit of 0 means unlimited."""
