"""`db upgrade|downgrade|current|history`: the schema's Alembic migrations."""

from __future__ import annotations

import click

from .. import maintenance, render
from ..errors import BcacheError
from ._common import clean_errors, formats, location, require_database


@click.group()
def db() -> None:
    """Migrate the database schema (Alembic).

    The migrations ship inside zexus_bcache; a cache is migrated to the newest revision when a
    command that writes opens it, so these are for inspecting and for going back.
    """


@db.command()
@click.argument("revision", default="head")
@click.pass_context
@clean_errors
def upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate up to REVISION (default: head); creates the database if needed."""
    where = location(ctx)
    problem = maintenance.database_problem(where)
    if problem and not problem.startswith("no cache at"):
        raise click.ClickException(problem)
    before, after = maintenance.migrate(where, revision)
    if before == after:
        click.echo(f"{where}: already at {after or 'base'}")
    else:
        click.echo(f"{where}: upgraded {before or 'base'} -> {after}")


@db.command()
@click.argument("revision")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@clean_errors
def downgrade(ctx: click.Context, revision: str, yes: bool) -> None:
    """Migrate down to REVISION (`base`: drop every table).

    What the downgrade drops is lost; asks first unless --yes.
    """
    where = location(ctx)
    require_database(where)
    current = maintenance.revision_status(where).revision
    if revision in (current, "head") or (current is None and revision == "base"):
        click.echo(f"{where}: already at {current or 'base'}; nothing to downgrade")
        return
    if not yes:
        click.confirm(f"Downgrade {where} to {revision}? What the downgrade drops is lost.", abort=True, err=True)
    before, after = maintenance.migrate(where, revision, down=True)
    click.echo(f"{where}: downgraded {before or 'base'} -> {after or 'base'}")


@db.command()
@formats()
@click.pass_context
@clean_errors
def current(ctx: click.Context, fmt: str) -> None:
    """Show the database's revision and whether it needs `db upgrade`."""
    where = location(ctx)
    require_database(where)
    try:
        status = maintenance.revision_status(where)
    except BcacheError as exc:
        raise click.ClickException(str(exc) + maintenance.open_hint(exc, where)) from None
    render.record(
        {"location": str(where), "revision": status.revision, "head": status.head, "status": status.message}, fmt
    )


@db.command()
@formats()
@click.pass_context
@clean_errors
def history(ctx: click.Context, fmt: str) -> None:
    """List the revisions this package ships, newest first (and the database's)."""
    from .. import store

    where = location(ctx)
    at = None if maintenance.database_problem(where) else maintenance.revision_status(where).revision
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
