"""`run` (a program through the cache, as `zx run` runs it: zexus_bcache.runner) and `demo` (the codec
round trip, no cache)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import BcacheError
from ._common import command_line


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--timings", is_flag=True, help="Show which tier served the bytecode and each step's time on stderr.")
@click.option("--no-optimize", is_flag=True, help="Compile without the optimizer (cached separately).")
@click.option("--no-cache", is_flag=True, help="Neither look up nor store: run exactly as zx run would.")
@click.option("--refresh", is_flag=True, help="Compile again and replace the cached entry.")
@click.option("--no-server", is_flag=True, help="Run in this process, not through the warm server.")
@click.argument("file")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context, file: str, args: tuple[str, ...], timings: bool, no_optimize: bool, no_cache: bool,
    refresh: bool, no_server: bool,
) -> None:
    """Run FILE as `zx run` does (same output, errors and exit status), with bytecode from the cache.

    FILE may be - for standard input. Options go before FILE; everything after FILE (options too)
    is passed to the program. From the zexus-bcache command, runs go through a warm per-user server
    (see `zexus-bcache server`) unless --no-server or ZEXUS_BCACHE_SERVER=0.
    """
    from .. import runner

    given = command_line(ctx)
    parsed = runner.RunArgs(
        cache=given["path"], shared=given["shared_url"], shared_read_only=given["shared_read_only"],
        timings=timings, no_optimize=no_optimize, no_cache=no_cache, refresh=refresh, no_server=no_server,
        file=file, args=tuple(args),
    )
    ctx.exit(runner.execute(parsed))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def demo(file: Path) -> None:
    """Compile FILE, encode and decode its bytecode, and run the decoded bytecode (no cache)."""
    from .. import codec, pipeline

    try:
        t0 = time.perf_counter()
        bytecode = pipeline.compile_source(file.read_text(encoding="utf-8"), str(file))
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
    pipeline.run_bytecode(decoded, str(file))
    sys.stdout.flush()
