"""Backends for the store tests: every test here runs on SQLite, PostgreSQL and MariaDB.

PostgreSQL and MariaDB are used when ``LIFECYCLE_TEST_POSTGRES_URL`` /
``LIFECYCLE_TEST_MARIADB_URL`` name a server (``.ci/run`` sets both); without
them those cases are skipped with the reason. Each test gets a database of its
own, created for it and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy

from lifecycle.store.engine import create_engine

SERVERS = {
    "postgres": "LIFECYCLE_TEST_POSTGRES_URL",
    "mariadb": "LIFECYCLE_TEST_MARIADB_URL",
}


def server_url(backend: str) -> str:
    """The admin URL of a server backend, or skip the test saying which variable is unset."""
    url = os.environ.get(SERVERS[backend])
    if not url:
        pytest.skip(f"{SERVERS[backend]} is not set: no {backend} server to test against")
    return url


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend this test runs on."""
    name: str = request.param
    if name != "sqlite":
        request.applymarker(getattr(pytest.mark, name))
    return name


def fresh_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Create an empty database on ``backend``, yield its URL, drop it afterwards."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "lifecycle.db"
        yield f"sqlite:///{path}"
        return
    admin_url = sqlalchemy.make_url(server_url(backend))
    name = f"lifecycle_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        admin_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            if backend == "postgres":
                connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
            else:
                connection.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


@pytest.fixture
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an empty database of its own on the backend under test."""
    yield from fresh_database(backend, tmp_path_factory)
