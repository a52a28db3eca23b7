"""`server start|stop|status`: the warm per-user server that `run` goes through (zexus_bcache.server)."""

from __future__ import annotations

import click

from .. import render


@click.group()
def server() -> None:
    """The warm server: a process per user that has imported zexus once and forks a child per run.

    `run` starts it on first use and it exits after 10 idle minutes (ZEXUS_BCACHE_SERVER_IDLE
    seconds); ZEXUS_BCACHE_SERVER=0 or `run --no-server` runs in-process instead.
    """


@server.command()
def start() -> None:
    """Start this setup's server (if it is not running) and wait until it answers."""
    from .. import server as server_mod

    code, message = server_mod.start()
    click.echo(message, err=code != 0)
    raise SystemExit(code)


@server.command()
def stop() -> None:
    """Stop every server of yours (each lets its running programs finish)."""
    from .. import server as server_mod

    code, message = server_mod.stop()
    click.echo(message, err=code != 0)
    raise SystemExit(code)


@server.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def status(as_json: bool) -> None:
    """Your servers: running, starting or a stale socket (exit 1 if this setup's is not running)."""
    from .. import server as server_mod

    code, rows = server_mod.status()
    if as_json:
        render.write_json(rows)
    elif rows:
        for row in rows:
            click.echo("  ".join(f"{name}: {value}" for name, value in row.items()))
    else:
        click.echo("no server running")
    raise SystemExit(code)
