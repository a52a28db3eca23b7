"""PostgreSQL (psycopg 3): Core for every statement, an advisory lock around migrations, read-only queries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .backend import Backend

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

MIGRATION_LOCK = 0x7A65_7875_7362_63  # pg_advisory_xact_lock key: "zexusbc"


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

    def query(self, statement: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One prepared statement (so never several) in a READ ONLY transaction."""
        import psycopg
        import sqlalchemy as sa

        engine = self.engine()
        compiled = sa.text(statement).compile(dialect=engine.dialect)
        values = compiled.construct_params(params)
        raw = engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            driver.rollback()
            driver.read_only = True  # every statement runs in BEGIN READ ONLY
            try:
                with driver.cursor() as cursor:
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

    def vacuum(self) -> None:
        # VACUUM cannot run inside a transaction block: autocommit. ANALYZE: fresh planner statistics.
        with self.engine().connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE)")
