"""The library's one logger, and how a command shows its warnings: one ``warning: ...`` line each on stderr."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("zexus_bcache")


class WarningLine(logging.Handler):
    """A library warning as one clean line on stderr (read at emit time, so a swapped stderr is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().removeprefix("zexus_bcache: ")
        try:
            sys.stderr.write(f"warning: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: there is no one left to tell
            pass


def show_warnings() -> None:
    """Show the library's warnings as lines on stderr (idempotent); commands call it, libraries never do."""
    if not any(isinstance(h, WarningLine) for h in log.handlers):
        log.addHandler(WarningLine())
        log.propagate = False
    log.setLevel(logging.WARNING)
