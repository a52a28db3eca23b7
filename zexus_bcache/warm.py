"""Parallel precompilation: compile many .zx files into a cache with worker processes.

Workers are started with the 'forkserver' method where there is one ('spawn' elsewhere): never
forked from a parent whose threads (a shared tier's, a progress bar's) may hold locks or be half-way
through an import (psycopg imported while forking made every worker fail). Workers ignore SIGINT:
the parent decides, cancels what has not started and stops the workers, so Ctrl-C stops promptly.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BcacheError, ConfigError, StoreError
from .log import show_warnings

STATUSES = ("compiled", "cached", "failed")
Progress = Callable[[int, int, dict[str, Any]], None]
"""progress(done, total, result of the file just done)."""

_WORKER: dict[str, Any] = {}  # in each worker process: its own BytecodeCache


@dataclass
class WarmReport:
    """What a warm did: one result per file (path, status, reason), and whether it was interrupted."""

    location: str
    files: int
    jobs: int
    results: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.results)


# -- which files ----------------------------------------------------------------------------------


def find_files(paths: Iterable[Path], *, exclude: str | None = None, listed: Iterable[str] = ()) -> list[Path]:
    """The files given (and listed), and every .zx under the directories given (hidden directories
    skipped), minus those whose path matches the ``exclude`` regular expression."""
    try:
        pattern = re.compile(exclude) if exclude else None
    except re.error as exc:
        raise ConfigError(f"-x: not a regular expression: {exclude!r} ({exc})") from None
    found: dict[Path, None] = {}
    for path in [*paths, *(Path(line.strip()) for line in listed if line.strip())]:
        if path.is_dir():
            for file in sorted(path.rglob("*.zx")):
                if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts[:-1]):
                    found[file.resolve()] = None
        elif path.exists():
            found[path.resolve()] = None
        else:
            raise ConfigError(f"no such file: {path}")
    return [f for f in found if pattern is None or not pattern.search(str(f))]


def effective_jobs(jobs: int | None, n_files: int) -> int:
    """Worker processes: the number asked (None or 0: one per CPU), at most one per CPU and one per file."""
    cpus = os.cpu_count() or 1
    asked = jobs if jobs else cpus
    return max(1, min(asked, cpus, n_files))


# -- running --------------------------------------------------------------------------------------


def check_writable(cache: Any) -> None:
    """A read-only cache cannot be warmed: one clear error, before any worker starts."""
    if cache.store is None:
        raise StoreError(f"cannot warm {cache.location}: {cache.store_error or 'the cache cannot be opened'}")
    if cache.read_only:
        why = getattr(cache.store, "degraded", None) or "it was opened read-only"
        raise StoreError(f"cannot warm {cache.location}: the cache is read-only ({why}); nothing was compiled")


def warm(
    files: Sequence[Path],
    cache_arguments: Mapping[str, Any],
    *,
    optimize: bool = True,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> WarmReport:
    """Compile every file through a BytecodeCache opened with ``cache_arguments`` in each worker.

    Ctrl-C (KeyboardInterrupt) stops it: files not started are skipped, workers are stopped, and
    the report says ``interrupted`` with the results so far.
    """
    jobs = effective_jobs(jobs, len(files))
    location = str(cache_arguments.get("url") or cache_arguments.get("path"))
    report = WarmReport(location, len(files), jobs)
    done = progress or (lambda _d, _t, _r: None)

    def record(result: dict[str, Any]) -> None:
        report.results.append(result)
        done(len(report.results), len(files), result)

    try:
        if jobs == 1:
            _run_here(files, dict(cache_arguments), optimize, force, record)
        else:
            _run_in_workers(files, dict(cache_arguments), optimize, force, jobs, record)
    except KeyboardInterrupt:
        report.interrupted = True
    order = {str(file): i for i, file in enumerate(files)}
    report.results.sort(key=lambda r: order.get(r["path"], len(order)))
    return report


def _run_here(
    files: Sequence[Path],
    arguments: dict[str, Any],
    optimize: bool,
    force: bool,
    record: Callable[[dict[str, Any]], None],
) -> None:
    _init(arguments, ignore_sigint=False)
    try:
        for file in files:
            record(_compile_one(str(file), optimize, force))
    finally:
        _WORKER.pop("cache").close()


def _run_in_workers(
    files: Sequence[Path],
    arguments: dict[str, Any],
    optimize: bool,
    force: bool,
    jobs: int,
    record: Callable[[dict[str, Any]], None],
) -> None:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context(method), initializer=_init, initargs=(arguments,)
    )
    stopped = False
    try:
        futures: dict[Future[dict[str, Any]], Path] = {
            pool.submit(_compile_one, str(file), optimize, force): file for file in files
        }
        for future in as_completed(futures):
            try:
                record(future.result())
            except Exception as exc:  # a worker died (BrokenProcessPool): report, do not crash
                record({"path": str(futures[future]), "status": "failed", "reason": f"worker failed: {exc}"})
    except BaseException:
        stopped = True
        _stop(pool)
        raise
    finally:
        if not stopped:
            pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (what they were compiling is dropped)."""
    # The executor has no public way to end running tasks: its worker processes are a private
    # attribute, taken before shutdown() drops it. SQLite stays consistent when a writer dies.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
    # Its manager thread closes the pool's wake-up pipe once it sees the workers gone. Let it end
    # here: at exit, Python 3.11's concurrent.futures writes to that pipe, and a close racing the
    # write prints "Exception ignored ... Bad file descriptor" after our summary.
    if manager is not None:
        manager.join(timeout=5)


# -- in a worker (or in this process with -j 1) ----------------------------------------------------


def _init(arguments: dict[str, Any], ignore_sigint: bool = True) -> None:
    """Open this process's own BytecodeCache on the cache database (and the shared tier, if any)."""
    from .cache import BytecodeCache

    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        show_warnings()  # the parent's handler is not inherited by a forkserver worker
    _WORKER["cache"] = BytecodeCache(**arguments, strict=True)


def _write_errors(cache: Any) -> int:
    # A failed put is a warning and a write error, never an exception (a cache never breaks its
    # caller): this process's own count of failed writes tells a failed put from a later eviction.
    counts = getattr(cache, "_counts", None)
    return int(counts.get("write_errors", 0)) if isinstance(counts, dict) else 0


def _compile_one(path: str, optimize: bool, force: bool = False) -> dict[str, Any]:
    """Compile one file through this process's cache, as `run` would key it: compiled, already cached, or failed."""
    from . import runner_zx

    cache = _WORKER["cache"]
    result: dict[str, Any] = {"path": path, "status": "failed", "reason": None}
    errors_before = _write_errors(cache)
    try:
        status, reason, key = runner_zx.prepare(path, cache, optimize=optimize, refresh=force)
    except (OSError, UnicodeDecodeError) as exc:
        result["reason"] = f"cannot read: {exc}"
    except BcacheError as exc:
        result["reason"] = str(exc)
    else:
        result.update(status=status, reason=reason)
        if status == "compiled":
            if cache.store is None or cache.read_only or _write_errors(cache) > errors_before:
                result.update(status="failed", reason="compiled, but the bytecode could not be stored (see warnings)")
            elif key is not None and cache.store.info(key) is None:  # stored, then evicted by the store's limits
                result["reason"] = "stored, then evicted by the cache's limits (see `zexus-bcache config`)"
    finally:
        cache.flush()  # worker processes end without running atexit: save counters (and shared puts) now
    return result


def dry_run(files: Sequence[Path], cache: Any, *, optimize: bool = True, force: bool = False) -> WarmReport:
    """What warm would do, without compiling: each file "would compile" or "cached" (or failed: unreadable)."""
    from . import runner_zx

    report = WarmReport(str(cache.location), len(files), effective_jobs(None, len(files)), dry_run=True)
    for file in files:
        result: dict[str, Any] = {"path": str(file), "status": "would compile", "reason": None}
        try:
            status, reason, _ = runner_zx.prepare(str(file), cache, optimize=optimize, dry=True)
        except (OSError, UnicodeDecodeError) as exc:
            result.update(status="failed", reason=f"cannot read: {exc}")
        else:
            if not force:
                result.update(status=status, reason=reason)
        report.results.append(result)
    return report
