"""Where a store lives: a SQLite file or a server's URL, and the backend that talks to it (chosen once)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .backend import Backend


def normalize_url(url: str) -> str:
    """A database URL with our PostgreSQL driver: plain ``postgresql://`` (SQLAlchemy's default
    driver is psycopg2, which we do not depend on) and ``postgres://`` mean psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def locate(url_or_path: str | os.PathLike[str]) -> tuple[Path, None] | tuple[None, sa.URL]:
    """A SQLite file path (from a plain path or a sqlite:/// URL), or another database's URL.

    Only a URL is parsed by SQLAlchemy: a plain path (every warm start) does not import it.
    """
    if isinstance(url_or_path, str) and "://" in url_or_path:
        import sqlalchemy as sa

        try:
            url = sa.make_url(normalize_url(url_or_path))
        except sa.exc.ArgumentError:
            raise ConfigError("not a database URL (expected e.g. postgresql://user:password@host/db)") from None
        if url.get_backend_name() != "sqlite":
            if url.get_driver_name() == "psycopg" and importlib.util.find_spec("psycopg") is None:
                raise ConfigError("a PostgreSQL cache needs psycopg 3: pip install 'zexus-bcache[pg]'")
            return None, url
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise ConfigError(f"{url_or_path}: give the SQLite database as a file path")
        url_or_path = url.database
    return Path(os.path.abspath(os.fsdecode(os.fspath(url_or_path)))), None


def sqlite_path(url_or_path: str | os.PathLike[str]) -> Path | None:
    """The file of a SQLite location (a path or a sqlite:/// URL); None for a server database."""
    return locate(url_or_path)[0]


def connect(
    url_or_path: str | os.PathLike[str],
    *,
    read_only: bool = False,
    busy_timeout_ms: int = 30000,
    pragmas: Mapping[str, int | str] | None = None,
    allow_world_writable: bool = False,
) -> Backend:
    """The backend for a location: chosen here, once (nothing is opened yet)."""
    path, url = locate(url_or_path)
    if url is None:
        assert path is not None
        from .sqlite import SQLiteBackend

        return SQLiteBackend(
            path, read_only=read_only, busy_timeout_ms=busy_timeout_ms, pragmas=pragmas,
            allow_world_writable=allow_world_writable,
        )  # fmt: skip
    # Without the query (connection options): the name is for messages.
    name = url.set(query={}).render_as_string(hide_password=True)
    dialect = url.get_backend_name()
    if dialect != "postgresql":
        raise ConfigError(f"{name}: unsupported database {dialect!r} (SQLite or PostgreSQL)")
    from .postgres import PostgresBackend

    return PostgresBackend(url, name, read_only=read_only)
