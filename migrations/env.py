"""Alembic environment: run the migrations on the connection the caller passes in.

There is no alembic.ini: zexus_bcache.store builds the Config in code and hands its open
connection (already inside the transaction that serialises migrations) through
``config.attributes["connection"]``. This file never opens an engine of its own.
"""

from __future__ import annotations

from alembic import context

from zexus_bcache.errors import StoreError
from zexus_bcache.store import schema

config = context.config
target_metadata = schema.metadata


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave our views (plain SQL, not in the metadata) out of autogenerate."""
    return not (type_ == "table" and name in schema.VIEWS)


def run_migrations_offline() -> None:
    """Emit the migration SQL for the URL in ``sqlalchemy.url`` instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection."""
    connection = config.attributes.get("connection")
    if connection is None:
        raise StoreError(
            "zexus_bcache migrations need an open connection in config.attributes['connection'];"
            " use zexus_bcache.store.alembic_config(connection)"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
