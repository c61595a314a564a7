"""Engines for the event store: URL resolution and per-backend connection settings.

SQLite is the embedded default. Each connection gets WAL (readers never block
the writer), a 30 s busy timeout (writers queue instead of failing),
``synchronous=FULL`` (a commit is on disk when it returns: with ``NORMAL`` a power
loss could take back events the relay had already sent to Segment, and the store
would then accept a second ``Account Created``), foreign keys on, and a page cache of
up to 256 MB (the unique indexes on random keys are what a bulk import spends its
time on). Write transactions (connections from :func:`for_writing`) start with
``BEGIN IMMEDIATE`` so that a read-then-write transaction never fails half-way on a
lock upgrade; read-only ones start with a plain ``BEGIN`` and never block on the writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)

from lifecycle.errors import StoreError

ENV_VAR = "LIFECYCLE_DATABASE_URL"
#: What a database URL should look like, for an error about one that does not.
_EXPECTED = "must look like sqlite:///FILE, postgresql://USER@HOST/DB or mariadb://USER@HOST/DB"
DEFAULT_URL = "sqlite:///lifecycle.db"

#: How long an SQLite connection waits for another that holds the file (its busy timeout).
BUSY_SECONDS = 30.0

#: What each SQLite connection of the store's runs first (the benchmarks' floors too).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-262144",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA wal_autocheckpoint=16384",
)


def database_url(given: str | None) -> str:
    """``given``, else ``$LIFECYCLE_DATABASE_URL``, else ``sqlite:///lifecycle.db``."""
    return given or os.environ.get(ENV_VAR) or DEFAULT_URL


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with lifecycle's connection settings.

    ``postgresql://`` means psycopg 3 and ``mariadb://``/``mysql://`` mean PyMySQL,
    unless the URL names another driver. A URL that names no database lifecycle can
    open raises :class:`StoreError` (its password hidden).
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() in ("mysql", "mariadb") and not parsed.database:
        # Without one, SQLAlchemy's reflection failed an assertion: exit 70, "a bug".
        shown = parsed.render_as_string(hide_password=True)
        raise StoreError(
            f"cannot open the event store: {shown!r} names no database; the database URL"
            f" {_EXPECTED}"
        )
    try:
        target, options = _with_settings(parsed, kwargs)
        engine = sqlalchemy.create_engine(target, **options)
    except ArgumentError as exc:  # no such dialect or driver (NoSuchModuleError)
        shown = parsed.render_as_string(hide_password=True)
        why = str(exc).splitlines()[0]  # SQLite's lists every valid form on more lines
        raise StoreError(
            f"cannot open the event store: {shown!r}: {why}; the database URL {_EXPECTED}"
        ) from None
    except ImportError as exc:  # the driver is not installed
        raise StoreError(_missing_driver(target, exc)) from exc
    _per_process(engine)
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
        if in_memory(engine):
            _one_thread(engine)
    return engine


def open_engine(bind: str | Engine | None) -> Engine:
    """The engine of a store made from ``bind``: an application's own (see
    :func:`adopt_engine` and :func:`transactional`), else one for the URL
    :func:`database_url` gives."""
    if isinstance(bind, Engine):
        adopt_engine(bind)
        return transactional(bind)
    return create_engine(database_url(bind))


def parse_url(url: str) -> sqlalchemy.URL:
    """``url`` parsed, or :class:`StoreError` saying what a database URL looks like (a
    port that is not a number raised ``ValueError``)."""
    try:
        return sqlalchemy.make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"cannot open the event store: the database URL {_EXPECTED}") from None


def sqlite_file(url: str) -> str | None:
    """The file an ``sqlite://`` URL names: "" for none (a database in memory, an SQLite
    URI's ``file::memory:``, ``mode=memory`` or ``vfs=memdb`` included), None for another
    backend, an SQLite URI (``?uri=true``) SQLite would refuse, or a URL SQLite refuses
    (``sqlite://x.db``: a host), which :func:`create_engine` explains."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.host:
        return None
    database = parsed.database or ""
    if parsed.query.get("uri"):
        query = parsed.query
        memory = (
            database.startswith("file::memory:")
            or query.get("mode") == "memory"
            or query.get("vfs") == "memdb"
        )
        return "" if memory or database == ":memory:" else _uri_file(database)
    return "" if database in ("", ":memory:") else database


def _uri_file(database: str) -> str | None:
    """The file of an SQLite URI (``file:x.db``, or ``file://`` and a path), as SQLite reads it:
    percent-escapes decoded, an authority only if empty or ``localhost``. Without it a
    read command named by a URI had created, and migrated, a store at a mistyped path."""
    if not database.startswith("file:"):
        return None
    path = database[len("file:") :]
    if path.startswith("//"):
        authority, slash, rest = path[2:].partition("/")
        if authority not in ("", "localhost"):
            return None
        path = slash + rest
    return unquote(path) or None


#: The extra that installs the driver lifecycle picks for each server backend.
_EXTRAS = {"postgresql": "postgres", "mariadb": "mariadb", "mysql": "mariadb"}


def _missing_driver(url: sqlalchemy.URL, error: ImportError) -> str:
    """Why a URL cannot be opened whose driver is not installed, and what installs it:
    the extra, for the driver lifecycle picks; the driver's own package for another."""
    backend = url.get_backend_name()
    if backend not in (*_EXTRAS, "sqlite"):
        shown = url.render_as_string(hide_password=True)
        return f"cannot open the event store: {shown!r}: the database URL {_EXPECTED}"
    extra = _EXTRAS.get(backend)  # none for SQLite: its own driver is Python's sqlite3
    install = f"pip install 'lifecycle[{extra}]'" if extra else "Python's sqlite3"
    if url.drivername in _DEFAULT_DRIVERS:
        fix = f": {install}"
    else:
        named = url.get_driver_name()
        fix = f": install {named}, or drop '+{named}' from the URL for lifecycle's own ({install})"
    return f"cannot open the event store: the {backend} driver is not installed ({error}){fix}"


#: The drivers lifecycle picks for a URL that names none (see :func:`_with_settings`).
_DEFAULT_DRIVERS = {
    "postgresql+psycopg": "postgresql",
    "mariadb+pymysql": "mariadb",
    "mysql+pymysql": "mysql",
}


def shown_url(engine: Engine) -> str:
    """The engine's URL as the user most likely wrote it, for messages: no password, and
    without the driver and the charset lifecycle added (``postgresql+psycopg://``)."""
    url = engine.url
    url = url.set(drivername=_DEFAULT_DRIVERS.get(url.drivername, url.drivername))
    if url.query.get("charset") == "utf8mb4":
        url = url.difference_update_query(["charset"])
    return url.render_as_string(hide_password=True)


def in_memory(engine: Engine) -> bool:
    """Whether ``engine`` is an in-memory SQLite database: one connection's, nobody else's."""
    return engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")


def _per_process(engine: Engine) -> None:
    """Use a pooled connection only in the process that opened it.

    An application that creates its store and then forks (a web server's preloaded
    workers, a task queue's pool) would otherwise have its processes talk over one
    socket at once: statements answered for another process, or a commit of
    another's transaction. A child drops the connections it inherited, without
    closing them (that would end the parent's sessions), and opens its own:
    SQLAlchemy's recipes for pools and ``os.fork()``. Both of them: the pool is
    replaced in the child as soon as it is forked, and a connection that still
    comes from another process is refused at checkout. The check at checkout alone
    came too late: the pool pings a connection before it, and a child's ping over the
    parent's socket could wait for ever for an answer another process read.
    """
    _FORKED_AWAY.add(engine)

    @event.listens_for(engine, "connect")
    def _connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info["pid"] != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise DisconnectionError(f"a connection of process {record.info['pid']}")


#: The engines whose inherited connections a forked child drops at once.
_FORKED_AWAY: weakref.WeakSet[Engine] = weakref.WeakSet()


def _drop_inherited_pools() -> None:
    for engine in list(_FORKED_AWAY):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_drop_inherited_pools)


def _one_thread(engine: Engine) -> None:
    """Refuse, with a clear error, to use an in-memory SQLite store from a second thread.

    Such a database lives in one connection, and SQLAlchemy gives each thread a
    connection of its own: another thread would find an empty database ("no such
    table") or, with its own schema, a store apart. A file shares one store.
    """
    first: list[int] = []

    @event.listens_for(engine, "connect")
    def _connect(_dbapi_connection: Any, _record: Any) -> None:
        thread = threading.get_ident()
        if first and first[0] != thread:
            raise StoreError(
                "an in-memory SQLite database (sqlite://) belongs to the thread that opened "
                "it; to use the store from several threads, give it a file (sqlite:///FILE)"
            )
        first.append(thread)


def _with_settings(parsed: URL, kwargs: dict[str, Any]) -> tuple[URL, dict[str, Any]]:
    """The URL with lifecycle's default driver, and the engine arguments it needs."""
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername in ("mariadb", "mysql"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    if parsed.get_driver_name() == "psycopg":
        # Server-side prepared statements get a generic plan fixed while the tables are
        # small; a growing store then scans `events` for every messageId look-up.
        kwargs.setdefault("connect_args", {}).setdefault("prepare_threshold", None)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        kwargs.setdefault("pool_recycle", 3600)
        # InnoDB's default, REPEATABLE READ, keeps a transaction's first snapshot: a
        # submission that lost a race inside Lifecycle.transaction() would re-read the
        # same stale heads on every retry. PostgreSQL's default is READ COMMITTED too.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    if parsed.get_backend_name() != "sqlite":
        # After a server restart or failover every pooled connection is dead; without a
        # ping each would fail one submission before the pool learnt it (about 50 us
        # per checkout, against a live submission's 1.5 ms commit on PostgreSQL).
        kwargs.setdefault("pool_pre_ping", True)
    return parsed, kwargs


#: MariaDB error numbers: lock wait timeout, deadlock, and the savepoint a deadlock's
#: rollback of the whole transaction took with it.
_LOCK_WAIT_TIMEOUT, _DEADLOCK, _NO_SAVEPOINT = 1205, 1213, 1305


def _error_codes(exc: DBAPIError) -> tuple[str | None, Any]:
    """The driver error's SQLSTATE (PostgreSQL) and first argument (MariaDB's number)."""
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return getattr(exc.orig, "sqlstate", None), args[0] if args else None


def deadlocked(exc: DBAPIError) -> bool:
    """A deadlock (on MariaDB, also the savepoint that its rollback of everything took)."""
    sqlstate, number = _error_codes(exc)
    return sqlstate == "40P01" or number in (_DEADLOCK, _NO_SAVEPOINT)


def lost_transaction(exc: DBAPIError) -> bool:
    """A deadlock that rolled back the whole transaction, not only the savepoint in
    which it came (MariaDB's; PostgreSQL's leaves the transaction usable)."""
    return _error_codes(exc)[1] in (_DEADLOCK, _NO_SAVEPOINT)


#: MariaDB's numbers for a server that is going away or full: too many connections,
#: shutting down, connection killed, disconnected for inactivity. The client's own
#: connection errors (can't connect, server gone away, lost connection) are 2000-2999.
_MARIADB_UNREACHABLE = {1040, 1053, 1927, 4031}


def unreachable(exc: DBAPIError) -> bool:
    """Whether the database could not be reached or dropped the connection (a restart,
    a failover, a network cut): worth waiting out, unlike a missing table or a
    permission denied, which every retry would meet again.

    By the driver's code, not its exception class: PyMySQL and ``sqlite3`` raise
    ``OperationalError`` for "UPDATE command denied" and "no such table" too.
    """
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):  # a file: busy is the only passing trouble
        return "locked" in str(orig) or "busy" in str(orig)
    sqlstate = getattr(orig, "sqlstate", False)
    if sqlstate is None:  # psycopg, before the server answered: a connection or a value
        return isinstance(exc, OperationalError)  # (a NUL in text is a DataError)
    if sqlstate is not False:
        return str(sqlstate).startswith(("08", "57P", "53"))
    number = _error_codes(exc)[1]
    return isinstance(number, int) and (2000 <= number < 3000 or number in _MARIADB_UNREACHABLE)


def is_transient(exc: DBAPIError) -> bool:
    """Deadlocks, serialization failures and busy databases: the transaction may be run again."""
    sqlstate, number = _error_codes(exc)
    if sqlstate in ("40001", "40P01") or number in (_LOCK_WAIT_TIMEOUT, _DEADLOCK):
        return True
    return "database is locked" in str(exc.orig)


def configure_sqlite(engine: Engine) -> None:
    """Apply the SQLite settings above to every connection of ``engine``."""
    _TRANSACTIONAL.add(engine)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # lifecycle emits BEGIN itself
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            _execute_pragma(cursor, pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection._is_autocommit_isolation():  # asked for: no transaction
            return
        immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        # On the driver itself: a live submission is a transaction of its own, and
        # SQLAlchemy's execution context would cost more than the BEGIN.
        try:
            connection.connection.driver_connection.execute(statement)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc


_WRITE_OPTION = "lifecycle_write"

#: The SQLite engines whose transactions begin with a BEGIN of lifecycle's.
_TRANSACTIONAL: weakref.WeakSet[Engine] = weakref.WeakSet()


def adopt_engine(engine: Engine) -> None:
    """Make an application's own SQLite engine begin its transactions for real.

    Python's ``sqlite3`` driver, left as it is, sends no ``BEGIN`` until a statement
    writes: a ``SAVEPOINT`` then opens a transaction of its own, and its ``RELEASE``
    commits it. A submission into the application's transaction was stored even when
    the application rolled back, and a :meth:`Lifecycle.transaction` that raised kept
    what it had appended. This is SQLAlchemy's recipe for the driver, applied as each
    transaction begins (connections already in the pool included): ``BEGIN`` unless the
    driver has one open already (an engine that follows the recipe itself, or Python
    3.12's ``autocommit=False``), nothing in ``AUTOCOMMIT`` mode. The other settings
    (WAL, busy timeout) stay the application's; lifecycle's engines from a URL have them.
    """
    if engine.dialect.name != "sqlite" or engine.dialect.driver != "pysqlite":
        return
    if engine in _TRANSACTIONAL:
        return
    _TRANSACTIONAL.add(engine)

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection._is_autocommit_isolation():
            return
        driver = connection.connection.driver_connection
        if driver.in_transaction or getattr(driver, "autocommit", -1) != -1:
            return
        driver.isolation_level = None  # no BEGIN of the driver's own inside ours
        immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        try:
            driver.execute(statement)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc


def _execute_pragma(cursor: Any, pragma: str, wait: float = BUSY_SECONDS) -> None:
    """Run ``pragma``, waiting out another connection that holds the file for a moment.

    Turning a new file to WAL needs it to itself, and SQLite answers "database is
    locked" at once rather than through the busy timeout: several processes
    opening a new database together would otherwise fail. The wait is bounded by the
    busy timeout in all: each attempt may itself wait in the driver's busy handler
    (Python's ``sqlite3`` gives every connection 5 s), and 100 attempts of that were
    over 8 minutes on a file another process held.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            cursor.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


#: The isolation level of the store's own transactions on each dialect: what its engines
#: from a URL have (on MariaDB READ COMMITTED, not the server's REPEATABLE READ, see
#: :func:`create_engine`).
_STORE_ISOLATION = {
    "sqlite": "SERIALIZABLE",
    "postgresql": "READ COMMITTED",
    "mysql": "READ COMMITTED",
    "mariadb": "READ COMMITTED",
}


@contextmanager
def one_snapshot(connection: Connection) -> Iterator[Connection]:
    """A read transaction on ``connection`` that sees one snapshot from its first read.

    REPEATABLE READ on PostgreSQL and MariaDB (whose connections otherwise read what
    is committed at each statement); on SQLite a read transaction already keeps its
    snapshot.
    """
    if connection.dialect.name != "sqlite":
        connection.execution_options(isolation_level="REPEATABLE READ")
    with connection.begin():
        yield connection


def for_writing(engine: Engine) -> Engine:
    """The same engine (and pool), for read-then-write transactions."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def transactional(engine: Engine) -> Engine:
    """``engine``, or the same engine and pool at the isolation level the store needs.

    An application's ``AUTOCOMMIT`` engine committed each statement on its own: a store
    transaction that failed kept half of itself, and PostgreSQL refused a submission's
    SAVEPOINT and the server-side cursor of a read. On MariaDB, REPEATABLE READ (the
    server's default) kept showing a submission that lost a race the same stale head
    on every retry, within a :meth:`Lifecycle.transaction`. The application's own
    connections keep their level.
    """
    name = engine.dialect.name
    made = getattr(engine.dialect, "_on_connect_isolation_level", None)
    level = engine.get_execution_options().get("isolation_level", made)
    if name not in _STORE_ISOLATION:
        return engine
    if level == "AUTOCOMMIT" or (
        name in ("mysql", "mariadb") and level not in ("READ COMMITTED", "READ UNCOMMITTED")
    ):
        return engine.execution_options(isolation_level=_STORE_ISOLATION[name])
    return engine
