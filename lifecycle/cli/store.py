"""Commands that use the event store: ``ingest``, ``db``, ``accounts``, ``rejections``.

The database is ``--db URL``, else ``$LIFECYCLE_DATABASE_URL``, else
``sqlite:///lifecycle.db`` in the working directory. A new SQLite file gets
its schema on first use; other databases need ``lifecycle db upgrade``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from itertools import chain, islice
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import orjson

from lifecycle.cli.check import add_input_arguments
from lifecycle.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_format_argument,
    complain,
    counted,
    load_policy,
    make_report,
    positive,
    progress,
    sigterm_interrupts,
)
from lifecycle.cli.text import account_line, shown
from lifecycle.decide import Verdict
from lifecycle.errors import InputError
from lifecycle.reader import InputItem, items_of, read_lines, stored_name
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.sorting import sorted_by_timestamp
from lifecycle.spec import REJECTION_CODES

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from lifecycle.cli.report import Report
    from lifecycle.service import Lifecycle

# SQLAlchemy and Alembic are imported when a store command runs, not when the CLI starts:
# `lifecycle check` never needs them.


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    """``--db URL`` for every command that opens the store."""
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default: $LIFECYCLE_DATABASE_URL, else sqlite:///lifecycle.db)",
    )


def store_url(args: argparse.Namespace) -> str:
    """The database URL of ``--db`` (or its defaults), refused when it cannot be meant.

    An SQLite URL must name a file: a store in memory would be gone when the command
    ends. Only the commands that create a store (``creates``: ``ingest``, ``db
    upgrade``) may name a file that does not exist; for the others a mistyped path
    had created, and migrated, a new empty store, and found nothing in it.
    """
    from lifecycle.store.engine import database_url, sqlite_file

    if getattr(args, "db", None) == "":  # `--db "$UNSET"`: not the default store
        raise InputError("--db is empty: give a database URL, or leave --db out for the default")
    url = database_url(getattr(args, "db", None))
    path = sqlite_file(url)
    if path == "":
        raise InputError(f"{url!r} names no file: a store in memory is gone when the command ends")
    if path is not None and not getattr(args, "creates", False) and not os.path.exists(path):
        raise InputError(
            f"no event store at {path} ({url}); `lifecycle ingest` or `lifecycle db upgrade` "
            "creates one"
        )
    return url


def store_in_use(args: argparse.Namespace) -> str:
    """:func:`store_url`, for a command that reads or relays what a store holds.

    An SQLite file that holds no lifecycle schema (an application's own database, an
    empty file, a store downgraded to ``base``) is refused: migrating it on first use
    had put lifecycle's tables in it and reported that they held nothing. A store at an
    older revision is migrated on use, as ever.
    """
    from lifecycle.store.engine import sqlite_file

    url = store_url(args)
    path = sqlite_file(url)
    if path and not getattr(args, "creates", False) and not _holds_a_store(path):
        raise InputError(
            f"{path} ({url}) is not an event store: it holds no lifecycle schema; "
            "`lifecycle db upgrade` sets one up in it"
        )
    return url


#: The tables of lifecycle's first migration: an application's own database may well
#: have a table named ``events``.
_FIRST_TABLES = frozenset({"events", "quarantine", "account_heads"})


def _holds_a_store(path: str) -> bool:
    """Whether the SQLite file at ``path`` has lifecycle's tables. A file SQLite cannot
    read counts as one: opening it as a store then says what is wrong with it."""
    import sqlite3

    try:
        # The path's bytes: one that is not UTF-8 (kept as lone surrogates) is a file too.
        uri = f"file:{quote(os.fsencode(path))}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as connection:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if tables >= _FIRST_TABLES:  # a store, at a revision recorded one way or another
                return True
            if "lifecycle_version" not in tables:
                return False
            return connection.execute("SELECT 1 FROM lifecycle_version").fetchone() is not None
    except sqlite3.DatabaseError:
        return True


def open_store(args: argparse.Namespace) -> Lifecycle:
    """The :class:`Lifecycle` for ``--db`` and ``--policy`` (when the command has it)."""
    from lifecycle.service import Lifecycle

    return Lifecycle(
        store_in_use(args),
        policy=load_policy(getattr(args, "policy", None)),
        outbox=not getattr(args, "no_forward", False),
    )


def open_engine(args: argparse.Namespace) -> Engine:
    """An engine for ``--db``, for the schema commands."""
    from lifecycle.store.engine import create_engine

    return create_engine(store_url(args))


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``ingest``, ``db``, ``accounts`` and ``rejections``."""
    ingest = commands.add_parser(
        "ingest",
        help="judge JSONL input and store it (accepted: events; rejected: quarantine)",
        description=(
            "Judge input like `check` and persist it: accepted events are appended to the "
            "event store, rejected messages are quarantined. State carries across runs; "
            "re-running an interrupted ingest stores every event exactly once (messages with "
            "a messageId already stored come back as duplicate). Exit codes as for `check`."
        ),
    )
    add_input_arguments(ingest)
    add_db_argument(ingest)
    ingest.add_argument(
        "--batch-size",
        type=positive,
        default=100_000,
        metavar="N",
        help="messages per transaction (default: 100,000)",
    )
    ingest.add_argument(
        "--no-forward",
        action="store_true",
        help="do not queue the accepted events for Segment (history Segment already has)",
    )
    ingest.set_defaults(run=run_ingest, creates=True)

    db = commands.add_parser("db", help="manage the database schema (migrations)")
    db_commands = db.add_subparsers(title="db commands", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser(
        "upgrade",
        help="migrate the schema up (default: to head)",
        description="Run the migrations from the database's revision up to REVISION "
        "(default: the newest). Several processes may run it at once: they take turns.",
    )
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    upgrade.set_defaults(run=run_db_upgrade, creates=True)
    downgrade = db_commands.add_parser(
        "downgrade",
        help="migrate the schema down to REVISION",
        description="Undo the migrations above REVISION ('base': every table is dropped).",
    )
    downgrade.add_argument("revision", help="target revision; 'base' removes every table")
    downgrade.set_defaults(run=run_db_downgrade)
    current = db_commands.add_parser(
        "current",
        help="print the schema revision of the database",
        description="Print the database's schema revision ('base' before any migration).",
    )
    current.set_defaults(run=run_db_current)
    check = db_commands.add_parser(
        "check",
        help="exit 1 if the database differs from what this version expects",
        description="Compare the database with the schema this version expects: exit 0 "
        "when they agree, else print the differences and exit 1.",
    )
    check.set_defaults(run=run_db_check)
    for sub in (upgrade, downgrade, current, check):
        add_db_argument(sub)

    accounts = commands.add_parser("accounts", help="read account states")
    account_commands = accounts.add_subparsers(
        title="accounts commands", metavar="COMMAND", required=True
    )
    show = account_commands.add_parser(
        "show",
        help="one account's current state",
        description="Print one account's current state; exit 1 if no event of it is stored.",
    )
    show.add_argument("account", metavar="ID", help="the account (its context.groupId)")
    add_format_argument(show, "json", "text")
    show.add_argument(
        "--policy",
        metavar="MODULE:ATTR",
        help="the policy the store is written under (an account without a head row is "
        "replayed under it)",
    )
    show.set_defaults(run=run_accounts_show)
    listing = account_commands.add_parser(
        "list",
        help="every account, one per line",
        description="Print every stored account with its status, version and number of "
        "users, in account order.",
    )
    listing.add_argument("--status", metavar="S", help="only accounts in this status")
    add_format_argument(listing, "text", "jsonl")
    listing.set_defaults(run=run_accounts_list)
    for sub in (show, listing):
        add_db_argument(sub)

    rejections = commands.add_parser("rejections", help="read the quarantine")
    rejection_commands = rejections.add_subparsers(
        title="rejections commands", metavar="COMMAND", required=True
    )
    rlist = rejection_commands.add_parser(
        "list",
        help="quarantined messages, oldest first",
        description="Print the quarantined messages, oldest first: where each came from, "
        "its code and reason (jsonl: the raw message too).",
    )
    rlist.add_argument("--code", metavar="C", help="only this rejection code")
    rlist.add_argument("--account", metavar="ID", help="only this account")
    add_format_argument(rlist, "text", "jsonl")
    add_db_argument(rlist)
    rlist.set_defaults(run=run_rejections_list)
    from lifecycle.cli.history import add_retry_parser

    add_retry_parser(rejection_commands)


#: Messages judged and written at a time within one ingest transaction (bounds memory).
CHUNK_LINES = 20_000


def run_ingest(args: argparse.Namespace) -> int:
    """Judge and store every line, ``--batch-size`` lines per transaction; SIGTERM interrupts
    (the transactions committed stay committed)."""
    with sigterm_interrupts():
        return _ingest(args)


def _ingest(args: argparse.Namespace) -> int:
    report = make_report(args.format, args.show)
    # The store records each file by its own name, the report shows it as it was given.
    lines = read_lines(args.files, {path: stored_name(path) for path in args.files})
    chunk = min(CHUNK_LINES, args.batch_size)
    with open_store(args) as store, progress(args.files, "ingest") as bar:
        if args.sort_by:
            items = sorted_by_timestamp(counted(lines, bar))
        else:
            items = (it for line in counted(lines, bar) for it in items_of(line))

        def judge(batch: list[InputItem], conn: Connection) -> Judged:
            verdicts = store.submit_items(batch, connection=conn)
            return list(zip(batch, verdicts, strict=True))

        # Chunks of messages, not of lines: a `.json` document is one line of any length.
        batches = iter(lambda: list(islice(items, chunk)), [])
        _in_transactions(store, batches, judge, args.batch_size, report)
    report.finish("lifecycle ingest", len(args.files))
    return EXIT_REJECTED if report.rejected else EXIT_OK


#: Messages with their verdicts, as one submission returns them.
Judged = list[tuple[InputItem, Verdict]]

T = TypeVar("T")

#: Store transactions in a row that may lose while running alone (to writers outside them).
ALONE_ATTEMPTS = 3


def _in_transactions(
    store: Lifecycle,
    batches: Iterator[list[T]],
    judge: Callable[[list[T], Connection], Judged],
    size: int,
    report: Report,
) -> None:
    """Judge ``batches`` in store transactions of about ``size`` messages each.

    Verdicts are reported once their transaction has committed, so that what a
    killed ingest printed is stored. They are kept until then without their
    decoded event, so holding a transaction's worth costs little memory.

    A transaction that loses to another writer (:class:`ConcurrencyError`: say,
    another ingest of the same accounts on a server database) is run again,
    alone, from the batches it had taken; so is every one after it, so that two
    ingests take turns instead of losing to each other again. On a server
    database a transaction's batches are therefore kept until it commits.
    """
    from lifecycle.errors import ConcurrencyError

    # SQLite's writers take turns already: nothing to keep for running a transaction again.
    replayable = store.engine.dialect.name != "sqlite"
    alone, lost, again = False, 0, list[list[T]]()
    while True:
        held: list[tuple[str, int, int, Verdict]] = []
        taken: list[list[T]] = []
        count = 0
        try:
            with store.transaction(alone=alone) as conn:
                for batch in chain(again, batches):
                    if replayable:
                        taken.append(batch)
                    judged = judge(batch, conn)
                    held.extend(
                        (it.shown or it.file, it.line, it.index, _bare(v)) for it, v in judged
                    )
                    count += len(judged)
                    if count >= size:
                        break
        except ConcurrencyError:
            lost = lost + 1 if alone else 1
            if not replayable or lost > ALONE_ATTEMPTS:
                raise
            if not alone:
                complain(
                    "lifecycle: another writer is storing the same accounts; "
                    "this ingest now takes turns with it"
                )
            alone, again = True, taken
            continue
        lost, again = 0, []
        for entry in held:
            report.add(*entry)
        if count < size:
            return


def _bare(verdict: Verdict) -> Verdict:
    """The verdict without the decoded event it refers to (what a report needs)."""
    v = verdict
    return Verdict(v.verdict, v.code, v.reason, v.field, v.message_id, v.event_name, v.account)


def run_db_upgrade(args: argparse.Namespace) -> int:
    """Migrate up."""
    return _migrate(args, "upgrade")


def run_db_downgrade(args: argparse.Namespace) -> int:
    """Migrate down."""
    return _migrate(args, "downgrade")


def _migrate(args: argparse.Namespace, direction: str) -> int:
    """Move the schema to ``args.revision`` and print where it is now."""
    from lifecycle.store import migrate

    engine = open_engine(args)
    try:
        getattr(migrate, direction)(engine, args.revision)
        print(f"at revision {_revision(engine) or 'base'}")
    finally:
        engine.dispose()
    return EXIT_OK


def _revision(engine: Engine) -> str | None:
    from lifecycle.store import migrate

    with engine.connect() as connection:
        return migrate.current_revision(connection)


def run_db_current(args: argparse.Namespace) -> int:
    """Print the current revision (``base`` for an empty database) and the head."""
    from lifecycle.store import migrate

    engine = open_engine(args)
    try:
        current = _revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current == head:
        note = "(head)"
    elif current is None or migrate.is_known(current):
        note = f"(head is {head})"
    else:  # "(head is 0007)" read as if the store were behind
        note = f"(unknown to this version, whose head is {head}: a newer lifecycle wrote it)"
    print(f"{current or 'base'} {note}")
    return EXIT_OK


def run_db_check(args: argparse.Namespace) -> int:
    """Exit 1 when the schema is not at head or differs from the table definitions."""
    from lifecycle.store import migrate

    engine = open_engine(args)
    try:
        current = _revision(engine)
        if current != migrate.head_revision():
            print(f"schema is at {current or 'base'}, expected {migrate.head_revision()}")
            return EXIT_REJECTED
        diffs = migrate.differences(engine)
    finally:
        engine.dispose()
    for diff in diffs:
        print(diff)
    return EXIT_REJECTED if diffs else EXIT_OK


def run_accounts_show(args: argparse.Namespace) -> int:
    """Print one account; exit 1 if it does not exist."""
    with open_store(args) as store:
        state = store.state(args.account)
    if state is None:
        complain(f"lifecycle: no account {args.account!r}")
        return EXIT_REJECTED
    if args.format == "json":
        sys.stdout.buffer.write(
            orjson.dumps(state.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        )
    else:
        print(f"{shown(state.account)}: {state.status}, version {state.version}")
        for user, u in sorted(state.users.items()):
            print(
                f"  {shown(user)}: signed_up={u.signed_up} role={u.role!r} signed_in={u.signed_in}"
            )
        if state.trial is not None:
            print(f"  trial: {state.trial.to_dict()}")
    return EXIT_OK


def run_accounts_list(args: argparse.Namespace) -> int:
    """Print every account (id, status, version, users)."""
    listed = 0
    with open_store(args) as store:
        for state in store.accounts(status=args.status):
            listed += 1
            if args.format == "jsonl":
                sys.stdout.buffer.write(
                    orjson.dumps(state.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
                )
            else:
                print(account_line(state))
    statuses = [s for s in DEFAULT_POLICY.states if s != DEFAULT_POLICY.initial]
    if not listed and args.status is not None and args.status not in statuses:
        # Most likely a typo, as for `rejections list --code`.
        complain(
            f"lifecycle: note: no account is in status {args.status!r}, which is not one of "
            f"the default policy's ({', '.join(statuses)})"
        )
    return EXIT_OK


def run_rejections_list(args: argparse.Namespace) -> int:
    """Print quarantined messages, oldest first."""
    listed = 0
    with open_store(args) as store:
        for item in store.rejections(code=args.code, account=args.account):
            listed += 1
            if args.format == "jsonl":
                sys.stdout.buffer.write(
                    orjson.dumps(item.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
                )
            else:
                where = item.source + (f":{item.line}" if item.line is not None else "")
                # The item of a batch line, as `check` shows it: every message of a `.json`
                # document is on line 1.
                where += f"[{item.batch_index}]" if item.batch_index else ""
                print(f"{item.id}\t{shown(where)}\t{item.code}\t{shown(item.reason)}")
    if not listed and args.code is not None and args.code not in REJECTION_CODES:
        # Most likely a typo; a custom policy's own codes are listed all the same.
        complain(
            f"lifecycle: note: nothing has code {args.code!r}, which is not one of the "
            "default policy's codes"
        )
    return EXIT_OK
