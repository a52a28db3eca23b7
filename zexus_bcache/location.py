"""Where a project's cache lives by default: ``<project root>/.zexus/bcache.db``.

The project root is the nearest directory, from the starting point upward, that holds a
``zexus.json`` (zpm's project file), a ``.zexus/`` directory or a ``.git`` entry; with none of
them, the starting directory itself. The environment variable ``ZEXUS_BCACHE_PATH`` (a file path
or a database URL) overrides all of this.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_PATH = "ZEXUS_BCACHE_PATH"
CACHE_DIR_NAME = ".zexus"
DB_NAME = "bcache.db"
PROJECT_MARKERS = ("zexus.json", CACHE_DIR_NAME, ".git")


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest ancestor of start (a directory or a file; default: the working directory) with a project marker."""
    here = Path(start).resolve() if start is not None else Path.cwd().resolve()
    if here.is_file() or (not here.exists() and here.suffix):
        here = here.parent
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return here


def default_path(start: str | os.PathLike[str] | None = None) -> str | Path:
    """``$ZEXUS_BCACHE_PATH`` if set, else ``<project root>/.zexus/bcache.db``."""
    env = os.environ.get(ENV_PATH, "").strip()
    if env:
        return env if "://" in env else Path(env).expanduser()
    return project_root(start) / CACHE_DIR_NAME / DB_NAME
