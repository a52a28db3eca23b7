"""zexus_bcache: a persistent, inspectable, concurrency-safe bytecode cache for Zexus."""

from __future__ import annotations

from .errors import BcacheError, CodecError, ConfigError, KeyingError, SchemaTooNewError, StoreError

TYPE_CHECKING = False  # typing costs ~6 ms to import on the client's path; mypy reads this as usual
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.2.0"

__all__ = [
    "BcacheError",
    "BytecodeCache",
    "CacheStats",
    "CodecError",
    "ConfigError",
    "KeyingError",
    "SchemaTooNewError",
    "StoreError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing the cache imports zexus and the database stack.
    if name in ("BytecodeCache", "CacheStats"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module 'zexus_bcache' has no attribute {name!r}")
