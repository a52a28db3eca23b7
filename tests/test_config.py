"""zexus_bcache.config: one table of setting parsers, sources and precedence, lenient warnings, masking."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from zexus_bcache import config, constants
from zexus_bcache.errors import ConfigError


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in config.NAMES:
        monkeypatch.delenv(config.ENV_PREFIX + name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".zexus").mkdir()
    config._warned.clear()  # each test sees its own warnings
    return tmp_path


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("512K", 512 * 1024),
        ("10MB", 10 * 1024**2),
        ("1.5GiB", 1536 * 1024**2),
        ("2 m", 2 * 1024**2),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert config.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("45m", 2700), ("12h", 43200), ("30d", 2592000), ("1h30m", 5400), ("15", 15)]
)
def test_durations(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "lots", "-5", "5x", "1.2.3"])
def test_bad_sizes_and_durations(bad: str) -> None:
    with pytest.raises(ConfigError):
        config.parse_size(bad)
    with pytest.raises(ConfigError):
        config.parse_duration(bad)


def test_one_parser_per_setting_and_defaults_match_the_schema() -> None:
    assert set(config.PARSERS) == set(config.NAMES)
    for name in config.STORE_SETTINGS:
        assert config.parse_setting(name, constants.DEFAULT_SETTINGS[name]) == config._DEFAULTS[name]
    assert config.parse_setting("max_bytes", "2G") == 2 * 1024**3 and config.parse_setting("policy", " LFU ") == "lfu"
    assert config.parse_setting("shared_read_only", "yes") is True
    for name, bad in [
        ("max_entries", "lots"),
        ("max_entries", -1),
        ("max_entries", True),
        ("policy", "fifo"),
        ("max_memory_mb", "x"),
        ("shared_url", "not a url"),
        ("shared_read_only", "maybe"),
        ("path", ""),
    ]:
        with pytest.raises(ConfigError, match=name):
            config.parse_setting(name, bad)
    with pytest.raises(ConfigError, match="did you mean policy"):
        config.parse_setting("polcy", "lru")


def test_bad_environment_and_file_values_warn_once_and_fall_back(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (project / ".zexus" / "bcache.toml").write_text('max_entries = "lots"\npolcy = "lfu"\nmax_bytes = "1M"\n')
    monkeypatch.setenv("ZEXUS_BCACHE_MAX_BYTES", "huge")
    monkeypatch.setenv("ZEXUS_BCACHE_POLICY", "fifo")
    settings = config.resolve()
    config.resolve()  # a second time: no second warning
    assert (
        settings["max_entries"].value == config._DEFAULTS["max_entries"] and settings["max_entries"].source == "default"
    )
    assert settings["max_bytes"].value == 1024**2 and settings["max_bytes"].source == "config file"  # the next source
    assert settings["policy"].value == "lru"
    found = warnings_of(caplog)
    assert len(found) == 4, found
    assert any("polcy" in w and "did you mean policy" in w for w in found)
    assert any("ZEXUS_BCACHE_MAX_BYTES" in w for w in found) and any("ZEXUS_BCACHE_POLICY" in w for w in found)
    with pytest.raises(ConfigError, match="max_entries"):
        config.resolve(strict=True)
    with pytest.raises(ConfigError, match="--max-entries"):  # a value typed on the command line is an error
        config.resolve({"max_entries": "lots"})


def test_an_unreadable_config_file_is_a_warning(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    (project / ".zexus" / "bcache.toml").write_text("max_bytes = = 3\n")
    assert config.resolve()["max_bytes"].source == "default"
    assert any("cannot read the config file" in w for w in warnings_of(caplog))


def test_a_device_or_file_as_the_starting_point(project: Path) -> None:
    """`run /dev/null`: the project is found from the file's directory, never under the file."""
    assert not str(config.config_file("/dev/null")).startswith("/dev/null/")
    settings = config.resolve(start="/dev/null")
    assert "/dev/null/" not in str(settings["path"].value)


def test_passwords_are_masked() -> None:
    assert (
        config.mask_url("postgresql+psycopg://ci:s3cret@db:5432/zexus") == "postgresql+psycopg://ci:***@db:5432/zexus"
    )
    assert config.mask_url("postgresql://ci@db/zexus") == "postgresql://ci@db/zexus"
    assert config.mask_url("/home/me/a:b@c.db") == "/home/me/a:b@c.db"
    assert config.display("shared_key", "k") == "(set, not shown)" and config.display("shared_key", "") == ""
    assert config.display("shared_url", "postgres://u:p@h/d") == "postgres://u:***@h/d"


class FakeStore:
    def __init__(self) -> None:
        self.settings: dict[str, int | str] = {"max_entries": 100000, "max_bytes": 256 * 1024**2, "policy": "lru"}

    def get_settings(self) -> dict[str, int | str]:
        return dict(self.settings)

    def set_setting(self, name: str, value: int | str) -> None:
        self.settings[name] = value


def test_store_setting_and_apply(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    assert config.store_setting(store, "max_bytes", "2G") == 2 * 1024**3 and store.settings["max_bytes"] == 2 * 1024**3
    assert config.store_setting(store, "max_bytes", None) == config._DEFAULTS["max_bytes"]
    with pytest.raises(ConfigError, match="not kept in the database"):
        config.store_setting(store, "path", "x.db")
    with pytest.raises(ConfigError, match="policy"):
        config.store_setting(store, "policy", "fifo")
    monkeypatch.setenv("ZEXUS_BCACHE_MAX_ENTRIES", "7")
    settings = config.resolve()
    assert config.apply_settings(store, settings) == {"max_entries": 7} and store.settings["max_entries"] == 7
    assert config.overridden(settings, "max_entries") is not None and config.overridden(settings, "policy") is None


def test_resolving_without_a_config_file_stays_light(project: Path) -> None:
    # Every run resolves its settings: tomllib (~3 ms) only when there is a file to read, difflib
    # only for a misspelt name. A new process, since this one may have imported them already.
    script = (
        "import sys\n"
        "from zexus_bcache import config\n"
        "assert config.resolve()['path'].source == 'default'\n"
        "print(sorted(m for m in ('tomllib', 'difflib', 'dataclasses') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    (project / ".zexus" / "bcache.toml").write_text("max_bytes = '1M'\n")
    assert config.resolve()["max_bytes"].value == 1024**2  # and with a file, it is read
