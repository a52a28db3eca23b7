"""`warm`: precompile .zx files into the cache in parallel (the work is zexus_bcache.warm's)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from .. import config, render
from .. import warm as warming
from ..render import Column
from ._common import clean_errors, display_path, formats, held_warnings, open_cache, plural, progress_bar, settings

_COUNTED = ("compiled", "cached", "failed")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=0),
    metavar="N",
    help="Worker processes (default and 0: one per CPU; never more than CPUs or files).",
)
@click.option("-f", "--force", is_flag=True, help="Compile again even what is cached.")
@click.option("-x", "--exclude", metavar="REGEX", help="Skip files whose path matches REGEX.")
@click.option(
    "-i",
    "--input",
    "listing",
    type=click.File("r"),
    metavar="FILE|-",
    help="Also warm the files listed in FILE (one per line; - for stdin).",
)
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be compiled; compile nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-optimize", is_flag=True, help="Compile without the optimizer (cached separately).")
@click.option("--keep-going", is_flag=True, help="Exit 0 even if some files failed.")
@click.option("--strict", is_flag=True, hidden=True)  # the default now; kept for scripts that pass it
@formats()
@click.pass_context
@clean_errors
def warm(
    ctx: click.Context,
    paths: tuple[Path, ...],
    jobs: int | None,
    force: bool,
    exclude: str | None,
    listing: Iterable[str] | None,
    dry_run: bool,
    quiet: bool,
    no_optimize: bool,
    keep_going: bool,
    strict: bool,
    fmt: str,
) -> None:
    """Precompile .zx files into the cache, in parallel.

    Every .zx file under PATHS (recursively, hidden directories skipped) and in the -i list is
    compiled by -j worker processes, each with its own connection to the cache. Reports how many
    were compiled, already cached, or failed (with the reason: parse errors, nodes the VM compiler
    does not support, unreadable files). Exits 1 if any file failed (as compileall does), unless
    --keep-going. Ctrl-C stops at once, with a summary of what was done.
    """
    files = warming.find_files(paths, exclude=exclude, listed=listing or ())
    if not files:
        raise click.ClickException("no .zx files under " + (", ".join(map(str, paths)) or "the list given"))
    start = paths[0] if paths else None
    # Create or migrate the database once, before the workers; a read-only one is one clear error.
    with held_warnings(), open_cache(ctx, start=start, strict=True) as cache:
        if dry_run:
            report = warming.dry_run(files, cache, optimize=not no_optimize, force=force)
        else:
            warming.check_writable(cache)
    if not dry_run:
        arguments = config.cache_arguments(settings(ctx, start))
        t0 = time.perf_counter()
        with _progress(quiet or fmt == "json") as progress:
            report = warming.warm(files, arguments, optimize=not no_optimize, jobs=jobs, force=force, progress=progress)
        elapsed = time.perf_counter() - t0
    else:
        elapsed = 0.0
    _print(report, elapsed, fmt)
    if report.interrupted:
        ctx.exit(130)
    failed = report.count("failed")
    if failed and not keep_going:
        raise click.ClickException(f"{failed} of {plural(len(files), 'file')} could not be compiled")


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[warming.Progress]:
    with progress_bar("warming", quiet=quiet) as advance:
        yield lambda done, total, _result: advance(done, total)


def _print(report: warming.WarmReport, elapsed: float, fmt: str) -> None:
    counts = {status: report.count(status) for status in _COUNTED}
    if report.dry_run:
        counts = {
            "would compile": report.count("would compile"),
            "cached": counts["cached"],
            "failed": counts["failed"],
        }
    if fmt == "json":
        render.write_json(
            {
                "location": config.mask_url(report.location),
                "files": report.files,
                **counts,
                "seconds": round(elapsed, 3),
                "results": report.results,
                **({"interrupted": True} if report.interrupted else {}),
                **({"dry_run": True} if report.dry_run else {}),
            }
        )
        return
    failed = [r for r in report.results if r["status"] == "failed"]
    if failed:
        render.rows(failed, fmt, [Column("path", "failed", display_path, wrap=False), Column("reason")])
    if report.dry_run:
        listed = [r for r in report.results if r["status"] == "would compile"]
        for r in listed:
            click.echo(f"would compile {display_path(r['path'])}")
        click.echo(
            f"{plural(report.files, 'file')}: {counts['would compile']} would be compiled, "
            f"{counts['cached']} already cached ({config.mask_url(report.location)})"
        )
        return
    done = len(report.results)
    head = (
        f"interrupted after {done} of {plural(report.files, 'file')}"
        if report.interrupted
        else f"warmed {plural(report.files, 'file')}"
    )
    click.echo(
        f"{head} in {elapsed:.2f} s: {counts['compiled']} compiled, {counts['cached']} already cached, "
        f"{counts['failed']} failed ({config.mask_url(report.location)})"
    )
    if report.interrupted:
        sys.stdout.flush()
