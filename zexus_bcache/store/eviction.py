"""Evicting on demand: entries beyond the limits (read fresh from the settings) go in policy order."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import queries
from .base import StoreBase, public


class Eviction(StoreBase):
    """What :meth:`Store.evict` and ``zexus-bcache evict`` run (a put evicts by itself: limits.py)."""

    @public
    def evict(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        policy: str | None = None,
        *,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Remove entries beyond the limits in policy order; return their keys, first evicted first.

        Limits and policy not given are read fresh from the ``settings`` table; 0 = unlimited.
        See :meth:`evict_report` for ``older_than`` and ``dry_run``.
        """
        report = self.evict_report(max_entries, max_bytes, policy, older_than=older_than, dry_run=dry_run)
        return [row["key"] for row in report]

    @public
    def evict_report(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        policy: str | None = None,
        *,
        older_than: float | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Evict like :meth:`evict`; return a row per entry (key, kind, source_path, payload_size,
        last_access, access_count and a ``reason``: ``"age"`` or ``"limits"``), first evicted first.

        ``older_than`` (seconds) first removes every entry unused for that long, then the limits
        are enforced on the rest. ``dry_run`` computes the same rows and deletes nothing (it also
        works on a read-only store).
        """
        import sqlalchemy as sa

        if not dry_run:
            self._require_writable("evict")
        asked = {"max_entries": max_entries, "max_bytes": max_bytes, "policy": policy}
        given = {name: queries.parse_setting(name, value) for name, value in asked.items() if value is not None}
        if older_than is not None and not float(older_than) >= 0:
            raise ConfigError(f"older_than must be a number of seconds >= 0, not {older_than!r}")
        self.flush()  # so the order sees this process's recent hits
        engine = self._backend.engine() if dry_run else self._write_engine()
        with engine.begin() as conn:
            limits = given if len(given) == 3 else queries.read_settings(conn) | given
            victims: list[dict[str, Any]] = []
            remaining: list[sa.ColumnElement[bool]] = []
            if older_than is not None:
                query, too_old = queries.too_old(older_than)
                victims += [dict(row._mapping, reason="age") for row in conn.execute(query)]
                remaining.append(sa.not_(too_old))
            max_n, max_b, order = int(limits["max_entries"]), int(limits["max_bytes"]), str(limits["policy"])
            victims += queries.victims(conn, max_n, max_b, order, remaining)
            keys = [row["key"] for row in victims]
            if not dry_run:
                for chunk in queries.chunks(keys):
                    conn.execute(queries.delete_keys(chunk))
                if keys:
                    conn.execute(queries.statements(self.dialect).bump, [{"c": "evictions", "d": len(keys)}])
        if not dry_run:
            self._pending.forget(keys)
        return victims
