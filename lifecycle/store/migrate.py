"""Schema management through the Alembic migrations shipped in ``lifecycle.migrations``.

The migrations are package data, so ``lifecycle db upgrade`` works from an
installed wheel as well as from a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from lifecycle.errors import SchemaError
from lifecycle.store.engine import for_writing
from lifecycle.store.schema import metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and ``connection``, if given)."""
    config = Config()
    config.set_main_option("script_location", str(files("lifecycle.migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of lifecycle ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``, in one transaction.

    A write transaction from its start (``BEGIN IMMEDIATE`` on SQLite): several
    processes opening a new SQLite file at once then take turns, and those after
    the first find the schema at the head, instead of failing as "database is
    locked" when their reads turn into writes at the same time.
    """
    with for_writing(engine).begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes every table)."""
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def differences(engine: Engine) -> list[Any]:
    """What differs between the migrated database and the table definitions (empty when none)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def ensure_schema(engine: Engine, *, create: bool) -> None:
    """Check that the database is at the head revision; migrate it first when ``create``.

    Raises :class:`SchemaError` naming the command to run otherwise.
    """
    with engine.connect() as connection:
        current = current_revision(connection)
    head = head_revision()
    if current == head:
        return
    if create:
        upgrade(engine)
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaError(f"{where} has no lifecycle schema: run `lifecycle db upgrade`")
    raise SchemaError(
        f"{where} is at schema revision {current}, this version needs {head}: "
        "run `lifecycle db upgrade`"
    )
