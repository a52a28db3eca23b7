"""Totals kept by triggers (every put holds the limits without a scan), SHA-256 content addresses (zexus_bcache 0.3.0).

Revision ID: 0003_entry_totals
Revises: 0002_entry_signature
Create Date: 2026-12-02 08:00:00

Every revision carries a frozen copy of the tables it touches: never import zexus_bcache.store.schema here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_entry_totals"
down_revision: str | Sequence[str] | None = "0002_entry_signature"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One row (id 1): what COUNT(*) and SUM(payload_size) over entries would say, kept by the triggers
# below in the same transaction as the change (diskcache keeps its count and size the same way).
_ADD = "UPDATE totals SET n_entries = n_entries + 1, total_bytes = total_bytes + NEW.payload_size WHERE id = 1"
_REMOVE = "UPDATE totals SET n_entries = n_entries - 1, total_bytes = total_bytes - OLD.payload_size WHERE id = 1"
_RESIZE = "UPDATE totals SET total_bytes = total_bytes - OLD.payload_size + NEW.payload_size WHERE id = 1"
TRIGGERS = ("entries_totals_on_insert", "entries_totals_on_delete", "entries_totals_on_update")

_CREATE_TRIGGERS = {
    "sqlite": [
        f"CREATE TRIGGER entries_totals_on_insert AFTER INSERT ON entries BEGIN {_ADD}; END",
        f"CREATE TRIGGER entries_totals_on_delete AFTER DELETE ON entries BEGIN {_REMOVE}; END",
        "CREATE TRIGGER entries_totals_on_update AFTER UPDATE OF payload_size ON entries"
        f" WHEN OLD.payload_size IS NOT NEW.payload_size BEGIN {_RESIZE}; END",
    ],
    "postgresql": [
        f"""
CREATE FUNCTION zexus_bcache_entry_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN {_ADD};
    ELSIF TG_OP = 'DELETE' THEN {_REMOVE};
    ELSE {_RESIZE};
    END IF;
    RETURN NULL;
END
$$
""",
        "CREATE TRIGGER entries_totals_on_insert AFTER INSERT ON entries"
        " FOR EACH ROW EXECUTE FUNCTION zexus_bcache_entry_totals()",
        "CREATE TRIGGER entries_totals_on_delete AFTER DELETE ON entries"
        " FOR EACH ROW EXECUTE FUNCTION zexus_bcache_entry_totals()",
        "CREATE TRIGGER entries_totals_on_update AFTER UPDATE OF payload_size ON entries"
        " FOR EACH ROW WHEN (OLD.payload_size IS DISTINCT FROM NEW.payload_size)"
        " EXECUTE FUNCTION zexus_bcache_entry_totals()",
    ],
}

# Indexes no query that matters uses (see docs in zexus_bcache/store/schema.py): each one cost
# every put a b-tree insert. invalidate(fingerprint=...) and invalidate(source_path=...) scan.
_DROPPED_INDEXES = {"ix_entries_fingerprint": "fingerprint", "ix_entries_source_path": "source_path"}


# Content addresses: BLAKE2b-128 until 0002, SHA-256's first 128 bits (hex) from 0003 (a third
# of the time with the CPU's SHA extensions). Frozen here, as the store computes them.
def _blake2b_128(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _sha256_128(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:32]


_blobs = sa.table("blobs", sa.column("checksum", sa.String(32)), sa.column("payload", sa.LargeBinary()))
_entries = sa.table("entries", sa.column("checksum", sa.String(32)))


def _readdress(digest: Callable[[bytes], str]) -> None:
    """Move every blob to the address ``digest`` gives its payload, and its entries with it."""
    conn = op.get_bind()
    for (old,) in conn.execute(sa.select(_blobs.c.checksum)).all():
        payload = conn.execute(sa.select(_blobs.c.payload).where(_blobs.c.checksum == old)).scalar_one()
        new = digest(bytes(payload))
        if new != old:
            # The blob first: the orphan trigger that the entries' update fires then finds nothing to drop.
            conn.execute(_blobs.update().where(_blobs.c.checksum == old).values(checksum=new))
            conn.execute(_entries.update().where(_entries.c.checksum == old).values(checksum=new))


def upgrade() -> None:
    """Create totals, seeded from the entries already there, and the triggers that keep it; re-address blobs."""
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        # Nothing may change entries between the seed and the triggers.
        op.execute("LOCK TABLE entries IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "totals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("n_entries", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_totals"),
    )
    op.execute(
        "INSERT INTO totals (id, n_entries, total_bytes)"
        " SELECT 1, COUNT(*), COALESCE(SUM(payload_size), 0) FROM entries"
    )
    for statement in _CREATE_TRIGGERS[dialect]:
        op.execute(statement)
    _readdress(_sha256_128)
    for name in _DROPPED_INDEXES:
        op.drop_index(name, table_name="entries")


def downgrade() -> None:
    """Drop the triggers and totals; restore the indexes and the BLAKE2b addresses."""
    dialect = op.get_context().dialect.name
    _readdress(_blake2b_128)
    for name, column in _DROPPED_INDEXES.items():
        op.create_index(name, "entries", [column])
    for trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger}" + (" ON entries" if dialect == "postgresql" else ""))
    if dialect == "postgresql":
        op.execute("DROP FUNCTION zexus_bcache_entry_totals()")
    op.drop_table("totals")
