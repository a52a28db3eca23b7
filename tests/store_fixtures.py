"""The store fixtures: a store on SQLite and, when a server is given, on PostgreSQL (see conftest.py).

Each is defined under another name and registered under its own, so that a test module imports it
(``from store_fixtures import store_fixture``) without its parameters shadowing the import.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import NO_FLUSH

from zexus_bcache.store import Store


@pytest.fixture(name="location", params=["sqlite", "postgresql"])
def location_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database (skips without a server)."""
    if request.param == "sqlite":
        return str(tmp_path / "cache" / "store.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(name="store")
def store_fixture(location: str) -> Iterator[Store]:
    with Store(location, **NO_FLUSH) as s:
        yield s


@pytest.fixture(name="sqlite_store")
def sqlite_store_fixture(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db", **NO_FLUSH) as s:
        yield s
