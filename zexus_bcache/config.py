"""Effective settings, and where each came from (as ``ccache -p`` shows them).

Precedence, highest first: command line > environment > project config file > database > default.

The project config file is ``<project root>/.zexus/bcache.toml`` (see :mod:`zexus_bcache.location`
for how the project root is found), with top-level keys, all optional::

    path = ".zexus/bcache.db"   # the cache: a file path (relative to the project root) or a URL
    max_entries = 100000        # store limit, 0 = unlimited
    max_bytes = "256M"          # store limit in bytes, or with a unit: K, M, G, T (powers of 1024)
    policy = "lru"              # eviction order: "lru" or "lfu"
    max_memory_mb = 100         # the in-memory front tier of each process
    shared_url = "postgresql://ci@cache-db/zexus"   # a shared tier behind the local cache (docs/SHARED.md)
    shared_read_only = false    # true: only read the shared tier (untrusted builds)
    shared_key_file = "~/.config/zexus/shared.key"  # the shared tier's HMAC key (or shared_key = "...")

The environment variables are ``ZEXUS_BCACHE_PATH``, ``ZEXUS_BCACHE_MAX_ENTRIES``,
``ZEXUS_BCACHE_MAX_BYTES``, ``ZEXUS_BCACHE_POLICY``, ``ZEXUS_BCACHE_MAX_MEMORY_MB``, and for the
shared tier ``ZEXUS_BCACHE_SHARED_URL``, ``ZEXUS_BCACHE_SHARED_READ_ONLY``,
``ZEXUS_BCACHE_SHARED_KEY`` and ``ZEXUS_BCACHE_SHARED_KEY_FILE``.

The store limits (max_entries, max_bytes, policy) live in the database, so that every process
using it enforces the same ones; :func:`pending_updates` says which of them a command that writes
should store there because the environment or the config file asks for other values.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import trust
from .constants import DEFAULT_SETTINGS, POLICIES
from .errors import ConfigError
from .location import CACHE_DIR_NAME, DB_NAME, ENV_PATH, project_root

log = logging.getLogger("zexus_bcache")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """One warning per message in a process: a setting problem must not flood a run's stderr."""
    if message not in _warned:
        _warned.add(message)
        log.warning("zexus_bcache: %s", message)


CONFIG_NAME = "bcache.toml"
ENV_PREFIX = "ZEXUS_BCACHE_"
STORE_SETTINGS = ("max_entries", "max_bytes", "policy")
"""Settings the database keeps (see :data:`zexus_bcache.schema.DEFAULT_SETTINGS`)."""
SHARED_SETTINGS = ("shared_url", "shared_read_only", "shared_key", "shared_key_file")
"""The shared tier (see :mod:`zexus_bcache.shared`); "" means not set."""
NAMES = ("path", *STORE_SETTINGS, "max_memory_mb", *SHARED_SETTINGS)
SECRET_SETTINGS = frozenset({"shared_key"})
"""Settings never shown in full (the config command masks them)."""
SOURCES = ("command line", "environment", "config file", "database", "default")

_DEFAULTS: dict[str, Any] = {
    "max_entries": int(DEFAULT_SETTINGS["max_entries"]),
    "max_bytes": int(DEFAULT_SETTINGS["max_bytes"]),
    "policy": DEFAULT_SETTINGS["policy"],
    "max_memory_mb": 100.0,
    "shared_url": "",
    "shared_read_only": False,
    "shared_key": "",
    "shared_key_file": "",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_POLICIES = POLICIES
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)", re.IGNORECASE)


@dataclass(frozen=True)
class Setting:
    """One effective setting: its typed value, which source gave it, and where exactly (origin)."""

    name: str
    value: Any
    source: str
    origin: str = ""


def parse_size(value: object) -> int:
    """Bytes from 1048576, "512K", "10MB", "1.5GiB" (units are powers of 1024); raise ConfigError."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(str(value).strip()) if isinstance(value, (str, float)) else None
    if match is None:
        raise ConfigError(f"not a size: {value!r} (use bytes, or a number with K, M, G or T, e.g. 512K or 10MB)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def parse_duration(value: object) -> float:
    """Seconds from "90s", "45m", "12h", "30d", "2w", "1h30m" or a plain number of seconds; raise ConfigError."""
    text = str(value).strip()
    parts = list(_DURATION_PART.finditer(text))
    spelled = "".join(p.group(0) for p in parts).replace(" ", "") == text.replace(" ", "")
    if not text or not spelled or (len(parts) > 1 and not all(p.group(2) for p in parts)):
        raise ConfigError(f"not a duration: {value!r} (use e.g. 90s, 45m, 12h, 30d or 2w)")
    return sum(float(p.group(1)) * _DURATION_UNITS[(p.group(2) or "s").lower()] for p in parts)


def config_file(start: str | os.PathLike[str] | None = None) -> Path:
    """Where the project config file is (or would be): ``<project root>/.zexus/bcache.toml``."""
    return project_root(start) / CACHE_DIR_NAME / CONFIG_NAME


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a config file, validated and typed (relative paths resolved against the project root).

    A file another user could have written is ignored, with one warning (docs/TRUST.md).
    """
    refusal = trust.refusal(path, "config file") if os.path.lexists(path) else None
    if refusal:
        _warn_once(refusal + "; ignoring it")
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    unknown = sorted(set(data) - set(NAMES))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    # A relative path in the file is relative to the project root (the parent of .zexus/).
    return {name: _typed(name, raw, str(path), base=path.parent.parent) for name, raw in data.items()}


def resolve(
    command_line: Mapping[str, Any] | None = None,
    *,
    start: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    database: Callable[[str | Path], Mapping[str, Any] | None] | None = None,
) -> dict[str, Setting]:
    """Every setting with its source. ``command_line`` maps names to values given as options (None = not
    given); ``database(location)`` returns the settings stored in the database there, or None."""
    environ = os.environ if environ is None else environ
    given = {name: value for name, value in (command_line or {}).items() if value is not None}
    file = config_file(start)
    from_file = read_config_file(file)
    out: dict[str, Setting] = {}
    for name in NAMES:
        env_name = ENV_PATH if name == "path" else ENV_PREFIX + name.upper()
        if name in given:
            out[name] = Setting(name, _typed(name, given[name], "command line"), "command line", _option(name))
        elif environ.get(env_name, "").strip():
            out[name] = Setting(name, _typed(name, environ[env_name], env_name), "environment", env_name)
        elif name in from_file:
            out[name] = Setting(name, from_file[name], "config file", str(file))
        elif name == "path":
            out[name] = Setting(name, project_root(start) / CACHE_DIR_NAME / DB_NAME, "default")
        else:
            out[name] = Setting(name, _DEFAULTS[name], "default")
    stored = database(out["path"].value) if database is not None else None
    for name in STORE_SETTINGS:
        if stored is not None and out[name].source == "default" and stored[name] != _DEFAULTS[name]:
            out[name] = Setting(name, stored[name], "database", str(out["path"].value))
    return out


def pending_updates(settings: Mapping[str, Setting], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Store settings that the environment or the config file set to other values than the database's."""
    return {
        name: settings[name].value
        for name in STORE_SETTINGS
        if settings[name].source in ("environment", "config file") and settings[name].value != stored.get(name)
    }


def _option(name: str) -> str:
    return {"path": "--cache", "shared_url": "--shared"}.get(name, "--" + name.replace("_", "-"))


def _typed(name: str, raw: Any, origin: str, base: Path | None = None) -> Any:
    """One setting's value checked and typed (a relative path made absolute against ``base``,
    default the working directory); errors name where the value came from."""
    try:
        if name == "path":
            if not isinstance(raw, (str, Path)) or not str(raw).strip():
                raise ConfigError(f"path must be a file path or a database URL, not {raw!r}")
            text = str(raw).strip()
            if "://" in text:
                return text
            return Path(os.path.abspath(Path(base or Path.cwd()) / Path(text).expanduser()))
        if name == "max_bytes":
            return parse_size(raw)
        if name == "max_entries":
            number = int(str(raw).strip()) if not isinstance(raw, (bool, float)) else -1
            if number < 0:
                raise ValueError
            return number
        if name == "policy":
            policy = str(raw).strip().lower()
            if policy not in _POLICIES:
                raise ConfigError(f"policy must be one of {', '.join(_POLICIES)}, not {raw!r}")
            return policy
        if name == "max_memory_mb":
            number = float(str(raw).strip()) if not isinstance(raw, bool) else -1.0
            if not number >= 0:
                raise ValueError
            return number
        if name == "shared_url":
            text = str(raw).strip()
            if text and "://" not in text:
                raise ConfigError(f"shared_url must be a database URL (postgresql://user@host/db), not {raw!r}")
            return text
        if name == "shared_read_only":
            if isinstance(raw, bool):
                return raw
            flag = str(raw).strip().lower()
            if flag not in _TRUE | _FALSE:
                raise ConfigError(f"shared_read_only must be true or false (1/0, yes/no), not {raw!r}")
            return flag in _TRUE
        if name == "shared_key":
            return str(raw).strip()
        if name == "shared_key_file":
            text = str(raw).strip()
            return str(Path(os.path.abspath(Path(base or Path.cwd()) / Path(text).expanduser()))) if text else ""
    except ValueError:
        raise ConfigError(f"{origin}: {name} must be a number >= 0, not {raw!r}") from None
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    raise ConfigError(f"unknown setting {name!r}; known: {', '.join(NAMES)}")


def cache_arguments(settings: Mapping[str, Setting]) -> dict[str, Any]:
    """BytecodeCache's keyword arguments for these settings: location, front bound and shared tier."""
    location = settings["path"].value
    kwargs: dict[str, Any] = {"url": location} if isinstance(location, str) else {"path": location}
    kwargs["max_memory_mb"] = settings["max_memory_mb"].value
    if settings["shared_url"].value:
        kwargs.update(
            shared=settings["shared_url"].value,
            shared_read_only=settings["shared_read_only"].value,
            shared_key=shared_key(settings),
        )
    return kwargs


def shared_key(settings: Mapping[str, Setting]) -> bytes | None:
    """The shared tier's HMAC key: the shared_key setting, else the content of shared_key_file; None if neither."""
    return _key_from(settings["shared_key"].value, settings["shared_key_file"].value, settings["shared_key_file"].origin)


def shared_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key from ZEXUS_BCACHE_SHARED_KEY or the file named by ZEXUS_BCACHE_SHARED_KEY_FILE; None if neither."""
    environ = os.environ if environ is None else environ
    name = ENV_PREFIX + "SHARED_KEY_FILE"
    file = environ.get(name, "").strip()
    return _key_from(environ.get(ENV_PREFIX + "SHARED_KEY", ""), os.path.expanduser(file), name)


def _key_from(key: str, file: str, origin: str) -> bytes | None:
    if key.strip():
        return key.strip().encode("utf-8")
    if not file:
        return None
    try:
        data = Path(file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read the shared key file {file}: {exc.strerror or exc}") from None
    if not data:
        raise ConfigError(f"{origin}: the shared key file {file} is empty")
    return data
