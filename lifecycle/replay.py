"""Replay: account states rebuilt from stored events, at any point in the history.

Replay folds stored events with :func:`lifecycle.decide.evolve`: they passed
every check when they were appended, so only their effects are applied again.
It reads events in append order and keeps one state per account, so memory is
bounded by the number of accounts, never by the number of events.

Two ways to say "when":

* ``until=POSITION`` — every event up to that global append position;
* ``as_of=INSTANT`` — every event *recorded* by the store at or before that
  instant (the ``recorded_at`` column), which is when lifecycle learnt of it.
  The events' own ``timestamp`` says when the application says it happened; it
  is not used here, because it can be missing, skewed or arrive late. An
  account's history is cut at its first event recorded after the instant, so
  a replay is always a prefix of each account's stream.

Audits judge the same history again, every rule included, under another
policy, to see which stored events it would reject.
"""

from __future__ import annotations

import multiprocessing
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from lifecycle.decide import evolve
from lifecycle.envelope import Event
from lifecycle.gate import Gate
from lifecycle.policy import Policy
from lifecycle.state import AccountState
from lifecycle.store import repository
from lifecycle.store.schema import events

_COLUMNS = (
    events.c.position,
    events.c.account,
    events.c.version,
    events.c.event,
    events.c.message_id,
    events.c.user_id,
    events.c.payload,
)


def _rows(
    connection: Connection,
    accounts: Sequence[str] | None = None,
    until: int | None = None,
    after_version: int = 0,
    recorded: bool = False,
) -> Iterator[Any]:
    """Stored event rows in append order, streamed in chunks.

    ``recorded`` adds ``recorded_at`` as an eighth column (only ``as_of`` needs
    it; decoding it costs more than the rest of the row).
    """
    if accounts is None and not after_version and not recorded:
        driver = _driver_rows(connection, until)
        if driver is not None:
            yield from driver
            return
    query = select(*_COLUMNS, events.c.recorded_at) if recorded else select(*_COLUMNS)
    if accounts is not None:
        query = query.where(events.c.account.in_(accounts))
    if until is not None:
        query = query.where(events.c.position <= until)
    if after_version:
        query = query.where(events.c.version > after_version)
    query = query.order_by(events.c.position)
    with connection.execute(query, execution_options={"yield_per": 5000}) as result:
        yield from result


_FULL_SCAN = (
    "SELECT position, account, version, event, message_id, user_id, payload FROM events"
    "{where} ORDER BY position"
)


def _driver_rows(connection: Connection, until: int | None) -> Iterator[Any] | None:
    """A full scan straight from the driver's cursor (SQLite, psycopg), or None elsewhere.

    A full replay reads every row once; SQLAlchemy's per-row work would cost
    about as much as the fold itself.
    """
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    if dialect.name == "sqlite":
        where, params = (" WHERE position <= ?", (until,)) if until is not None else ("", ())
        cursor = driver.cursor()  # type: ignore[union-attr]
        cursor.execute(_FULL_SCAN.format(where=where), params)
        return _batches(cursor)
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        where, params = (" WHERE position <= %s", (until,)) if until is not None else ("", ())
        return _server_side(driver, _FULL_SCAN.format(where=where), params)
    return None


def _batches(cursor: Any) -> Iterator[Any]:
    try:
        while rows := cursor.fetchmany(5000):
            yield from rows
    finally:
        cursor.close()


def _server_side(driver: Any, sql: str, params: tuple[Any, ...]) -> Iterator[Any]:
    with driver.cursor(name="lifecycle_replay") as cursor:
        cursor.itersize = 5000
        cursor.execute(sql, params)
        yield from cursor


def _counted(
    rows: Iterator[Any], progress: Callable[[int], None], every: int = 10_000
) -> Iterator[Any]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if n == every:
            progress(n)
            n = 0
    progress(n)


def stored_event(row: Any) -> Event:
    """The domain event of a stored row (its payload decoded, nothing re-validated)."""
    message = orjson.loads(row[6])
    properties = message.get("properties")
    timestamp = message.get("timestamp")
    return Event(
        row[3],
        row[3],
        row[1],
        row[5],
        row[4],
        timestamp if isinstance(timestamp, str) else None,
        properties if isinstance(properties, dict) else {},
        message,
    )


def replay(
    connection: Connection,
    policy: Policy,
    *,
    accounts: Sequence[str] | None = None,
    until: int | None = None,
    as_of: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    part: tuple[int, int] | None = None,
) -> dict[str, AccountState]:
    """Every account's state (or the given ones') rebuilt from its events alone.

    ``progress(n)`` is called after every ``n`` events read (for a progress bar).
    ``part=(i, n)`` folds only the accounts of partition ``i`` of ``n`` (see
    :func:`replay_partitioned`).
    """
    states: dict[str, AccountState] = {}
    closed: set[str] = set()
    initial = policy.initial
    rows = _rows(connection, accounts, until, recorded=as_of is not None)
    if progress is not None:
        rows = _counted(rows, progress)
    if part is not None:
        rows = _partition(rows, *part)
    for row in rows:
        account = row[1]
        if as_of is not None and (account in closed or row[7] > as_of):
            closed.add(account)
            continue
        state = states.get(account)
        if state is None:
            state = AccountState(account, initial)
        states[account] = evolve(policy, state, stored_event(row))
    return states


def _partition(rows: Iterator[Any], index: int, parts: int) -> Iterator[Any]:
    """The rows of the accounts in partition ``index`` of ``parts`` (a stable hash)."""
    mine: dict[str, bool] = {}
    for row in rows:
        account = row[1]
        take = mine.get(account)
        if take is None:
            take = mine[account] = zlib.crc32(account.encode("utf-8")) % parts == index
        if take:
            yield row


#: What the forked workers of :func:`replay_partitioned` replay (set only while they run).
_FORKED: tuple[Engine, Policy] | None = None


def replay_partitioned(
    engine: Engine,
    policy: Policy,
    workers: int,
    *,
    until: int | None = None,
    as_of: datetime | None = None,
) -> dict[str, AccountState]:
    """:func:`replay` of every account, split by account over ``workers`` processes.

    Accounts never depend on each other, so each process reads the stream and
    folds only its share of the accounts; a full replay then uses every core.
    The processes are forked (POSIX), so the policy need not be picklable.
    """
    global _FORKED
    _FORKED = (engine, policy)
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            parts = pool.starmap(
                _replay_part, [(index, workers, until, as_of) for index in range(workers)]
            )
    finally:
        _FORKED = None
    states: dict[str, AccountState] = {}
    for share in parts:
        states.update(share)
    return states


def _replay_part(
    index: int, parts: int, until: int | None, as_of: datetime | None
) -> dict[str, AccountState]:
    assert _FORKED is not None
    engine, policy = _FORKED
    engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    with engine.connect() as connection:
        return replay(connection, policy, until=until, as_of=as_of, part=(index, parts))


def load_account(
    connection: Connection,
    policy: Policy,
    account: str,
    *,
    until: int | None = None,
    as_of: datetime | None = None,
    snapshots: bool = True,
) -> AccountState | None:
    """One account's state: its newest usable snapshot plus the events after it.

    A snapshot is usable when it was made under ``policy`` (same fingerprint) and
    within the bounds; without one, the whole stream is folded.
    """
    state = None
    if snapshots:
        state = repository.latest_snapshot(
            connection, policy.fingerprint, account, until=until, as_of=as_of
        )
    if state is None:
        state = AccountState(account, policy.initial)
    rows = _rows(connection, [account], until, state.version, recorded=as_of is not None)
    for row in rows:
        if as_of is not None and row[7] > as_of:
            break
        state = evolve(policy, state, stored_event(row))
    return state if state.version else None


@dataclass(frozen=True, slots=True)
class Difference:
    """An account whose replayed state differs from the state the live path reads."""

    account: str
    source: str
    fields: dict[str, tuple[Any, Any]]

    def __str__(self) -> str:
        changes = "; ".join(
            f"{k}: {self.source}={a!r} replay={b!r}" for k, (a, b) in self.fields.items()
        )
        return f"{self.account} ({self.source}): {changes}"


def differences(
    live: AccountState | None, replayed: AccountState | None
) -> dict[str, tuple[Any, Any]]:
    """Field-by-field differences between two states (flattened ``to_dict`` paths)."""
    left = _flatten(live.to_dict()) if live is not None else {}
    right = _flatten(replayed.to_dict()) if replayed is not None else {}
    return {
        k: (left.get(k), right.get(k))
        for k in sorted(left.keys() | right.keys())
        if left.get(k) != right.get(k)
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


@dataclass(frozen=True, slots=True)
class AuditFinding:
    """A stored event another policy would reject."""

    position: int
    account: str
    version: int
    event: str
    message_id: str | None
    code: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "position": self.position,
            "account": self.account,
            "version": self.version,
            "event": self.event,
            "messageId": self.message_id,
            "code": self.code,
            "reason": self.reason,
        }


def audit(connection: Connection, policy: Policy) -> Iterator[AuditFinding]:
    """Re-judge the stored history under ``policy``; yield each event it would reject.

    A rejected event changes no state, exactly as it would have live, so one
    tightened rule can reject later events too.
    """
    gate = Gate(policy)
    for row in _rows(connection):
        verdict = gate.submit(orjson.loads(row[6]))
        if verdict.code is not None:
            yield AuditFinding(
                row[0], row[1], row[2], row[3], row[4], verdict.code, verdict.reason or ""
            )
