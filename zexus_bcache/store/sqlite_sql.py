"""SQLite: the hot statements as literal SQL, run on raw ``sqlite3`` connections by :mod:`.sqlite`.

Each is exactly what SQLAlchemy compiles for SQLite from the Core statement of the same name in
:func:`.queries.statements`, built from the schema: a test compiles those and compares, so the
schema stays the one source of truth. Parameters are positional, in the order noted.
"""

from __future__ import annotations

from .queries import EVICTION_ORDER

# (key); returns queries.HIT_COLUMNS, the row's own key (read from the row by rowid, not from the
# key index that led there), then the payload.
SQL_SELECT_ENTRY = (
    "SELECT entries.kind, entries.fingerprint, entries.codec_version, entries.checksum,"
    " entries.source_hash, entries.mem_size, entries.signature,"
    ' (SELECT own."key" FROM entries AS own WHERE own.rowid = entries.rowid) AS own_key, entries.payload'
    ' FROM entries WHERE entries."key" = ?'
)
# (*queries.ENTRY_COLUMNS)
SQL_PUT_ENTRY = (
    'INSERT INTO entries ("key", kind, fingerprint, codec_version, checksum, source_hash, mem_size,'
    " payload_size, n_instructions, n_constants, source_path, created_at, last_access, access_count,"
    " signature, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ' ON CONFLICT ("key") DO UPDATE SET kind = excluded.kind, fingerprint = excluded.fingerprint,'
    " codec_version = excluded.codec_version, checksum = excluded.checksum,"
    " source_hash = excluded.source_hash, mem_size = excluded.mem_size,"
    " payload_size = excluded.payload_size, n_instructions = excluded.n_instructions,"
    " n_constants = excluded.n_constants, source_path = excluded.source_path,"
    " last_access = CASE WHEN (entries.last_access > excluded.last_access)"
    " THEN entries.last_access ELSE excluded.last_access END, signature = excluded.signature,"
    " payload = excluded.payload"
)
# (*queries.ENTRY_COLUMNS): insert if absent (the shared tier never replaces an entry)
SQL_INSERT_ENTRY = SQL_PUT_ENTRY.split(" ON CONFLICT ")[0] + ' ON CONFLICT ("key") DO NOTHING RETURNING "key"'
# (t, t, n, k): a key's last use and how many more uses
SQL_TOUCH = (
    "UPDATE entries SET last_access=CASE WHEN (entries.last_access < ?) THEN ? ELSE entries.last_access END,"
    ' access_count=(entries.access_count + ?) WHERE entries."key" = ?'
)
# (c, d): add d to counter c (an upsert: a counter the database does not have yet starts at d)
SQL_BUMP = (
    "INSERT INTO counters (name, value) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = (counters.value + excluded.value)"
)


# (max_entries, max_bytes, policy): the totals, then those settings' stored text (None: not stored)
SQL_LIMITS = (
    "SELECT totals.n_entries, totals.total_bytes,"
    " (SELECT settings.value FROM settings WHERE settings.name = ?) AS anon_1,"
    " (SELECT settings.value FROM settings WHERE settings.name = ?) AS anon_2,"
    " (SELECT settings.value FROM settings WHERE settings.name = ?) AS anon_3 FROM totals"
)
# (n, 0) by policy: the first n (key, payload_size) in eviction order (queries.EVICTION_ORDER)
SQL_VICTIMS = {
    policy: 'SELECT entries."key", entries.payload_size FROM entries ORDER BY '
    + ", ".join(f'entries."{c}"' if c == "key" else f"entries.{c}" for c in order)
    + " LIMIT ? OFFSET ?"
    for policy, order in EVICTION_ORDER.items()
}
# (k)
SQL_DELETE_KEY = 'DELETE FROM entries WHERE entries."key" = ?'
