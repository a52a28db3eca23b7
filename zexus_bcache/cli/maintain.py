"""Commands that change a cache: evict, invalidate, clear, vacuum, and doctor (with --repair)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import maintenance, render
from ..constants import POLICIES
from ..errors import BcacheError
from ..render import Column
from ._common import (
    busy,
    clean_errors,
    duration,
    formats,
    open_store,
    plural,
    progress_bar,
    require_database,
    settings,
    size,
)
from .inspect import ENTRY_COLUMNS

_EVICTED_COLUMNS = [Column("reason", wrap=False), *(c for c in ENTRY_COLUMNS if c.key != "n_instructions")]


@click.command()
@click.option(
    "--older-than", metavar="AGE", callback=duration, help="Also remove entries unused for AGE (30d, 12h, 45m, 90s)."
)
@click.option("--max-entries", type=click.IntRange(min=0), help="Keep at most N entries (0 = no limit).")
@click.option(
    "--max-bytes", metavar="SIZE", callback=size, help="Keep at most SIZE bytes (512K, 10MB, 1G; 0 = no limit)."
)
@click.option(
    "--policy", type=click.Choice(POLICIES), help="Which entries go first: least recently or least often used."
)
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@formats()
@click.pass_context
@clean_errors
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
    effective = settings(ctx, overrides=overrides, database=True)
    limits = {name: effective[name].value for name in overrides}
    with open_store(ctx, write=not dry_run) as store, busy("evicting..."):
        victims = store.evict_report(**limits, older_than=older_than, dry_run=dry_run)
    total = sum(row["payload_size"] for row in victims)
    if fmt == "json":
        render.write_json(
            {
                "dry_run": dry_run,
                "evicted": len(victims),
                "bytes": total,
                **limits,
                "older_than": older_than,
                "entries": victims,
            }
        )
        return
    render.rows(victims, fmt, _EVICTED_COLUMNS, empty="(nothing to evict)")
    if victims:
        verb = "would evict" if dry_run else "evicted"
        click.echo(f"{verb} {plural(len(victims), 'entry', 'entries')} ({render.size(total)})", err=True)


@click.command()
@click.option(
    "--key",
    "key_prefixes",
    multiple=True,
    metavar="PREFIX",
    help="The entry whose key starts with PREFIX (repeatable).",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Entries compiled from PATH, or from files under a directory (repeatable).",
)
@click.option("--stale", is_flag=True, help="Entries whose source file changed or is gone.")
@click.option(
    "--other-compilers", is_flag=True, help="Entries made by another zexus, codec or compiler than this one's."
)
@formats()
@click.pass_context
@clean_errors
def invalidate(
    ctx: click.Context,
    key_prefixes: tuple[str, ...],
    files: tuple[Path, ...],
    stale: bool,
    other_compilers: bool,
    fmt: str,
) -> None:
    """Remove chosen entries: by key, source file, staleness or compiler.

    Give at least one criterion; an entry matching any of them goes. --stale removes entries
    whose source file is gone or has other content now; --other-compilers those not made by
    this zexus and zexus_bcache (any optimize setting, VM or evaluator compiler).
    """
    if not (key_prefixes or files or stale or other_compilers):
        raise click.UsageError("give at least one of --key, --file, --stale, --other-compilers")
    removed: dict[str, int] = {}
    with open_store(ctx, write=True) as store:
        if key_prefixes:
            removed["key"] = store.delete_many([maintenance.find_key(store, prefix) for prefix in key_prefixes])
        if files:
            removed["file"] = sum(
                store.delete_many(e["key"] for e in maintenance.entries_for_path(store, path)) for path in files
            )
        if stale:
            removed["stale"] = store.delete_many(maintenance.stale_keys(store))
        if other_compilers:
            removed["other_compilers"] = store.invalidate(other_than_fingerprints=maintenance.current_fingerprints())
    total = sum(removed.values())
    if fmt == "json":
        render.write_json({"removed": total, "by_criterion": removed})
        return
    detail = ", ".join(f"{name.replace('_', ' ')}: {n}" for name, n in removed.items())
    click.echo(f"removed {plural(total, 'entry', 'entries')} ({detail})")


@click.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.pass_context
@clean_errors
def clear(ctx: click.Context, yes: bool) -> None:
    """Remove every entry and give the space back (counters and settings stay)."""
    with open_store(ctx, write=True) as store:
        if not yes:
            _confirm(f"Remove all {plural(store.count(), 'entry', 'entries')} from {store.name}?")
        removed = store.clear()
        before = store.file_size()
        with busy("giving the space back..."):
            store.vacuum()
        after = store.file_size()
    freed = "" if before is None or after is None else f"; database file {render.size(before)} -> {render.size(after)}"
    click.echo(f"removed {plural(removed, 'entry', 'entries')}{freed}")


def _confirm(question: str) -> None:
    """Ask on the terminal (or read an answer piped in); without one, say how to go on."""
    try:
        answer = click.confirm(question, default=False, err=True)
    except click.Abort:  # end of input: nobody to ask
        click.echo(err=True)
        raise click.ClickException("no answer (no terminal to ask on): pass --yes to go ahead") from None
    if not answer:
        raise click.ClickException("nothing was changed")


@click.command()
@click.pass_context
@clean_errors
def vacuum(ctx: click.Context) -> None:
    """Give the space of removed entries back to the system (VACUUM)."""
    with open_store(ctx, write=True) as store:
        before = store.file_size()
        with busy(f"vacuuming {store.name}..."):
            store.vacuum()
        after = store.file_size()
        name = store.name
    if before is None or after is None:
        click.echo(f"vacuumed {name}")
    else:
        click.echo(f"vacuumed {name}: {render.size(before)} -> {render.size(after)}")


_CHECK_COLUMNS = [Column("check"), Column("ok", "result", lambda ok: "ok" if ok else "PROBLEM"), Column("detail")]


@click.command()
@click.option("--repair", is_flag=True, help="Fix what was found (see above).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@formats()
@click.pass_context
@clean_errors
def doctor(ctx: click.Context, repair: bool, quiet: bool, fmt: str) -> None:
    """Check the database and every payload in it.

    Checks that only you can write the cache, runs SQLite's integrity_check, compares the
    schema revision with this package's, and recomputes every payload's checksum and validates
    its format. Exits 1 when problems are found (and, with --repair, remain).

    --repair renames a database that cannot be opened or fails the integrity check to
    bcache.db.broken-<time> (with its -wal and -shm) and starts a fresh one; upgrades an older
    schema; deletes the entries whose payload is damaged. A cache other users
    can write is never repaired: doctor says which chmod makes it private. Stop other users first.
    """
    location = settings(ctx)["path"].value
    require_database(location)
    with progress_bar("checking payloads", quiet=quiet or fmt == "json") as progress:
        diagnosis = maintenance.diagnose(location, progress)
    repairs: list[str] = []
    if repair and diagnosis.problems and not diagnosis.too_new:
        try:
            repairs = maintenance.repair(location, diagnosis)
        except BcacheError as exc:
            raise click.ClickException(str(exc)) from None
    fixed = diagnosis.problems == 0 or (bool(repairs) and not diagnosis.untrusted)
    if fmt == "json":
        render.write_json(
            {
                "location": str(location),
                "ok": fixed,
                "problems": diagnosis.problems,
                "checks": diagnosis.checks,
                "repairs": repairs,
            }
        )
    else:
        render.rows(diagnosis.checks, fmt, _CHECK_COLUMNS)
        for line in repairs:
            click.echo(f"repaired: {line}" if not line.startswith("not repaired") else line)
    if not fixed:
        hint = (
            "" if repair or diagnosis.too_new or diagnosis.untrusted else "; `zexus-bcache doctor --repair` fixes them"
        )
        raise click.ClickException(f"{plural(diagnosis.problems, 'problem')} found in {location}{hint}")
