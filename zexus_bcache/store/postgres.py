"""PostgreSQL (psycopg 3): Core for every statement, an advisory lock around migrations, read-only queries."""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .backend import Backend

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

MIGRATION_LOCK = 0x7A65_7875_7362_63  # pg_advisory_xact_lock key: "zexusbc"

SIDE_EFFECTS = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_(?:try_)?advisory\w*|txid_current\w*|pg_current_xact_id\w*"
    r"|set_config|lo_\w+|dblink\w*|pg_read_(?:binary_)?file|pg_ls_\w+|pg_stat_file|pg_reload_conf"
    r"|pg_rotate_logfile|pg_notify|nextval|setval|pg_switch_wal|pg_create_\w+|pg_drop_replication_slot"
    r"|pg_promote|pg_logical_\w+|pg_replication_\w+|query_to_xml\w*|cursor_to_xml\w*|ts_stat|ts_rewrite"
    r"|pg_import_system_collations|pg_stat_reset\w*|pg_wal_replay_\w+|pg_backup_\w+|pg_file_\w+"
    r"|pg_log_backend_memory_contexts|pg_start_backup|pg_stop_backup)\s*\(",
    re.IGNORECASE,
)
"""Functions a read-only query may not call: they act outside the transaction (end or signal other
sessions, take locks that outlive it, read server files, run SQL given as text). pg_sleep may be
called: the statement_timeout stops it."""


class PostgresBackend(Backend):
    """A database on a PostgreSQL server."""

    dialect = "postgresql"

    def __init__(self, url: sa.URL, name: str, *, read_only: bool) -> None:
        super().__init__(name, read_only=read_only)
        self._url = url

    @property
    def url(self) -> sa.URL:
        return self._url

    def _options(self) -> dict[str, Any]:
        return {"postgresql_readonly": True} if self.read_only else {}

    def create_engines(self) -> tuple[Engine, Engine]:
        import sqlalchemy as sa

        engine = sa.create_engine(self._url, execution_options=self._options())
        return engine, engine  # a server's transactions take row locks as they go

    def maintenance_engine(self) -> Engine:
        import sqlalchemy as sa

        try:
            return sa.create_engine(self._url, poolclass=sa.pool.NullPool, execution_options=self._options())
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.name}: open failed: {exc}") from exc

    def no_lock_wait(self, conn: Connection) -> None:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '20ms'")

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"  # lock_not_available

    def lock_for_migration(self, conn: Connection) -> None:
        import sqlalchemy as sa

        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))

    def query(
        self, statement: str, params: dict[str, Any], timeout: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One prepared statement (so never several) in a READ ONLY transaction, under a
        statement_timeout, refused when it calls a function with side effects (:data:`SIDE_EFFECTS`)."""
        import psycopg
        import sqlalchemy as sa

        from .readonly import DEFAULT_TIMEOUT_S

        limit = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
        engine = self.engine()
        compiled = sa.text(statement).compile(dialect=engine.dialect)
        values = compiled.construct_params(params)
        refuse = functools.partial(self._refuse_side_effects, str(compiled), values)
        raw = engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            driver.rollback()
            driver.read_only = True  # every statement runs in BEGIN READ ONLY
            try:
                with driver.cursor() as cursor:
                    refuse(cursor, limit)
                    # Prepared: the extended protocol, which refuses a string of several statements
                    # (with the simple one, "COMMIT; DELETE ..." would leave the read-only transaction).
                    cursor.execute(str(compiled), values, prepare=True)
                    if cursor.description is None:
                        raise StoreError(f"{self.name}: read-only query refused: the statement returns no rows")
                    columns = [column.name for column in cursor.description]
                    rows = [tuple(row) for row in cursor.fetchall()]
            except psycopg.errors.ReadOnlySqlTransaction:
                verb = statement.split(None, 1)[0].upper() if statement.strip() else "it"
                raise StoreError(f"{self.name}: read-only query refused: {verb} is not allowed") from None
            except psycopg.errors.QueryCanceled:
                raise StoreError(f"{self.name}: the query was stopped after its time limit of {limit:g} s") from None
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if "multiple commands" in message:
                    message = "read-only query refused: give one statement"
                raise StoreError(f"{self.name}: {message}") from None
            finally:
                driver.rollback()
                driver.read_only = False
        finally:
            raw.close()
        return columns, rows

    def _refuse_side_effects(self, statement: str, values: Any, cursor: Any, limit: float) -> None:
        """Set the time limit, then refuse a statement whose text or plan calls a function with side effects.

        The plan (EXPLAIN VERBOSE, which runs nothing) names every function as the server resolved
        it: comments, quoting and views cannot hide one. A statement EXPLAIN does not take (SHOW)
        is checked by its text alone.
        """
        import psycopg

        timeout_ms = max(1, round(limit * 1000))
        cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms:d}")
        self._refuse_text(statement.replace('"', ""))
        cursor.execute("SAVEPOINT zexus_bcache_explain")
        try:
            cursor.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + statement, values, prepare=True)
        except psycopg.errors.SyntaxError:
            cursor.execute("ROLLBACK TO SAVEPOINT zexus_bcache_explain")
            return
        self._refuse_text(json.dumps(cursor.fetchall()))

    def _refuse_text(self, text: str) -> None:
        found = SIDE_EFFECTS.search(text)
        if found:
            raise StoreError(f"{self.name}: read-only query refused: the function {found.group(1)}() is not allowed")

    def vacuum(self) -> None:
        # VACUUM cannot run inside a transaction block: autocommit. ANALYZE: fresh planner statistics.
        with self.engine().connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE)")
