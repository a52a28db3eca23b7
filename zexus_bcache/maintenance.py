"""Looking after a cache database: stored settings, stale entries, revision status, doctor and repair.

The library half of the maintenance commands (no click): every function takes a location (a path
or a URL) or an open Store and returns plain data; progress is reported through a callback.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import keys, trust
from .errors import BcacheError, ConfigError, SchemaTooNewError, StoreError

if TYPE_CHECKING:
    from .store import Store

Progress = Callable[[int, int | None], None]
"""progress(done, total): called as work advances (total None when unknown)."""

_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def _no_progress(_done: int, _total: int | None) -> None:
    pass


# -- locations -----------------------------------------------------------------------------------


def database_problem(location: str | Path) -> str | None:
    """Why a SQLite location cannot be an existing cache ("no cache at", a directory); None if it can."""
    from .store import sqlite_path

    path = sqlite_path(location)
    if path is None:
        return None
    if path.is_dir():
        return f"{path} is a directory, not a cache database (give the file, e.g. {path / 'bcache.db'})"
    if not path.exists():
        return f"no cache at {path}"
    return None


def stored_settings(location: str | Path) -> dict[str, Any] | None:
    """The settings kept in an existing database, or None (no database, or one we cannot read)."""
    from .store import Store

    if database_problem(location) is not None:
        return None
    try:
        with Store(location, read_only=True) as store:
            return store.get_settings()
    except BcacheError:
        return None


# -- schema revisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionStatus:
    """Where a database's schema stands against this package's migrations."""

    revision: str | None
    head: str
    state: str  # "current", "empty", "older" or "newer"

    @property
    def message(self) -> str:
        return {
            "current": "up to date",
            "empty": "empty: run `zexus-bcache db upgrade`",
            "older": "older: run `zexus-bcache db upgrade`",
            "newer": "newer than this zexus_bcache: upgrade the package",
        }[self.state]


def classify_revision(revision: str | None) -> RevisionStatus:
    """A revision classified by the store's one classification: current, empty, older or newer."""
    from . import store

    head = store.head_revision()
    return RevisionStatus(revision, head, store.revision_status(revision, head).value)


def revision_status(location: str | Path) -> RevisionStatus:
    """The revision of an existing database, classified (StoreError if it cannot be read)."""
    from . import store

    return classify_revision(store.current_revision(location))


def open_hint(exc: BcacheError, location: str | Path) -> str:
    """What to run when a database cannot be opened: upgrade its schema, or repair it."""
    if isinstance(exc, SchemaTooNewError) or "refusing to use" in str(exc):
        return ""
    try:
        status = revision_status(location)
    except BcacheError:
        return " (`zexus-bcache doctor --repair` moves a broken database aside)"
    return " (run `zexus-bcache db upgrade`)" if status.state in ("older", "empty") else ""


def migrate(location: str | Path, revision: str = "head", *, down: bool = False) -> tuple[str | None, str | None]:
    """Upgrade (or downgrade) the schema; a database this process cannot write is a clear StoreError."""
    from . import store

    if down:
        before = store.current_revision(location)
        if before is not None and classify_revision(before).state == "newer":
            raise SchemaTooNewError(f"{location}: written by a newer zexus_bcache; nothing was changed")
    path = store.sqlite_path(location)
    problem = store.write_problem(path) if path is not None else None
    if problem:
        raise StoreError(
            f"{location}: cannot {'downgrade' if down else 'upgrade'}: the cache is read-only here ({problem})"
        )
    with _clean_database_errors(location, "downgrade" if down else "upgrade"):
        return store.downgrade(location, revision) if down else store.upgrade(location, revision)


@contextlib.contextmanager
def _clean_database_errors(location: str | Path, what: str) -> Iterator[None]:
    """A driver's error (SQLAlchemy's two lines and a link) as one StoreError sentence."""
    try:
        yield
    except BcacheError:
        raise
    except Exception as exc:
        import sqlalchemy as sa

        if not isinstance(exc, sa.exc.SQLAlchemyError):
            raise
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "readonly" in reason.replace("-", "").replace(" ", "").lower():
            reason = "the cache is read-only here (its file or directory is not writable by you)"
        raise StoreError(f"{location}: cannot {what}: {reason}") from None


# -- stale entries and other compilers -----------------------------------------------------------


def content_hash(data: bytes) -> str:
    """The content hash BytecodeCache stores with an entry (keys.content_hash)."""
    return keys.content_hash(data)


def content_hashes(path: Path) -> set[str] | None:
    """The hashes an entry made from this file's current content can carry; None if it is gone.

    File entries hash the file's bytes; compile_file entries its text as read with universal
    newlines; both are accepted.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    hashes = {content_hash(data)}
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError:
        return hashes
    return hashes | {content_hash(text.encode("utf-8", "surrogatepass"))}


def stale_keys(store: Store) -> list[str]:
    """Entries whose source file is gone, or no longer has the content they were made from."""
    current: dict[str, set[str] | None] = {}
    stale = []
    for entry in store.entries(path_glob="*"):
        path = entry["source_path"]
        if path not in current:
            current[path] = content_hashes(Path(path))
        hashes = current[path]
        if hashes is None or (entry["source_hash"] is not None and entry["source_hash"] not in hashes):
            stale.append(entry["key"])
    return stale


def current_fingerprints() -> set[str]:
    """The compiler fingerprints this zexus and zexus_bcache make (any optimize setting, VM or evaluator)."""
    from . import keys

    return {keys.compiler_fingerprint(optimize=o, compiler=c) for o in (True, False) for c in ("vm", "evaluator")}


def entries_for_path(store: Store, path: Path) -> list[dict[str, Any]]:
    """Entries compiled from a file, or from files under a directory."""
    path = path.resolve()
    if path.is_dir():
        return store.entries(path_glob=os.path.join(glob.escape(str(path)), "*"))
    return [e for e in store.entries(path_glob=glob.escape(str(path))) if e["source_path"] == str(path)]


def find_key(store: Store, prefix: str) -> str:
    """The one key starting with ``prefix``; ConfigError for none or several."""
    prefix = prefix.strip().lower()
    if not prefix:
        raise ConfigError("give a key prefix (see `zexus-bcache ls`)")
    keys = store.keys(prefix=prefix)
    if not keys:
        raise ConfigError(f"no entry has a key starting with {prefix!r} (see `zexus-bcache ls`)")
    if len(keys) > 1:
        shown = []
        for key in keys[:8]:
            info = store.info(key) or {}
            shown.append(f"{key[:16]} ({info.get('kind', '?')} {display_path(info.get('source_path'))})")
        more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        raise ConfigError(
            f"ambiguous key prefix {prefix!r}: {len(keys)} entries match: {', '.join(shown)}{more};"
            " give more characters"
        )
    return str(keys[0])


def display_path(path: Any) -> str:
    """A source path relative to the working directory when it is inside it."""
    if path is None:
        return "-"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- doctor ----------------------------------------------------------------------------------------


@dataclass
class Diagnosis:
    """What doctor found: the checks as rows, and what a repair must do."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    broken: bool = False  # cannot be opened, or fails integrity_check: move it aside
    outdated: bool = False  # an older schema: upgrade it
    too_new: bool = False  # written by a newer zexus_bcache: leave it alone
    untrusted: str | None = None  # others could write it: chmod, never move it
    bad_payloads: dict[str, str] = field(default_factory=dict)  # key -> what is wrong

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})

    @property
    def problems(self) -> int:
        return sum(not c["ok"] for c in self.checks)


def diagnose(location: str | Path, progress: Progress = _no_progress) -> Diagnosis:
    """Check trust, schema revision, SQLite integrity and every payload."""
    from . import store as store_mod

    found = Diagnosis()
    path = store_mod.sqlite_path(location)
    allow = False
    if path is not None:
        refusal = trust.problem(path, side_files=_SIDE_SUFFIXES) if not trust.allowed_by_env() else None
        if refusal:
            found.untrusted = refusal
            found.check("trust", False, f"{refusal}: make it private with `{chmod_hint(path)}`")
            allow = True  # read it anyway, read-only, to check the rest: nothing in it is executed
    try:
        revision = _revision(location, allow)
    except BcacheError as exc:
        found.broken = True
        found.check("open", False, str(exc))
        return found
    status = classify_revision(revision)
    if status.state != "current":
        found.too_new = status.state == "newer"
        found.outdated = not found.too_new
        needs = "upgrade zexus_bcache" if found.too_new else "run `zexus-bcache db upgrade`"
        found.check("schema", False, f"revision {revision or 'base'}, this package's is {status.head}: {needs}")
        return found
    found.check("schema", True, f"revision {revision}")
    try:
        with store_mod.Store(location, read_only=True, allow_world_writable=allow) as store:
            _check_contents(store, found, progress)
    except BcacheError as exc:  # it opened, then failed to read: damaged
        found.broken = True
        found.check("read", False, str(exc))
    return found


def _revision(location: str | Path, allow_untrusted: bool) -> str | None:
    from . import store as store_mod

    if not allow_untrusted:
        return store_mod.current_revision(location)
    with store_mod.Store(location, read_only=True, allow_world_writable=True) as store:
        return store.revision()


def _check_contents(store: Store, found: Diagnosis, progress: Progress) -> None:
    from . import codec
    from . import store as store_mod

    problems = store.integrity_check()
    found.broken = bool(problems)
    checked = "PRAGMA integrity_check: ok" if store.dialect == "sqlite" else "the server checks its own pages"
    found.check("integrity", not problems, "; ".join(problems[:5]) or checked)
    total = store.totals()[0]
    scanned = 0
    progress(0, total)
    for key, digest, payload in store.iter_payloads():
        scanned += 1
        try:
            if store_mod.checksum(payload) != digest:
                raise BcacheError("checksum mismatch")
            codec.check(payload)
        except BcacheError as exc:
            found.bad_payloads[key] = str(exc)
        progress(scanned, max(total, scanned))
    shown = "; ".join(f"{k[:12]}: {why}" for k, why in list(found.bad_payloads.items())[:5])
    damaged = f", {len(found.bad_payloads)} damaged: {shown}" if found.bad_payloads else ""
    found.check("payloads", not found.bad_payloads, f"{scanned} checked{damaged}")


def chmod_hint(path: Path) -> str:
    """The command that makes a cache (its directory, file and side files) private again."""
    return f"chmod go-w {path.parent} {path}*"


def repair(location: str | Path, found: Diagnosis) -> list[str]:
    """Fix what diagnose found; return what was done. Never moves a directory or a cache that is only untrusted."""
    from . import store as store_mod

    done: list[str] = []
    if found.untrusted:
        done.append(f"not repaired: {found.untrusted}; make it private with `{chmod_hint(Path(str(location)))}`")
        return done  # writing into a cache others can write would bless what they may have planted
    if found.broken:
        path = store_mod.sqlite_path(location)
        if path is None:
            raise StoreError(f"{location}: a server database cannot be moved aside; repair it with its own tools")
        if not path.is_file():
            raise StoreError(f"{path} is not a database file; nothing was moved")
        moved = store_mod.move_aside(path)
        store_mod.Store(path).close()  # a fresh, migrated database
        return [f"moved the broken database to {moved} and started a fresh one"]
    if found.outdated:
        before, after = migrate(location)
        return [f"upgraded the schema from {before or 'base'} to {after}"]
    if not found.bad_payloads:
        return []
    with store_mod.Store(location) as store:
        removed = store.delete_many(found.bad_payloads)
    return [f"removed {plural(removed, 'entry', 'entries')} with a damaged payload"]


def plural(n: int, singular: str, many: str | None = None) -> str:
    """ "1 entry", "2 entries"."""
    return f"{n} {singular if n == 1 else (many or singular + 's')}"


# -- usage against the limits ------------------------------------------------------------------------


def usage(entries: int, total_bytes: int, settings: Mapping[str, Any]) -> dict[str, float | None]:
    """How full the store is: percent of max_entries and of max_bytes (None: unlimited)."""

    def percent(used: int, limit: Any) -> float | None:
        return round(100.0 * used / int(limit), 2) if limit else None

    return {
        "entries_used_percent": percent(entries, settings.get("max_entries")),
        "bytes_used_percent": percent(total_bytes, settings.get("max_bytes")),
    }
