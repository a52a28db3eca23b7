"""zexus_bcache: a persistent, inspectable, concurrency-safe bytecode cache for Zexus."""

from .errors import BcacheError, CodecError, ConfigError, SchemaTooNewError, StoreError

__version__ = "0.1.0"

__all__ = [
    "BcacheError",
    "CodecError",
    "ConfigError",
    "SchemaTooNewError",
    "StoreError",
    "__version__",
]
