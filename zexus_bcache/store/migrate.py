"""The schema's revisions: one classification of a database's revision, upgrade on open, Alembic commands.

Alembic is imported only when a database needs migrating or a migration command runs: opening an
up-to-date cache (every warm start) compares its revision with ``constants.HEAD_REVISION`` and
never pays for importing Alembic (~80 ms).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .. import constants
from ..errors import BcacheError, SchemaTooNewError, StoreError
from . import forks
from .backend import Backend, current_revision_of, database_errors, one_line
from .locate import connect

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

log = logging.getLogger("zexus_bcache")

MIGRATIONS_PACKAGE = "zexus_bcache.migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for our shipped migrations, running on ``connection`` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", f"{MIGRATIONS_PACKAGE}:")
    config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped with this package (loaded once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this package knows."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this package ships."""
    return frozenset(rev.revision for rev in script_directory().walk_revisions())


class RevisionStatus(enum.Enum):
    """Where a database's schema stands against this package's migrations."""

    CURRENT = "current"
    EMPTY = "empty"  # no schema yet: run the migrations
    OLDER = "older"  # run the migrations
    NEWER = "newer"  # written by a newer zexus_bcache: upgrade the package

    @property
    def needs_upgrade(self) -> bool:
        """Whether running the migrations would bring it to head."""
        return self in (RevisionStatus.EMPTY, RevisionStatus.OLDER)


def revision_status(current: str | None, head: str = constants.HEAD_REVISION) -> RevisionStatus:
    """Classify a database's revision (loads Alembic only when it is not ``head``)."""
    if current == head:
        return RevisionStatus.CURRENT
    if current is None:
        return RevisionStatus.EMPTY
    return RevisionStatus.OLDER if current in known_revisions() else RevisionStatus.NEWER


def too_new(name: str, current: str | None, head: str) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{name}: the database is at schema revision {current!r}, which this zexus_bcache does not"
        f" know (newest known: {head!r}); it was written by a newer zexus_bcache: upgrade"
        " zexus_bcache (pip install -U zexus-bcache). Nothing was changed."
    )


def check_openable(backend: Backend, current: str | None, head: str = constants.HEAD_REVISION) -> RevisionStatus:
    """Refuse a revision the store cannot use: newer than ours, or older on a read-only store."""
    status = revision_status(current, head)
    if status is RevisionStatus.NEWER:
        raise too_new(backend.name, current, head)
    if status.needs_upgrade and backend.read_only:
        state = "is empty" if current is None else f"is at an older schema revision ({current!r})"
        degraded = backend.degraded
        fix = f"{degraded}: let its owner open it once" if degraded else "open it once without read_only"
        raise StoreError(
            f"{backend.name}: the database {state} and needs migrating to {head!r}, which a"
            f" read-only store cannot do; {fix} to upgrade it"
        )
    return status


def upgrade_on_open(backend: Backend, head: str = constants.HEAD_REVISION) -> bool:
    """Upgrade to head once, under the database's write lock; return whether this call migrated."""
    with backend.write_engine().connect() as conn, conn.begin():
        backend.lock_for_migration(conn)
        # Another process may have migrated while we waited for the lock.
        current = current_revision_of(conn)
        if not check_openable(backend, current, head).needs_upgrade:
            return False
        log.info("%s: migrating schema %s -> %s", backend.name, current or "(empty)", head)
        from alembic import command

        try:
            command.upgrade(alembic_config(conn), "head")
        except Exception as exc:  # the transaction rolls back: DDL included, nothing changed
            message = f"migrating to {head!r} failed, nothing was changed: {one_line(exc)}"
            raise StoreError(f"{backend.name}: {message}") from exc
    return True


# -- the Alembic commands, without opening a store ------------------------------------------------


@contextmanager
def _maintenance(url_or_path: str | os.PathLike[str], *, read_only: bool) -> Iterator[tuple[Backend, Connection]]:
    """A connection in one transaction (taking the write lock when writing), without opening a Store.

    For the Alembic commands, which must see the database as it is (a Store migrates on open).
    A SQLite file is checked first as a Store checks it (a missing file is created only for writing;
    another program's database is refused).
    """
    backend = connect(url_or_path, read_only=read_only)
    gate = forks.GATE if backend.dialect == "sqlite" else contextlib.nullcontext()
    with gate:  # no fork while a SQLite connection is open (forks.py)
        engine = backend.maintenance_engine()
        try:
            with engine.connect() as conn, conn.begin():
                yield backend, conn
        except BcacheError:
            raise
        except database_errors() as exc:
            raise StoreError(f"{backend.name}: {one_line(exc)}") from exc
        finally:
            engine.dispose()


def current_revision(url_or_path: str | os.PathLike[str]) -> str | None:
    """The schema revision of an existing database (None: empty), read without migrating anything."""
    with _maintenance(url_or_path, read_only=True) as (_, conn):
        return current_revision_of(conn)


def upgrade(url_or_path: str | os.PathLike[str], revision: str = "head") -> tuple[str | None, str | None]:
    """Run the migrations up to ``revision`` (creating the database if needed); return (before, after)."""
    return _run_alembic(url_or_path, revision, down=False)


def downgrade(url_or_path: str | os.PathLike[str], revision: str) -> tuple[str | None, str | None]:
    """Run the migrations down to ``revision`` (``"base"``: nothing left); return (before, after)."""
    return _run_alembic(url_or_path, revision, down=True)


def _run_alembic(url_or_path: str | os.PathLike[str], revision: str, *, down: bool) -> tuple[str | None, str | None]:
    with _maintenance(url_or_path, read_only=False) as (backend, conn):
        backend.lock_for_migration(conn)
        before = current_revision_of(conn)
        if revision_status(before, head_revision()) is RevisionStatus.NEWER:
            raise too_new(backend.name, before, head_revision())
        from alembic import command

        verb = "downgrade" if down else "upgrade"
        try:
            getattr(command, verb)(alembic_config(conn), revision)
        except BcacheError:
            raise
        except Exception as exc:  # Alembic's and the database's errors: one clean line, nothing changed
            raise StoreError(f"{backend.name}: cannot {verb} to {revision!r}: {one_line(exc)}") from exc
        after = current_revision_of(conn)
    return before, after
