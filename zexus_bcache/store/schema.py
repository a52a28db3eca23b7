"""The store's tables: the single source of truth the Alembic migrations are checked against."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, LargeBinary, MetaData, String, Table

# Re-exported: the names and values the store needs without the tables (see constants.py).
from ..constants import COUNTERS, DEFAULT_SETTINGS, HEAD_REVISION, KINDS, POLICIES  # noqa: F401

# Named constraints and indexes, so migrations (and batch rebuilds on SQLite) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# entries.checksum -> blobs.checksum: payloads are content-addressed (Bazel's AC/CAS split), so
# identical bytecode (one program under its ast, source and file keys) is stored once, and the
# batched access-time UPDATEs touch a ~200-byte row, not a record that carries a 2-20 KB blob in
# overflow pages (measured: 4-6 µs a row instead of 14-30). `entries` has small rows and a text
# key, the case SQLite's WITHOUT ROWID is for: one b-tree per lookup instead of two.
# Triggers made by the migrations delete a blob when its last entry goes (or moves to another
# blob) and keep `totals`; an Alembic batch migration that rebuilds `entries` on SQLite must
# create them again. Indexes: checksum (the orphan triggers' NOT EXISTS, per deleted entry) and
# last_access (LRU eviction after a put reads the oldest entries in index order). Each index
# costs every put a b-tree insert: fingerprint and source_path have none since 0003, as only
# rare maintenance (invalidate by compiler or by file) filters on them, and a scan serves it.
entries = Table(
    "entries",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("codec_version", Integer, nullable=False),
    Column("checksum", String(32), nullable=False, index=True),
    Column("source_hash", String(128), nullable=True),
    # The caller's estimate of the decoded value's size in memory (sizes the front tier on a hit).
    Column("mem_size", Integer, nullable=True),
    Column("payload_size", Integer, nullable=False),
    Column("n_instructions", Integer, nullable=False),
    Column("n_constants", Integer, nullable=False),
    Column("source_path", String, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_access", Float, nullable=False, index=True),
    Column("access_count", Integer, nullable=False),
    # Shared-tier entries only: hex HMAC-SHA256 over what a reader relies on (see shared.py).
    Column("signature", String(64), nullable=True),
    sqlite_with_rowid=False,
)

blobs = Table(
    "blobs",
    metadata,
    Column("checksum", String(32), primary_key=True),
    Column("payload", LargeBinary, nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# One row (id 1): the entries' count and payload bytes, kept by triggers in the transaction that
# changes them, so a put knows whether it went over a limit without a scan (as diskcache does).
totals = Table(
    "totals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("n_entries", BigInteger, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String, nullable=False),
)

VIEWS = ("entry_summary", "cache_stats")
"""Views created by the migrations (plain SQL, not part of the metadata)."""

TRIGGERS = (
    "entries_drop_orphan_blob_on_delete",
    "entries_drop_orphan_blob_on_update",
    "entries_totals_on_insert",
    "entries_totals_on_delete",
    "entries_totals_on_update",
)
"""Triggers created by the migrations (dialect-specific SQL, not part of the metadata)."""
