"""Schema management through the Alembic migrations shipped in ``lifecycle.migrations``.

The migrations are package data, so ``lifecycle db upgrade`` works from an
installed wheel as well as from a checkout.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, Table, TextClause, inspect, text
from sqlalchemy.engine import Connection, Engine

from lifecycle.errors import SchemaError
from lifecycle.store.engine import for_writing, shown_url
from lifecycle.store.schema import metadata

#: Where the database's revision is kept. Not Alembic's default ``alembic_version``: an
#: application that embeds lifecycle in its own database most likely migrates it with
#: Alembic too, and the two would read and overwrite each other's revision.
VERSION_TABLE = "lifecycle_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and ``connection``, if given)."""
    config = Config()
    config.set_main_option("script_location", str(files("lifecycle.migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migrations this version ships, read once: parsing them took 4 ms, half of what
    opening a store cost."""
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def _revisions() -> tuple[str, ...]:
    """The revisions this version ships, oldest first."""
    return tuple(r.revision for r in reversed(list(_scripts().walk_revisions())))


def is_known(revision: str) -> bool:
    """Whether ``revision`` is one of the migrations this version ships."""
    return revision in _revisions()


def head_revision() -> str:
    """The newest revision this version of lifecycle ships."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _known(connection: Connection) -> str | None:
    """The database's revision, refused with a clear error when no migration here has it.

    A database a newer lifecycle migrated is at a revision this version does not
    ship; Alembic would only say it "can't locate" it, mid-command.
    """
    current = current_revision(connection)
    if current is None and (earlier := _in_alembic_version(connection)) is not None:
        raise SchemaError(
            f"{shown_url(connection.engine)} holds lifecycle's tables at revision {earlier},"
            " recorded in alembic_version as development versions did: run `ALTER TABLE"
            " alembic_version RENAME TO lifecycle_version` on it, then this again"
        )
    if current is None or current in _revisions():
        return current
    where = shown_url(connection.engine)
    raise SchemaError(
        f"{where} is at schema revision {current}, which this version of lifecycle does not"
        f" know (its newest is {head_revision()}): a newer lifecycle migrated it;"
        " use that version, or its `lifecycle db downgrade`"
    )


#: Per direction (up?): the end and the sign of step it cannot take, and why.
_WRONG_WAY = {
    True: (("base", "-"), "an upgrade goes forward: to head, a revision or a step such as +1"),
    False: (("head", "+"), "a downgrade goes back: to base, a revision or a step such as -1"),
}


def _in_alembic_version(connection: Connection) -> str | None:
    """The revision a store made by a development version kept in ``alembic_version``.

    Without this, such a store looked new, and its first migration failed on tables
    that exist.
    """
    inspector = inspect(connection)
    if not (inspector.has_table("alembic_version") and inspector.has_table("events")):
        return None
    kept = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return next((r for r in kept if r in _revisions()), None)


def _target(revision: str, *, up: bool) -> None:
    """Refuse, before anything runs, a revision no migration here has (naming those there
    are) and a target on the wrong side (``downgrade head``, ``upgrade -1``).

    Alembic would say only that it "can't locate" it, or that a relative revision
    "didn't produce" its migrations, which the command line showed as a database error.
    """
    step = revision[:1] in ("+", "-") and revision[1:].isdigit()
    if revision in ("head", "base") or step:
        (end, sign), why = _WRONG_WAY[up]
        if revision == end or revision.startswith(sign):
            raise SchemaError(f"{'upgrade' if up else 'downgrade'} {revision}: {why}")
        return
    if revision not in _revisions():
        raise SchemaError(
            f"unknown revision {revision!r}: the revisions are base, {', '.join(_revisions())}"
            " and head (or a step from the current one, such as -1)"
        )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``, in one transaction, one migration at a time.

    Several processes that upgrade one database at once (every replica of a
    service on start, or processes opening a new SQLite file together) take
    turns, and those after the first find the schema at the head, instead of
    failing on tables that exist or as "database is locked" on SQLite.
    """
    _target(revision, up=True)
    with _migrating(engine) as connection:
        _this_way(revision, _known(connection), up=True)
        _alembic(command.upgrade, connection, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes every table, the one
    that held the revision included: Alembic leaves it, empty)."""
    _target(revision, up=False)
    with _migrating(engine) as connection:
        _this_way(revision, _known(connection), up=False)
        _alembic(command.downgrade, connection, revision)
        if current_revision(connection) is None:
            Table(VERSION_TABLE, MetaData()).drop(connection, checkfirst=True)


def _this_way(revision: str, current: str | None, *, up: bool) -> None:
    """Refuse a named revision on the other side of the database's: Alembic did nothing,
    and said only that the database was where it was."""
    if revision not in _revisions():
        return  # an end or a step: checked by _target
    there = _revisions().index(revision)
    here = -1 if current is None else _revisions().index(current)
    if (there < here) if up else (there > here):
        way = ("downgrade", "back") if up else ("upgrade", "forward")
        raise SchemaError(
            f"{'upgrade' if up else 'downgrade'} {revision}: the database is at"
            f" {current or 'base'}; to go {way[1]}, run `lifecycle db {way[0]} {revision}`"
        )


def _alembic(run: Any, connection: Connection, revision: str) -> None:
    """Run an Alembic command; what it refuses (a step past either end) is a SchemaError."""
    try:
        run(alembic_config(connection), revision)
    except CommandError as exc:
        raise SchemaError(f"cannot migrate to {revision}: {exc}") from exc


#: PostgreSQL advisory lock key held while migrating ("lcmg" in ASCII).
_PG_LOCK = 0x6C636D67
#: Seconds a migration waits for another one before it gives up (MariaDB's lock needs one).
_LOCK_WAIT = 600


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the database's migration lock until it has committed.

    SQLite's write transaction (``BEGIN IMMEDIATE``) is itself the lock. On
    PostgreSQL and MariaDB a session lock is taken first and released after the
    commit, so that the next migration reads the revision this one wrote (MariaDB
    commits each DDL statement, so without the lock a second migration could also
    leave tables behind that no revision records).
    """
    with for_writing(engine).connect() as connection:
        unlock = _lock(connection)
        try:
            with connection.begin():
                yield connection
        finally:
            if unlock is not None:
                _release(connection, *unlock)


def _release(connection: Connection, statement: TextClause, params: dict[str, Any]) -> None:
    """Release the migration lock; a connection that broke has lost it already."""
    if connection.invalidated or connection.closed:
        return
    connection.execute(statement, params)
    connection.commit()


def _lock(connection: Connection) -> tuple[TextClause, dict[str, Any]] | None:
    """Take the migration lock on ``connection``; the statement that releases it, if any."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK})
        connection.commit()
        return text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK}
    if dialect in ("mysql", "mariadb"):
        # Lock names are server-wide: the database's name keeps stores apart.
        name = f"lifecycle.migrate.{connection.engine.url.database}"[:64]
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": _LOCK_WAIT}
        ).scalar()
        connection.commit()
        if got != 1:
            raise SchemaError(
                f"another migration of this database has run for {_LOCK_WAIT} s: try again later"
            )
        return text("SELECT RELEASE_LOCK(:name)"), {"name": name}
    return None


def differences(engine: Engine) -> list[Any]:
    """What differs between lifecycle's tables and their definitions (empty when none).

    Only lifecycle's own tables are compared: the database may be an application's,
    whose other tables are none of lifecycle's business.
    """
    opts = {"compare_type": True, "version_table": VERSION_TABLE, "include_name": owned}
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, metadata))


def owned(name: str | None, kind: str, parent_names: Any) -> bool:
    """Whether a database object is one that lifecycle's definitions describe."""
    return kind != "table" or name in metadata.tables


def ensure_schema(engine: Engine, *, create: bool) -> None:
    """Check that the database is at the head revision; migrate it first when ``create``.

    Raises :class:`SchemaError` naming the command to run otherwise.
    """
    head = head_revision()
    with engine.connect() as connection:
        current = current_revision(connection)
        if current == head:
            return
        _known(connection)
    if create:
        upgrade(engine)
        return
    where = shown_url(engine)
    if current is None:
        raise SchemaError(f"{where} has no lifecycle schema: run `lifecycle db upgrade`")
    raise SchemaError(
        f"{where} is at schema revision {current}, this version needs {head}: "
        "run `lifecycle db upgrade`"
    )
