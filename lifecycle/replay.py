"""Replay: account states rebuilt from stored events, at any point in the history.

Replay folds stored events like :func:`lifecycle.decide.evolve`: they passed
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
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from lifecycle.decide import IGNORED, apply, foreign_history
from lifecycle.envelope import Event
from lifecycle.errors import StoreError
from lifecycle.gate import Gate
from lifecycle.policy import Policy, Refusal
from lifecycle.state import AccountState
from lifecycle.store import repository
from lifecycle.store.schema import account_heads, events

#: What a fold reads of each stored row: account, canonical event name, user, payload.
_FOLD_COLUMNS = (events.c.account, events.c.event, events.c.user_id, events.c.payload)
#: What an audit reads: where each event is, what it is, and the message to judge again.
_AUDIT_COLUMNS = (
    events.c.position,
    events.c.account,
    events.c.version,
    events.c.event,
    events.c.message_id,
    events.c.payload,
)

#: Rows handed to the fold at a time: small lists stay in the CPU's caches.
_CHUNK = 500
#: Rows fetched per round trip from a PostgreSQL server-side cursor.
_SERVER_CHUNK = 5000

#: An account range ``[low, high)``; None leaves that side open.
Span = tuple[str | None, str | None]


@contextmanager
def _stored_rows(
    connection: Connection,
    columns: Sequence[Any],
    *,
    accounts: Sequence[str] | None = None,
    until: int | None = None,
    after_version: int = 0,
    recorded: bool = False,
    span: Span | None = None,
) -> Iterator[Iterator[Sequence[Any]]]:
    """Stored event rows in append order, in lists, with ``recorded_at`` last if ``recorded``.

    Without ``recorded_at`` (whose decoding costs more than the rest of the row)
    the rows come straight from the driver's cursor on SQLite and psycopg: a
    full replay reads every row once, and SQLAlchemy's per-row work would cost
    about as much as the fold itself.
    """
    query = select(*columns, events.c.recorded_at) if recorded else select(*columns)
    if accounts is not None:
        query = query.where(events.c.account.in_(accounts))
    if until is not None:
        query = query.where(events.c.position <= until)
    if after_version:
        query = query.where(events.c.version > after_version)
    if span is not None and span[0] is not None:
        query = query.where(events.c.account >= span[0])
    if span is not None and span[1] is not None:
        query = query.where(events.c.account < span[1])
    query = query.order_by(events.c.position)
    dialect = connection.dialect
    fast = not recorded and (
        dialect.name == "sqlite" or (dialect.name == "postgresql" and dialect.driver == "psycopg")
    )
    if not fast:
        with connection.execute(query, execution_options={"yield_per": _SERVER_CHUNK}) as result:
            yield result.partitions()
        return
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positiontup is not None:  # SQLite's qmark style
        params = tuple(params[name] for name in compiled.positiontup)
    driver: Any = connection.connection.driver_connection
    # The driver's own errors become SQLAlchemy's, as on any other path: the store turns
    # them into StoreError (a lost connection had escaped as psycopg's own error).
    failure = dialect.loaded_dbapi.Error
    try:
        if dialect.name == "sqlite":
            cursor = driver.cursor()
            try:
                cursor.execute(compiled.string, params)
                yield iter(lambda: cursor.fetchmany(_CHUNK), [])
            finally:
                cursor.close()
        else:
            with driver.cursor(name="lifecycle_replay") as cursor:
                cursor.execute(compiled.string, params)
                yield iter(lambda: cursor.fetchmany(_SERVER_CHUNK), [])
    except failure as exc:
        raise DBAPIError.instance(compiled.string, None, exc, failure) from exc


def fold(
    policy: Policy,
    chunks: Iterable[Sequence[Any]],
    states: dict[str, AccountState],
    as_of: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Fold chunks of stored rows (:data:`_FOLD_COLUMNS` order) into ``states``.

    Each row's payload is decoded into the domain :class:`Event` (nothing is
    validated again) and applied like :func:`lifecycle.decide.evolve` does,
    inlined: at a million events every call saved per event shows. With
    ``as_of`` the rows carry ``recorded_at`` and each account stops at its
    first event recorded after that instant. ``progress(n)`` follows each chunk.
    """
    table = policy.table
    initial = policy.initial
    closed: set[str] = set()
    loads = orjson.loads
    for rows in chunks:
        for row in rows:
            account, name = row[0], row[1]
            if as_of is not None and (account in closed or row[4] > as_of):
                closed.add(account)
                continue
            state = states.get(account)
            if state is None:
                state = AccountState(account, initial)
            try:
                entry = table[state.status, name]
            except KeyError:
                raise foreign_history(policy, state, name) from None
            if isinstance(entry, Refusal):
                raise foreign_history(policy, state, name)
            try:
                message = loads(row[3])
                properties = message.get("properties")
            except (ValueError, AttributeError) as exc:  # a row damaged or edited by hand
                raise unreadable_event(account, state.version + 1, exc) from exc
            timestamp = message.get("timestamp")
            message_id = message.get("messageId")  # as message_id_of reads it, inlined
            event = Event(
                name,
                message.get("event", name),
                account,
                row[2],
                message_id if message_id.__class__ is str and message_id else None,
                timestamp if timestamp.__class__ is str else None,
                properties if properties.__class__ is dict else {},
                message,
            )
            states[account] = apply(entry, state, event)
        if progress is not None:
            progress(len(rows))


def replay(
    connection: Connection,
    policy: Policy,
    *,
    accounts: Sequence[str] | None = None,
    until: int | None = None,
    as_of: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    span: Span | None = None,
) -> dict[str, AccountState]:
    """Every account's state (or the given ones') rebuilt from its events alone.

    ``progress(n)`` is called after every ``n`` events read (for a progress bar).
    ``span`` folds only the accounts in that range (see :func:`replay_partitioned`).
    """
    states: dict[str, AccountState] = {}
    recorded = as_of is not None
    for some in _in_parts(accounts):
        with _stored_rows(
            connection, _FOLD_COLUMNS, accounts=some, until=until, recorded=recorded, span=span
        ) as chunks:
            fold(policy, chunks, states, as_of, progress)
    return states


#: Accounts named in one query: PostgreSQL takes at most 65,535 parameters, SQLite 32,766.
_ACCOUNTS_PER_QUERY = 10_000


def _in_parts(accounts: Sequence[str] | None) -> Iterable[Sequence[str] | None]:
    """``accounts`` (each once) in parts a query can name; None (every account) whole.
    Accounts fold independently, so each part is replayed in a query of its own."""
    if accounts is None:
        return [None]
    return repository.chunks(list(dict.fromkeys(accounts)), _ACCOUNTS_PER_QUERY)


def account_spans(connection: Connection, parts: int) -> list[Span]:
    """``parts`` account ranges holding about as many accounts each, covering every account.

    The boundaries come from the account heads; they only balance the work, so
    an account without a head still falls in exactly one range.
    """
    total = connection.execute(select(func.count()).select_from(account_heads)).scalar_one()
    bounds: list[str] = []
    for index in range(1, parts):
        bound = connection.execute(
            select(account_heads.c.account)
            .order_by(account_heads.c.account)
            .offset(total * index // parts)
            .limit(1)
        ).scalar()
        if bound is not None and (not bounds or bound > bounds[-1]):
            bounds.append(bound)
    edges: list[str | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


#: What the forked workers of :func:`replay_partitioned` replay, and their shared
#: count of events read (set only while they run).
_FORKED: tuple[Engine, Policy, Any] | None = None


def replay_partitioned(
    engine: Engine,
    policy: Policy,
    workers: int,
    *,
    until: int | None = None,
    as_of: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, AccountState]:
    """:func:`replay` of every account, split by account range over ``workers`` processes.

    Accounts never depend on each other, so each process asks the database for
    the events of its own range of accounts only and folds them; a full replay
    then uses every core. This process folds the first range itself, and
    ``workers - 1`` forked ones (POSIX; the policy need not be picklable) fold
    the others and send their states back. ``progress(n)`` is called from this
    process as the shared count of events read grows.
    """
    global _FORKED
    with engine.connect() as connection:
        spans = account_spans(connection, workers)
        if len(spans) == 1:  # nothing to split: no fork
            return replay(connection, policy, until=until, as_of=as_of, progress=progress)
    context = multiprocessing.get_context("fork")
    read = context.Value("q", 0)
    add = _adding_to(read)
    reported = 0

    def report() -> None:
        nonlocal reported
        if progress is not None and read.value > reported:
            total = read.value
            progress(total - reported)
            reported = total

    def count(n: int) -> None:
        add(n)
        report()

    _FORKED = (engine, policy, read)
    try:
        with context.Pool(len(spans) - 1, initializer=_quiet_worker) as pool:
            pending = pool.starmap_async(_replay_part, [(span, until, as_of) for span in spans[1:]])
            with engine.connect() as connection:
                states = replay(
                    connection, policy, until=until, as_of=as_of, span=spans[0], progress=count
                )
            while not pending.ready():
                pending.wait(0.2)
                report()
            parts = pending.get()
    finally:
        _FORKED = None
    report()
    for share in parts:
        states.update(share)
    return states


def _quiet_worker() -> None:
    """A worker leaves Ctrl-C to the calling process, and ends at once, quietly, when it
    terminates the pool (its SIGTERM handler, inherited by the fork, would raise)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _adding_to(read: Any) -> Callable[[int], None]:
    """A progress callback that adds to the processes' shared count of events read."""

    def add(n: int) -> None:
        with read.get_lock():
            read.value += n

    return add


def _replay_part(span: Span, until: int | None, as_of: datetime | None) -> dict[str, AccountState]:
    assert _FORKED is not None
    engine, policy, read = _FORKED
    engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    with engine.connect() as connection:
        return replay(
            connection, policy, until=until, as_of=as_of, span=span, progress=_adding_to(read)
        )


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
    states = {account: state}
    with _stored_rows(
        connection, _FOLD_COLUMNS, accounts=[account], until=until,
        after_version=state.version, recorded=as_of is not None,
    ) as chunks:  # fmt: skip
        fold(policy, chunks, states, as_of)
    state = states[account]
    return state if state.version else None


def unreadable_event(account: str, version: int, exc: Exception) -> StoreError:
    """The error for a stored event whose payload holds no message (damaged, edited)."""
    return StoreError(
        f"event {version} of account {account!r} is not a readable message "
        f"({type(exc).__name__}: {exc}); the events table is the history itself: restore "
        "the row from a backup"
    )


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
    """A stored event another policy would reject (``code``: the rejection's), or that it
    does not know at all (``code``: ``"ignored"``)."""

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
    with _stored_rows(connection, _AUDIT_COLUMNS) as chunks:
        for rows in chunks:
            for row in rows:
                try:
                    message = orjson.loads(row[5])
                except ValueError as exc:
                    raise unreadable_event(row[1], row[2], exc) from exc
                if type(message) is not dict:
                    kind = type(message).__name__
                    raise unreadable_event(row[1], row[2], TypeError(f"a {kind}, not an object"))
                verdict = gate.submit_item(message)  # a message, never a batch
                if verdict.code is not None:
                    code, reason = verdict.code, verdict.reason or ""
                elif verdict.verdict == IGNORED:
                    # Not an event of this policy: it would not have been stored, and the
                    # audit judges what follows without it. An audit that passed silently
                    # over it hid that the policy does not match the store.
                    sent = verdict.event_name or row[3]
                    code, reason = IGNORED, f"{sent} is not an event of policy {policy.name!r}"
                else:
                    continue
                yield AuditFinding(row[0], row[1], row[2], row[3], row[4], code, reason)
