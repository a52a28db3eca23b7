"""The persistent tier, and all of the project's SQL.

Where things are: ``store.py`` the dialect-neutral :class:`Store` (``inspection.py`` its read side,
``base.py`` what they share); ``backend.py`` what differs between databases, chosen once at open
(``sqlite.py`` with ``sqlite_files.py`` and ``readonly.py``; ``postgres.py``); ``queries.py`` the
Core statements; ``schema.py`` the tables the migrations are checked against; ``migrate.py``
revisions and Alembic; ``limits.py`` what a put evicts; ``pending.py`` hits and counters recorded in
memory. Importing this package imports neither SQLAlchemy nor Alembic (a warm start needs neither).
"""

from __future__ import annotations

from ..trust import ALLOW_ENV as ALLOW_WORLD_WRITABLE_ENV
from .base import StoredEntry, checksum
from .locate import normalize_url, sqlite_path
from .migrate import (
    MIGRATIONS_PACKAGE,
    RevisionStatus,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    revision_status,
    script_directory,
    upgrade,
)
from .queries import SORTS, parse_setting
from .sqlite_files import move_aside, write_problem
from .store import _LIVE, Store

_write_problem = write_problem  # the name callers used before it was public

__all__ = [
    "ALLOW_WORLD_WRITABLE_ENV",
    "MIGRATIONS_PACKAGE",
    "SORTS",
    "_LIVE",
    "RevisionStatus",
    "Store",
    "StoredEntry",
    "alembic_config",
    "checksum",
    "current_revision",
    "downgrade",
    "head_revision",
    "move_aside",
    "normalize_url",
    "parse_setting",
    "revision_status",
    "script_directory",
    "sqlite_path",
    "upgrade",
    "write_problem",
]
