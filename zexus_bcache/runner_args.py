"""One ``zexus-bcache run`` command line, parsed (what the client, the server and the runner pass around).

A plain class, not a dataclass: the client imports this on every run through the server, and
``dataclasses`` (with ``inspect``) costs ~13 ms to import there, a tenth of such a run.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~6 ms to import on the client's path; mypy reads this as usual
if TYPE_CHECKING:
    from typing import Any


class RunArgs:
    """One ``run`` command line: global options, run options, FILE and the program's own arguments."""

    __slots__ = (
        "args", "cache", "compile_only", "error", "file", "lookup_only", "no_cache", "no_optimize", "no_server",
        "refresh", "shared", "shared_read_only", "timings",
    )

    def __init__(
        self,
        cache: str | None = None,
        shared: str | None = None,
        shared_read_only: bool | None = None,
        timings: bool = False,
        no_optimize: bool = False,
        no_cache: bool = False,
        refresh: bool = False,
        no_server: bool = False,
        file: str = "",
        args: tuple[str, ...] = (),
        error: str | None = None,
        compile_only: bool = False,
        lookup_only: bool = False,
    ) -> None:
        self.cache = cache
        self.shared = shared
        self.shared_read_only = shared_read_only
        self.timings = timings
        self.no_optimize = no_optimize
        self.no_cache = no_cache
        self.refresh = refresh
        self.no_server = no_server
        self.file = file
        self.args = args
        self.error = error  # a usage error: main() prints it and returns 2
        self.compile_only = compile_only  # warm: look up, compile and store as a run would, then stop
        self.lookup_only = lookup_only  # warm --dry-run: stop after the lookup

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunArgs) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return "RunArgs(" + ", ".join(f"{k}={v!r}" for k, v in self._fields().items()) + ")"
