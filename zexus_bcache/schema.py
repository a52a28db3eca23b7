"""The store's tables, now :mod:`zexus_bcache.store.schema` (this name stays importable)."""

from __future__ import annotations

from .store.schema import (  # noqa: F401
    COUNTERS,
    DEFAULT_SETTINGS,
    HEAD_REVISION,
    KINDS,
    NAMING_CONVENTION,
    POLICIES,
    TRIGGERS,
    VIEWS,
    counters,
    entries,
    metadata,
    settings,
    totals,
)
