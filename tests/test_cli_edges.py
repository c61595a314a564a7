"""The command line at its edges: SQLite URIs, non-UTF-8 paths. Run as real subprocesses."""

from __future__ import annotations

import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.test_cli import lifecycle, line, verdicts, write

needs_bytes_names = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="file names must be free bytes (Linux)"
)


def test_read_commands_do_not_create_a_store_named_by_an_sqlite_uri(tmp_path: Path) -> None:
    """docs/cli.md: "An SQLite file that does not exist is created by `ingest` and `db
    upgrade` only: every other command refuses it (exit 2, "no event store at PATH"), so
    that a mistyped path is not a new, empty store." The docs name SQLite URIs
    (`?uri=true`) as URLs the command line takes; one naming a file that does not exist
    is not refused by the read commands: a new store is created, migrated, and reported
    empty, exit 0."""
    for command in (("accounts", "list"), ("rejections", "list"), ("replay",)):
        typo = tmp_path / f"typo-{command[0]}.db"
        url = f"sqlite:///file:{typo}?uri=true"
        done = lifecycle(*command, "--db", url, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b""), (command, done)
        assert not typo.exists(), f"{command}: a new store was created at {typo}"


def test_read_commands_do_not_put_the_schema_into_a_file_named_by_an_sqlite_uri(
    tmp_path: Path,
) -> None:
    """The same gap for an application's own database named by an SQLite URI: the read
    commands are documented to refuse a file that holds no lifecycle schema ("is not an
    event store") rather than give it lifecycle's tables."""
    own = tmp_path / "app.db"
    with closing(sqlite3.connect(own)) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER)")
        connection.commit()
    done = lifecycle("accounts", "list", "--db", f"sqlite:///file:{own}?uri=true", cwd=tmp_path)
    with closing(sqlite3.connect(own)) as connection:
        tables = {n for (n,) in connection.execute("SELECT name FROM sqlite_master")}
    assert (done.returncode, done.stdout) == (2, b""), done
    assert "events" not in tables


@needs_bytes_names
def test_a_store_whose_path_is_not_utf8_can_be_read(tmp_path: Path) -> None:
    """`ingest --db sqlite:///<non-UTF-8 name>` creates and fills the store, but every
    command that reads a store then exits 70 ("internal error (a bug)") with a
    UnicodeEncodeError traceback: the check for a lifecycle schema quotes the path as
    UTF-8, which its undecodable bytes (kept as lone surrogates) are not."""
    db = tmp_path / os.fsdecode(b"store\xff.db")
    url = f"sqlite:///{db}"
    source = write(tmp_path / "in.jsonl", line("Account Created"))
    assert lifecycle("ingest", source, "--db", url).returncode == 0
    for command in (("accounts", "list"), ("rejections", "list"), ("relay", "status")):
        done = lifecycle(*command, "--db", url)
        assert done.returncode == 0, (command, done.returncode, done.stderr.decode()[-300:])
    assert lifecycle("accounts", "list", "--db", url).stdout == b"acct_1\tcreated\t1\t0\n"


def test_files_after_an_option_and_a_double_dash(tmp_path: Path) -> None:
    """docs/cli.md: "Files and options may come in any order (`check a.jsonl --format jsonl
    b.jsonl`)". After `--` (the end of options, the only way to name a file that starts
    with a dash) a file is refused as an "unrecognized argument" (exit 2) once a file and
    an option came before it: `check a.jsonl --format jsonl -- b.jsonl` and `check
    a.jsonl --format jsonl -- -b.jsonl` judge nothing."""
    first = write(tmp_path / "a.jsonl", line("Account Created", messageId="m1"))
    write(tmp_path / "-b.jsonl", line("Signed Up", messageId="m2"))
    write(tmp_path / "b.jsonl", line("Signed Up", messageId="m2"))
    for second in ("b.jsonl", "-b.jsonl"):
        done = lifecycle("check", first, "--format", "jsonl", "--", second, cwd=tmp_path)
        assert done.returncode == 0, (second, done.stderr.decode())
        assert [r["messageId"] for r in verdicts(done)] == ["m1", "m2"]


@needs_bytes_names
def test_an_id_given_in_bytes_that_are_not_utf8_is_looked_up_not_a_bug(tmp_path: Path) -> None:
    """An account, messageId, code or status given on the command line in bytes that are
    not UTF-8 (a Latin-1 terminal's `café`, kept by Python as lone surrogates) names
    nothing stored: no message with such a key can be stored (it is `malformed_json`).
    Every command that filters by one ended instead with a UnicodeEncodeError traceback
    and exit 70, "internal error (a bug)", as the driver could not encode the query."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    source = write(
        tmp_path / "in.jsonl",
        line("Account Created", account="caf\u00e9"),
        line("Signed Out", account="caf\u00e9"),
    )
    assert lifecycle("ingest", source, "--db", db).returncode == 1
    latin1 = os.fsdecode("caf\u00e9".encode("latin-1"))  # "caf\udce9"
    expected = {
        ("accounts", "show", latin1): 1,  # no such account, as for any other id
        ("accounts", "list", "--status", latin1): 0,
        ("rejections", "list", "--account", latin1): 0,
        ("rejections", "list", "--code", latin1): 0,
        ("rejections", "retry", "--account", latin1): 0,
        ("replay", "--account", latin1): 0,
        ("relay", "requeue", "--account", latin1): 0,
        ("relay", "requeue", "--message-id", latin1): 0,
    }
    for command, code in expected.items():
        done = lifecycle(*command, "--db", db)
        assert b"Traceback" not in done.stderr, (command, done.stderr.decode()[-300:])
        assert done.returncode == code, (command, done.returncode, done.stderr.decode()[-300:])


def test_an_application_database_with_its_own_events_table_is_not_an_event_store(
    tmp_path: Path,
) -> None:
    """docs/cli.md: an SQLite file that holds no lifecycle schema ("an application's own
    database") is refused by the commands that read or relay a store, "is not an event
    store". An application's database with a table of its own named `events` (the most
    common table name there is, and Alembic's `alembic_version` beside it) was taken for
    a store at an unrecorded revision: migrating it failed with "cannot open the event
    store: ...: table events already exists", which says nothing of the wrong file."""
    own = tmp_path / "app.db"
    with closing(sqlite3.connect(own)) as connection:
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.execute("INSERT INTO alembic_version VALUES ('3f2a9c1b7d0e')")
        connection.commit()
    url = f"sqlite:///{own}"
    for command in (("accounts", "list"), ("replay", "--verify"), ("relay", "status")):
        done = lifecycle(*command, "--db", url, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b""), command
        assert done.stderr.decode().splitlines() == [
            f"lifecycle: error: {own} ({url}) is not an event store: it holds no "
            "lifecycle schema; `lifecycle db upgrade` sets one up in it"
        ], command
