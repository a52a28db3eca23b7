"""Make our cache zexus's own: ``install()`` puts a BytecodeCache where zexus's EvaluatorBytecodeCompiler looks."""

from __future__ import annotations

from typing import Any

from .pipeline import quiet

_PREVIOUS_SHARED: list[Any] = []


def install(cache: Any = None) -> Any:
    """Make ``cache`` zexus's shared bytecode cache (the one ``EvaluatorBytecodeCompiler`` uses).

    Without an argument, a BytecodeCache keyed for the evaluator's compiler on the configured
    location (environment, then ``.zexus/bcache.toml`` of the working directory's project, else
    ``<project root>/.zexus/bcache.db``), with the configured shared tier if any, as
    ``zexus-bcache run`` opens it. Compilers created before the call keep the cache they already
    hold. Returns the installed cache; ``uninstall()`` restores what was there before.
    """
    if cache is None:
        from .cache import BytecodeCache

        cache = BytecodeCache.from_config(compiler="evaluator")
    with quiet():
        from zexus.evaluator import bytecode_compiler
    _PREVIOUS_SHARED.append(bytecode_compiler._SHARED_CACHE)
    bytecode_compiler._SHARED_CACHE = cache
    return cache


def uninstall() -> None:
    """Restore the shared cache that the last ``install()`` replaced (flushing ours)."""
    if not _PREVIOUS_SHARED:
        return
    with quiet():
        from zexus.evaluator import bytecode_compiler
    ours = bytecode_compiler._SHARED_CACHE
    bytecode_compiler._SHARED_CACHE = _PREVIOUS_SHARED.pop()
    flush = getattr(ours, "flush", None)
    if flush is not None:
        flush()
