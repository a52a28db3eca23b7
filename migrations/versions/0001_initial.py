"""Initial schema: entries, blobs, counters, settings, two views (zexus_bcache 0.1.0).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24 02:22:47

Every revision carries a frozen copy of the tables it touches: never import zexus_bcache.schema here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("front_hits", "store_hits", "misses", "puts", "evictions", "corrupt", "write_errors")
SETTINGS = {"max_entries": "100000", "max_bytes": str(256 * 1024 * 1024), "policy": "lru"}

# datetime functions differ: each dialect renders unix seconds as 'YYYY-MM-DD HH:MM:SS' UTC its own way.
_UTC_TEXT = {
    "sqlite": "datetime({col}, 'unixepoch')",
    "postgresql": "to_char(to_timestamp({col}) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
}

# A blob goes when its last entry goes or moves to another blob (payloads are content-addressed).
_DROP_ORPHAN = (
    "DELETE FROM blobs WHERE checksum = OLD.checksum"
    " AND NOT EXISTS (SELECT 1 FROM entries WHERE checksum = OLD.checksum)"
)
_ORPHAN_TRIGGERS = {
    "sqlite": [
        f"""
CREATE TRIGGER entries_drop_orphan_blob_on_delete AFTER DELETE ON entries
BEGIN {_DROP_ORPHAN}; END
""",
        f"""
CREATE TRIGGER entries_drop_orphan_blob_on_update AFTER UPDATE OF checksum ON entries
WHEN OLD.checksum IS NOT NEW.checksum
BEGIN {_DROP_ORPHAN}; END
""",
    ],
    "postgresql": [
        f"""
CREATE FUNCTION zexus_bcache_drop_orphan_blob() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {_DROP_ORPHAN}; RETURN NULL; END
$$
""",
        """
CREATE TRIGGER entries_drop_orphan_blob_on_delete AFTER DELETE ON entries
FOR EACH ROW EXECUTE FUNCTION zexus_bcache_drop_orphan_blob()
""",
        """
CREATE TRIGGER entries_drop_orphan_blob_on_update AFTER UPDATE OF checksum ON entries
FOR EACH ROW WHEN (OLD.checksum IS DISTINCT FROM NEW.checksum)
EXECUTE FUNCTION zexus_bcache_drop_orphan_blob()
""",
    ],
}

_ENTRY_SUMMARY = """
CREATE VIEW entry_summary AS
SELECT substr(key, 1, 12) AS short_key,
       kind,
       source_path,
       payload_size,
       n_instructions,
       n_constants,
       access_count,
       {created_at} AS created_at,
       {last_access} AS last_access
FROM entries
"""

_CACHE_STATS = """
CREATE VIEW cache_stats AS
SELECT c.front_hits,
       c.store_hits,
       c.front_hits + c.store_hits AS hits,
       c.misses,
       CASE WHEN c.front_hits + c.store_hits + c.misses = 0 THEN 0
            ELSE ROUND(100.0 * (c.front_hits + c.store_hits)
                       / (c.front_hits + c.store_hits + c.misses), 2)
       END AS hit_rate,
       e.entries,
       e.total_bytes,
       c.evictions,
       c.corrupt
FROM (SELECT CAST(COALESCE(SUM(CASE WHEN name = 'front_hits' THEN value END), 0) AS BIGINT) AS front_hits,
             CAST(COALESCE(SUM(CASE WHEN name = 'store_hits' THEN value END), 0) AS BIGINT) AS store_hits,
             CAST(COALESCE(SUM(CASE WHEN name = 'misses' THEN value END), 0) AS BIGINT) AS misses,
             CAST(COALESCE(SUM(CASE WHEN name = 'evictions' THEN value END), 0) AS BIGINT) AS evictions,
             CAST(COALESCE(SUM(CASE WHEN name = 'corrupt' THEN value END), 0) AS BIGINT) AS corrupt
      FROM counters) AS c
CROSS JOIN (SELECT COUNT(*) AS entries, CAST(COALESCE(SUM(payload_size), 0) AS BIGINT) AS total_bytes
            FROM entries) AS e
"""


def upgrade() -> None:
    """Create the tables, seed counters and settings, create the views."""
    dialect = op.get_context().dialect.name
    if dialect not in _UTC_TEXT:
        raise NotImplementedError(f"zexus_bcache supports SQLite and PostgreSQL, not {dialect}")
    utc = _UTC_TEXT[dialect]
    op.create_table(
        "entries",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("codec_version", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(32), nullable=False),
        sa.Column("source_hash", sa.String(128), nullable=True),
        sa.Column("mem_size", sa.Integer(), nullable=True),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.Column("n_instructions", sa.Integer(), nullable=False),
        sa.Column("n_constants", sa.Integer(), nullable=False),
        sa.Column("source_path", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_access", sa.Float(), nullable=False),
        sa.Column("access_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_entries"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_entries_checksum", "entries", ["checksum"])
    op.create_index("ix_entries_fingerprint", "entries", ["fingerprint"])
    op.create_index("ix_entries_last_access", "entries", ["last_access"])
    op.create_index("ix_entries_source_path", "entries", ["source_path"])

    op.create_table(
        "blobs",
        sa.Column("checksum", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("checksum", name="pk_blobs"),
    )
    for statement in _ORPHAN_TRIGGERS[dialect]:
        op.execute(statement)

    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
    )
    op.bulk_insert(counters, [{"name": name, "value": 0} for name in COUNTERS])

    settings = op.create_table(
        "settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_settings"),
    )
    op.bulk_insert(settings, [{"name": name, "value": value} for name, value in SETTINGS.items()])

    op.execute(
        _ENTRY_SUMMARY.format(
            created_at=utc.format(col="created_at"), last_access=utc.format(col="last_access")
        )
    )
    op.execute(_CACHE_STATS)


def downgrade() -> None:
    """Drop everything the upgrade created."""
    dialect = op.get_context().dialect.name
    op.execute("DROP VIEW cache_stats")
    op.execute("DROP VIEW entry_summary")
    op.drop_table("settings")
    op.drop_table("counters")
    for trigger in ("entries_drop_orphan_blob_on_update", "entries_drop_orphan_blob_on_delete"):
        op.execute(f"DROP TRIGGER {trigger}" + (" ON entries" if dialect == "postgresql" else ""))
    if dialect == "postgresql":
        op.execute("DROP FUNCTION zexus_bcache_drop_orphan_blob()")
    op.drop_table("blobs")
    op.drop_index("ix_entries_source_path", table_name="entries")
    op.drop_index("ix_entries_last_access", table_name="entries")
    op.drop_index("ix_entries_fingerprint", table_name="entries")
    op.drop_index("ix_entries_checksum", table_name="entries")
    op.drop_table("entries")
