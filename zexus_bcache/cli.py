"""The ``zexus-bcache`` command line: a thin layer over the library (which never imports click)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import BcacheError


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
    "(default: <project root>/.zexus/bcache.db; env ZEXUS_BCACHE_PATH).",
)
@click.pass_context
def main(ctx: click.Context, cache_location: str | None) -> None:
    """A persistent, inspectable bytecode cache for Zexus programs."""
    _setup_logging()
    ctx.obj = {"cache": cache_location}


def _open_cache(ctx: click.Context, start: Path | None = None, **kwargs: Any) -> Any:
    from .cache import BytecodeCache
    from .location import default_path

    location = ctx.obj.get("cache") or default_path(start)
    if isinstance(location, str) and "://" in location:
        return BytecodeCache(url=location, **kwargs)
    return BytecodeCache(path=location, **kwargs)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--timings", is_flag=True, help="Show key, lookup, parse, compile, store and run times on stderr.")
@click.option("--no-optimize", is_flag=True, help="Compile without the optimizer (cached separately).")
@click.pass_context
def run(ctx: click.Context, file: Path, args: tuple[str, ...], timings: bool, no_optimize: bool) -> None:
    """Run FILE on zexus's VM, as ``zx run`` does, with bytecode from the cache."""
    from rich.console import Console

    from . import integration

    console = Console()
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
    served = {"front": "hit (memory)", "store": "hit (store)", None: "miss (compiled and stored)"}[report.tier]
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
