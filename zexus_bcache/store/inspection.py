"""Reading what a store holds, and repairing it: counts, listings, inspection and doctor's checks."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from .. import constants
from ..errors import ConfigError
from . import migrate, queries
from .base import StoreBase, public

log = logging.getLogger("zexus_bcache")
_WARNED: set[tuple[str, str]] = set()


def _whole(value: Any, what: str, name: str) -> int:
    """A stored count as an int; one that is not a whole number (a hand edit) is 0, with one warning."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        if (name, what) not in _WARNED:
            _WARNED.add((name, what))
            log.warning("%s: %s holds %r, not a whole number; counting it as 0", name, what, value)
        return 0


class Inspection(StoreBase):
    """The read side of a Store (and the repairs doctor makes): Core statements on the backend's engine."""

    # -- reading -----------------------------------------------------------------------------

    @public
    def count(self) -> int:
        """How many entries are stored (kept by triggers: no scan)."""
        return self._totals()[0]

    @public
    def total_bytes(self) -> int:
        """The sum of all payload sizes (kept by triggers: no scan)."""
        return self._totals()[1]

    @public
    def totals(self) -> tuple[int, int]:
        """(entries, payload bytes), as the triggers keep them."""
        return self._totals()

    def _totals(self) -> tuple[int, int]:
        with self._backend.engine().connect() as conn:
            entries, total_bytes = conn.execute(queries.totals()).one()
        return _whole(entries, "totals.n_entries", self.name), _whole(total_bytes, "totals.total_bytes", self.name)

    @public
    def recount(self) -> tuple[int, int]:
        """Rebuild the totals from a scan of the entries (a repair); return them."""
        self._require_writable("recount")
        forget, fresh = queries.recount()
        with self._write_engine().begin() as conn:
            conn.execute(forget)
            conn.execute(fresh)
        return self._totals()

    @public
    def keys(self, kind: str | None = None, prefix: str | None = None) -> list[str]:
        """Every stored key (of one kind, starting with a prefix, if given), sorted."""
        with self._backend.engine().connect() as conn:
            return list(conn.scalars(queries.keys(kind, prefix)))

    @public
    def info(self, key: str) -> dict[str, Any] | None:
        """Every column but the payload, with this process's unflushed hits applied; None if absent."""
        with self._backend.engine().connect() as conn:
            row = conn.execute(queries.info(key)).first()
        return None if row is None else self._pending.applied(row._asdict())

    @public
    def entries(
        self,
        *,
        sort: str = "last_access",
        descending: bool = True,
        kind: str | None = None,
        path_glob: str | None = None,
        older_than: float | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """List entries like :meth:`info`, filtered, sorted (last_access/created_at/size/...) and limited.

        ``path_glob`` is an fnmatch pattern on source_path; ``older_than`` is seconds since last access.
        The order is the database's: unflushed hits of this process are shown but do not reorder.
        """
        if limit is not None and limit < 0:
            raise ConfigError(f"limit must be >= 0, not {limit!r}")
        criteria = {"kind": kind, "older_than": older_than, "fingerprint": fingerprint}
        query = queries.listing(sort, descending, limit, path_glob, **criteria)
        out: list[dict[str, Any]] = []
        with self._backend.engine().connect() as conn:
            for row in conn.execute(query):
                if limit is not None and len(out) >= limit:
                    break
                if path_glob is None or fnmatch.fnmatchcase(row.source_path, path_glob):
                    out.append(self._pending.applied(row._asdict()))
        return out

    @public
    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self._backend.engine().connect() as conn:
            return migrate.current_revision_of(conn)

    # -- maintenance and inspection ----------------------------------------------------------

    @public
    def query(
        self, statement: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one caller-written statement on a read-only connection; return (column names, rows).

        Parameters are bound (``:name``), never interpolated. On SQLite the connection is opened
        with ``mode=ro`` and ``PRAGMA query_only``, and an authorizer refuses anything but reading
        (writes, DDL, ATTACH, transactions, PRAGMAs that set a value, functions not on a list)
        before it runs; on PostgreSQL it is one prepared statement in a READ ONLY transaction, and
        functions with side effects are refused. It runs for at most ``timeout`` seconds (default
        10; StoreError when reached); Ctrl-C stops it (KeyboardInterrupt).
        """
        return self._backend.query(statement, dict(params or {}), timeout)

    @public
    def integrity_check(self) -> list[str]:
        """What SQLite's ``PRAGMA integrity_check`` reports as wrong (empty: fine; other dialects: empty)."""
        return self._backend.integrity_check()

    def iter_payloads(self, page: int = 256) -> Iterator[tuple[str, str, bytes]]:
        """Every entry's (key, checksum, payload), read a page at a time in key order."""
        after = ""
        while rows := self.payload_page(after, page):
            yield from rows
            after = rows[-1][0]

    @public
    def payload_page(self, after: str = "", page: int = 256) -> list[tuple[str, str, bytes]]:
        """Up to ``page`` (key, checksum, payload) rows with keys after ``after``, in key order."""
        with self._backend.engine().connect() as conn:
            rows = conn.execute(queries.payload_page(after, page))
            return [(str(key), str(digest), bytes(payload)) for key, digest, payload in rows]

    def file_size(self) -> int | None:
        """Bytes the SQLite database takes on disk (file and WAL); None for a server database."""
        return self._backend.file_size()

    @public
    def counters(self) -> dict[str, int]:
        """Every counter: what all processes persisted plus this process's unflushed deltas.

        A stored value that is not a whole number (written by hand) counts as 0, with one warning.
        """
        with self._backend.engine().connect() as conn:
            persisted: dict[str, Any] = dict(conn.execute(queries.counters()).all())
        pending = self._pending.counter_deltas()
        return {
            name: _whole(persisted.get(name, 0), f"counter {name}", self.name) + pending.get(name, 0)
            for name in constants.COUNTERS
        }

    @public
    def counters_zeroed_at(self) -> float | None:
        """When :meth:`reset_counters` last ran (seconds since the epoch); None if it never did."""
        with self._backend.engine().connect() as conn:
            value = conn.execute(queries.counter(queries.ZEROED_AT)).scalar()
        if value is None:
            return None
        return _whole(value, queries.ZEROED_AT, self.name) / 1000.0 or None

    @public
    def get_settings(self) -> dict[str, int | str]:
        """The current settings, read fresh from the database (max_entries, max_bytes, policy)."""
        with self._backend.engine().connect() as conn:
            return queries.read_settings(conn)
