"""Rows in and out of the event store, on a connection the caller controls.

Functions here neither begin nor commit transactions: the service decides
what one transaction holds. Statements on the write path are built once, at
import, so that a submission pays only for executing them; lists of keys are
sent in chunks so that no statement exceeds a backend's parameter limit.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from lifecycle.errors import StoreError
from lifecycle.state import AccountState
from lifecycle.store.codec import state_from_json, state_json
from lifecycle.store.schema import account_heads, events, quarantine, snapshots

CHUNK = 500

_HEAD_STATES = select(account_heads.c.account, account_heads.c.state).where(
    account_heads.c.account.in_(bindparam("keys", expanding=True))
)
_STORED_VERSIONS = (
    select(events.c.account, func.max(events.c.version))
    .where(events.c.account.in_(bindparam("keys", expanding=True)))
    .group_by(events.c.account)
)
_STORED_IDS = select(events.c.message_id).where(
    events.c.message_id.in_(bindparam("keys", expanding=True))
)
_DIGEST_VERDICTS = select(quarantine.c.digest, quarantine.c.code, quarantine.c.reason).where(
    quarantine.c.digest.in_(bindparam("keys", expanding=True))
)
_INSERT_QUARANTINE = insert(quarantine)
_HOLDS_SOURCE = select(quarantine.c.id).where(quarantine.c.source == bindparam("source")).limit(1)


_K = TypeVar("_K")


def chunks(keys: Sequence[_K], size: int = CHUNK) -> Iterator[Sequence[_K]]:
    """``keys`` in slices of at most ``size``."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def _pairs(connection: Connection, statement: Any, keys: Sequence[str]) -> Iterator[Any]:
    for part in chunks(keys):
        yield from connection.execute(statement, {"keys": list(part)})


def head_versions(connection: Connection, accounts: Sequence[str]) -> dict[str, int]:
    """The version of each account's head row, for the accounts that have one.

    Asked before every submission, so asked of the driver directly.
    """
    found: dict[str, int] = {}
    for part in chunks(accounts):
        sql = _head_versions_sql(connection.dialect, len(part))
        with _driver_cursor(connection, sql) as cursor:
            cursor.execute(sql, tuple(part))
            found.update(cursor.fetchall())
    return found


@functools.cache
def _head_versions_sql(dialect: Dialect, keys: int) -> str:
    quote = dialect.identifier_preparer.quote
    return (
        f"SELECT {quote('account')}, {quote('version')} FROM {quote('account_heads')} "
        f"WHERE {quote('account')} IN ({', '.join([placeholder(dialect)] * keys)})"
    )


def placeholder(dialect: Dialect) -> str:
    """How the dialect's driver marks a positional parameter (``?`` or ``%s``)."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


@contextmanager
def _driver_cursor(connection: Connection, statement: str) -> Iterator[Any]:
    """A cursor of the driver itself, its errors wrapped as SQLAlchemy's, closed after.

    The write path's hottest statements skip SQLAlchemy's execution context
    (which cost more than the database's work per live submission); wrapped
    errors keep the store's handling of them the same: ``IntegrityError``
    means a lost race or a stored messageId, any other is a ``StoreError``.
    """
    dbapi = connection.dialect.loaded_dbapi
    cursor = connection.connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error) from exc
    finally:
        cursor.close()


def head_states(connection: Connection, accounts: Sequence[str]) -> dict[str, AccountState]:
    """The state stored in each account's head row, for the accounts that have one."""
    return {
        account: state_from_json(state, _head_of(account))
        for account, state in _pairs(connection, _HEAD_STATES, accounts)
    }


def stored_versions(connection: Connection, accounts: Sequence[str]) -> dict[str, int]:
    """The latest stored version of each account that has events."""
    return dict(_pairs(connection, _STORED_VERSIONS, accounts))


def accepted_ids(connection: Connection, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` belong to stored (accepted) events."""
    return {mid for (mid,) in _pairs(connection, _STORED_IDS, message_ids)}


def quarantined(connection: Connection, digests: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The code and reason of each of ``digests`` already in the quarantine (a re-run of
    the same input)."""
    return {digest: (code, reason) for digest, code, reason in _pairs(
        connection, _DIGEST_VERDICTS, digests
    )}  # fmt: skip


def holds_source(connection: Connection, source: str) -> bool:
    """Whether the quarantine holds any line of ``source`` (a file judged before)."""
    return connection.execute(_HOLDS_SOURCE, {"source": source}).first() is not None


def holds_items(connection: Connection, source: str, items: Iterable[tuple[int, int]]) -> bool:
    """Whether the quarantine holds any of ``items`` of ``source``: (line, index in its
    batch) pairs, the index 0 for a line that is not a batch.

    One query for the span of their lines: a file read in order finds nothing in it
    but what another run put there, and the items of a batch line that a submission
    cut in two are not the items before the cut.
    """
    wanted = set(items)
    if not wanted:
        return False
    lines = [line for line, _ in wanted]
    span = {"source": source, "low": min(lines), "high": max(lines)}
    held = connection.execute(_ITEMS_HELD, span)
    return any((line, index or 0) in wanted for line, index in held)


_ITEMS_HELD = select(quarantine.c.line, quarantine.c.batch_index).where(
    quarantine.c.source == bindparam("source"),
    quarantine.c.line.between(bindparam("low"), bindparam("high")),
)


def append_events(connection: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert accepted events (tuples in :data:`EVENT_COLUMNS` order) as ``rows`` yields them.

    The unique indexes refuse a lost race or a stored messageId with an
    ``IntegrityError``.
    """
    bulk_insert(connection, events, EVENT_COLUMNS, rows)


#: Column order of the rows given to :func:`append_events`.
EVENT_COLUMNS = (
    "account", "version", "event", "message_id", "user_id", "occurred_at", "recorded_at", "payload",
)  # fmt: skip


def bulk_insert(
    connection: Connection, table: Table, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    """Insert many rows (tuples in ``columns`` order) at the driver level.

    This is the bulk of every write, so it skips SQLAlchemy's per-row parameter
    handling: PostgreSQL gets ``COPY``, fed while the caller is still producing
    ``rows`` (the server stores one row while the next is made); other backends
    one driver-level ``executemany`` of a statement built once per dialect. A
    unique index that refuses a row raises SQLAlchemy's ``IntegrityError`` either way.
    """
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    rows = itertools.chain((first,), rows)
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        _copy(connection, table.name, columns, rows)
        return
    _execute_many(connection, _insert_sql(dialect, table, columns), list(rows))


def _execute_many(
    connection: Connection, statement: _Statement, rows: list[tuple[Any, ...]]
) -> None:
    """``executemany`` of a driver-level statement, its rows converted first."""
    sql, convert = statement
    with _driver_cursor(connection, sql) as cursor:
        cursor.executemany(sql, list(map(convert, rows)) if convert else rows)


Processor = Callable[[Any], Any]
#: A driver-level statement and the function that turns a row into its parameters (if any).
_Statement = tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]] | None]


@functools.cache
def _insert_sql(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    upsert_on: str | None = None,
    unless_newer: str | None = None,
) -> _Statement:
    """The driver-level INSERT, built once per dialect.

    An upsert on ``upsert_on`` if given; with ``unless_newer``, it leaves a stored row
    whose value of that column is higher as it is. With the statement comes a row
    converter that applies each column's bind processor, or None when no column
    needs one.
    """
    quote = dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join([placeholder(dialect)] * len(columns))})"
    )
    if upsert_on is not None:
        sql += _upsert_sql(dialect, table, columns, upsert_on, unless_newer)
    processors = [_processor(dialect, table.c[c].type) for c in columns]
    return sql, _converter(processors)


def _upsert_sql(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    upsert_on: str,
    unless_newer: str | None,
) -> str:
    """The ON CONFLICT (ON DUPLICATE KEY) clause of :func:`_insert_sql`."""
    quote = dialect.identifier_preparer.quote
    rest = [c for c in columns if c != upsert_on]
    if dialect.name in ("mysql", "mariadb"):
        if unless_newer is None:
            return " ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{quote(c)} = VALUES({quote(c)})" for c in rest
            )
        # Each assignment sees the ones before it: the guarding column goes last.
        guard = quote(unless_newer)
        rest.sort(key=lambda c: c == unless_newer)
        return " ON DUPLICATE KEY UPDATE " + ", ".join(
            f"{quote(c)} = IF(VALUES({guard}) >= {guard}, VALUES({quote(c)}), {quote(c)})"
            for c in rest
        )
    sql = f" ON CONFLICT ({quote(upsert_on)}) DO UPDATE SET " + ", ".join(
        f"{quote(c)} = excluded.{quote(c)}" for c in rest
    )
    if unless_newer is not None:
        guard = quote(unless_newer)
        sql += f" WHERE {quote(table.name)}.{guard} <= excluded.{guard}"
    return sql


def _converter(processors: list[Processor | None]) -> Callable[[tuple[Any, ...]], Any] | None:
    """One function applying every column's processor to a row, or None if none has one.

    Generated as a single expression: a million rows through a generic loop over
    the columns cost seconds.
    """
    if not any(processors):
        return None
    namespace = {f"p{i}": p for i, p in enumerate(processors) if p is not None}
    values = [f"p{i}(r[{i}])" if p is not None else f"r[{i}]" for i, p in enumerate(processors)]
    convert: Callable[[tuple[Any, ...]], Any] = eval(f"lambda r: ({', '.join(values)},)", namespace)
    return convert


def _processor(dialect: Dialect, kind: Any) -> Processor | None:
    if dialect.name == "sqlite" and isinstance(kind, DateTime):
        return _SqliteDatetime()
    processor: Processor | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


class _SqliteDatetime:
    """SQLAlchemy's own text layout for SQLite date-times, written by the C ``isoformat``.

    Every row of a batch carries the same ``recorded_at``: the last value's text
    is kept (one tuple, replaced whole, so threads sharing it stay safe).
    """

    def __init__(self) -> None:
        self._last: tuple[datetime | None, str | None] = (None, None)

    def __call__(self, value: datetime | None) -> str | None:
        last = self._last
        if value is last[0]:
            return last[1]
        text = None if value is None else value.isoformat(" ", "microseconds")
        self._last = (value, text)
        return text


def _copy(
    connection: Connection, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with _driver_cursor(connection, statement) as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


#: Column order of the rows given to :func:`write_heads`.
HEAD_COLUMNS = ("account", "version", "status", "state", "updated_at")


def write_heads(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert or overwrite account head rows (tuples in :data:`HEAD_COLUMNS` order).

    A stored head of a higher version stays: a writer that rebuilt a lost head row
    from the events, and appended nothing, holds none of the account's versions, so
    another may have appended and written its newer head meanwhile. Overwriting it
    put the head behind the events, and every later submission to the account lost
    its race with itself until the row was deleted again.
    """
    if rows:
        statement = _insert_sql(
            connection.dialect, account_heads, HEAD_COLUMNS, "account", "version"
        )
        _execute_many(connection, statement, rows)


def quarantine_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert quarantine rows."""
    if rows:
        connection.execute(_INSERT_QUARANTINE, rows)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of ``events``, with its payload as stored."""

    position: int
    account: str
    version: int
    event: str
    message_id: str | None
    user_id: str
    occurred_at: datetime | None
    recorded_at: datetime
    payload: str


def stored_events(
    connection: Connection, account: str | None = None, after_version: int = 0
) -> Iterator[StoredEvent]:
    """Stored events in append order (one account's in version order), streamed."""
    query = select(*events.c)
    if account is not None:
        query = query.where(events.c.account == account, events.c.version > after_version)
        query = query.order_by(events.c.version)
    else:
        query = query.order_by(events.c.position)
    with connection.execute(query, execution_options={"yield_per": 2000}) as result:
        for row in result:
            yield StoredEvent(*row)


# One indexed look-up per snapshot: a row-value IN list makes SQLite scan the whole index.
_POSITION = select(events.c.position).where(
    events.c.account == bindparam("account"), events.c.version == bindparam("version")
)
_INSERT_SNAPSHOTS = insert(snapshots)


def write_snapshots(
    connection: Connection, policy: str, states: list[AccountState], recorded_at: datetime
) -> None:
    """Store the given states as snapshots made under the policy with fingerprint ``policy``."""
    if not states:
        return
    positions = {
        (s.account, s.version): connection.execute(
            _POSITION, {"account": s.account, "version": s.version}
        ).scalar_one()
        for s in states
    }
    connection.execute(
        _INSERT_SNAPSHOTS,
        [
            {
                "account": s.account,
                "policy": policy,
                "version": s.version,
                "position": positions[s.account, s.version],
                "recorded_at": recorded_at,
                "state": state_json(s),
                "created_at": recorded_at,
            }
            for s in states
        ],
    )


def latest_snapshot(
    connection: Connection,
    policy: str,
    account: str,
    until: int | None = None,
    as_of: datetime | None = None,
) -> AccountState | None:
    """The newest snapshot of ``account`` made under ``policy`` (within the bounds), if any."""
    # Only a snapshot whose last event is stored where it was: one left behind by an
    # account archived and created again describes no stored history.
    stored = (
        select(events.c.position)
        .where(
            events.c.account == snapshots.c.account,
            events.c.version == snapshots.c.version,
            events.c.position == snapshots.c.position,
        )
        .exists()
    )
    query = select(snapshots.c.state, snapshots.c.version).where(
        snapshots.c.account == account, snapshots.c.policy == policy, stored
    )
    if until is not None:
        query = query.where(snapshots.c.position <= until)
    if as_of is not None:
        # Below the account's first event recorded after ``as_of``, where a replay cuts its
        # history: with clocks that disagree between writers, a snapshot recorded before
        # the instant may follow an event recorded after it.
        first_after = (
            select(func.min(events.c.version))
            .where(events.c.account == account, events.c.recorded_at > as_of)
            .scalar_subquery()
        )
        query = query.where(
            snapshots.c.recorded_at <= as_of,
            (first_after.is_(None)) | (snapshots.c.version < first_after),
        )
    row = connection.execute(query.order_by(snapshots.c.version.desc()).limit(1)).first()
    if row is None:
        return None
    where = f"the newest snapshot of account {account!r}"
    return _snapshot_state(row[0], row[1], account, where)


def _snapshot_state(text: str | bytes, version: int, account: str, where: str) -> AccountState:
    """The state a snapshot row holds; a StoreError naming ``where`` if it is not the state
    of ``account`` at the row's ``version`` (edited by hand, damaged)."""
    state = state_from_json(text, where)
    if state.account != account or type(state.version) is not int or state.version != version:
        held = f"version {state.version!r} of account {state.account!r}"
        cause = ValueError(f"it holds {held}, its row version {version} of {account!r}")
        raise StoreError(
            f"{where} is not the account state its row says ({cause}); snapshots only save"
            " time: delete that row (or every snapshot: `DELETE FROM snapshots`)"
        ) from cause
    return state


def _head_of(account: str) -> str:
    return f"the head of account {account!r}"


def requarantine(connection: Connection, row_id: int, code: str, reason: str) -> None:
    """Give a quarantined message the code and reason it gets today."""
    connection.execute(
        update(quarantine).where(quarantine.c.id == row_id).values(code=code, reason=reason)
    )


def release(connection: Connection, row_ids: list[int]) -> int:
    """Remove quarantine rows whose messages are now stored; how many were still there."""
    removed = 0
    for start in range(0, len(row_ids), CHUNK):
        part = row_ids[start : start + CHUNK]
        removed += connection.execute(delete(quarantine).where(quarantine.c.id.in_(part))).rowcount
    return removed


def still_quarantined(connection: Connection, row_ids: list[int]) -> set[int]:
    """Which of ``row_ids`` are still in the quarantine."""
    kept: set[int] = set()
    for part in chunks(row_ids):
        kept.update(connection.scalars(select(quarantine.c.id).where(quarantine.c.id.in_(part))))
    return kept
