"""The ``zexus-bcache`` command line: a thin layer over the library (which never imports click).

Each command opens the cache, calls the library, and hands plain data to :mod:`zexus_bcache.render`.
Read commands open the database read-only and never create one. Library errors become one clean
``Error: ...`` line (exit code 1). Heavy imports (SQLAlchemy, Alembic, zexus) happen inside the
commands, so ``--help`` and ``demo`` stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__, constants, render
from .constants import KINDS, POLICIES
from .errors import BcacheError, SchemaTooNewError
from .render import Column
from .store import SORTS  # store.py imports SQLAlchemy only when something needs it

if TYPE_CHECKING:
    from .cache import BytecodeCache
    from .config import Setting
    from .store import Store


_F = TypeVar("_F", bound=Callable[..., Any])


class _Handler(logging.Handler):
    """Library warnings as one clean line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _setup_logging() -> None:
    log = logging.getLogger("zexus_bcache")
    if not any(isinstance(h, _Handler) for h in log.handlers):
        log.addHandler(_Handler())
        log.propagate = False
    log.setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zexus-bcache")
@click.option(
    "--cache",
    "cache_location",
    metavar="PATH|URL",
    envvar="ZEXUS_BCACHE_PATH",
    help="The cache database: a SQLite file path or a database URL "
    "(default: <project root>/.zexus/bcache.db; env ZEXUS_BCACHE_PATH; see `config`).",
)
@click.option(
    "--shared",
    "shared_url",
    metavar="URL",
    help="A team's shared tier behind the local cache, used by run and warm: a PostgreSQL URL "
    "(env ZEXUS_BCACHE_SHARED_URL; its HMAC key from ZEXUS_BCACHE_SHARED_KEY; see docs/SHARED.md).",
)
@click.option(
    "--shared-read-only",
    is_flag=True,
    default=None,
    help="Only read the shared tier, never write to it (untrusted builds).",
)
@click.pass_context
def main(ctx: click.Context, cache_location: str | None, shared_url: str | None, shared_read_only: bool | None) -> None:
    """A persistent, inspectable bytecode cache for Zexus programs."""
    _setup_logging()
    from_command_line = ctx.get_parameter_source("cache_location") == click.core.ParameterSource.COMMANDLINE
    ctx.obj = {
        "cache": cache_location if from_command_line else None,
        "shared_url": shared_url,
        "shared_read_only": shared_read_only,
    }


# -- shared plumbing ---------------------------------------------------------------------------


def _clean_errors(command: _F) -> _F:
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


def _formats(*, csv: bool = False) -> Callable[[_F], _F]:
    """The output options of every read command: --json (and --csv); a table by default."""

    def decorate(command: _F) -> _F:
        command = click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(command)
        if csv:
            command = click.option("--csv", "fmt", flag_value="csv", help="Print CSV (raw values).")(command)
        help_json = "Print JSON (raw values: sizes in bytes, times in Unix seconds)."
        return click.option("--json", "fmt", flag_value="json", help=help_json)(command)

    return decorate


def _duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from .config import parse_duration

    try:
        return None if value is None else parse_duration(value)
    except BcacheError as exc:  # one clean line, as every other error
        raise click.ClickException(f"{param.opts[0]}: {exc}") from None


def _size(_ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from .config import parse_size

    try:
        return None if value is None else parse_size(value)
    except BcacheError as exc:  # one clean line, as every other error
        raise click.ClickException(f"{param.opts[0]}: {exc}") from None


def _settings(
    ctx: click.Context, start: Path | None = None, overrides: dict[str, Any] | None = None, *, database: bool = False
) -> dict[str, Setting]:
    """The effective settings (config.resolve) for this invocation."""
    from . import config

    command_line = {
        "path": ctx.obj["cache"],
        "shared_url": ctx.obj.get("shared_url"),
        "shared_read_only": ctx.obj.get("shared_read_only"),
        **(overrides or {}),
    }
    return config.resolve(command_line, start=start, database=_stored_settings if database else None)


def _stored_settings(location: str | Path) -> dict[str, Any] | None:
    """The settings kept in an existing database, or None (no database, or one we cannot read)."""
    from .store import Store, sqlite_path

    path = sqlite_path(location)
    if path is not None and not path.exists():
        return None
    try:
        with Store(location, read_only=True) as store:
            return store.get_settings()
    except BcacheError:
        return None


def _apply_settings(store: Store, settings: dict[str, Setting]) -> None:
    """Store the limits that the environment or the config file set, so every process enforces them."""
    from . import config

    if not any(settings[name].source in ("environment", "config file") for name in config.STORE_SETTINGS):
        return
    for name, value in config.pending_updates(settings, store.get_settings()).items():
        store.set_setting(name, value)


@contextlib.contextmanager
def _open_store(ctx: click.Context, *, write: bool = False, start: Path | None = None) -> Iterator[Store]:
    """The store of an existing cache: read-only unless ``write``; "no cache at PATH" if there is none."""
    from .store import Store

    settings = _settings(ctx, start)
    location = settings["path"].value
    _require_database(location)
    try:
        store = Store(location, read_only=not write)
    except BcacheError as exc:
        raise click.ClickException(str(exc) + _open_hint(exc, location)) from None
    with store:
        if write:
            _apply_settings(store, settings)
        yield store


def _require_database(location: str | Path) -> None:
    from .store import sqlite_path

    path = sqlite_path(location)
    if path is not None and not path.exists():
        raise click.ClickException(f"no cache at {path}")


def _open_hint(exc: BcacheError, location: str | Path) -> str:
    """What to run when a database cannot be opened: upgrade its schema, or repair it."""
    from . import store

    if isinstance(exc, SchemaTooNewError):
        return ""
    try:
        revision = store.current_revision(location)
    except BcacheError:
        return " (`zexus-bcache doctor --repair` moves a broken database aside)"
    return " (run `zexus-bcache db upgrade`)" if revision != store.head_revision() else ""


def _cache_location_kwargs(location: str | Path) -> dict[str, Any]:
    return {"url": location} if isinstance(location, str) else {"path": location}


def _open_cache(ctx: click.Context, start: Path | None = None, **kwargs: Any) -> BytecodeCache:
    """A BytecodeCache on the effective location (opened, created or migrated as the library does)."""
    from .cache import BytecodeCache

    from . import config

    try:
        settings = _settings(ctx, start)
        cache = BytecodeCache(**{**config.cache_arguments(settings), **kwargs})
    except BcacheError as exc:  # a bad setting, or (strict) a store that cannot be opened
        raise click.ClickException(str(exc)) from None
    if cache.store is not None:
        try:
            _apply_settings(cache.store, settings)
        except BcacheError as exc:  # the cache still works with the limits already stored
            logging.getLogger("zexus_bcache").warning("cannot store the configured limits: %s", exc)
    return cache


def _display_path(path: Any) -> str:
    """A source path relative to the working directory when it is inside it."""
    if path is None:
        return "-"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _resolve_key(store: Store, prefix: str) -> str:
    """The one key starting with ``prefix``; a clean error for none or several."""
    prefix = prefix.strip().lower()
    if not prefix:
        raise click.ClickException("give a key prefix (see `zexus-bcache ls`)")
    keys = store.keys(prefix=prefix)
    if not keys:
        raise click.ClickException(f"no entry has a key starting with {prefix!r} (see `zexus-bcache ls`)")
    if len(keys) > 1:
        shown = []
        for key in keys[:8]:
            info = store.info(key) or {}
            shown.append(f"{key[:16]} ({info.get('kind', '?')} {_display_path(info.get('source_path'))})")
        more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        raise click.ClickException(
            f"ambiguous key prefix {prefix!r}: {len(keys)} entries match: {', '.join(shown)}{more}; give more characters"
        )
    return str(keys[0])


# -- run and demo (step 3) -----------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--timings", is_flag=True, help="Show key, lookup, parse, compile, store and run times on stderr.")
@click.option("--no-optimize", is_flag=True, help="Compile without the optimizer (cached separately).")
@click.pass_context
def run(ctx: click.Context, file: Path, args: tuple[str, ...], timings: bool, no_optimize: bool) -> None:
    """Run FILE on zexus's VM, as ``zx run`` does, with bytecode from the cache."""
    from . import integration

    console = _LazyConsole()
    optimize = not no_optimize
    t_start = time.perf_counter()
    with _open_cache(ctx, start=file) as cache:
        try:
            report = cache.compile_file_report(file, optimize=optimize)
        except integration.ZexusParseError as exc:
            raise click.ClickException("parse errors: " + "; ".join(exc.errors)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"cannot read {file}: {exc}") from None
        except BcacheError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # the compiler could not compile it: zx runs it on the interpreter
            if not integration.is_unsupported_node(exc):
                raise click.ClickException(f"bytecode compilation error: {exc}") from None
            console.print(f"[bold yellow]⚠️  VM fallback:[/bold yellow] {exc}")
            report = None
        t_run = time.perf_counter()
        result = _execute(console, report, file, args)
        t_end = time.perf_counter()
        if timings:
            _print_timings(report, t_run - t_start, t_end - t_run, cache.location)
    _print_result(console, result, file)


class _LazyConsole:
    """A rich Console made on first use: most runs print nothing of ours, and rich costs ~35 ms to import."""

    _console: Any = None

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        self._console.print(*objects, **kwargs)


def _execute(console: Any, report: Any, file: Path, args: tuple[str, ...]) -> Any:
    from . import integration

    if report is not None:
        try:
            return integration.run_bytecode(report.bytecode, str(file), args)
        except Exception as exc:  # zx prints this and falls back to the interpreter
            console.print(f"[bold red]VM Execution error:[/bold red] {exc}")
            console.print("[bold yellow]🔄 Falling back to interpreter execution...[/bold yellow]")
    program = report.program if report is not None and report.program is not None else None
    if program is None:
        program = integration.parse(file.read_text(encoding="utf-8"), str(file))
    return integration.evaluate_program(program, str(file), args)


def _print_result(console: Any, result: Any, file: Path) -> None:
    from zexus.object import EvaluationError

    if isinstance(result, EvaluationError):
        raise click.ClickException(f"{file}:{result.line or '?'}: {result.message}")
    from . import integration

    markup = integration.result_markup(result)
    if markup is not None:
        console.print(markup)


def _print_timings(report: Any, prepare_s: float, run_s: float, location: Any) -> None:
    ms = lambda s: f"{s * 1e3:.2f} ms"  # noqa: E731
    if report is None:
        click.echo(f"timings: not cacheable (interpreter), run {ms(run_s)}", err=True)
        return
    served = {
        "front": "hit (memory)", "store": "hit (store)", "shared": "hit (shared tier)", None: "miss (compiled and stored)"
    }[report.tier]
    parts = [f"{name} {ms(value)}" for name, value in report.timings.items()]
    click.echo(f"timings: {served}; " + ", ".join(parts) + f"; total before run {ms(prepare_s)}; run {ms(run_s)}", err=True)
    click.echo(f"cache: {location}", err=True)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def demo(file: Path) -> None:
    """Compile FILE, encode and decode its bytecode, and run the decoded bytecode (no cache)."""
    from . import codec, integration

    try:
        t0 = time.perf_counter()
        bytecode = integration.compile_source(file.read_text(encoding="utf-8"), str(file))
        t1 = time.perf_counter()
        data = codec.encode(bytecode)
        decoded = codec.decode(data)
        t2 = time.perf_counter()
    except (BcacheError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"compiled {len(bytecode.instructions)} instructions in {(t1 - t0) * 1e3:.1f} ms; "
        f"encoded to {len(data)} bytes and decoded in {(t2 - t1) * 1e3:.1f} ms",
        err=True,
    )
    integration.run_bytecode(decoded, str(file))
    sys.stdout.flush()


# -- stats ---------------------------------------------------------------------------------------

_STATS_FIELDS = [
    Column("location"),
    Column("schema_revision", "schema revision"),
    Column("entries"),
    Column("total_bytes", "stored bytes", render.size),
    Column("file_bytes", "database file", render.size),
    Column("front_hits", "hits (memory tier)"),
    Column("store_hits", "hits (store tier)"),
    Column("shared_hits", "hits (shared tier)"),
    Column("hits", "hits (total)"),
    Column("misses"),
    Column("hit_rate", "hit rate", render.percent),
    Column("puts", "stores"),
    Column("evictions"),
    Column("corrupt", "corrupt entries"),
    Column("write_errors", "write errors"),
    Column("shared_misses", "shared tier misses"),
    Column("shared_puts", "shared tier puts"),
    Column("shared_dropped", "shared puts dropped"),
    Column("shared_errors", "shared tier errors"),
    Column("auth_failures", "shared auth failures"),
    Column("max_entries", "max entries", render.limit),
    Column("max_bytes", "max bytes", render.byte_limit),
    Column("policy"),
]


@main.command()
@click.option("-z", "--zero", is_flag=True, help="Reset the counters to zero (after showing them).")
@_formats()
@click.pass_context
@_clean_errors
def stats(ctx: click.Context, zero: bool, fmt: str) -> None:
    """Show hits, misses, sizes, limits and the schema revision.

    Hits and misses per tier (memory, store), hit rate, entries, bytes, evictions, corrupt
    entries, limits, location and schema revision. Counters are summed over every process
    that used the cache; -z zeroes them (the entries stay).
    """
    with _open_store(ctx, write=zero) as store:
        counters = store.counters()
        settings = store.get_settings()
        hits = sum(counters[name] for name in constants.HIT_COUNTERS)
        data = {
            "location": store.name,
            "schema_revision": store.revision(),
            "entries": store.count(),
            "total_bytes": store.total_bytes(),
            "file_bytes": store.file_size(),
            **{name: counters[name] for name in constants.COUNTERS},
            "hits": hits,
            "hit_rate": constants.hit_rate(hits, counters["misses"]),
            **settings,
        }
        if zero:
            store.reset_counters()
    render.record(data, fmt, _STATS_FIELDS)
    if zero:
        click.echo("counters zeroed", err=True)


# -- ls and show -----------------------------------------------------------------------------------

_ENTRY_COLUMNS = [
    Column("key", "key", render.short_key, wrap=False),
    Column("kind", wrap=False),
    Column("source_path", "source", _display_path),
    Column("payload_size", "size", render.size, "right", wrap=False),
    Column("n_instructions", "instrs", justify="right", wrap=False),
    Column("last_access", "last used", render.age, "right", wrap=False),
    Column("access_count", "uses", justify="right", wrap=False),
]


@main.command("ls")
@click.option("--sort", type=click.Choice(SORTS), default="last_access", show_default=True, help="Order by.")
@click.option("-r", "--reverse", is_flag=True, help="Ascending: oldest, smallest, least used first.")
@click.option("--path", "path_glob", metavar="GLOB", help="Only entries whose source path matches GLOB (a relative GLOB starts here).")
@click.option("--kind", type=click.Choice(KINDS), help="Only entries keyed by source, file or AST.")
@click.option("--older-than", metavar="AGE", callback=_duration, help="Only entries unused for AGE (30d, 12h, 45m, 90s).")
@click.option("-n", "--limit", type=click.IntRange(min=0), help="At most N entries.")
@_formats(csv=True)
@click.pass_context
@_clean_errors
def ls(
    ctx: click.Context,
    sort: str,
    reverse: bool,
    path_glob: str | None,
    kind: str | None,
    older_than: float | None,
    limit: int | None,
    fmt: str,
) -> None:
    """List entries, most recently used first.

    Key prefix, kind (what the key was computed from), source path, payload size, instruction
    count, last access and uses. --json and --csv give every column, with full keys.
    """
    if path_glob is not None and not os.path.isabs(path_glob) and not path_glob.startswith("*"):
        path_glob = os.path.join(os.getcwd(), path_glob)
    with _open_store(ctx) as store:
        entries = store.entries(
            sort=sort, descending=not reverse, kind=kind, path_glob=path_glob, older_than=older_than, limit=limit
        )
    render.rows(entries, fmt, _ENTRY_COLUMNS, empty="(no entries)")


_SHOW_FIELDS = [
    Column("key"),
    Column("kind"),
    Column("source_path", "source", _display_path),
    Column("source_hash", "source hash"),
    Column("fingerprint", "compiler fingerprint"),
    Column("codec_version", "codec version"),
    Column("checksum", "payload checksum"),
    Column("payload_size", "payload", render.size),
    Column("mem_size", "in memory (estimate)", render.size),
    Column("n_instructions", "instructions"),
    Column("n_constants", "constants"),
    Column("created_at", "created", render.when),
    Column("last_access", "last access", render.when),
    Column("access_count", "uses"),
]


@main.command()
@click.argument("key_prefix")
@_formats()
@click.pass_context
@_clean_errors
def show(ctx: click.Context, key_prefix: str, fmt: str) -> None:
    """Show an entry's metadata and disassembled bytecode.

    KEY_PREFIX is the start of the entry's key, as `ls` shows it. The disassembly covers the
    program and every function compiled inside it.
    """
    from . import codec

    with _open_store(ctx) as store:
        key = _resolve_key(store, key_prefix)
        info = store.info(key)
        entry = store.get(key)
    if info is None or entry is None:
        raise click.ClickException(f"entry {key[:12]} was removed meanwhile")
    try:
        value = codec.decode(entry.payload)
    except BcacheError as exc:
        raise click.ClickException(f"entry {key[:12]}: its bytecode cannot be decoded ({exc}); see `doctor`") from None
    code = [_code_object(name, bytecode) for name, bytecode in _code_objects(value)]
    if fmt == "json":
        render.write_json({**info, "code": code})
        return
    render.record(info, fmt, _SHOW_FIELDS)
    for obj in code:
        click.echo(f"\n== {obj['name']}: {len(obj['instructions'])} instructions, {len(obj['constants'])} constants")
        click.echo("\n".join(_disassembly(obj)))


def _code_objects(value: Any) -> list[tuple[str, Any]]:
    """Every Bytecode in a cached value, depth first: the program (or statements), then nested functions."""
    from zexus.vm.bytecode import Bytecode

    roots = [("<statement %d>" % i, b) for i, b in enumerate(value)] if isinstance(value, list) else [("<main>", value)]
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(name: str, bytecode: Any) -> None:
        if id(bytecode) in seen:
            return
        seen.add(id(bytecode))
        out.append((name, bytecode))
        for i, constant in enumerate(bytecode.constants):
            for inner_name, inner in _nested(constant, f"{name}.const[{i}]"):
                visit(inner_name, inner)

    def _nested(constant: Any, name: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
        if isinstance(constant, Bytecode):
            yield name, constant
        elif depth < 8 and isinstance(constant, dict):
            label = constant.get("name") if isinstance(constant.get("bytecode"), Bytecode) else None
            for k, v in constant.items():
                yield from _nested(v, f"{name.rsplit('.', 1)[0]}.{label}" if label else f"{name}[{k!r}]", depth + 1)
        elif depth < 8 and isinstance(constant, (list, tuple)):
            for j, item in enumerate(constant):
                yield from _nested(item, f"{name}[{j}]", depth + 1)

    for root_name, root in roots:
        visit(root_name, root)
    return out


def _code_object(name: str, bytecode: Any) -> dict[str, Any]:
    """One Bytecode as plain data: constants as reprs, instructions as offset, opcode, operand."""
    return {
        "name": name,
        "constants": [repr(c) for c in bytecode.constants],
        "instructions": [
            {"offset": i, "opcode": str(getattr(op, "name", op)), "operand": _plain_operand(operand)}
            for i, (op, operand) in enumerate(bytecode.instructions)
        ],
    }


def _plain_operand(operand: Any) -> Any:
    if operand is None or isinstance(operand, (bool, int, float, str)):
        return operand
    if isinstance(operand, (list, tuple)):
        return [_plain_operand(x) for x in operand]
    return repr(operand)


def _disassembly(obj: dict[str, Any]) -> list[str]:
    """The layout of zexus's Bytecode.disassemble() (which fails on string opcodes), from _code_object."""
    lines = []
    if obj["constants"]:
        lines.append("Constants:")
        for i, text in enumerate(obj["constants"]):
            lines.append(f"  {i:3d}: {text if len(text) <= 70 else text[:67] + '...'}")
    lines.append("Instructions:")
    for ins in obj["instructions"]:
        operand = ins["operand"]
        shown = "" if operand is None else tuple(operand) if isinstance(operand, list) else operand
        lines.append(f"  {ins['offset']:4d}  {ins['opcode']:20s} {shown}".rstrip())
    return lines


# -- evict, invalidate, clear, vacuum ----------------------------------------------------------------

_EVICTED_COLUMNS = [Column("reason", wrap=False), *(c for c in _ENTRY_COLUMNS if c.key != "n_instructions")]


@main.command()
@click.option("--older-than", metavar="AGE", callback=_duration, help="Also remove entries unused for AGE (30d, 12h, 45m, 90s).")
@click.option("--max-entries", type=click.IntRange(min=0), help="Keep at most N entries (0 = no limit).")
@click.option("--max-bytes", metavar="SIZE", callback=_size, help="Keep at most SIZE bytes (512K, 10MB, 1G; 0 = no limit).")
@click.option("--policy", type=click.Choice(POLICIES), help="Which entries go first: least recently or least often used.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@_formats()
@click.pass_context
@_clean_errors
def evict(
    ctx: click.Context,
    older_than: float | None,
    max_entries: int | None,
    max_bytes: int | None,
    policy: str | None,
    dry_run: bool,
    fmt: str,
) -> None:
    """Enforce the size limits now.

    Removes entries beyond the limits in policy order; with --older-than, first the entries
    unused for that long.

    Limits not given here come from the environment, the config file or the database (see `config`).
    """
    overrides = {"max_entries": max_entries, "max_bytes": max_bytes, "policy": policy}
    settings = _settings(ctx, overrides=overrides, database=True)
    limits = {name: settings[name].value for name in overrides}
    with _open_store(ctx, write=not dry_run) as store:
        victims = store.evict_report(**limits, older_than=older_than, dry_run=dry_run)
    total = sum(row["payload_size"] for row in victims)
    if fmt == "json":
        render.write_json(
            {"dry_run": dry_run, "evicted": len(victims), "bytes": total, **limits, "older_than": older_than, "entries": victims}
        )
        return
    render.rows(victims, fmt, _EVICTED_COLUMNS, empty="(nothing to evict)")
    if victims:
        verb = "would evict" if dry_run else "evicted"
        click.echo(f"{verb} {len(victims)} entries ({render.size(total)})", err=True)


@main.command()
@click.option("--key", "key_prefixes", multiple=True, metavar="PREFIX", help="The entry whose key starts with PREFIX (repeatable).")
@click.option("--file", "files", multiple=True, type=click.Path(path_type=Path), help="Entries compiled from PATH, or from files under a directory (repeatable).")
@click.option("--stale", is_flag=True, help="Entries whose source file changed or is gone.")
@click.option("--other-compilers", is_flag=True, help="Entries made by another zexus, codec or compiler than this one's.")
@_formats()
@click.pass_context
@_clean_errors
def invalidate(
    ctx: click.Context, key_prefixes: tuple[str, ...], files: tuple[Path, ...], stale: bool, other_compilers: bool, fmt: str
) -> None:
    """Remove chosen entries: by key, source file, staleness or compiler.

    Give at least one criterion; an entry matching any of them goes. --stale removes entries
    whose source file is gone or has other content now; --other-compilers those not made by
    this zexus and zexus_bcache (any optimize setting, VM or evaluator compiler).
    """
    if not (key_prefixes or files or stale or other_compilers):
        raise click.UsageError("give at least one of --key, --file, --stale, --other-compilers")
    removed: dict[str, int] = {}
    with _open_store(ctx, write=True) as store:
        if key_prefixes:
            removed["key"] = store.delete_many([_resolve_key(store, prefix) for prefix in key_prefixes])
        if files:
            removed["file"] = sum(_invalidate_path(store, path.resolve()) for path in files)
        if stale:
            removed["stale"] = store.delete_many(_stale_keys(store))
        if other_compilers:
            from . import keys

            current = {keys.compiler_fingerprint(optimize=o, compiler=c) for o in (True, False) for c in ("vm", "evaluator")}
            removed["other_compilers"] = store.invalidate(other_than_fingerprints=current)
    total = sum(removed.values())
    if fmt == "json":
        render.write_json({"removed": total, "by_criterion": removed})
        return
    detail = ", ".join(f"{name.replace('_', ' ')}: {n}" for name, n in removed.items())
    click.echo(f"removed {total} entries ({detail})")


def _invalidate_path(store: Store, path: Path) -> int:
    if path.is_dir():
        return int(store.delete_many(e["key"] for e in store.entries(path_glob=os.path.join(path, "*"))))
    return int(store.invalidate(source_path=path))


def _stale_keys(store: Store) -> list[str]:
    """Entries whose source file is gone, or no longer has the content they were made from.

    The hash is BytecodeCache's: blake2b-256 of the file's bytes (file entries) or of its text as
    read with universal newlines (compile_file); both are accepted.
    """
    current: dict[str, set[str] | None] = {}
    stale = []
    for entry in store.entries(path_glob="*"):
        path = entry["source_path"]
        if path not in current:
            current[path] = _content_hashes(Path(path))
        hashes = current[path]
        if hashes is None or (entry["source_hash"] is not None and entry["source_hash"] not in hashes):
            stale.append(entry["key"])
    return stale


def _content_hashes(path: Path) -> set[str] | None:
    """The hashes an entry made from this file's current content can carry; None if it is gone."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest = lambda b: hashlib.blake2b(b, digest_size=32).hexdigest()  # noqa: E731
    hashes = {digest(data)}
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError:
        return hashes
    return hashes | {digest(text.encode("utf-8", "surrogatepass"))}


@main.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@_clean_errors
def clear(ctx: click.Context, yes: bool) -> None:
    """Remove every entry (counters and settings stay)."""
    with _open_store(ctx, write=True) as store:
        if not yes:
            click.confirm(f"Remove all {store.count()} entries from {store.name}?", abort=True, err=True)
        removed = store.clear()
    click.echo(f"removed {removed} entries")


@main.command()
@click.pass_context
@_clean_errors
def vacuum(ctx: click.Context) -> None:
    """Give the space of removed entries back to the system (VACUUM)."""
    with _open_store(ctx, write=True) as store:
        before = store.file_size()
        store.vacuum()
        after = store.file_size()
        name = store.name
    if before is None or after is None:
        click.echo(f"vacuumed {name}")
    else:
        click.echo(f"vacuumed {name}: {render.size(before)} -> {render.size(after)}")


# -- doctor --------------------------------------------------------------------------------------

_CHECK_COLUMNS = [Column("check"), Column("ok", "result", lambda ok: "ok" if ok else "PROBLEM"), Column("detail")]


@dataclasses.dataclass
class _Diagnosis:
    """What doctor found: the checks as rows, and what a repair must do."""

    checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    broken: bool = False  # cannot be opened, or fails integrity_check: move it aside
    outdated: bool = False  # an older schema: upgrade it
    too_new: bool = False  # written by a newer zexus_bcache: leave it alone
    bad_blobs: dict[str, str] = dataclasses.field(default_factory=dict)  # checksum -> what is wrong
    orphan_entries: list[str] = dataclasses.field(default_factory=list)
    orphan_blobs: list[str] = dataclasses.field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})

    @property
    def problems(self) -> int:
        return sum(not c["ok"] for c in self.checks)


@main.command()
@click.option("--repair", is_flag=True, help="Fix what was found (see above).")
@_formats()
@click.pass_context
@_clean_errors
def doctor(ctx: click.Context, repair: bool, fmt: str) -> None:
    """Check the database and every payload in it.

    Runs SQLite's integrity_check, compares the schema revision with this package's, recomputes
    every payload's checksum and validates its format, and looks for orphan rows. Exits 1 when
    problems are found (and, with --repair, remain).

    --repair renames a database that cannot be opened or fails the integrity check to
    bcache.db.broken-<time> (with its -wal and -shm) and starts a fresh one; upgrades an older
    schema; deletes damaged payloads (with their entries) and orphan rows. Stop other users first.
    """
    location = _settings(ctx)["path"].value
    _require_database(location)
    diagnosis = _diagnose(location)
    repairs = _repair(location, diagnosis) if repair and diagnosis.problems and not diagnosis.too_new else []
    fixed = diagnosis.problems == 0 or bool(repairs)
    if fmt == "json":
        render.write_json(
            {"location": str(location), "ok": fixed, "problems": diagnosis.problems, "checks": diagnosis.checks, "repairs": repairs}
        )
    else:
        render.rows(diagnosis.checks, fmt, _CHECK_COLUMNS)
        for line in repairs:
            click.echo(f"repaired: {line}")
    if not fixed:
        hint = "" if repair or diagnosis.too_new else "; `zexus-bcache doctor --repair` fixes them"
        raise click.ClickException(f"{diagnosis.problems} problem(s) found in {location}{hint}")


def _diagnose(location: Any) -> _Diagnosis:
    from . import codec, store as store_mod

    found = _Diagnosis()
    try:
        revision = store_mod.current_revision(location)
    except BcacheError as exc:
        found.broken = True
        found.check("open", False, str(exc))
        return found
    head = store_mod.head_revision()
    known = {script.revision for script in store_mod.script_directory().walk_revisions()}
    if revision != head:
        found.too_new = revision is not None and revision not in known
        found.outdated = not found.too_new
        needs = "upgrade zexus_bcache" if found.too_new else "run `zexus-bcache db upgrade`"
        found.check("schema", False, f"revision {revision or 'base'}, this package's is {head}: {needs}")
        return found
    found.check("schema", True, f"revision {revision}")
    try:
        with store_mod.Store(location, read_only=True) as store:
            problems = store.integrity_check()
            found.broken = bool(problems)
            checked = "PRAGMA integrity_check: ok" if store.dialect == "sqlite" else "the server checks its own pages"
            found.check("integrity", not problems, "; ".join(problems[:5]) or checked)
            scanned = 0
            for digest, payload in store.iter_blobs():
                scanned += 1
                try:
                    if store_mod.checksum(payload) != digest:
                        raise BcacheError("checksum mismatch")
                    codec.check(payload)
                except BcacheError as exc:
                    found.bad_blobs[digest] = str(exc)
            shown = "; ".join(f"{d[:12]}: {why}" for d, why in list(found.bad_blobs.items())[:5])
            damaged = f", {len(found.bad_blobs)} damaged: {shown}" if found.bad_blobs else ""
            found.check("payloads", not found.bad_blobs, f"{scanned} checked{damaged}")
            found.orphan_entries, found.orphan_blobs = store.orphans()
            found.check(
                "orphans",
                not (found.orphan_entries or found.orphan_blobs),
                f"{len(found.orphan_entries)} entries without a blob, {len(found.orphan_blobs)} blobs without an entry",
            )
    except BcacheError as exc:  # it opened, then failed to read: damaged
        found.broken = True
        found.check("read", False, str(exc))
    return found


def _repair(location: Any, found: _Diagnosis) -> list[str]:
    from . import store as store_mod

    if found.broken:
        path = store_mod.sqlite_path(location)
        if path is None:
            raise click.ClickException(f"{location}: a server database cannot be moved aside; repair it with its own tools")
        moved = store_mod.move_aside(path)
        store_mod.Store(path).close()  # a fresh, migrated database
        return [f"moved the broken database to {moved} and started a fresh one"]
    if found.outdated:
        before, after = store_mod.upgrade(location)
        return [f"upgraded the schema from {before or 'base'} to {after}"]
    blobs = list(dict.fromkeys([*found.bad_blobs, *found.orphan_blobs]))
    with store_mod.Store(location) as store:
        removed = store.remove_blobs(blobs) + store.delete_many(found.orphan_entries)
    return [f"removed {removed} entries with damaged or missing payloads, and {len(blobs)} damaged or unused blobs"]


# -- sql -----------------------------------------------------------------------------------------


@main.command()
@click.argument("statement")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE", help="Bind :NAME to VALUE (as text; repeatable).")
@_formats(csv=True)
@click.pass_context
@_clean_errors
def sql(ctx: click.Context, statement: str, params: tuple[tuple[str, str], ...], fmt: str) -> None:
    """Run one read-only SQL query on the cache database.

    Tables: entries, blobs, counters, settings; views: entry_summary, cache_stats.
    The connection is read-only and anything that would write is refused. Parameters are bound,
    never pasted into the SQL: `sql "SELECT * FROM entries WHERE kind = :k" -p k source`.
    Values are text; SQLite converts them for numeric columns (else use CAST(:n AS INTEGER)).
    """
    with _open_store(ctx) as store:
        columns, rows = store.query(statement, dict(params))
    names = _unique(columns)
    render.rows([dict(zip(names, row)) for row in rows], fmt, fields=names, empty="(no rows)")


def _unique(names: list[str]) -> list[str]:
    """Column names made unique (SELECT a, a), so rows can be mappings."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


# -- db (Alembic) --------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Migrate the database schema (Alembic).

    The migrations ship inside zexus_bcache; a cache is migrated to the newest revision when a
    command that writes opens it, so these are for inspecting and for going back.
    """


@db.command()
@click.argument("revision", default="head")
@click.pass_context
@_clean_errors
def upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate up to REVISION (default: head); creates the database if needed."""
    from . import store

    location = _settings(ctx)["path"].value
    before, after = store.upgrade(location, revision)
    if before == after:
        click.echo(f"{location}: already at {after or 'base'}")
    else:
        click.echo(f"{location}: upgraded {before or 'base'} -> {after}")


@db.command()
@click.argument("revision")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@_clean_errors
def downgrade(ctx: click.Context, revision: str, yes: bool) -> None:
    """Migrate down to REVISION (`base`: drop every table).

    What the downgrade drops is lost; asks first unless --yes.
    """
    from . import store

    location = _settings(ctx)["path"].value
    _require_database(location)
    if not yes:
        click.confirm(f"Downgrade {location} to {revision}? What the downgrade drops is lost.", abort=True, err=True)
    before, after = store.downgrade(location, revision)
    click.echo(f"{location}: downgraded {before or 'base'} -> {after or 'base'}")


@db.command()
@_formats()
@click.pass_context
@_clean_errors
def current(ctx: click.Context, fmt: str) -> None:
    """Show the database's revision and whether it needs `db upgrade`."""
    from . import store

    location = _settings(ctx)["path"].value
    _require_database(location)
    try:
        revision, head = store.current_revision(location), store.head_revision()
    except BcacheError as exc:
        raise click.ClickException(str(exc) + _open_hint(exc, location)) from None
    known = {script.revision for script in store.script_directory().walk_revisions()}
    status = (
        "up to date" if revision == head
        else "empty: run `zexus-bcache db upgrade`" if revision is None
        else "older: run `zexus-bcache db upgrade`" if revision in known
        else "newer than this zexus_bcache: upgrade the package"
    )
    render.record({"location": str(location), "revision": revision, "head": head, "status": status}, fmt)


@db.command()
@_formats()
@click.pass_context
@_clean_errors
def history(ctx: click.Context, fmt: str) -> None:
    """List the revisions this package ships, newest first (and the database's)."""
    from . import store

    location = _settings(ctx)["path"].value
    path = store.sqlite_path(location)
    at = store.current_revision(location) if path is None or path.exists() else None
    rows = [
        {
            "revision": script.revision,
            "down_revision": script.down_revision,
            "description": (script.doc or "").strip(),
            "head": script.is_head,
            "current": script.revision == at,
        }
        for script in store.script_directory().walk_revisions()
    ]
    render.rows(rows, fmt)


# -- config --------------------------------------------------------------------------------------

_CONFIG_COLUMNS = [Column("name"), Column("shown", "value"), Column("source"), Column("origin")]
_CONFIG_TEXT: dict[str, Callable[[Any], str]] = {"max_entries": render.limit, "max_bytes": render.byte_limit}


@main.command("config")
@_formats()
@click.pass_context
@_clean_errors
def config_command(ctx: click.Context, fmt: str) -> None:
    """Show the effective settings and where each came from.

    Like `ccache -p`. Precedence: command line > environment > project config file >
    database > default.

    \b
    The project config file is <project root>/.zexus/bcache.toml (all keys optional):
      path = ".zexus/bcache.db"   # a file (relative to the project root) or a URL
      max_entries = 100000        # 0 = unlimited
      max_bytes = "256M"          # bytes or K, M, G, T (powers of 1024)
      policy = "lru"              # or "lfu"
      max_memory_mb = 100         # the in-memory tier of each process
      shared_url = "postgresql://ci@cache-db/zexus"   # a shared tier (docs/SHARED.md)
      shared_read_only = false    # only read it (untrusted builds)
      shared_key_file = "~/.config/zexus/shared.key"  # its HMAC key
    Environment: ZEXUS_BCACHE_PATH, ZEXUS_BCACHE_MAX_ENTRIES, ZEXUS_BCACHE_MAX_BYTES,
    ZEXUS_BCACHE_POLICY, ZEXUS_BCACHE_MAX_MEMORY_MB, ZEXUS_BCACHE_SHARED_URL,
    ZEXUS_BCACHE_SHARED_READ_ONLY, ZEXUS_BCACHE_SHARED_KEY, ZEXUS_BCACHE_SHARED_KEY_FILE.

    The limits live in the database, shared by every process: a command that writes
    (run, warm, evict, invalidate, ...) stores the ones set by the environment or the file.
    """
    from . import config

    settings = _settings(ctx, database=True)
    rows = [
        {"name": s.name, "value": "(set, not shown)" if s.name in config.SECRET_SETTINGS and s.value else s.value,
         "source": s.source, "origin": s.origin}
        for s in settings.values()
    ]
    if fmt == "json":
        file = config.config_file()
        render.write_json({"config_file": str(file), "config_file_exists": file.exists(), "settings": {
            r["name"]: {"value": r["value"], "source": r["source"], "origin": r["origin"]} for r in rows
        }})
        return
    for row in rows:
        row["shown"] = _CONFIG_TEXT.get(row["name"], render.plain)(row["value"])
    render.rows(rows, fmt, _CONFIG_COLUMNS)


# -- warm ----------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # in each warm worker process: its own BytecodeCache


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-j", "--jobs", type=click.IntRange(min=1), metavar="N", help="Worker processes (default: one per CPU).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-optimize", is_flag=True, help="Compile without the optimizer (cached separately).")
@click.option("--strict", is_flag=True, help="Exit 1 if any file failed.")
@_formats()
@click.pass_context
@_clean_errors
def warm(
    ctx: click.Context, paths: tuple[Path, ...], jobs: int | None, quiet: bool, no_optimize: bool, strict: bool, fmt: str
) -> None:
    """Precompile .zx files into the cache, in parallel.

    Every .zx file under PATHS (recursively, hidden directories skipped) is compiled by -j
    worker processes, each with its own connection to the cache.

    Reports how many were compiled, already cached, or failed (with the reason: parse errors,
    nodes the VM compiler does not support, unreadable files). Exits 0 when at least one file
    is in the cache afterwards (failures are reported, not fatal), 1 when none could be
    compiled; --strict exits 1 on any failure.
    """
    files = _zx_files(paths)
    if not files:
        raise click.ClickException("no .zx files under " + ", ".join(map(str, paths)))
    with _open_cache(ctx, start=paths[0], strict=True) as cache:  # create or migrate it once, before the workers
        location, memory = cache.location, cache.max_memory_bytes / 2**20
    from . import config

    arguments = config.cache_arguments(_settings(ctx, paths[0]))
    shared = {name: value for name, value in arguments.items() if name.startswith("shared")}
    t0 = time.perf_counter()
    results = _warm_all(files, location, memory, not no_optimize, jobs or os.cpu_count() or 1, quiet, shared)
    elapsed = time.perf_counter() - t0
    counts = {status: sum(r["status"] == status for r in results) for status in ("compiled", "cached", "failed")}
    if fmt == "json":
        render.write_json({"location": str(location), "files": len(files), **counts, "seconds": round(elapsed, 3), "results": results})
    else:
        failed = [r for r in results if r["status"] == "failed"]
        if failed:
            render.rows(failed, fmt, [Column("path", "failed", _display_path), Column("reason")])
        click.echo(
            f"warmed {len(files)} files in {elapsed:.2f} s: {counts['compiled']} compiled, "
            f"{counts['cached']} already cached, {counts['failed']} failed ({location})"
        )
    if counts["failed"] and (strict or counts["failed"] == len(files)):
        raise click.ClickException(f"{counts['failed']} of {len(files)} files could not be compiled")


def _zx_files(paths: tuple[Path, ...]) -> list[Path]:
    """The files given, and every .zx under the directories given (hidden directories skipped)."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*.zx")):
                if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts[:-1]):
                    found[file.resolve()] = None
        else:
            found[path.resolve()] = None
    return list(found)


def _warm_all(
    files: list[Path], location: Any, memory: float, optimize: bool, jobs: int, quiet: bool, shared: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("warming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=quiet or not console.is_terminal,
    )
    jobs = min(jobs, len(files))
    results: list[dict[str, Any]] = []
    if jobs == 1:
        _warm_init(location, memory, shared)
        try:
            with progress:
                task = progress.add_task("warm", total=len(files))
                for file in files:
                    results.append(_warm_one(str(file), optimize))
                    progress.advance(task)
        finally:
            _WORKER.pop("cache").close()
        return results
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, initializer=_warm_init, initargs=(location, memory, shared)) as pool:
        # Submitting starts the workers: do it before the progress bar starts its thread.
        futures = {pool.submit(_warm_one, str(file), optimize): file for file in files}
        with progress:
            task = progress.add_task("warm", total=len(files))
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # a worker died (BrokenProcessPool): report, do not crash
                    results.append({"path": str(futures[future]), "status": "failed", "reason": f"worker failed: {exc}"})
                progress.advance(task)
    order = {str(file): i for i, file in enumerate(files)}
    return sorted(results, key=lambda r: order[r["path"]])


def _warm_init(location: Any, max_memory_mb: float, shared: dict[str, Any] | None = None) -> None:
    """In a worker: open its own BytecodeCache on the cache database (and the shared tier, if any)."""
    from .cache import BytecodeCache

    _WORKER["cache"] = BytecodeCache(
        **_cache_location_kwargs(location), max_memory_mb=max_memory_mb, strict=True, **(shared or {})
    )


def _warm_one(path: str, optimize: bool) -> dict[str, Any]:
    """Compile one file through the worker's cache: compiled, already cached, or failed and why."""
    from . import integration

    cache = _WORKER["cache"]
    result: dict[str, Any] = {"path": path, "status": "failed", "reason": None}
    try:
        report = cache.compile_file_report(path, optimize=optimize)
    except integration.ZexusParseError as exc:
        result["reason"] = "parse errors: " + "; ".join(exc.errors)
    except (OSError, UnicodeDecodeError) as exc:
        result["reason"] = f"cannot read: {exc}"
    except SyntaxError as exc:  # zexus's lexer (an unterminated string, ...)
        result["reason"] = f"syntax error: {exc}"
    except BcacheError as exc:
        result["reason"] = str(exc)
    except Exception as exc:  # the compiler's own errors
        kind = "not supported by the VM compiler" if integration.is_unsupported_node(exc) else "compile error"
        result["reason"] = f"{kind}: {exc}"
    else:
        if report.tier is not None:
            result["status"] = "cached"
        elif cache.store is not None and cache.store.info(report.key) is not None:
            result["status"] = "compiled"
        else:
            result["reason"] = "compiled, but the bytecode could not be stored (see the warnings)"
    finally:
        cache.flush()  # worker processes end without running atexit: save counters (and shared puts) now
    return result
