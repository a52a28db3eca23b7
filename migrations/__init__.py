"""Alembic migrations of the zexus_bcache schema (shipped as zexus_bcache.migrations)."""
