"""The ``zexus-bcache`` command line: thin commands over the library (which never imports click).

Each command opens the cache, calls the library, and hands plain data to :mod:`zexus_bcache.render`.
Read commands open the database read-only and never create one. Library errors become one clean
``Error: ...`` line (exit code 1). Heavy imports (SQLAlchemy, Alembic, zexus) happen inside the
commands, so ``--help`` and ``demo`` stay fast.
"""

from __future__ import annotations

import click

from .. import __version__
from ..constants import KINDS, POLICIES
from . import db, inspect, maintain, run, server, settings, warm
from ._common import setup_logging
from .inspect import SORTS

__all__ = ["KINDS", "POLICIES", "SORTS", "main"]


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
    setup_logging()
    from_command_line = ctx.get_parameter_source("cache_location") == click.core.ParameterSource.COMMANDLINE
    ctx.obj = {
        # From the environment, the path is resolved with the others (config.resolve), not here.
        "cache": cache_location if from_command_line else None,
        "shared_url": shared_url,
        "shared_read_only": shared_read_only,
    }


for _command in (
    run.run,
    run.demo,
    warm.warm,
    inspect.stats,
    inspect.ls,
    inspect.show,
    inspect.sql,
    inspect.tables,
    inspect.schema,
    maintain.evict,
    maintain.invalidate,
    maintain.clear,
    maintain.vacuum,
    maintain.doctor,
    db.db,
    settings.config_command,
    server.server,
):
    main.add_command(_command)
