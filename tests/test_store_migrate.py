"""Revisions without opening a store: the Alembic commands and the one classification of a revision.

"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zexus_bcache.errors import SchemaTooNewError, StoreError
from zexus_bcache.store import (
    RevisionStatus,
    Store,
    current_revision,
    downgrade,
    head_revision,
    revision_status,
    script_directory,
    sqlite_path,
    upgrade,
)


def test_alembic_operations_without_a_store(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with pytest.raises(StoreError, match="no such database"):
        current_revision(path)
    assert not path.exists()
    head = head_revision()
    assert upgrade(path) == (None, head)
    assert current_revision(path) == head
    assert upgrade(path) == (head, head)
    assert downgrade(path, "base") == (head, None)
    with pytest.raises(StoreError, match="read-only"):
        Store(path, read_only=True)
    with pytest.raises(StoreError, match="bogus"):
        upgrade(path, "bogus")
    assert upgrade(path)[1] == head
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        upgrade(garbage)
    assert sqlite_path(f"sqlite:///{path}") == path and sqlite_path("postgresql://u@h/db") is None


def test_one_classification_of_a_revision(tmp_path: Path) -> None:
    head = head_revision()
    older = [rev.revision for rev in script_directory().walk_revisions() if rev.revision != head]
    assert revision_status(head, head) is RevisionStatus.CURRENT
    assert revision_status(None, head) is RevisionStatus.EMPTY
    assert all(revision_status(rev, head) is RevisionStatus.OLDER for rev in older)
    assert revision_status("0099_from_the_future", head) is RevisionStatus.NEWER
    assert [s for s in RevisionStatus if s.needs_upgrade] == [RevisionStatus.EMPTY, RevisionStatus.OLDER]
    # The same classification decides what opening a store and `upgrade` do with each state.
    path = tmp_path / "c.db"
    upgrade(path, older[-1])  # the first revision
    assert revision_status(current_revision(path), head) is RevisionStatus.OLDER
    with pytest.raises(StoreError, match="needs migrating"):
        Store(path, read_only=True)
    with Store(path) as store:
        assert store.migrated and store.revision() == head
    downgrade(path, older[-1])
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    conn.close()
    for attempt in (lambda: Store(path), lambda: upgrade(path), lambda: downgrade(path, "base")):
        with pytest.raises(SchemaTooNewError, match="0099_from_the_future"):
            attempt()
