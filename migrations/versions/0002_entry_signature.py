"""Shared tier: entries.signature (HMAC of a shared entry) and its counters (zexus_bcache 0.2.0).

Revision ID: 0002_entry_signature
Revises: 0001_initial
Create Date: 2026-12-08 10:00:00

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

# Frozen copies of what this revision touches.
_counters = sa.table("counters", sa.column("name", sa.String(64)), sa.column("value", sa.BigInteger()))


def upgrade() -> None:
    """Add entries.signature (nullable: local entries have none) and seed the shared counters."""
    # ALTER TABLE ADD COLUMN on both dialects: no table rebuild, the views and triggers stay.
    op.add_column("entries", sa.Column("signature", sa.String(64), nullable=True))  # hex HMAC-SHA256
    op.bulk_insert(_counters, [{"name": name, "value": 0} for name in COUNTERS])


def downgrade() -> None:
    """Drop entries.signature and the shared counters."""
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
