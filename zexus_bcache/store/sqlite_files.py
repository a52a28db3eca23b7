"""SQLite files on disk: URIs, who may have written them, whether we can write them, what revision they hold.

A cache another user could have planted bytecode in is refused (:mod:`zexus_bcache.trust`); one
this process cannot write is opened read-only. The database file is only ever opened by SQLite
(see :func:`peek_revision`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from .. import trust
from ..errors import StoreError

SIDE_SUFFIXES = ("-wal", "-shm", "-journal")



def sqlite_uri(path: Path, *, read_only: bool) -> str:
    if not read_only:
        return path.as_uri() + "?mode=rwc"
    if needs_immutable(path):
        return path.as_uri() + "?mode=ro&immutable=1"
    return path.as_uri() + "?mode=ro"


def needs_immutable(path: Path) -> bool:
    """Whether a read-only connection can only open the file as immutable.

    A WAL database is read through its -shm index; when that file does not exist and cannot be
    created (a directory we cannot write, a read-only mount), SQLite refuses a plain mode=ro
    connection. Immutable, it reads the database file alone: what a writer has not checkpointed
    yet is not seen (misses), and a page changed under it fails the read or the payload's
    checksum (misses again); wrong bytecode cannot come out of it.
    """
    shm = path.with_name(path.name + "-shm")
    return path.exists() and not shm.exists() and not os.access(path.parent, os.W_OK | os.X_OK)


def sqlite_files(path: Path) -> list[Path]:
    """The database file and its WAL and shared-memory files, the WAL first."""
    return [path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), path]


def write_problem(path: Path) -> str | None:
    """Why this process cannot write the existing SQLite database at path; None if it can (or it is new)."""
    if not path.exists():
        return None  # creating it says clearly if that is impossible
    if not os.access(path, os.W_OK):
        return "the database file is not writable"
    wal, shm = sqlite_files(path)[:2]
    for side in (wal, shm):
        if side.exists() and not os.access(side, os.R_OK | os.W_OK):
            return f"{side.name} is not writable"
    if not os.access(path.parent, os.W_OK | os.X_OK) and not (wal.exists() and shm.exists()):
        return "its directory is not writable (SQLite needs to create the -wal and -shm files there)"
    return None


def check_trust(path: Path) -> None:
    """Refuse a cache another user could have planted bytecode in (docs/TRUST.md)."""
    refusal = trust.refusal(path, "cache", side_files=SIDE_SUFFIXES)
    if refusal:
        raise StoreError(refusal)


def move_aside(path: str | os.PathLike[str]) -> Path:
    """Rename a broken SQLite database, with its -wal and -shm, to ``<name>.broken-<UTC time>``.

    The WAL goes first: a fresh database created at the old path must never find the old WAL
    next to it (SQLite would replay it into the new file). Stop other users of the cache first.
    Returns the new path of the database file.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while any(p.exists() for p in sqlite_files(target)):
        n += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    for source, destination in zip(sqlite_files(path), sqlite_files(target), strict=True):
        if source.exists():
            os.replace(source, destination)
    return target


def peek_revision(path: Path, *, busy_s: float, must_exist: bool) -> str | None:
    """Read the revision through a read-only connection (so refusing writes nothing).

    The file is only ever opened by SQLite: closing a descriptor of our own on it would drop
    the POSIX locks of every SQLite connection of this process to it (SQLite's docs, "How To
    Corrupt An SQLite Database File", 2.2), letting another process delete a live WAL.
    """
    if not path.exists():
        if must_exist:
            raise StoreError(f"{path}: no such database")
        return None
    size = path.stat().st_size
    if size == 0:
        return None
    conn = sqlite3.connect(sqlite_uri(path, read_only=True), uri=True, timeout=busy_s)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        versions = []
        if "alembic_version" in names:
            versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a SQLite database, or a damaged one ({exc})") from exc
    finally:
        conn.close()
    if size % page_size:
        raise StoreError(f"{path}: the SQLite database is truncated or damaged")
    if "alembic_version" not in names and names:
        raise StoreError(
            f"{path}: a SQLite database of something else (no alembic_version;"
            f" has {', '.join(sorted(names)[:5])}); not a zexus_bcache store"
        )
    if len(versions) > 1:
        raise StoreError(f"{path}: several schema heads {versions}; not a zexus_bcache store")
    return versions[0] if versions else None
