"""Shared tier: entries.signature (a shared entry's HMAC), its counters, cache_stats with shared hits
(zexus_bcache 0.2.0).

Revision ID: 0002_entry_signature
Revises: 0001_initial
Create Date: 2026-11-24 10:00:00

Every revision carries a frozen copy of the tables it touches: never import zexus_bcache.schema here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_entry_signature"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Counters of the shared tier, seeded at 0 so that `SELECT * FROM counters` lists them. (Since this
# revision the store adds to a counter with an upsert, so a later counter needs no migration.)
COUNTERS = ("shared_hits", "shared_misses", "shared_errors", "auth_failures", "shared_puts", "shared_dropped")

# cache_stats as 0001 made it (restored by the downgrade) and as this revision makes it: hits
# include the shared tier's, and shared_hits and auth_failures get columns of their own.
_STATS_COUNTER = "CAST(COALESCE(SUM(CASE WHEN name = '{0}' THEN value END), 0) AS BIGINT) AS {0}"
_STATS_VIEW = """
CREATE VIEW cache_stats AS
SELECT c.front_hits,
       c.store_hits,{extra_columns}
       {hits} AS hits,
       c.misses,
       CASE WHEN {hits} + c.misses = 0 THEN 0
            ELSE ROUND(100.0 * ({hits}) / ({hits} + c.misses), 2)
       END AS hit_rate,
       e.entries,
       e.total_bytes,
       c.evictions,
       c.corrupt
FROM (SELECT {counters}
      FROM counters) AS c
CROSS JOIN (SELECT COUNT(*) AS entries, CAST(COALESCE(SUM(payload_size), 0) AS BIGINT) AS total_bytes
            FROM entries) AS e
"""


def _stats_view(with_shared: bool) -> str:
    names = ["front_hits", "store_hits", "misses", "evictions", "corrupt"]
    if with_shared:
        names += ["shared_hits", "auth_failures"]
    return _STATS_VIEW.format(
        extra_columns="\n       c.shared_hits,\n       c.auth_failures," if with_shared else "",
        hits="c.front_hits + c.store_hits" + (" + c.shared_hits" if with_shared else ""),
        counters=",\n             ".join(_STATS_COUNTER.format(name) for name in names),
    )


# Frozen copies of what this revision touches.
_counters = sa.table("counters", sa.column("name", sa.String(64)), sa.column("value", sa.BigInteger()))


def upgrade() -> None:
    """Add entries.signature (nullable: local entries have none) and seed the shared counters."""
    # ALTER TABLE ADD COLUMN on both dialects: no table rebuild, the views and triggers stay.
    op.add_column("entries", sa.Column("signature", sa.String(64), nullable=True))  # hex HMAC-SHA256
    op.bulk_insert(_counters, [{"name": name, "value": 0} for name in COUNTERS])
    op.execute("DROP VIEW cache_stats")
    op.execute(_stats_view(with_shared=True))


def downgrade() -> None:
    """Drop entries.signature and the shared counters."""
    op.execute("DROP VIEW cache_stats")
    op.execute(_stats_view(with_shared=False))
    op.execute(_counters.delete().where(_counters.c.name.in_(COUNTERS)))
    if op.get_context().dialect.name == "sqlite":
        # Native DROP COLUMN (SQLite >= 3.35): Alembic's batch rebuild would rename a table that
        # the entry_summary view refers to, which SQLite refuses, and would lose WITHOUT ROWID.
        if sqlite_version() < (3, 35):
            raise NotImplementedError("downgrading below 0002 on SQLite needs SQLite 3.35 or newer (DROP COLUMN)")
        op.execute("ALTER TABLE entries DROP COLUMN signature")
    else:
        op.drop_column("entries", "signature")


def sqlite_version() -> tuple[int, ...]:
    import sqlite3

    return sqlite3.sqlite_version_info
