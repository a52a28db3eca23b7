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

# One row per entry, its payload inline (since 0004; before, payloads sat in a content-addressed
# `blobs` table). A put is then one upsert of one row: against a blob and an entry upsert it
# writes one b-tree page fewer, keeps no checksum index and no orphan-blob triggers (measured,
# raw statements against diskcache's set on 1000 payloads of 2-20 KB: 0.71x against 0.92x). What
# it gives up is dedup of one bytecode stored under several keys (ast, source, file), which the
# same program under several kinds rarely needs. A rowid table (not WITHOUT ROWID, as before 0004)
# because a row carries a 2-20 KB payload: SQLite keeps it in overflow pages of the table b-tree,
# and the key's index stays small. The payload column is last: the metadata a listing, an access
# update or a limits check reads sits in the row's first page. Triggers made by the migrations keep
# `totals`; a migration that rebuilds `entries` on SQLite must create them again. Indexes: the key
# (primary key) and last_access (LRU eviction after a put reads the oldest entries in index order).
# Each index costs every put a b-tree insert: fingerprint, source_path and checksum have none, as
# only rare maintenance (invalidate by compiler or by file, doctor) filters on them, and a scan serves it.
entries = Table(
    "entries",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("codec_version", Integer, nullable=False),
    # CRC-32 of the payload (hex; SHA-256 before 0004): what doctor checks the payload against.
    Column("checksum", String(32), nullable=False),
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
    "entries_totals_on_insert",
    "entries_totals_on_delete",
    "entries_totals_on_update",
)
"""Triggers created by the migrations (dialect-specific SQL, not part of the metadata)."""
