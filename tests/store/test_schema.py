"""The schema: created only by the migrations, in agreement with the table definitions."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy

from lifecycle import SchemaError
from lifecycle.service import Lifecycle
from lifecycle.store import migrate
from lifecycle.store.engine import create_engine
from lifecycle.store.schema import quarantine
from tests.store.conftest import server_url
from tests.store.helpers import msg, onboarding

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"events", "account_heads", "quarantine", "lifecycle_version"}


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_matches_models_and_round_trips(db_url: str) -> None:
    """upgrade -> no differences from the models -> downgrade to base -> upgrade again works."""
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    assert migrate.differences(engine) == []
    assert set(sqlalchemy.inspect(engine).get_table_names()) >= TABLES
    migrate.downgrade(engine, "base")
    assert sqlalchemy.inspect(engine).get_table_names() == []  # the revision's table too
    migrate.upgrade(engine)
    assert migrate.differences(engine) == []
    with engine.connect() as connection:
        assert migrate.current_revision(connection) == migrate.head_revision()
    engine.dispose()


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_mariadb_text_compares_byte_for_byte_after_0006(db_url: str) -> None:
    """Every text column of lifecycle's tables takes the binary, non-padding collation,
    and going back to 0005 restores the character set's default."""
    query = sqlalchemy.text(
        "SELECT DISTINCT collation_name FROM information_schema.columns WHERE "
        "table_schema = DATABASE() AND collation_name IS NOT NULL "
        "AND table_name <> 'lifecycle_version'"
    )
    engine = create_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(query).scalars().all() == ["utf8mb4_nopad_bin"]
        migrate.downgrade(engine, "0005")
        with engine.connect() as connection:
            assert "utf8mb4_nopad_bin" not in connection.execute(query).scalars().all()
        migrate.upgrade(engine)
        assert migrate.differences(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
@pytest.mark.parametrize("charset", ["latin1", "utf8mb3"])
def test_mariadb_database_of_another_default_charset_matches_the_models(
    db_url: str, charset: str
) -> None:
    """A database whose default character set is not utf8mb4 (latin1 is MariaDB's own
    default before 11.6, utf8mb3 that of many older set-ups) gets tables in it from 0001 to
    0005; 0006's CONVERT TO utf8mb4 then widens every TEXT column to MEDIUMTEXT, so that a
    store just migrated differs from the table definitions and `db check` exits 1."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"ALTER DATABASE {engine.url.database} CHARACTER SET {charset}"
            )
        migrate.upgrade(engine)
        assert migrate.differences(engine) == []
    finally:
        engine.dispose()


def test_0008_keeps_the_quarantine_and_never_hands_an_id_out_again(db_url: str) -> None:
    """The quarantine rebuilt on SQLite (migration 0008) keeps every row as it was, and
    after it a new rejection never takes the id of a released one; back at 0007 the rows
    stay too."""
    engine = create_engine(db_url)
    rows = [
        {"received_at": datetime(2024, 1, 1, tzinfo=UTC), "source": "api", "line": None,
         "batch_index": None, "code": "account_unknown", "reason": f"reason {n}",
         "account": f"acct_{n}", "message_id": f"m{n}", "event": "Signed In",
         "raw": orjson.dumps(msg("Signed In", "u1", f"acct_{n}", mid=f"m{n}")), "digest": None}
        for n in range(3)
    ]  # fmt: skip
    everything = sqlalchemy.select(quarantine).order_by(quarantine.c.id)
    try:
        migrate.upgrade(engine, "0007")
        with engine.begin() as connection:
            connection.execute(sqlalchemy.insert(quarantine), rows)
            before = connection.execute(everything).all()
        migrate.upgrade(engine)
        assert migrate.differences(engine) == []
        with engine.connect() as connection:
            assert connection.execute(everything).all() == before
        with Lifecycle(engine) as store:
            store.submit_many(onboarding("acct_2")[:2])
            assert store.retry_rejections(account="acct_2").accepted == 1
            store.submit(msg("Signed In", "u1", "acct_9"))
            (newest,) = store.rejections(account="acct_9")
        assert newest.id > before[-1].id
        migrate.downgrade(engine, "0007")
        with engine.connect() as connection:
            ids = connection.execute(sqlalchemy.select(quarantine.c.id)).scalars().all()
        assert sorted(ids) == [before[0].id, before[1].id, newest.id]
        migrate.upgrade(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
@pytest.mark.parametrize("scheme", ["mariadb", "mysql"])
def test_mariadb_indexes_the_first_255_characters_of_a_source(db_url: str, scheme: str) -> None:
    """A `mariadb://` URL is SQLAlchemy's "mariadb" dialect, which read no `mysql_length`:
    the index took the whole column, cut by the server to 768 characters, where a
    `mysql://` URL of the same server got the 255 documented."""
    url = sqlalchemy.make_url(db_url).set(drivername=f"{scheme}+pymysql")
    engine = create_engine(url.render_as_string(hide_password=False))
    query = sqlalchemy.text(
        "SELECT sub_part FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "AND table_name = 'quarantine' AND index_name = 'ix_quarantine_source'"
    )
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(query).scalars().all() == [255]
    finally:
        engine.dispose()


def test_server_database_needs_explicit_upgrade(db_url: str, backend: str) -> None:
    """A new SQLite file gets its schema on first use; a server database asks for `db upgrade`."""
    if backend == "sqlite":
        Lifecycle(db_url).close()
        assert tables(db_url) >= TABLES
        return
    with pytest.raises(SchemaError, match="lifecycle db upgrade"):
        Lifecycle(db_url)
    Lifecycle(db_url, create_schema=True).close()
    assert tables(db_url) >= TABLES


def test_outdated_schema_is_refused(db_url: str) -> None:
    """A database at an older revision is refused with the command that fixes it, naming
    the database by its URL as given (not with the driver and charset lifecycle added)."""
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    shown = sqlalchemy.make_url(db_url).render_as_string(hide_password=True)
    with pytest.raises(SchemaError, match=f"^{re.escape(shown)} has no lifecycle schema: run"):
        Lifecycle(engine, create_schema=False)
    engine.dispose()


def test_schema_of_a_newer_lifecycle_is_refused_untouched(db_url: str, tmp_path: Path) -> None:
    """A database a newer version migrated (a revision no migration here has) is refused by
    every way in with one clear error, and left as it is: Alembic had said only that it
    "can't locate revision" (and SQLite's first-use upgrade said so on every command)."""
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE lifecycle_version SET version_num = '0099_x'"))
    newer = "is at schema revision 0099_x, which this version of lifecycle does not know"
    for attempt in (
        lambda: Lifecycle(engine),
        lambda: Lifecycle(engine, create_schema=True),
        lambda: migrate.upgrade(engine),
        lambda: migrate.downgrade(engine, "base"),
    ):
        with pytest.raises(SchemaError, match=newer):
            attempt()
    for command in (("accounts", "list"), ("db", "upgrade")):
        done = run_cli(*command, "--db", db_url, cwd=tmp_path)
        assert (done.returncode, newer in done.stderr) == (2, True), done.stderr
    # `db current` reports it ("0099_x (head is 0007)" read as if the store were behind).
    current = run_cli("db", "current", "--db", db_url, cwd=tmp_path)
    assert (current.returncode, current.stdout) == (
        0,
        f"0099_x (unknown to this version, whose head is {migrate.head_revision()}: a newer"
        " lifecycle wrote it)\n",
    )
    with engine.connect() as connection:
        assert migrate.current_revision(connection) == "0099_x"
    assert tables(db_url) >= TABLES
    engine.dispose()


def test_an_unknown_target_revision_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    """`db upgrade`/`db downgrade` to a revision no migration has is a usage error that lists
    the revisions (it was "database error: Can't locate revision"); so is a target on the
    wrong side, or a step past either end. Relative steps work."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert run_cli("db", "upgrade", "--db", db, cwd=tmp_path).returncode == 0
    head = migrate.head_revision()
    for command in ("upgrade", "downgrade"):
        done = run_cli("db", command, "00x9", "--db", db, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == (
            "lifecycle: error: unknown revision '00x9': the revisions are base, 0001, 0002, "
            f"0003, 0004, 0005, 0006, 0007, 0008, {head} and head (or a step from the current one,"
            " such as -1)\n"
        )
    for command, target, why in (
        ("downgrade", "head", "a downgrade goes back"),
        ("downgrade", "+1", "a downgrade goes back"),
        ("upgrade", "base", "an upgrade goes forward"),
        ("upgrade", "-1", "an upgrade goes forward"),
        ("upgrade", "+1", "Relative revision +1 didn't produce 1 migrations"),
        ("downgrade", "-10", "Relative revision -10 didn't produce 10 migrations"),
        (
            "upgrade",
            "0001",
            f"the database is at {head}; to go back, run `lifecycle db downgrade 0001`",
        ),
    ):
        done = run_cli("db", command, target, "--db", db, cwd=tmp_path)
        assert done.returncode == 2 and why in done.stderr, (command, target, done.stderr)
        assert done.stderr.startswith("lifecycle: error: ")  # not "database error"
    assert run_cli("db", "downgrade", "-1", "--db", db, cwd=tmp_path).returncode == 0
    before = f"{int(head) - 1:04d}"
    ahead = run_cli("db", "downgrade", head, "--db", db, cwd=tmp_path)
    assert ahead.returncode == 2 and ahead.stderr == (
        f"lifecycle: error: downgrade {head}: the database is at {before}; to go forward, run "
        f"`lifecycle db upgrade {head}`\n"
    )
    assert run_cli("db", "current", "--db", db, cwd=tmp_path).stdout.startswith(f"{before} ")
    assert run_cli("db", "upgrade", "+1", "--db", db, cwd=tmp_path).returncode == 0
    assert run_cli("db", "current", "--db", db, cwd=tmp_path).stdout.startswith(f"{head} ")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args], cwd=cwd, capture_output=True, text=True
    )


def test_db_commands(db_url: str, tmp_path: Path) -> None:
    """`db upgrade`, `db current`, `db check` and `db downgrade` work through the CLI."""
    up = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    head = migrate.head_revision()
    current = run_cli("db", "current", "--db", db_url, cwd=tmp_path)
    assert current.stdout.split()[0] == head
    assert run_cli("db", "check", "--db", db_url, cwd=tmp_path).returncode == 0
    down = run_cli("db", "downgrade", "base", "--db", db_url, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert run_cli("db", "current", "--db", db_url, cwd=tmp_path).stdout.startswith("base")
    assert run_cli("db", "check", "--db", db_url, cwd=tmp_path).returncode == 1


@pytest.mark.mariadb
def test_a_mariadb_url_that_names_no_database_is_refused_in_one_line(tmp_path: Path) -> None:
    """`mariadb://user@host` (no database after the host) crashed every command with an
    AssertionError deep in SQLAlchemy's reflection, exit 70 "internal error (a bug)",
    instead of saying that the URL names no database (exit 2)."""
    url = sqlalchemy.make_url(server_url("mariadb"))._replace(database=None)
    shown = url.render_as_string(hide_password=False)
    assert sqlalchemy.make_url(shown).database is None  # never the server's own database
    for command in (("db", "upgrade"), ("db", "current"), ("db", "check"), ("accounts", "list")):
        done = run_cli(*command, "--db", shown, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, ""), (command, done.stderr)
        (error,) = done.stderr.splitlines()
        assert error.startswith("lifecycle: error: ") and "database" in error, error


def test_an_applications_own_alembic_schema_is_left_alone(db_url: str, tmp_path: Path) -> None:
    """In a database an application migrates with Alembic too, lifecycle keeps its revision
    in a table of its own: it read the application's revision as a lifecycle one it did not
    know (and refused to start), or wrote its own over it. `db check` compares only
    lifecycle's tables; `db downgrade base` removes only them."""
    engine = create_engine(db_url)
    with engine.begin() as connection:
        for statement in (
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
            "INSERT INTO alembic_version (version_num) VALUES ('9f3e2a1b7c00')",
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(40))",
        ):
            connection.exec_driver_sql(statement)
    for command in (("db", "upgrade"), ("db", "check"), ("accounts", "list")):
        done = run_cli(*command, "--db", db_url, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    assert run_cli("db", "current", "--db", db_url, cwd=tmp_path).stdout.startswith(
        migrate.head_revision()
    )
    assert run_cli("db", "downgrade", "base", "--db", db_url, cwd=tmp_path).returncode == 0
    assert tables(db_url) == {"alembic_version", "customers"}
    with engine.connect() as connection:
        app = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert app == [("9f3e2a1b7c00",)]
    engine.dispose()


def test_a_store_of_a_development_version_says_how_to_move_its_revision(
    db_url: str, tmp_path: Path
) -> None:
    """A store whose revision is in alembic_version (as before lifecycle_version) looked
    new, and its first migration failed on tables that exist; it is refused with the
    statement that moves the revision, untouched, and opens once that is run."""
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    rename = "ALTER TABLE {} RENAME TO {}"
    with engine.begin() as connection:
        connection.exec_driver_sql(rename.format("lifecycle_version", "alembic_version"))
    told = "recorded in alembic_version as development versions did: run `ALTER TABLE "
    for attempt in (lambda: Lifecycle(engine), lambda: migrate.upgrade(engine)):
        with pytest.raises(SchemaError, match=told):
            attempt()
    done = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path)
    assert done.returncode == 2 and told in done.stderr
    with engine.begin() as connection:
        connection.exec_driver_sql(rename.format("alembic_version", "lifecycle_version"))
    Lifecycle(engine).close()
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_postgresql_schema_of_its_own_holds_every_table(db_url: str, tmp_path: Path) -> None:
    """With its schema first on the URL's search path, lifecycle works beside an application
    table of one of its names, and joins the application's transaction given the same path."""
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA lc")
        connection.exec_driver_sql("CREATE TABLE events (id INTEGER PRIMARY KEY)")
    url = f"{db_url}?options=-csearch_path%3Dlc"
    assert run_cli("db", "upgrade", "--db", url, cwd=tmp_path).returncode == 0
    store = Lifecycle(url)
    assert {v.verdict for v in store.submit_many(onboarding("acct_1"))} == {"accepted"}
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL search_path TO lc, public")
        verdict = store.submit(msg("Signed Out", "u1", "acct_1"), connection=connection)
        assert verdict.verdict == "accepted"
    assert store.state("acct_1").version == 5  # type: ignore[union-attr]
    assert [s.version for s in store.replay()] == [5]
    store.close()
    for command in (("db", "check"), ("replay", "--verify"), ("relay", "status")):
        done = run_cli(*command, "--db", url, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    inspector = sqlalchemy.inspect(engine)
    assert set(inspector.get_table_names(schema="lc")) >= TABLES
    assert inspector.get_table_names(schema="public") == ["events"]
    engine.dispose()


@pytest.mark.slow
def test_migrations_ship_in_the_wheel(tmp_path: Path) -> None:
    """`lifecycle db upgrade` works from a built wheel installed outside the repository."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(dist), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("lifecycle-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import lifecycle.migrations as m; print(m.__file__)"],
        cwd=work, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stderr
    upgrade = subprocess.run(
        [sys.executable, "-m", "lifecycle", "db", "upgrade", "--db", "sqlite:///fresh.db"],
        cwd=work, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    assert tables(f"sqlite:///{work / 'fresh.db'}") >= TABLES


def _open_at_once(url: str, barrier: Any, results: Any) -> None:
    """Worker: open a store on ``url`` as soon as every worker is ready; report the outcome."""
    engine = create_engine(url)
    barrier.wait(30)
    try:
        migrate.ensure_schema(engine, create=True)
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def _open_in_four_processes_at_once(url: str) -> None:
    """Four processes open a store on ``url`` at the same moment: all succeed, schema at head."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.SimpleQueue()
    workers = [
        context.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [results.get() for _ in workers] == ["ok"] * 4
    engine = create_engine(url)
    with engine.connect() as connection:
        assert migrate.current_revision(connection) == migrate.head_revision()
    engine.dispose()


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Several processes creating the schema of one new SQLite file at the same moment
    take turns: every one of them opens it, and the schema is at the head once."""
    for attempt in range(3):
        _open_in_four_processes_at_once(f"sqlite:///{tmp_path / f'new-{attempt}.db'}")


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_processes_upgrading_a_new_server_database_at_once_all_succeed(db_url: str) -> None:
    """Every replica of a service running `db upgrade` on start: one migrates, the others
    wait for it and find the schema at the head, instead of failing on tables that exist."""
    _open_in_four_processes_at_once(db_url)
    assert tables(db_url) >= TABLES


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_a_migration_that_waits_too_long_for_another_gives_up(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB's lock takes a time limit: past it, a clear SchemaError and nothing migrated."""
    monkeypatch.setattr(migrate, "_LOCK_WAIT", 1)
    engine = create_engine(db_url)
    name = f"lifecycle.migrate.{engine.url.database}"
    try:
        with engine.connect() as holder:
            assert holder.execute(sqlalchemy.text(f"SELECT GET_LOCK('{name}', 0)")).scalar() == 1
            with pytest.raises(SchemaError, match="another migration"):
                migrate.upgrade(engine)
            holder.execute(sqlalchemy.text(f"SELECT RELEASE_LOCK('{name}')"))
        assert tables(db_url) == set()
        migrate.upgrade(engine)
        assert tables(db_url) >= TABLES
    finally:
        engine.dispose()
