"""Alembic environment: runs migrations on a connection handed over by lifecycle.

``lifecycle db upgrade`` (and ``Lifecycle`` on a new SQLite file) pass their
connection in ``config.attributes["connection"]``; plain ``alembic`` with the
repository's ``alembic.ini`` connects to ``sqlalchemy.url`` or
``LIFECYCLE_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from lifecycle.store.engine import create_engine, database_url
from lifecycle.store.migrate import VERSION_TABLE, owned
from lifecycle.store.schema import metadata


def run(connection: Connection) -> None:
    """Run the pending migrations in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        version_table=VERSION_TABLE,
        include_name=owned,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = context.config.get_main_option("sqlalchemy.url") or database_url(None)
    engine = create_engine(url)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
