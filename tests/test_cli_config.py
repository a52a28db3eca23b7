"""The config command: effective settings, their sources, and config set/unset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    as_json,
    assert_shape,
    clean_error,
    invoke,
    ok,
)
from click.testing import Result

from zexus_bcache import config
from zexus_bcache.store import Store

pytestmark = pytest.mark.usefixtures("cli_project")


# -- config ------------------------------------------------------------------------------------------


def settings_of(result: Result) -> dict[str, Any]:
    data = json.loads(ok(result).stdout)
    assert_shape(data, {"config_file": str, "config_file_exists": bool, "settings": dict})
    for name, setting in data["settings"].items():
        assert name in config.NAMES
        assert_shape(setting, {"value": (str, int, float), "source": str, "origin": str})
    return data["settings"]


def test_config_defaults(tmp_path: Path) -> None:
    settings = settings_of(invoke(None, "config", "--json"))
    assert list(settings) == list(config.NAMES)
    assert settings["path"] == {"value": str(tmp_path / ".zexus" / "bcache.db"), "source": "default", "origin": ""}
    assert settings["max_bytes"]["value"] == 256 * 1024**2 and settings["policy"]["value"] == "lru"
    assert "(all keys optional)" in ok(invoke(None, "config", "--help")).stdout


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".zexus" / "bcache.toml").write_text(
        'path = "caches/project.db"\nmax_bytes = "10MB"\npolicy = "lfu"\nmax_entries = 7\nmax_memory_mb = 12.5\n'
    )
    monkeypatch.setenv("ZEXUS_BCACHE_MAX_ENTRIES", "50")
    settings = settings_of(invoke(None, "config", "--json"))
    assert settings["path"]["value"] == str(tmp_path / "caches" / "project.db")
    assert settings["path"]["source"] == "config file"
    assert settings["max_entries"] == {"value": 50, "source": "environment", "origin": "ZEXUS_BCACHE_MAX_ENTRIES"}
    assert settings["max_bytes"]["value"] == 10 * 1024**2 and settings["max_bytes"]["source"] == "config file"
    assert settings["max_memory_mb"]["value"] == 12.5
    monkeypatch.setenv("ZEXUS_BCACHE_PATH", str(tmp_path / "env.db"))
    assert settings_of(invoke(None, "config", "--json"))["path"]["source"] == "environment"
    assert settings_of(invoke(tmp_path / "cli.db", "config", "--json"))["path"] == {
        "value": str(tmp_path / "cli.db"),
        "source": "command line",
        "origin": "--cache",
    }
    table = ok(invoke(None, "config")).stdout
    assert "environment" in table and "config file" in table and "10.0 MiB" in table


def test_config_database_source_and_writes_store_the_limits(db: Path, tmp_path: Path) -> None:
    with Store(db) as s:
        s.set_setting("max_entries", 3)
    assert settings_of(invoke(db, "config", "--json"))["max_entries"] == {
        "value": 3,
        "source": "database",
        "origin": str(db),
    }
    (tmp_path / ".zexus" / "bcache.toml").write_text("max_entries = 2\n")
    ok(invoke(db, "evict"))  # a command that writes stores the file's limits for every process
    with Store(db, read_only=True) as s:
        assert s.get_settings()["max_entries"] == 2 and s.count() == 2


def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / ".zexus" / "bcache.toml"
    config_file.write_text("colour = 'blue'\n")
    clean_error(invoke(None, "config"), "unknown setting(s) colour")
    config_file.write_text("max_bytes = = 3\n")
    clean_error(invoke(None, "config"), "cannot read the config file")
    config_file.unlink()
    monkeypatch.setenv("ZEXUS_BCACHE_POLICY", "fifo")
    clean_error(invoke(None, "config"), "ZEXUS_BCACHE_POLICY", "policy must be one of lru, lfu")


def test_config_set_and_unset(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = ok(invoke(db, "config", "set", "max_bytes", "2G"))
    assert "max_bytes = 2.0 GiB (2147483648 bytes)" in result.stdout
    assert settings_of(invoke(db, "config", "--json"))["max_bytes"] == {
        "value": 2 * 1024**3,
        "source": "database",
        "origin": str(db),
    }
    assert as_json(invoke(db, "stats", "--json"))["max_bytes"] == 2 * 1024**3
    ok(invoke(db, "config", "set", "policy", "LFU"))
    assert "(the default)" in ok(invoke(db, "config", "unset", "max_bytes")).stdout
    with Store(db, read_only=True) as s:
        assert s.get_settings() == {"max_entries": 100000, "max_bytes": 256 * 1024**2, "policy": "lfu"}
    clean_error(invoke(db, "config", "set", "max_bytes", "lots"), "not a size")
    clean_error(invoke(db, "config", "set", "path", "x.db"), "not kept in the database")
    clean_error(invoke(db, "config", "set", "polcy", "lru"), "did you mean policy")
    monkeypatch.setenv("ZEXUS_BCACHE_MAX_ENTRIES", "9")
    beaten = ok(invoke(db, "config", "set", "max_entries", "5"))
    assert "ZEXUS_BCACHE_MAX_ENTRIES sets max_entries = 9" in beaten.stderr
    fresh = tmp_path / "new" / "c.db"
    ok(invoke(fresh, "config", "set", "max_entries", "3"))  # like ccache -M: works before the first run
    with Store(fresh, read_only=True) as s:
        assert s.get_settings()["max_entries"] == 3


def test_config_masks_passwords(tmp_path: Path) -> None:
    url = "postgresql://ci:s3cret-pw@localhost:1/zexus"
    for args in (["config"], ["config", "--json"]):
        out = ok(invoke(None, "--shared", url, *args)).stdout
        assert "s3cret-pw" not in out and "ci:***@localhost" in out
