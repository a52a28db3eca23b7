"""The ``zexus-bcache`` command line: a thin layer over the library."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import BcacheError


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zexus-bcache")
def main() -> None:
    """A persistent, inspectable bytecode cache for Zexus programs."""


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def demo(file: Path) -> None:
    """Compile FILE, encode and decode its bytecode, and run the decoded bytecode."""
    from . import codec, integration

    try:
        t0 = time.perf_counter()
        bytecode = integration.compile_source(file.read_text(encoding="utf-8"), str(file))
        t1 = time.perf_counter()
        data = codec.encode(bytecode)
        decoded = codec.decode(data)
        t2 = time.perf_counter()
    except (BcacheError, OSError, UnicodeDecodeError) as exc:
        raise _fail(str(exc)) from None
    click.echo(
        f"compiled {len(bytecode.instructions)} instructions in {(t1 - t0) * 1e3:.1f} ms; "
        f"encoded to {len(data)} bytes and decoded in {(t2 - t1) * 1e3:.1f} ms",
        err=True,
    )
    integration.run_bytecode(decoded, str(file))
    sys.stdout.flush()
