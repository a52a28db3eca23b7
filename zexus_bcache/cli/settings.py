"""`config`: the effective settings and where each came from; `config set|unset` for the stored limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .. import config, render
from ..render import Column
from ._common import clean_errors, formats, open_store, settings

_COLUMNS = [Column("name"), Column("shown", "value"), Column("source"), Column("origin")]
_TEXT: dict[str, Callable[[Any], str]] = {"max_entries": render.limit, "max_bytes": render.byte_limit}


@click.group("config", invoke_without_command=True)
@formats()
@click.pass_context
@clean_errors
def config_command(ctx: click.Context, fmt: str) -> None:
    """Show the effective settings and where each came from.

    Like `ccache -p`. Precedence: command line > environment > project config file >
    database > default. `config set NAME VALUE` keeps a limit in the database (like
    `ccache -M`); `config unset NAME` puts its default back.

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
    A bad value there is a warning (the default is used) everywhere but here, where it is an error.
    """
    if ctx.invoked_subcommand is not None:
        return
    effective = settings(ctx, database=True, strict=True)
    rows = [
        {"name": s.name, "value": config.display(s.name, s.value), "source": s.source, "origin": s.origin}
        for s in effective.values()
    ]
    if fmt == "json":
        file = config.config_file()
        render.write_json(
            {
                "config_file": str(file),
                "config_file_exists": file.exists(),
                "settings": {
                    r["name"]: {"value": r["value"], "source": r["source"], "origin": r["origin"]} for r in rows
                },
            }
        )
        return
    for row in rows:
        row["shown"] = _TEXT.get(row["name"], render.plain)(row["value"])
    render.rows(rows, fmt, _COLUMNS)


@config_command.command("set")
@click.argument("name")
@click.argument("value")
@click.pass_context
@clean_errors
def set_command(ctx: click.Context, name: str, value: str) -> None:
    """Keep a limit in the database: max_entries, max_bytes (e.g. 2G) or policy."""
    _store(ctx, name, value)


@config_command.command("unset")
@click.argument("name")
@click.pass_context
@clean_errors
def unset_command(ctx: click.Context, name: str) -> None:
    """Put a stored limit back to its default."""
    _store(ctx, name, None)


def _store(ctx: click.Context, name: str, raw: str | None) -> None:
    effective = settings(ctx)
    with open_store(ctx, write=True, create=True, apply=False) as store:
        value = config.store_setting(store, name, raw)
        where = store.name
    shown = _TEXT.get(name, render.plain)(value)
    click.echo(f"{where}: {name} = {shown}" + (" (the default)" if raw is None else ""))
    beaten = config.overridden(effective, name)
    if beaten is not None:
        click.echo(
            f"warning: {beaten.origin or beaten.source} sets {name} = {beaten.value}, which wins over the database"
            " (and commands that write store it there again)",
            err=True,
        )
