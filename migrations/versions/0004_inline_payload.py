"""Payloads inline in entries, no blobs table, CRC-32 checksums (zexus_bcache 0.4.0).

Revision ID: 0004_inline_payload
Revises: 0003_entry_totals
Create Date: 2026-12-02 15:00:00

A put becomes one upsert of one row (see zexus_bcache/store/schema.py for what was measured).
Every revision carries a frozen copy of the tables it touches: never import zexus_bcache.store.schema here.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_inline_payload"
down_revision: str | Sequence[str] | None = "0003_entry_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_META = (
    "key", "kind", "fingerprint", "codec_version", "checksum", "source_hash", "mem_size", "payload_size",
    "n_instructions", "n_constants", "source_path", "created_at", "last_access", "access_count", "signature",
)  # fmt: skip
_COLUMNS = ", ".join(f'"{c}"' for c in _META)
_JOINED = ", ".join(f'e."{c}"' for c in _META)


def _entry_columns() -> list[sa.Column[object]]:
    """entries' columns at 0003, frozen."""
    return [
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
        sa.Column("signature", sa.String(64), nullable=True),
    ]


# 0003's totals triggers, frozen (a rebuilt SQLite table loses its triggers).
_ADD = "UPDATE totals SET n_entries = n_entries + 1, total_bytes = total_bytes + NEW.payload_size WHERE id = 1"
_REMOVE = "UPDATE totals SET n_entries = n_entries - 1, total_bytes = total_bytes - OLD.payload_size WHERE id = 1"
_RESIZE = "UPDATE totals SET total_bytes = total_bytes - OLD.payload_size + NEW.payload_size WHERE id = 1"
_SQLITE_TOTALS_TRIGGERS = [
    f"CREATE TRIGGER entries_totals_on_insert AFTER INSERT ON entries BEGIN {_ADD}; END",
    f"CREATE TRIGGER entries_totals_on_delete AFTER DELETE ON entries BEGIN {_REMOVE}; END",
    "CREATE TRIGGER entries_totals_on_update AFTER UPDATE OF payload_size ON entries"
    f" WHEN OLD.payload_size IS NOT NEW.payload_size BEGIN {_RESIZE}; END",
]

# 0001's orphan-blob triggers, frozen: gone with the blobs table, back on a downgrade.
_DROP_ORPHAN = (
    "DELETE FROM blobs WHERE checksum = OLD.checksum"
    " AND NOT EXISTS (SELECT 1 FROM entries WHERE checksum = OLD.checksum)"
)
_ORPHAN_TRIGGERS = {
    "sqlite": [
        f"CREATE TRIGGER entries_drop_orphan_blob_on_delete AFTER DELETE ON entries BEGIN {_DROP_ORPHAN}; END",
        "CREATE TRIGGER entries_drop_orphan_blob_on_update AFTER UPDATE OF checksum ON entries"
        f" WHEN OLD.checksum IS NOT NEW.checksum BEGIN {_DROP_ORPHAN}; END",
    ],
    "postgresql": [
        "CREATE FUNCTION zexus_bcache_drop_orphan_blob() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN {_DROP_ORPHAN}; RETURN NULL; END $$",
        "CREATE TRIGGER entries_drop_orphan_blob_on_delete AFTER DELETE ON entries"
        " FOR EACH ROW EXECUTE FUNCTION zexus_bcache_drop_orphan_blob()",
        "CREATE TRIGGER entries_drop_orphan_blob_on_update AFTER UPDATE OF checksum ON entries"
        " FOR EACH ROW WHEN (OLD.checksum IS DISTINCT FROM NEW.checksum)"
        " EXECUTE FUNCTION zexus_bcache_drop_orphan_blob()",
    ],
}
_ORPHAN_TRIGGER_NAMES = ("entries_drop_orphan_blob_on_delete", "entries_drop_orphan_blob_on_update")


# entries.checksum: the payload's SHA-256 (first 128 bits, hex), its content address, until 0003;
# from 0004 only a damage check, CRC-32 (8 hex digits), at half the cost. Frozen here.
def _sha256_128(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:32]


def _crc32(payload: bytes) -> str:
    return f"{zlib.crc32(payload):08x}"


_entries = sa.table(
    "entries",
    sa.column("key", sa.String(128)),
    sa.column("checksum", sa.String(32)),
    sa.column("payload", sa.LargeBinary()),
)


def _rechecksum(digest: Callable[[bytes], str], page: int = 500) -> None:
    """Set every entry's checksum to ``digest`` of its payload, a page of rows at a time."""
    conn = op.get_bind()
    e = _entries.c
    after = ""
    while rows := conn.execute(sa.select(e.key, e.payload).where(e.key > after).order_by(e.key).limit(page)).all():
        changes = [{"k": key, "c": digest(bytes(payload))} for key, payload in rows]
        conn.execute(_entries.update().where(e.key == sa.bindparam("k")).values(checksum=sa.bindparam("c")), changes)
        after = rows[-1][0]


def _create_blobs() -> None:
    op.create_table(
        "blobs",
        sa.Column("checksum", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("checksum", name="pk_blobs"),
    )


def _rebuild_sqlite_entries(*, inline: bool) -> None:
    """SQLite cannot add a NOT NULL column from a join nor change WITHOUT ROWID: copy into a new
    ``entries``. Its views are dropped around the copy and made again from their own SQL."""
    conn = op.get_bind()
    views = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY name").all()
    for name, _ in views:
        op.execute(f'DROP VIEW "{name}"')
    if inline:
        op.create_table(
            "entries_new",
            *_entry_columns(),
            sa.Column("payload", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("key", name="pk_entries"),
        )
        # An entry whose blob was missing could never be served: it is not carried over.
        op.execute(
            f"INSERT INTO entries_new ({_COLUMNS}, payload) SELECT {_JOINED}, b.payload"
            " FROM entries AS e JOIN blobs AS b ON b.checksum = e.checksum"
        )
    else:
        op.create_table(
            "entries_new",
            *_entry_columns(),
            sa.PrimaryKeyConstraint("key", name="pk_entries"),
            sqlite_with_rowid=False,
        )
        op.execute(f"INSERT INTO entries_new ({_COLUMNS}) SELECT {_COLUMNS} FROM entries")
    op.execute("DROP TABLE entries")  # its indexes and triggers go with it
    op.execute("ALTER TABLE entries_new RENAME TO entries")
    op.create_index("ix_entries_last_access", "entries", ["last_access"])
    for statement in _SQLITE_TOTALS_TRIGGERS:
        op.execute(statement)
    # Seeded again from what was carried over (the triggers were not there during the copy).
    op.execute("DELETE FROM totals")
    op.execute(
        "INSERT INTO totals (id, n_entries, total_bytes)"
        " SELECT 1, COUNT(*), COALESCE(SUM(payload_size), 0) FROM entries"
    )
    for _, sql in views:
        op.execute(sql)


def upgrade() -> None:
    """Move every payload into its entry's row; drop blobs, its triggers and the checksum index."""
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        _rebuild_sqlite_entries(inline=True)
        op.execute("DROP TABLE blobs")
        _rechecksum(_crc32)
        return
    op.execute("LOCK TABLE entries IN SHARE ROW EXCLUSIVE MODE")
    for trigger in _ORPHAN_TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER {trigger} ON entries")
    op.execute("DROP FUNCTION zexus_bcache_drop_orphan_blob()")
    op.add_column("entries", sa.Column("payload", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE entries SET payload = blobs.payload FROM blobs WHERE blobs.checksum = entries.checksum")
    op.execute("DELETE FROM entries WHERE payload IS NULL")  # the totals trigger counts them out
    op.alter_column("entries", "payload", nullable=False)
    op.drop_index("ix_entries_checksum", table_name="entries")
    op.drop_table("blobs")
    _rechecksum(_crc32)


def downgrade() -> None:
    """Put the payloads back into blobs, one per content address; entries without them, as at 0003."""
    dialect = op.get_context().dialect.name
    _rechecksum(_sha256_128)
    _create_blobs()
    if dialect == "sqlite":
        op.execute("INSERT OR IGNORE INTO blobs (checksum, payload) SELECT checksum, payload FROM entries")
        _rebuild_sqlite_entries(inline=False)
    else:
        op.execute(
            "INSERT INTO blobs (checksum, payload) SELECT checksum, payload FROM entries"
            " ON CONFLICT (checksum) DO NOTHING"
        )
        op.drop_column("entries", "payload")
    op.create_index("ix_entries_checksum", "entries", ["checksum"])
    for statement in _ORPHAN_TRIGGERS[dialect]:
        op.execute(statement)
