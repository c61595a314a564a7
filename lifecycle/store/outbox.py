"""Rows in and out of the Segment outbox, on a connection the caller controls.

Every accepted event gets one ``outbox`` row in the transaction that appends it
(:func:`enqueue`), so an event is in the outbox exactly when it is stored: a
rejected, duplicate or rolled-back message never is. The relay
(:mod:`lifecycle.relay`) reads pending rows (:func:`first_pending` on SQLite;
:func:`window`, :func:`lock_heads` and :func:`load` on PostgreSQL and MariaDB),
sends them, and records the outcome (:func:`settle`).

Ordering rests on one property: for one account, ``id`` follows ``version``.
Version n+1 can only be appended by a writer that read version n as committed,
so its row is inserted, and its id drawn, after n's. Hence the pending rows in
``id`` order, cut anywhere, hold a prefix of every account's pending versions —
and the relay never tracks a high-water mark, so a row committed late (a lower
id committed after a higher one, as concurrent PostgreSQL writers do) is simply
pending until it is sent.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

from lifecycle.envelope import is_storable_key
from lifecycle.store.codec import iso_utc
from lifecycle.store.repository import CHUNK, EVENT_COLUMNS, bulk_insert, chunks, placeholder
from lifecycle.store.schema import events, outbox, outbox_pruned

PENDING = "pending"
DELIVERED = "delivered"
PARKED = "parked"

#: Column order of the rows :func:`enqueue` inserts.
OUTBOX_COLUMNS = ("account", "version", "message_id", "shard", "status", "attempts", "created_at")

_ACCOUNT = EVENT_COLUMNS.index("account")
_VERSION = EVENT_COLUMNS.index("version")
_MESSAGE_ID = EVENT_COLUMNS.index("message_id")
_RECORDED = EVENT_COLUMNS.index("recorded_at")
_PAYLOAD = EVENT_COLUMNS.index("payload")

#: Namespace of the messageIds given to stored events that came without one.
_ASSIGNED = uuid.UUID("6f1d4c2e-8a57-4c3b-9e0a-2b7d51c0e4a9")

_ERROR_CHARS = 2000


def assigned_message_id(account: str, version: int, payload: str) -> str:
    """The messageId an event without one is delivered with: stable for the same event.

    Segment de-duplicates on messageId; a message sent twice without one would
    arrive twice. The id is derived from the account, version and stored
    payload, so every delivery attempt of the event carries the same one.
    """
    return str(uuid.uuid5(_ASSIGNED, f"{account}\0{version}\0{payload}"))


#: How many shards accounts hash to (see :func:`shard_of`).
SHARDS = 1 << 16


def shard_of(account: str) -> int:
    """A stable hash of ``account`` in 0..65535: relay ``i`` of ``n`` takes ``shard % n == i``."""
    return zlib.crc32(account.encode("utf-8")) & 0xFFFF


def enqueue(connection: Connection, event_rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert a pending outbox row for each appended event (rows as ``append_events`` got them)."""
    if not event_rows:
        return
    rows = [
        (
            r[_ACCOUNT],
            r[_VERSION],
            r[_MESSAGE_ID] or assigned_message_id(r[_ACCOUNT], r[_VERSION], r[_PAYLOAD]),
            shard_of(r[_ACCOUNT]),
            PENDING,
            0,
            r[_RECORDED],
        )
        for r in event_rows
    ]
    bulk_insert(connection, outbox, OUTBOX_COLUMNS, rows)


# -- reading pending rows -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """A pending row's place: enough to choose which rows a batch may hold."""

    id: int
    account: str
    version: int


#: A pending row as the relay sends it: ``(id, message_id, created_at, payload)``; the
#: payload is None when the row's event is no longer stored.
#: ``created_at`` is the event's ``recorded_at`` as the driver returns it (a datetime,
#: or SQLite's text): it becomes the message's ``timestamp`` only when it has none.
Pending = tuple[int, str, Any, str | None]

#: Every row: shard 0 of 1.
ALL = (0, 1)

#: Written as a literal so that SQLite and PostgreSQL use the partial index on pending rows.
_IS_PENDING = outbox.c.status == literal_column(f"'{PENDING}'")
#: Relay ``shard`` of ``shards`` takes the rows whose account hashes to it (0 of 1: every row).
_IN_SHARD = (outbox.c.shard % bindparam("shards")) == bindparam("shard")

_WINDOW = (
    select(outbox.c.id, outbox.c.account, outbox.c.version)
    .where(_IS_PENDING, _IN_SHARD)
    .order_by(outbox.c.id)
    .limit(bindparam("size"))
)
_LOCK_HEADS = (
    select(outbox.c.id)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)), _IS_PENDING)
    .order_by(outbox.c.id)
    .limit(bindparam("size"))
    .with_for_update(skip_locked=True)
)
_LOCK_ROWS = (
    select(outbox.c.id)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)), _IS_PENDING)
    .with_for_update(skip_locked=True)
)
_SEND_COLUMNS = (
    outbox.c.id,
    outbox.c.message_id,
    # The raw value: converting every row's datetime costs more than the few that need it.
    type_coerce(outbox.c.created_at, String()).label("created_at"),
    events.c.payload,
)
#: An outer join: a pending row whose event is gone (deleted outside lifecycle, say by an
#: archive of old accounts) comes with no payload, to be parked, instead of staying
#: pending unseen, which kept `relay --once` running and, read first, stalled the rest.
_JOIN = outbox.outerjoin(
    events, (events.c.account == outbox.c.account) & (events.c.version == outbox.c.version)
)
_LOAD = (
    select(*_SEND_COLUMNS)
    .select_from(_JOIN)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(outbox.c.id)
)
_FIRST_PENDING = (
    select(*_SEND_COLUMNS)
    .select_from(_JOIN)
    .where(_IS_PENDING, _IN_SHARD)
    .order_by(outbox.c.id)
    .limit(bindparam("size"))
)
#: The same query for the SQLite driver itself: the relay's hottest read skips row objects.
_SQLITE_FIRST_PENDING = (
    "SELECT outbox.id, outbox.message_id, outbox.created_at, events.payload FROM outbox "
    "LEFT JOIN events ON events.account = outbox.account AND events.version = outbox.version "
    f"WHERE outbox.status = '{PENDING}' {{shard}}ORDER BY outbox.id LIMIT ?"
)
_SQLITE_ALL = _SQLITE_FIRST_PENDING.format(shard="")
_SQLITE_SHARD = _SQLITE_FIRST_PENDING.format(shard="AND outbox.shard % ? = ? ")


def window(connection: Connection, size: int, shard: tuple[int, int] = ALL) -> list[Slot]:
    """The first ``size`` pending rows of ``shard`` in id order.

    That is a prefix of the pending run of every account in it.
    """
    params = {"size": size, "shard": shard[0], "shards": shard[1]}
    return [Slot(*row) for row in connection.execute(_WINDOW, params).all()]


def first_pending(connection: Connection, size: int, shard: tuple[int, int] = ALL) -> list[Pending]:
    """The first ``size`` pending rows of ``shard`` in id order, ready to send."""
    if connection.dialect.name == "sqlite":
        driver: Any = connection.connection.driver_connection
        statement, values = (
            (_SQLITE_ALL, (size,)) if shard == ALL else (_SQLITE_SHARD, (shard[1], shard[0], size))
        )
        try:
            rows: list[Pending] = driver.execute(statement, values).fetchall()
        except sqlite3.Error as exc:  # as SQLAlchemy's, for the relay's handling of errors
            raise DBAPIError.instance(statement, values, exc, sqlite3.Error) from exc
        return rows
    params = {"size": size, "shard": shard[0], "shards": shard[1]}
    return [tuple(row) for row in connection.execute(_FIRST_PENDING, params).all()]


def lock_heads(connection: Connection, slots: Sequence[Slot], size: int) -> list[Slot]:
    """Lock accounts for this transaction: their first pending row, skipping locked ones.

    ``slots`` is a window; the first slot of each account in it is the account's
    lowest pending version (its *head*). Up to ``size`` heads are locked with
    ``FOR UPDATE SKIP LOCKED``, then the other rows of those accounts in the window;
    the rows returned are, per locked account, its rows up to the first one that
    could not be locked, in id order, at most ``size``.

    Locking the heads alone was not enough: a requeue or a backfill draws the ids of
    the rows it inserts before it commits, so an account's rows another relay had
    locked and was sending could come after a lower row committed later, a new
    head, and a second relay that locked it sent them again.
    """
    heads: dict[str, int] = {}
    for slot in slots:
        heads.setdefault(slot.account, slot.id)
    if not heads:
        return []
    locked = {
        row[0]
        for row in connection.execute(_LOCK_HEADS, {"ids": list(heads.values()), "size": size})
    }
    accounts = {account for account, head in heads.items() if head in locked}
    chosen = [slot for slot in slots if slot.account in accounts][:size]
    rest = [slot.id for slot in chosen if slot.id not in locked]
    for part in chunks(rest):
        locked.update(row[0] for row in connection.execute(_LOCK_ROWS, {"ids": list(part)}))
    stopped: set[str] = set()
    kept: list[Slot] = []
    for slot in chosen:
        if slot.account in stopped:
            continue
        if slot.id in locked:
            kept.append(slot)
        else:
            stopped.add(slot.account)
    return kept


def load(connection: Connection, ids: Sequence[int]) -> list[Pending]:
    """The rows ``ids``, ready to send, in id order."""
    rows: list[Pending] = []
    for part in chunks(ids):
        rows.extend(tuple(row) for row in connection.execute(_LOAD, {"ids": list(part)}).all())
    rows.sort(key=lambda r: r[0])
    return rows


# -- recording outcomes -------------------------------------------------------------------

_FAIL = (
    update(outbox)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)), _IS_PENDING)
    .values(attempts=outbox.c.attempts + 1, last_error=bindparam("error"))
)
_PARK = (
    update(outbox)
    .where(outbox.c.id == bindparam("row_id"), _IS_PENDING)
    .values(status=PARKED, attempts=outbox.c.attempts + 1, last_error=bindparam("error"))
)


def _deliver(connection: Connection, ids: Sequence[int], at: datetime) -> None:
    """Mark rows delivered: the one write every event costs the relay, so a driver-level UPDATE."""
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    marker = placeholder(dialect)
    process = _bind_processor(dialect)
    stamp = process(at) if process else at
    table, key, status = quote("outbox"), quote("id"), quote("status")
    when, attempts = quote("delivered_at"), quote("attempts")
    for part in chunks(ids):
        marks = ", ".join([marker] * len(part))
        connection.exec_driver_sql(
            f"UPDATE {table} SET {status} = '{DELIVERED}', {when} = {marker}, "
            f"{attempts} = {attempts} + 1 WHERE {key} IN ({marks}) AND {status} = '{PENDING}'",
            (stamp, *part),
        )


@functools.cache
def _bind_processor(dialect: Dialect) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = outbox.c.delivered_at.type.dialect_impl(
        dialect
    ).bind_processor(dialect)
    return processor


def settle(
    connection: Connection,
    *,
    delivered: Sequence[int] = (),
    parked: Sequence[tuple[int, str]] = (),
    failed: Sequence[int] = (),
    error: str | None = None,
    at: datetime,
) -> None:
    """Record a batch's outcome: delivered rows, parked rows (with why), rows to try again.

    Only rows still pending change, so a late answer never undoes another
    relay's record of the same row.
    """
    if delivered:
        _deliver(connection, delivered, at)
    if parked:
        connection.execute(
            _PARK, [{"row_id": i, "error": _storable(reason)} for i, reason in parked]
        )
    kept = _storable(error or "")
    for part in chunks(failed):
        connection.execute(_FAIL, {"ids": list(part), "error": kept})


def _storable(text: str) -> str:
    """An answer as ``last_error`` keeps it: cut, and NUL written out (PostgreSQL's text
    holds none, and a proxy's binary body may have one)."""
    return text[:_ERROR_CHARS].replace("\0", "\\u0000")


# -- status, parked rows, backfill --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """Counts of outbox rows by status, and when the oldest pending event was stored."""

    pending: int
    delivered: int
    parked: int
    oldest_pending: datetime | None
    #: Delivered rows deleted by :func:`prune` (no longer counted as ``delivered``).
    pruned: int = 0

    def oldest_pending_age(self, now: datetime) -> float | None:
        """Seconds since the oldest pending event was stored (None when nothing is pending)."""
        if self.oldest_pending is None:
            return None
        return max(0.0, (now - self.oldest_pending).total_seconds())

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready form; ``oldest_pending_age`` in seconds."""
        age = self.oldest_pending_age(now)
        return {
            "pending": self.pending,
            "delivered": self.delivered,
            "parked": self.parked,
            "pruned": self.pruned,
            "oldest_pending": (
                iso_utc(self.oldest_pending) if self.oldest_pending is not None else None
            ),
            "oldest_pending_age": round(age, 3) if age is not None else None,
        }


_COUNTS = select(outbox.c.status, func.count()).group_by(outbox.c.status)
#: The earliest time a pending row was stored, not the first row's: `relay backfill` queues
#: old events behind newer ones.
_OLDEST = select(func.min(outbox.c.created_at)).where(_IS_PENDING)
_PRUNED = select(func.coalesce(func.sum(outbox_pruned.c.events), 0))


def status(connection: Connection) -> OutboxStatus:
    """How many rows are pending, delivered, parked and pruned; the oldest pending row's time."""
    counts = {s: n for s, n in connection.execute(_COUNTS)}
    oldest = connection.execute(_OLDEST).scalar()
    pruned = int(connection.execute(_PRUNED).scalar_one())
    return OutboxStatus(
        counts.get(PENDING, 0), counts.get(DELIVERED, 0), counts.get(PARKED, 0), oldest, pruned
    )


def pending_count(connection: Connection, shard: tuple[int, int] = ALL) -> int:
    """How many rows of ``shard`` are pending."""
    query = select(func.count()).select_from(outbox).where(_IS_PENDING, _IN_SHARD)
    params = {"shard": shard[0], "shards": shard[1]}
    return int(connection.execute(query, params).scalar_one())


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event Segment refused for good, with the answer that parked it."""

    account: str
    version: int
    message_id: str
    attempts: int
    created_at: datetime
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "groupId": self.account,
            "version": self.version,
            "messageId": self.message_id,
            "attempts": self.attempts,
            "recorded_at": iso_utc(self.created_at),
            "reason": self.reason,
        }


def parked(connection: Connection) -> Iterator[ParkedEvent]:
    """Parked rows in id order."""
    query = (
        select(
            outbox.c.account,
            outbox.c.version,
            outbox.c.message_id,
            outbox.c.attempts,
            outbox.c.created_at,
            outbox.c.last_error,
        )
        .where(outbox.c.status == PARKED)
        .order_by(outbox.c.id)
    )
    for row in connection.execute(query):
        yield ParkedEvent(*row[:5], row[5] or "")


def requeue(
    connection: Connection, *, account: str | None = None, message_ids: Sequence[str] = ()
) -> int:
    """Make parked rows pending again (those of ``account``, or with one of ``message_ids``,
    or all); returns how many. ``attempts`` and ``last_error`` keep their history.

    They go to the back of the queue, as new rows: made pending where it stood, a
    row could become its account's head (see :func:`lock_heads`) while a relay was
    sending the account's later rows, and a second relay locking that head took
    those rows too, and sent them again.
    """
    if account is not None and not is_storable_key(account):
        return 0  # no row names an account the store cannot hold
    if message_ids:
        message_ids = [m for m in message_ids if is_storable_key(m)]
        if not message_ids:
            return 0
    query = select(outbox).where(outbox.c.status == PARKED)
    if account is not None:
        query = query.where(outbox.c.account == account)
    if message_ids:
        query = query.where(outbox.c.message_id.in_(list(message_ids)))
    # Skipping the rows another requeue holds: both re-inserted the same rows, and one
    # failed on the unique (account, version) of the outbox.
    query = query.order_by(outbox.c.id).limit(CHUNK).with_for_update(skip_locked=True)
    total = 0
    while rows := connection.execute(query).all():
        connection.execute(delete(outbox).where(outbox.c.id.in_([row.id for row in rows])))
        again = [{**row._asdict(), "status": PENDING} for row in rows]
        for row in again:
            del row["id"]
        connection.execute(insert(outbox), again)
        total += len(rows)
    return total


def unqueued(connection: Connection, limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` stored events without an outbox row, in append order, as event rows.

    Events up to an account's pruned version are settled, not unqueued: their
    rows were deleted by :func:`prune`.
    """
    query = (
        select(*(events.c[c] for c in EVENT_COLUMNS))
        .select_from(
            events.outerjoin(
                outbox,
                (outbox.c.account == events.c.account) & (outbox.c.version == events.c.version),
            ).outerjoin(outbox_pruned, outbox_pruned.c.account == events.c.account)
        )
        .where(
            outbox.c.id.is_(None),
            events.c.version > func.coalesce(outbox_pruned.c.version, 0),
        )
        .order_by(events.c.position)
        .limit(limit)
    )
    return [tuple(row) for row in connection.execute(query)]


# -- pruning delivered rows ---------------------------------------------------------------

#: Per account: its lowest and highest outbox versions, and the lowest one that is not
#: a row delivered before ``before`` (NULL when every row is).
_SETTLED = (
    select(
        outbox.c.account,
        func.min(outbox.c.version),
        func.max(outbox.c.version),
        func.min(
            case(
                (
                    or_(outbox.c.status != DELIVERED, outbox.c.delivered_at >= bindparam("before")),
                    outbox.c.version,
                )
            )
        ),
    )
    .group_by(outbox.c.account)
    .order_by(outbox.c.account)
)
_SETTLED_ROWS = (
    select(outbox.c.id)
    .where(
        outbox.c.account == bindparam("key"),
        outbox.c.version <= bindparam("up_to"),
        outbox.c.status == DELIVERED,
        outbox.c.delivered_at < bindparam("before"),
    )
    .order_by(outbox.c.id)
)
#: By id alone: a delivered row stays delivered, so the ids found are still the rows to go.
_DELETE_ROWS = delete(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))


@functools.cache
def _record_pruned(dialect_name: str) -> Insert:
    """Add a prune to an account's record in one upsert: counts add up, the version only rises.

    Prunes may run at once. Read-then-write would let one overwrite the other's
    count, or insert the same account twice; and a prune that found its runs
    earlier would lower the version a later one recorded, after which backfill
    would queue deleted, delivered events again.
    """
    row: dict[str, Any] = {
        "account": bindparam("key"),
        "version": bindparam("up_to"),
        "events": bindparam("count"),
        "pruned_at": bindparam("at"),
    }
    if dialect_name in ("mysql", "mariadb"):
        my = mysql.insert(outbox_pruned).values(row)
        return my.on_duplicate_key_update(_merged(my.inserted))
    if dialect_name == "sqlite":
        lite = sqlite.insert(outbox_pruned).values(row)
        return lite.on_conflict_do_update(index_elements=["account"], set_=_merged(lite.excluded))
    pg = postgresql.insert(outbox_pruned).values(row)
    return pg.on_conflict_do_update(index_elements=["account"], set_=_merged(pg.excluded))


def _merged(new: Any) -> dict[str, Any]:
    """The stored record with a new prune (``new``: the row that conflicted) added to it."""
    old = outbox_pruned.c
    return {
        "events": old.events + new.events,
        "version": case((new.version > old.version, new.version), else_=old.version),
        "pruned_at": new.pruned_at,
    }


def _delete_settled(connection: Connection, account: str, up_to: int, before: datetime) -> int:
    """Delete the account's rows up to ``up_to`` delivered before ``before``; how many went.

    The rows are found first, then deleted by their ids and nothing else. A
    ``DELETE`` that the database runs as a scan (MariaDB does on a small table, or
    on the status index when the status is in the condition) locks every row it
    passes, matching or not, and two prunes doing so deadlock.
    """
    params = {"key": account, "up_to": up_to, "before": before}
    ids = list(connection.execute(_SETTLED_ROWS, params).scalars())
    count = 0
    for part in chunks(ids):
        count += connection.execute(_DELETE_ROWS, {"ids": part}).rowcount
    return count


def prunable(connection: Connection, before: datetime) -> list[tuple[str, int]]:
    """``(account, up_to)`` for each account whose first outbox rows were delivered before
    ``before``: the run ends at the last of them (a pending or parked row stops it).

    Only a run from the account's first row can go: what is pruned is recorded as one
    version per account, so that :func:`unqueued` can tell a pruned event from one that
    was never queued.
    """
    found = []
    for account, low, high, unsettled in connection.execute(_SETTLED, {"before": before}):
        up_to = high if unsettled is None else unsettled - 1
        if up_to >= low:
            found.append((account, up_to))
    return found


def prune(
    connection: Connection, runs: Sequence[tuple[str, int]], before: datetime, at: datetime
) -> int:
    """Delete the delivered rows of each ``(account, up_to)`` run and record how far.

    Delivered is final (no row leaves it), so runs found by :func:`prunable` in an
    earlier transaction still hold; the delete checks it all the same. Another prune
    may run at once: a row goes once, and the record only adds counts and raises
    versions. Returns how many rows were deleted.
    """
    record = _record_pruned(connection.dialect.name)
    deleted = 0
    for account, up_to in runs:
        count = _delete_settled(connection, account, up_to, before)
        deleted += count
        connection.execute(record, {"key": account, "up_to": up_to, "count": count, "at": at})
    return deleted
