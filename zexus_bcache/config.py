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

The environment variables are ``ZEXUS_BCACHE_<NAME>`` (``ZEXUS_BCACHE_PATH``, ``ZEXUS_BCACHE_MAX_ENTRIES``, ...).

Every setting is checked by one parser in :data:`PARSERS`. A bad value in the environment or the file
is a warning (once) and is ignored: a cache setting never stops a program. A bad value given on
the command line is an error. The store limits (max_entries, max_bytes, policy) live in the
database, so that every process using it enforces the same ones.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

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
"""Settings the database keeps (see :data:`zexus_bcache.constants.DEFAULT_SETTINGS`)."""
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
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# Patterns, not compiled regexes: compiling them costs ~1 ms at import, on every run's path; the re
# module compiles (and caches) each one on its first use, which a run usually never makes.
_SIZE = r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)"
_URL_PASSWORD = r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:)[^@/?#]*@"


class Setting(NamedTuple):
    """One effective setting: its typed value, which source gave it, and where exactly (origin).

    A NamedTuple, not a frozen dataclass: every run resolves its settings, and defining a frozen
    dataclass costs ~2 ms there (a NamedTuple ~0.3 ms).
    """

    name: str
    value: Any
    source: str
    origin: str = ""


def parse_size(value: object) -> int:
    """Bytes from 1048576, "512K", "10MB", "1.5GiB" (units are powers of 1024); raise ConfigError."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(_SIZE, str(value).strip(), re.IGNORECASE) if isinstance(value, (str, float)) else None
    if match is None:
        raise ConfigError(f"not a size: {value!r} (use bytes, or a number with K, M, G or T, e.g. 512K or 10MB)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def parse_duration(value: object) -> float:
    """Seconds from "90s", "45m", "12h", "30d", "2w", "1h30m" or a plain number of seconds; raise ConfigError."""
    text = str(value).strip()
    parts = list(re.finditer(_DURATION_PART, text, re.IGNORECASE))
    spelled = "".join(p.group(0) for p in parts).replace(" ", "") == text.replace(" ", "")
    if not text or not spelled or (len(parts) > 1 and not all(p.group(2) for p in parts)):
        raise ConfigError(f"not a duration: {value!r} (use e.g. 90s, 45m, 12h, 30d or 2w)")
    return sum(float(p.group(1)) * _DURATION_UNITS[(p.group(2) or "s").lower()] for p in parts)


# -- the one table of typed setting parsers ------------------------------------------------------
# Each takes the raw value (text from the environment or the command line, a TOML value, a stored
# string) and the directory a relative path is relative to; it returns the typed value or raises
# ConfigError naming the setting (the caller adds where the value came from).


def _path(raw: Any, base: Path) -> str | Path:
    if not isinstance(raw, (str, Path)) or not str(raw).strip():
        raise ConfigError(f"path must be a file path or a database URL, not {raw!r}")
    text = str(raw).strip()
    return text if "://" in text else Path(os.path.abspath(base / Path(text).expanduser()))


def _whole(raw: Any, _base: Path) -> int:
    try:
        number = int(str(raw).strip()) if not isinstance(raw, (bool, float)) else -1
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"max_entries must be a whole number >= 0, not {raw!r}")
    return number


def _size(raw: Any, _base: Path) -> int:
    try:
        return parse_size(raw)
    except ConfigError as exc:
        raise ConfigError(f"max_bytes: {exc}") from None


def _policy(raw: Any, _base: Path) -> str:
    policy = str(raw).strip().lower()
    if policy not in POLICIES:
        raise ConfigError(f"policy must be one of {', '.join(POLICIES)}, not {raw!r}")
    return policy


def _megabytes(raw: Any, _base: Path) -> float:
    try:
        number = float(str(raw).strip()) if not isinstance(raw, bool) else -1.0
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise ConfigError(f"max_memory_mb must be a number >= 0, not {raw!r}")
    return number


def _url(raw: Any, _base: Path) -> str:
    text = str(raw).strip()
    if text and "://" not in text:
        raise ConfigError(f"shared_url must be a database URL (postgresql://user@host/db), not {raw!r}")
    return text


def _flag(raw: Any, _base: Path) -> bool:
    if isinstance(raw, bool):
        return raw
    flag = str(raw).strip().lower()
    if flag not in _TRUE | _FALSE:
        raise ConfigError(f"shared_read_only must be true or false (1/0, yes/no), not {raw!r}")
    return flag in _TRUE


def _text(raw: Any, _base: Path) -> str:
    return str(raw).strip()


def _file(raw: Any, base: Path) -> str:
    text = str(raw).strip()
    return str(Path(os.path.abspath(base / Path(text).expanduser()))) if text else ""


PARSERS: dict[str, Callable[[Any, Path], Any]] = {
    "path": _path,
    "max_entries": _whole,
    "max_bytes": _size,
    "policy": _policy,
    "max_memory_mb": _megabytes,
    "shared_url": _url,
    "shared_read_only": _flag,
    "shared_key": _text,
    "shared_key_file": _file,
}
"""Every setting's parser: the only place a setting's value is checked."""


def parse_setting(name: str, raw: Any, base: str | os.PathLike[str] | None = None) -> Any:
    """One setting's value checked and typed (a relative path made absolute against ``base``,
    default the working directory); raise ConfigError."""
    parser = PARSERS.get(name)
    if parser is None:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(NAMES)}{_did_you_mean(name)}")
    return parser(raw, Path(base) if base is not None else Path.cwd())


def _did_you_mean(name: str) -> str:
    import difflib  # only for a misspelt setting: ~1 ms to import on every run otherwise

    close = difflib.get_close_matches(name, NAMES, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def display(name: str, value: Any) -> Any:
    """A value as the config command shows it: secrets hidden, passwords in URLs masked."""
    if name in SECRET_SETTINGS and value:
        return "(set, not shown)"
    if isinstance(value, str):
        return mask_url(value)
    return value


def mask_url(text: str) -> str:
    """A URL with its password replaced by ***: postgresql://user:***@host/db."""
    return re.sub(_URL_PASSWORD, r"\1***@", text)


# -- where settings come from --------------------------------------------------------------------


def _start_directory(start: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """A starting point that is a file of any kind (/dev/null too) starts from its directory."""
    if start is not None and os.path.exists(start) and not os.path.isdir(start):
        return os.path.dirname(os.path.abspath(start))
    return start


def config_file(start: str | os.PathLike[str] | None = None) -> Path:
    """Where the project config file is (or would be): ``<project root>/.zexus/bcache.toml``."""
    return project_root(_start_directory(start)) / CACHE_DIR_NAME / CONFIG_NAME


def read_config_file(path: Path, *, strict: bool = True) -> dict[str, Any]:
    """The settings in a config file, validated and typed (relative paths resolved against the project root).

    A file another user could have written is ignored, with one warning (docs/TRUST.md). Not
    strict: an unreadable file, an unknown key or a bad value is a warning and is left out.
    """
    refusal = trust.refusal(path, "config file") if os.path.lexists(path) else None
    if refusal:
        _warn_once(refusal + "; ignoring it")
        return {}
    try:
        f = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        _problem(f"{path}: cannot read the config file: {exc}", strict, "ignoring the file")
        return {}
    import tomllib  # only once a config file is open: ~3 ms to import, on the path of every run without one

    try:
        with f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _problem(f"{path}: cannot read the config file: {exc}", strict, "ignoring the file")
        return {}
    unknown = sorted(set(data) - set(NAMES))
    if unknown:
        hints = "".join(_did_you_mean(name) for name in unknown)
        _problem(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(NAMES)}{hints}",
            strict,
            "ignoring them",
        )
    out = {}
    for name, raw in data.items():
        if name in unknown:
            continue
        try:
            # A relative path in the file is relative to the project root (the parent of .zexus/).
            out[name] = parse_setting(name, raw, path.parent.parent)
        except ConfigError as exc:
            _problem(f"{path}: {exc}", strict, f"using the {_fallback(name)}")
    return out


def _problem(message: str, strict: bool, instead: str) -> None:
    if strict:
        raise ConfigError(message)
    _warn_once(f"{message}; {instead}")


def _fallback(name: str) -> str:
    return "next source" if name == "path" else f"default ({_DEFAULTS[name]!r}) or a lower source"


def resolve(
    command_line: Mapping[str, Any] | None = None,
    *,
    start: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    database: Callable[[str | Path], Mapping[str, Any] | None] | None = None,
    strict: bool = False,
) -> dict[str, Setting]:
    """Every setting with its source. ``command_line`` maps names to values given as options (None = not
    given); ``database(location)`` returns the settings stored in the database there, or None.

    A bad command-line value raises ConfigError. A bad value in the environment or the config file
    raises it only when ``strict``; otherwise it is one warning and the next source is used.
    """
    environ = os.environ if environ is None else environ
    start = _start_directory(start)
    given = {name: value for name, value in (command_line or {}).items() if value is not None}
    root = project_root(start)  # found once: the config file's place and the default path's
    file = root / CACHE_DIR_NAME / CONFIG_NAME
    from_file = read_config_file(file, strict=strict)
    out: dict[str, Setting] = {}
    for name in NAMES:
        env_name = ENV_PATH if name == "path" else ENV_PREFIX + name.upper()
        if name in given:
            out[name] = Setting(
                name, _checked(name, given[name], _option(name), strict=True), "command line", _option(name)
            )
            continue
        if environ.get(env_name, "").strip():
            value = _checked(name, environ[env_name], env_name, strict=strict)
            if value is not None:
                out[name] = Setting(name, value, "environment", env_name)
                continue
        if name in from_file:
            out[name] = Setting(name, from_file[name], "config file", str(file))
        elif name == "path":
            out[name] = Setting(name, root / CACHE_DIR_NAME / DB_NAME, "default")
        else:
            out[name] = Setting(name, _DEFAULTS[name], "default")
    stored = database(out["path"].value) if database is not None else None
    for name in STORE_SETTINGS:
        if (
            stored is not None
            and out[name].source == "default"
            and stored.get(name, _DEFAULTS[name]) != _DEFAULTS[name]
        ):
            out[name] = Setting(name, stored[name], "database", mask_url(str(out["path"].value)))
    return out


def _checked(name: str, raw: Any, origin: str, *, strict: bool) -> Any:
    """parse_setting with the origin in the message; not strict: a warning and None."""
    try:
        return parse_setting(name, raw)
    except ConfigError as exc:
        _problem(f"{origin}: {exc}", strict, f"ignoring it, using the {_fallback(name)}")
        return None


def _option(name: str) -> str:
    return {"path": "--cache", "shared_url": "--shared"}.get(name, "--" + name.replace("_", "-"))


# -- settings kept in the database ---------------------------------------------------------------


class SettingsStore(Protocol):
    """What the functions below need of a store (zexus_bcache.store.Store has it)."""

    def get_settings(self) -> dict[str, int | str]: ...

    def set_setting(self, name: str, value: int | str) -> None: ...


def pending_updates(settings: Mapping[str, Setting], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Store settings that the environment or the config file set to other values than the database's."""
    return {
        name: settings[name].value
        for name in STORE_SETTINGS
        if settings[name].source in ("environment", "config file") and settings[name].value != stored.get(name)
    }


def apply_settings(store: SettingsStore, settings: Mapping[str, Setting]) -> dict[str, Any]:
    """Store the limits that the environment or the config file set, so every process enforces them."""
    if not any(settings[name].source in ("environment", "config file") for name in STORE_SETTINGS):
        return {}
    updates = pending_updates(settings, store.get_settings())
    for name, value in updates.items():
        store.set_setting(name, value)
    return updates


def store_setting(store: SettingsStore, name: str, raw: Any) -> Any:
    """Keep one limit in the database (``config set``); None as raw puts the default back (``config unset``)."""
    if name not in STORE_SETTINGS:
        where = f"{ENV_PREFIX}{name.upper()} or {CONFIG_NAME}" if name in NAMES else "nowhere"
        raise ConfigError(
            f"{name!r} is not kept in the database (only {', '.join(STORE_SETTINGS)} are); set it in {where}"
            + (_did_you_mean(name) if name not in NAMES else "")
        )
    value = _DEFAULTS[name] if raw is None else parse_setting(name, raw)
    store.set_setting(name, value)
    return value


def overridden(settings: Mapping[str, Setting], name: str) -> Setting | None:
    """The setting that beats the database's value of ``name`` (environment or file), if any."""
    setting = settings.get(name)
    return setting if setting is not None and setting.source in ("command line", "environment", "config file") else None


# -- what BytecodeCache needs --------------------------------------------------------------------


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
    return _key_from(
        settings["shared_key"].value, settings["shared_key_file"].value, settings["shared_key_file"].origin
    )


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
