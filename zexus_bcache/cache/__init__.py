"""BytecodeCache: the seed's API over an in-memory front layer, a persistent store and a shared tier.

:mod:`.core` holds the tiers (the only code that knows them all), :mod:`.stats` the counters and what
the cache reports, :mod:`.sources` the source-text, file and pattern keys.
"""

from .. import codec
from .core import BytecodeCache, resolve_location
from .sources import CompileReport
from .stats import CacheStats, LiveStats

__all__ = ["BytecodeCache", "CacheStats", "CompileReport", "LiveStats", "codec", "resolve_location"]
