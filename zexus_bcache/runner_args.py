"""One ``zexus-bcache run`` command line, parsed (what the client, the server and the runner pass around)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunArgs:
    """One ``run`` command line: global options, run options, FILE and the program's own arguments."""

    cache: str | None = None
    shared: str | None = None
    shared_read_only: bool | None = None
    timings: bool = False
    no_optimize: bool = False
    no_cache: bool = False
    refresh: bool = False
    no_server: bool = False
    file: str = ""
    args: tuple[str, ...] = ()
    error: str | None = None  # a usage error: main() prints it and returns 2
    compile_only: bool = False  # warm: look up, compile and store as a run would, then stop before running
    lookup_only: bool = False  # warm --dry-run: stop after the lookup
