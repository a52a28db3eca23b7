"""db upgrade|downgrade|current|history."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import (
    NoneType,
    as_json,
    assert_shape,
    clean_error,
    invoke,
    ok,
)

from zexus_bcache import store

pytestmark = pytest.mark.usefixtures("cli_project")


# -- db ----------------------------------------------------------------------------------------------


def test_db_current_history_downgrade_upgrade(db: Path) -> None:
    head = store.head_revision()
    current = as_json(invoke(db, "db", "current", "--json"))
    assert_shape(current, {"location": str, "revision": (str, NoneType), "head": str, "status": str})
    assert current["revision"] == head and current["status"] == "up to date"
    history = as_json(invoke(db, "db", "history", "--json"))
    for row in history:
        assert_shape(
            row, {"revision": str, "down_revision": (str, NoneType), "description": str, "head": bool, "current": bool}
        )
    assert history[0]["revision"] == head and history[0]["head"] and history[0]["current"]

    refused = invoke(db, "db", "downgrade", "base", input="n\n")
    assert refused.exit_code == 1 and "Downgrade" in refused.stderr
    assert "downgraded" in ok(invoke(db, "db", "downgrade", "base", "--yes")).stdout
    assert as_json(invoke(db, "db", "current", "--json"))["revision"] is None
    clean_error(invoke(db, "stats"), "db upgrade")  # read commands never migrate
    clean_error(invoke(db, "db", "downgrade", "nowhere", "--yes"), "nowhere")
    assert f"upgraded base -> {head}" in ok(invoke(db, "db", "upgrade")).stdout
    assert "already at" in ok(invoke(db, "db", "upgrade")).stdout
    assert as_json(invoke(db, "stats", "--json"))["entries"] == 0
    usage = invoke(db, "db", "downgrade")
    assert usage.exit_code == 2  # the revision is required


def test_db_upgrade_creates_a_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / "c.db"
    ok(invoke(path, "db", "upgrade"))
    assert as_json(invoke(path, "db", "current", "--json"))["revision"] == store.head_revision()


def test_downgrade_to_where_it_is(db: Path) -> None:
    head = store.head_revision()
    for target in ("head", head):
        result = ok(invoke(db, "db", "downgrade", target, "--yes"))
        assert f"already at {head}; nothing to downgrade" in result.stdout and "downgraded" not in result.stdout
    assert as_json(invoke(db, "db", "current", "--json"))["revision"] == head
