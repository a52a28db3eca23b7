"""zexus_bcache: a persistent, inspectable, concurrency-safe bytecode cache for Zexus."""

from typing import Any

from .errors import BcacheError, CodecError, ConfigError, KeyingError, SchemaTooNewError, StoreError

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
