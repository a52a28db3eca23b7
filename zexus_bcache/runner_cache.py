"""The cache's part in ``zexus-bcache run``: open it as the CLI does, look a program up, store it, report timings.

A run's entry is keyed by the source text as zx parses it (after zx's auto-fix), the compiler fingerprint
and the parse options that zx derives from it (syntax style, advanced parsing): the options are folded
into the fingerprint given to :func:`keys.source_key` (the stored row keeps the plain compiler
fingerprint, so ``gc`` keeps it). An entry also promises that zx's type check printed nothing for that
program, since a hit skips the parse the type check needs: runs use their own keys, never those of
``compile_source``/``warm``, whose entries make no such promise. Any cache failure is one warning and an
uncached run.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .errors import BcacheError
from .log import show_warnings

log = logging.getLogger("zexus_bcache")
RUN_KEY_VERSION = 1
_SERVED = {"front": "hit (memory)", "store": "hit (store)", "shared": "hit (shared tier)"}


setup_logging = show_warnings


def run_fingerprint(fingerprint: str, syntax_style: str, advanced: bool) -> str:
    """What a run's key hashes as the fingerprint: the compiler's plus zx's parse options and the run's promise."""
    return f"{fingerprint};zx-run={RUN_KEY_VERSION};syntax_style={syntax_style};advanced_parsing={int(advanced)}"


def preload() -> None:
    """Import the cache's modules (SQLAlchemy, the codec, the store) ahead of a run."""
    import sqlalchemy  # noqa: F401  (the store imports it on first use: a miss that writes, or migrations)

    from . import cache, codec, config, keys, store  # noqa: F401


class CacheSession:
    """The cache for one run: opened on first use, closed (flushed) before the program starts."""

    def __init__(self, cache_location: str | None, shared: str | None, shared_read_only: bool | None,
                 start: str | None, enabled: bool = True, cache: Any = None):
        self.enabled = enabled
        self._owned = cache is None  # a cache handed in (warm's worker) is the caller's to close
        self._command_line = {"path": cache_location, "shared_url": shared, "shared_read_only": shared_read_only}
        self._start = start
        self.cache: Any = None
        self.location: Any = None
        self.tier: str | None = None
        self.timings: dict[str, float] = {}
        self._opened = False
        self._key: str | None = None
        self._closed = False
        self._fingerprint = ""
        self._miss = "miss"
        self.stored = False
        if cache is not None:
            self.cache, self.location, self._opened = cache, cache.location, True

    def _open(self) -> Any:
        if self._opened:
            return self.cache
        self._opened = True
        t0 = time.perf_counter()
        try:
            from .cache import BytecodeCache

            self.cache = BytecodeCache.from_config(self._command_line, start=self._start)
            self.location = self.cache.location
            self._miss = f"miss ({self._stored()})"  # said after the run, when the cache is closed
        except BcacheError as exc:
            log.warning("bytecode cache disabled, running uncached: %s", exc)
            self.cache = None
        except Exception as exc:  # a run never fails because of its cache
            log.warning("bytecode cache disabled, running uncached: %s: %s", type(exc).__name__, exc)
            self.cache = None
        self.timings["open"] = time.perf_counter() - t0
        return self.cache

    def key(self, source: str, syntax_style: str, advanced: bool, optimize: bool) -> None:
        """Compute the run's key (opening the cache); lookup() and store() use it."""
        if not self.enabled or self._open() is None:
            return
        t0 = time.perf_counter()
        from . import keys

        self._fingerprint = keys.compiler_fingerprint(optimize=optimize, compiler="vm")
        self._key = keys.source_key(source, run_fingerprint(self._fingerprint, syntax_style, advanced))
        self.timings["key"] = time.perf_counter() - t0

    @property
    def key_value(self) -> str | None:
        """The run's key, once key() computed it."""
        return self._key

    def lookup(self) -> Any | None:
        """Bytecode cached under the key, or None."""
        if self.cache is None or self._key is None:
            return None
        t0 = time.perf_counter()
        try:
            value, self.tier = self.cache._lookup(self._key, self._fingerprint)
        except Exception as exc:  # the façade turns store failures into misses; anything else too
            log.warning("cache lookup failed, compiling as if uncached: %s", exc)
            value, self.tier = None, None
        self.timings["lookup"] = time.perf_counter() - t0
        return value

    def store(self, bytecode: Any, source: str, file: str) -> None:
        """Keep the bytecode of a run that compiled cleanly (after lookup() missed or --refresh)."""
        cache = self.cache
        if cache is None or self._key is None:
            return
        t0 = time.perf_counter()
        from . import keys

        source_hash = keys.content_hash(source.encode("utf-8", "surrogatepass"))
        path = str(Path(file).resolve()) if os.path.isfile(file) and not file.startswith("/dev/") else None
        try:
            cache.store_value(self._key, bytecode, kind="source", source_path=path, source_hash=source_hash,
                              fingerprint=self._fingerprint)
            self.stored = True
        except Exception as exc:  # never fails the run
            log.warning("cannot store the compiled program: %s", exc)
        self.timings["store"] = time.perf_counter() - t0

    def close(self) -> None:
        """Flush and close the cache (before the program runs: it may never return); idempotent."""
        if self.cache is not None and not self._closed and self._owned:
            self._closed = True
            try:
                self.cache.close()
            except Exception as exc:
                log.warning("cannot flush the cache: %s", exc)

    def _stored(self) -> str:
        cache = self.cache
        if cache.store is None and cache.shared is None:
            return "compiled, not stored: no cache"
        if cache.read_only and (cache.shared is None or cache.shared.read_only):
            return "compiled, not stored: the cache is read-only"
        return "compiled and stored"

    def report(self, prepare_s: float, run_s: float, cacheable: bool) -> str:
        """The ``--timings`` lines."""
        ms = lambda s: f"{s * 1e3:.2f} ms"  # noqa: E731
        if not self.enabled:
            head = "timings: cache off (--no-cache)"
        elif not cacheable:
            head = "timings: not cacheable (interpreter, or zx printed diagnostics)"
        elif self.cache is None:
            head = "timings: cache unavailable"
        else:
            head = "timings: " + _SERVED.get(self.tier or "", self._miss)
        parts = [f"{name} {ms(value)}" for name, value in self.timings.items()]
        text = head + "; " + ", ".join([*parts, f"total before run {ms(prepare_s)}", f"run {ms(run_s)}"]) + "\n"
        if self.cache is not None:
            text += f"cache: {self.location}\n"
        return text
