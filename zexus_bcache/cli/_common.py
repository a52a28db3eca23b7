"""What every command shares: clean errors, output options, settings, opening the cache, progress."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .. import config, maintenance
from ..errors import BcacheError
from ..log import show_warnings

if TYPE_CHECKING:
    from ..cache import BytecodeCache
    from ..store import Store

F = TypeVar("F", bound=Callable[..., Any])
display_path = maintenance.display_path
plural = maintenance.plural


setup_logging = show_warnings


def clean_errors(command: F) -> F:
    """Library errors (and file errors) as one ``Error: ...`` line, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # `zexus-bcache ls | head`: the reader left, nothing to say
            _silence_stdout()
            raise SystemExit(1) from None
        except (BcacheError, OSError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail again (Python's recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def formats(*, csv: bool = False, lines: bool = False) -> Callable[[F], F]:
    """The output options of every read command: --json (and --csv, --tsv, --nl); a table by default."""

    def decorate(command: F) -> F:
        command = click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(command)
        if lines:
            command = click.option("--nl", "fmt", flag_value="nl", help="Print one JSON object per line.")(command)
            command = click.option("--tsv", "fmt", flag_value="tsv", help="Print tab-separated values.")(command)
        if csv:
            command = click.option("--csv", "fmt", flag_value="csv", help="Print CSV (raw values).")(command)
        help_json = "Print JSON (raw values: sizes in bytes, times in Unix seconds)."
        return click.option("--json", "fmt", flag_value="json", help=help_json)(command)

    return decorate


def duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else config.parse_duration(value)
    except BcacheError as exc:  # one clean line, as every other error
        raise click.ClickException(f"{param.opts[0]}: {exc}") from None


def size(_ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else config.parse_size(value)
    except BcacheError as exc:
        raise click.ClickException(f"{param.opts[0]}: {exc}") from None


def command_line(ctx: click.Context) -> dict[str, Any]:
    """The settings given as global options (None = not given)."""
    return {
        "path": ctx.obj["cache"],
        "shared_url": ctx.obj.get("shared_url"),
        "shared_read_only": ctx.obj.get("shared_read_only"),
    }


def settings(
    ctx: click.Context,
    start: Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    database: bool = False,
    strict: bool = False,
) -> dict[str, config.Setting]:
    """The effective settings (config.resolve) for this invocation; a bad environment or file value is a warning."""
    given = {**command_line(ctx), **(overrides or {})}
    database_reader = maintenance.stored_settings if database else None
    try:
        return config.resolve(given, start=start, database=database_reader, strict=strict)
    except BcacheError as exc:
        raise click.ClickException(str(exc)) from None


def location(ctx: click.Context, start: Path | None = None) -> Any:
    return settings(ctx, start)["path"].value


def require_database(where: Any) -> None:
    problem = maintenance.database_problem(where)
    if problem:
        raise click.ClickException(problem)


@contextlib.contextmanager
def open_store(
    ctx: click.Context, *, write: bool = False, start: Path | None = None, create: bool = False, apply: bool = True
) -> Iterator[Store]:
    """The store of an existing cache: read-only unless ``write``; "no cache at PATH" if there is none."""
    from ..store import Store

    effective = settings(ctx, start)
    where = effective["path"].value
    problem = maintenance.database_problem(where)
    if problem and not (create and problem.startswith("no cache at")):
        raise click.ClickException(problem)
    try:
        with held_warnings():  # a write refused below says why itself: no warning before it
            store = Store(where, read_only=not write)
            if write and store.read_only:
                store.close()
                raise click.ClickException(
                    f"{store.name}: the cache is read-only here ({store.degraded}); nothing was changed"
                )
    except BcacheError as exc:
        raise click.ClickException(str(exc) + maintenance.open_hint(exc, where)) from None
    with store:
        if write and apply:
            config.apply_settings(store, effective)
        yield store


def open_cache(ctx: click.Context, start: Path | None = None, **kwargs: Any) -> BytecodeCache:
    """A BytecodeCache on the effective location (opened, created or migrated as the library does)."""
    from ..cache import BytecodeCache

    try:
        return BytecodeCache.from_config(command_line(ctx), start=start, **kwargs)
    except BcacheError as exc:  # (strict) a store that cannot be opened, a shared key that cannot be read
        raise click.ClickException(str(exc)) from None


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_warnings() -> Iterator[list[logging.LogRecord]]:
    """Hold the library's warnings back; they are shown after the block unless it raised (its error says it all)."""
    log = logging.getLogger("zexus_bcache")
    held = _Held()
    saved = log.handlers[:]
    log.handlers[:] = [held]
    try:
        yield held.records
    except BaseException:
        log.handlers[:] = saved
        raise
    log.handlers[:] = saved
    for record in held.records:
        log.handle(record)


@contextlib.contextmanager
def progress_bar(label: str, *, quiet: bool = False) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr when it is a terminal; elsewhere nothing. Yields progress(done, total)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda _done, _total: None
        return
    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    )
    task = bar.add_task(label, total=None)

    def advance(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


@contextlib.contextmanager
def busy(message: str) -> Iterator[None]:
    """A spinner on stderr while one long step runs (on a terminal only)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield
