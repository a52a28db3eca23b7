"""The command line as a whole: every command has help, choices match the library, errors common to every command."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from cli_helpers import (
    clean_error,
    invoke,
    ok,
    stored_keys,
)

from zexus_bcache import cli, config, schema, store
from zexus_bcache.cli import main
from zexus_bcache.cli.inspect import ENTRY_COLUMNS
from zexus_bcache.store import Store

pytestmark = pytest.mark.usefixtures("cli_project")


# -- the command line itself ----------------------------------------------------------------------


def all_commands(
    group: click.Group = main, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_and_db_subcommand_has_help() -> None:
    names = {path for path, _ in all_commands()}
    expected = {
        "run",
        "demo",
        "stats",
        "ls",
        "show",
        "evict",
        "invalidate",
        "clear",
        "vacuum",
        "doctor",
        "sql",
        "db",
        "config",
        "warm",
        ("db", "upgrade"),
        ("db", "downgrade"),
        ("db", "current"),
        ("db", "history"),
        "tables",
        "schema",
        ("config", "set"),
        ("config", "unset"),
        "server",
        ("server", "start"),
        ("server", "stop"),
        ("server", "status"),
    }
    assert names == {(n,) if isinstance(n, str) else n for n in expected}
    for path, command in all_commands():
        assert command.help and command.get_short_help_str().strip(), path
        result = ok(invoke(None, *path, "--help"))
        assert result.stdout.startswith(f"Usage: main {' '.join(path)}")
        assert command.help.split()[0] in result.stdout
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, (path, param.name)


def test_literal_choices_match_the_library() -> None:
    assert cli.KINDS == schema.KINDS and cli.POLICIES == schema.POLICIES
    # ls sorts by its column headers; each maps onto an order the store knows (instructions: sorted here, for now)
    headers = {column.title for column in ENTRY_COLUMNS}
    assert set(cli.SORTS) - {"created"} <= headers and set(cli.SORTS.values()) - {"n_instructions"} <= set(store.SORTS)
    assert config._DEFAULTS["max_entries"] == int(schema.DEFAULT_SETTINGS["max_entries"])
    assert config._DEFAULTS["max_bytes"] == int(schema.DEFAULT_SETTINGS["max_bytes"])
    assert config._DEFAULTS["policy"] == schema.DEFAULT_SETTINGS["policy"]


# -- error paths common to every command -----------------------------------------------------------


READ_COMMANDS = [
    ["stats"],
    ["ls"],
    ["show", "abc"],
    ["sql", "SELECT 1"],
    ["db", "current"],
    ["doctor"],
    ["evict", "--dry-run"],
]
WRITE_COMMANDS = [
    ["stats", "-z"],
    ["evict"],
    ["invalidate", "--stale"],
    ["clear", "--yes"],
    ["vacuum"],
    ["db", "downgrade", "base", "--yes"],
]


@pytest.mark.parametrize("args", READ_COMMANDS + WRITE_COMMANDS, ids=" ".join)
def test_a_missing_database_is_not_created(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "nowhere" / "bcache.db"
    clean_error(invoke(path, *args), f"no cache at {path}")
    assert not path.parent.exists()


def test_the_default_location_is_not_created_by_reading(tmp_path: Path) -> None:
    clean_error(invoke(None, "ls"), f"no cache at {tmp_path / '.zexus' / 'bcache.db'}")
    assert list((tmp_path / ".zexus").iterdir()) == []


@pytest.mark.parametrize("args", READ_COMMANDS[:-2] + WRITE_COMMANDS[:-1], ids=" ".join)
def test_a_garbage_database_is_one_clean_error(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "bcache.db"
    path.write_bytes(b"garbage!" * 1000)
    clean_error(invoke(path, *args), "not a SQLite database", "doctor --repair")
    assert path.read_bytes() == b"garbage!" * 1000


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (a)")
    conn.close()
    clean_error(invoke(path, "ls"), "not a zexus_bcache store")
    clean_error(invoke(path, "db", "upgrade"), "not a zexus_bcache store")


# -- a cache setting never stops a program; a read-only cache is said once --------------------------


def test_a_bad_setting_warns_once_and_the_program_runs(
    tmp_path: Path, sources: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config._warned.clear()
    (tmp_path / ".zexus" / "bcache.toml").write_text('max_entries = "lots"\npolcy = "lfu"\n')
    monkeypatch.setenv("ZEXUS_BCACHE_MAX_BYTES", "lots")
    result = ok(invoke(None, "run", str(sources[0])))
    assert "fact(5) = 120" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and len(set(warnings)) == 3, result.stderr
    assert any("polcy" in w and "did you mean policy" in w for w in warnings)
    with Store(tmp_path / ".zexus" / "bcache.db", read_only=True) as s:  # the defaults were used
        assert s.get_settings()["max_entries"] == config._DEFAULTS["max_entries"]


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the store see a cache it cannot write (as a file of another user's, or a read-only mount).

    The tests run as root, who may write anything: the store's own check (os.access) is what is faked.
    """
    real = os.access
    blocked: list[Path] = []

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and any(str(path).startswith(str(b)) for b in blocked):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return blocked.append


def test_a_read_only_cache(db: Path, sources: list[Path], tmp_path: Path, read_only: Any) -> None:
    new = tmp_path / "new.zx"
    new.write_text("print(7 * 6)\n")
    read_only(db.parent)
    result = ok(invoke(db, "run", "--timings", str(new)))
    assert "42" in result.stdout and "miss (compiled, not stored: the cache is read-only)" in result.stderr
    assert "compiled and stored" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("warning:")]) == 1
    clean_error(invoke(db, "warm", str(sources[0].parent)), "cannot warm", "read-only")
    clean_error(invoke(db, "db", "upgrade"), "cannot upgrade", "read-only")
    clean_error(invoke(db, "clear", "--yes"), "read-only")
    assert len(stored_keys(db)) == 4


def test_run_dev_null(tmp_path: Path) -> None:
    result = ok(invoke(tmp_path / "c.db", "run", "/dev/null"))
    assert "config file" not in result.stderr


def test_run_help_is_plain_text() -> None:
    text = ok(invoke(None, "run", "--help")).stdout
    assert "``" not in text and "zx run" in text


def test_the_cache_option_naming_a_directory(tmp_path: Path, sources: list[Path]) -> None:
    """`--cache .zexus doctor --repair` once moved the project's .zexus directory aside."""
    (tmp_path / ".zexus" / "bcache.toml").write_text("max_entries = 50\n")
    for args in (["doctor", "--repair"], ["stats"], ["ls"]):
        clean_error(invoke(tmp_path / ".zexus", *args), "is a directory")
    assert (tmp_path / ".zexus" / "bcache.toml").read_text() == "max_entries = 50\n"
    assert not list(tmp_path.glob(".zexus.broken*"))
    assert "fact(5) = 120" in ok(invoke(None, "run", str(sources[0]))).stdout
