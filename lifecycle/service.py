"""``Lifecycle``: the gate and the event store in one transaction, for applications to embed.

Every submission runs in one database transaction: read the heads of the
accounts involved and which messageIds are already stored, judge each message
in order with the same rules as the in-memory :class:`~lifecycle.Gate`, then
append accepted events, move the heads and quarantine rejections. Nothing is
half-written: an error rolls the whole submission back.

Concurrency is optimistic. The unique ``(account, version)`` and
``message_id`` indexes decide: when another writer appended to the same
account (or stored the same messageId) first, the insert fails, the
transaction is rolled back, and the submission is judged again from what is
now stored, up to ``max_attempts`` times before :class:`ConcurrencyError`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import reprlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from lifecycle import replay as history
from lifecycle.decide import IGNORED, Verdict, malformed
from lifecycle.envelope import is_storable_key
from lifecycle.errors import ConcurrencyError, StoreError, database_error, first_line
from lifecycle.messages import (
    EMPTY_BATCH,
    MAX_DEPTH,
    TOO_DEEP,
    Malformed,
    batch_of,
    expand_batch,
    is_json_value,
    kept,
    not_an_object,
    one_by_one,
    refusal,
)
from lifecycle.policy import Policy, checked
from lifecycle.reader import InputItem, InputLine, items_of
from lifecycle.rules import DEFAULT_POLICY
from lifecycle.spec import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MALFORMED_JSON
from lifecycle.state import AccountState
from lifecycle.store import repository
from lifecycle.store.codec import head_row, iso_utc, state_from_json, utc_naive
from lifecycle.store.engine import (
    deadlocked,
    for_writing,
    in_memory,
    is_transient,
    lost_transaction,
    one_snapshot,
    open_engine,
    shown_url,
)
from lifecycle.store.migrate import ensure_schema
from lifecycle.store.repository import StoredEvent
from lifecycle.store.schema import account_heads, bulk_lock, events, quarantine
from lifecycle.store.writer import (
    API,
    HeadCache,
    NeedsCare,
    Outcome,
    Repeats,
    Submission,
    write,
)


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """A rejected message as kept in the quarantine."""

    id: int
    received_at: datetime
    source: str
    line: int | None
    batch_index: int | None
    code: str
    reason: str
    account: str | None
    message_id: str | None
    event: str | None
    raw: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``raw`` decoded as UTF-8, invalid bytes replaced)."""
        return {
            "id": self.id,
            "received_at": iso_utc(self.received_at),
            "source": self.source,
            "line": self.line,
            "index": self.batch_index,
            "code": self.code,
            "reason": self.reason,
            "groupId": self.account,
            "messageId": self.message_id,
            "event": self.event,
            "raw": self.raw.decode("utf-8", "replace"),
        }


class _Released(Exception):
    """Another run released some of these quarantine rows first: what this transaction
    appended for them is stored already (messages without a ``messageId`` twice)."""


@dataclass
class RetryReport:
    """What :meth:`Lifecycle.retry_rejections` did: counts by outcome, codes still held."""

    accepted: int = 0
    duplicate: int = 0
    still_rejected: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    #: Messages the policy now ignores (it does not know their event): they stay, as
    #: they were, since nothing of them would be stored.
    ignored: int = 0
    _pending: tuple[int, int, int, dict[str, int], int] | None = None

    def begin(self) -> None:
        """Remember the counts before a transaction (restored if it is retried)."""
        self._pending = (
            self.accepted,
            self.duplicate,
            self.still_rejected,
            dict(self.codes),
            self.ignored,
        )

    def commit(self) -> None:
        """The transaction committed: keep the counts."""
        self._pending = None

    def restore(self) -> None:
        """The transaction is run again or given up: back to the counts before it."""
        if self._pending is not None:
            self.accepted, self.duplicate, self.still_rejected, codes, self.ignored = self._pending
            self.codes = dict(codes)

    def settle(
        self, conn: Connection, rows: list[QuarantinedMessage], verdicts: list[Verdict]
    ) -> None:
        """Delete the rows whose message is now stored; refresh the reasons of the others."""
        self.restore()
        gone: list[int] = []
        for row, verdict in zip(rows, verdicts, strict=True):
            if verdict.verdict == IGNORED:
                self.ignored += 1
                continue
            if verdict.code is None:
                gone.append(row.id)
                if verdict.verdict == "duplicate":
                    self.duplicate += 1
                else:
                    self.accepted += 1
                continue
            self.still_rejected += 1
            self.codes[verdict.code] = self.codes.get(verdict.code, 0) + 1
            if (verdict.code, verdict.reason) != (row.code, row.reason):
                repository.requarantine(conn, row.id, verdict.code, verdict.reason or "")
        if repository.release(conn, gone) != len(gone):
            raise _Released

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "still_rejected": self.still_rejected,
            "ignored": self.ignored,
            "codes": dict(sorted(self.codes.items())),
        }


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _whole_in_memory(
    method: Callable[Concatenate[Lifecycle, _P], Iterator[_T]],
) -> Callable[Concatenate[Lifecycle, _P], Iterator[_T]]:
    """Read an in-memory store's rows whole before handing out the first.

    An in-memory SQLite database is one connection: a submit between two rows
    would have to begin a transaction on the connection the read still holds,
    which SQLite refuses. Its rows are in memory already; a list of them is not
    much more. Other stores stream, each read on a connection of its own.
    """

    @functools.wraps(method)
    def reading(self: Lifecycle, /, *args: _P.args, **kwargs: _P.kwargs) -> Iterator[_T]:
        rows = method(self, *args, **kwargs)
        if in_memory(self.engine):
            rows = iter(list(rows))
        yield from rows

    return reading


class Lifecycle:
    """Judge messages and keep the accepted ones in an event store.

    Create it from a database URL or an SQLAlchemy :class:`~sqlalchemy.engine.Engine`::

        lifecycle = Lifecycle("sqlite:///lifecycle.db")
        verdict = lifecycle.submit(message)
        if verdict.verdict == "rejected":
            log.warning(verdict.code, verdict.reason)

    A new SQLite database gets its schema from the migrations on first use;
    other databases need ``lifecycle db upgrade`` (or ``create_schema=True``).

    Every ``snapshot_every`` events of an account (None: never) its state is kept
    as a snapshot, so that replaying one account costs its snapshot plus the
    events after it.

    Pass ``connection=`` to take part in a transaction the application already
    has: the submission then runs in a SAVEPOINT of it, and it is stored only if
    the application commits. One instance is safe to share between threads:
    it keeps no state of its own beyond the engine's connection pool.

    With ``outbox=True`` (the default) every accepted event also gets a row in the
    Segment outbox, in the same transaction, for :class:`lifecycle.relay.Relay` to
    deliver; pass ``outbox=False`` when nothing is forwarded to Segment.
    """

    def __init__(
        self,
        bind: str | Engine | None = None,
        *,
        policy: Policy = DEFAULT_POLICY,
        create_schema: bool | None = None,
        max_attempts: int = 8,
        snapshot_every: int | None = 100,
        outbox: bool = True,
    ) -> None:
        # Checked before anything is opened: max_attempts=0 failed every submission as a
        # ConcurrencyError, and a snapshot_every of 0 or less silently took none.
        checked(policy)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(
                f"snapshot_every must be at least 1 (or None: no snapshots), got {snapshot_every}"
            )
        self._owns_engine = not isinstance(bind, Engine)
        self._closed = False
        self.engine: Engine = open_engine(bind)
        self.policy = policy
        self.max_attempts = max_attempts
        self.snapshot_every = snapshot_every
        self.outbox = outbox
        self._write_engine = for_writing(self.engine)
        self._heads = HeadCache()
        self._careful = False
        self._repeats = Repeats()
        if create_schema is None:
            create_schema = self.engine.dialect.name == "sqlite"
        try:
            ensure_schema(self.engine, create=create_schema)
        except DBAPIError as exc:
            self.close()
            shown = shown_url(self.engine)
            raise StoreError(f"cannot open the event store: {shown!r}: {first_line(exc)}") from exc
        except BaseException:
            self.close()
            raise

    # -- writing --------------------------------------------------------------------------

    def submit(
        self, message: Mapping[str, Any] | str | bytes, *, connection: Connection | None = None
    ) -> Verdict:
        """Judge one message (a dict or its JSON text): store it if accepted, else quarantine it.

        A batch object (as a dict or as JSON text) has every item judged and stored,
        and gives the verdict of its first item, as :meth:`Gate.submit` does.
        """
        if isinstance(message, Mapping) and (batch := batch_of(message)) is not None:
            # Its items as given, as the gate judges them (as JSON text, a datetime in one
            # would have become a string, and been accepted).
            subs = [
                dataclasses.replace(
                    Submission(*kept(item, _not_an_object_shown(message)))
                    if isinstance(item, Malformed)
                    else _submission(item),
                    index=index,
                )
                for index, item in enumerate(expand_batch(message, batch))
            ]
            return self._submit(subs, connection)[0] if subs else malformed(EMPTY_BATCH)
        if isinstance(message, (str, bytes)):
            verdicts = self.submit_line(message, connection=connection)
            # An empty batch holds nothing to store: the gate's verdict, nothing quarantined.
            return verdicts[0] if verdicts else malformed(EMPTY_BATCH)
        return self.submit_many([message], connection=connection)[0]

    def submit_many(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        connection: Connection | None = None,
    ) -> list[Verdict]:
        """Judge messages in order, all in one transaction.

        A message that cannot be written as JSON (a set, a ``Decimal``, a string
        with a lone surrogate, a key that is not a string) is ``malformed_json``
        and quarantined as its ``repr``: a problem with the data gets a verdict,
        not an exception.
        """
        subs = [_submission(m) for m in one_by_one(messages, "submit_many")]
        return self._submit(subs, connection)

    def submit_line(
        self,
        line: str | bytes,
        *,
        connection: Connection | None = None,
    ) -> list[Verdict]:
        """Judge every message of one line of JSONL input (a message or a batch object)."""
        # A lone surrogate cannot be UTF-8: kept as the bytes it stands for, it makes the
        # line malformed_json and reaches the quarantine instead of raising here.
        raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        subs = [
            Submission(it.item, it.raw, API, None, it.index, whole_line=it.whole_line)
            for it in items_of(InputLine(API, 0, raw))
        ]
        return self._submit(subs, connection)

    def submit_lines(
        self, lines: Sequence[InputLine], *, connection: Connection | None = None
    ) -> list[tuple[InputItem, Verdict]]:
        """Judge lines read from files, in one transaction; quarantine rows name file and line.

        Returns every message with its verdict. Re-submitting the same file and
        line (a re-run) does not quarantine a rejection twice, and the line gets the
        rejection it got then rather than a verdict on what was stored since.
        """
        items = [it for line in lines for it in items_of(line)]
        return list(zip(items, self.submit_items(items, connection=connection), strict=True))

    def submit_items(
        self, items: Sequence[InputItem], *, connection: Connection | None = None
    ) -> list[Verdict]:
        """Judge messages read from files (already split out of their lines), in one transaction."""
        subs = [
            Submission(it.item, it.raw, it.file, it.line, it.index, it.whole_line, it.rereadable)
            for it in items
        ]
        return self._submit(subs, connection)

    # -- reading --------------------------------------------------------------------------

    def state(self, account: str, *, connection: Connection | None = None) -> AccountState | None:
        """The current state of ``account``, or None if no event of it was stored."""
        if not isinstance(account, str):
            raise TypeError(f"account must be a string (a context.groupId), got {account!r}")
        overlay: _Overlay | None = None
        if connection is not None:
            overlay = connection.info.get(_OVERLAY)
        if overlay is not None and account in overlay.written:
            return overlay.written[account]
        if not is_storable_key(account):  # no such account was ever stored (invalid_key)
            return None
        with self._reading(connection) as conn:
            heads = repository.head_states(conn, [account])
            if account in heads:
                return heads[account]
            return history.load_account(conn, self.policy, account)

    @_whole_in_memory
    def accounts(self, *, status: str | None = None) -> Iterator[AccountState]:
        """Every stored account's current state (optionally only those in ``status``)."""
        query = _HEAD_STATES.order_by(account_heads.c.account)
        if status is not None:
            if not is_storable_key(status):  # no status a head holds
                return
            query = query.where(account_heads.c.status == status)
        for account, state in self._stream(query):
            yield state_from_json(state, f"the head of account {account!r}")

    @_whole_in_memory
    def events(self, account: str | None = None) -> Iterator[StoredEvent]:
        """Stored events in append order, or one account's in version order."""
        if account is not None and not is_storable_key(account):
            return
        with self._reading(None) as conn:
            yield from repository.stored_events(conn, account)

    @_whole_in_memory
    def rejections(
        self, *, code: str | None = None, account: str | None = None
    ) -> Iterator[QuarantinedMessage]:
        """Quarantined messages in the order they were received."""
        query = _QUARANTINED
        if code is not None:
            if not is_storable_key(code):  # no code the quarantine holds
                return
            query = query.where(quarantine.c.code == code)
        if account is not None:
            if not is_storable_key(account):  # kept in ``raw`` only: no row names it
                return
            query = query.where(quarantine.c.account == account)
        for row in self._stream(query):
            yield QuarantinedMessage(*row[:11])

    # -- replay, audit, retry ---------------------------------------------------------------

    def replay(
        self,
        *,
        accounts: Sequence[str] | None = None,
        until: int | None = None,
        as_of: datetime | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
    ) -> Iterator[AccountState]:
        """Account states rebuilt from stored events alone, ordered by account.

        ``workers`` > 1 splits a full replay by account range over that many
        forked processes (POSIX only; don't fork a process that runs threads you
        cannot stop, such as a web server's). An in-memory SQLite store, which
        other processes cannot open, is replayed in this one.

        ``until`` stops at a global position, ``as_of`` at an instant of the store's
        ``recorded_at`` clock (naive datetimes are UTC). Memory is bounded by the
        number of accounts replayed, not by the number of events.
        """
        if isinstance(accounts, (str, bytes)):
            raise TypeError(f"accounts must be a list of account ids, got {accounts!r}")
        if accounts is not None:  # no event names an id the store cannot hold (a NUL in it)
            accounts = [account for account in accounts if is_storable_key(account)]
        until = _position(until)
        if workers > 1 and accounts is None and not in_memory(self.engine):
            self._check_open()
            try:
                states = history.replay_partitioned(
                    self.engine, self.policy, workers, until=until, as_of=_utc(as_of),
                    progress=progress,
                )  # fmt: skip
            except DBAPIError as exc:
                raise database_error(exc) from exc
        else:
            with self._reading(None) as conn:
                states = history.replay(
                    conn, self.policy, accounts=accounts, until=until, as_of=_utc(as_of),
                    progress=progress,
                )  # fmt: skip
        for account in sorted(states):
            yield states[account]

    def count_events(self) -> int:
        """How many events are stored."""
        with self._reading(None) as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def first_event(self) -> StoredEvent | None:
        """The first stored event, or None for an empty store: where the history begins,
        and when it was recorded. One row is read (``next(events())`` streams in chunks,
        and a MariaDB driver reads the rest of a streamed result to close it)."""
        query = select(*events.c).order_by(events.c.position).limit(1)
        with self._reading(None) as conn:
            row = conn.execute(query).first()
        return StoredEvent(*row) if row is not None else None

    def load(
        self, account: str, *, until: int | None = None, as_of: datetime | None = None
    ) -> AccountState | None:
        """One account's state rebuilt from its newest snapshot and the events after it."""
        if not is_storable_key(account):
            return None
        until = _position(until)
        with self._reading(None) as conn:
            return history.load_account(conn, self.policy, account, until=until, as_of=_utc(as_of))

    @_whole_in_memory
    def verify(self) -> Iterator[history.Difference]:
        """Compare a full replay with what the live path reads: account heads and snapshots.

        Yields one :class:`~lifecycle.replay.Difference` per account and source that
        disagree; nothing when the caches are exact. Everything is read in one
        snapshot of the database, so writers may go on meanwhile: what they commit
        after it began is not compared.
        """
        with self._snapshot() as conn:
            replayed = history.replay(conn, self.policy)
            heads: dict[str, AccountState | StoreError] = {}
            columns: dict[str, dict[str, Any]] = {}
            for account, version, status, state in conn.execute(_HEAD_ROWS):
                try:
                    heads[account] = state_from_json(state)
                except StoreError as exc:  # a row that holds no state is one difference
                    heads[account] = exc
                # What `accounts list --status` and the version check read, beside the JSON.
                columns[account] = {"version (column)": version, "status (column)": status}
            for account in sorted(replayed.keys() | heads.keys()):
                truth = replayed.get(account)
                head = heads.get(account)
                fields = _differences(head, truth)
                if truth is not None and account in columns:
                    fields.update(_column_differences(columns[account], truth))
                if fields:
                    yield history.Difference(account, "head", fields)
                if truth is None:
                    continue
                try:
                    snap = history.load_account(conn, self.policy, account)
                except StoreError as exc:
                    yield history.Difference(account, "snapshot", _differences(exc, truth))
                    continue
                fields = history.differences(snap, truth)
                if fields:
                    yield history.Difference(account, "snapshot", fields)

    @_whole_in_memory
    def audit(self, policy: Policy) -> Iterator[history.AuditFinding]:
        """The stored events ``policy`` would reject, in append order (read-only)."""
        checked(policy)
        with self._reading(None) as conn:
            yield from history.audit(conn, policy)

    def retry_rejections(
        self, *, code: str | None = None, account: str | None = None, batch_size: int = 500
    ) -> RetryReport:
        """Judge quarantined messages again, oldest first; the ones now legal leave the quarantine.

        An accepted message is appended and its quarantine row deleted in the same
        transaction; a message that is now a duplicate (its event is stored) leaves
        too; the others stay, with the code and reason they get today. One this
        store's policy ignores (a policy that does not know its event: the store was
        written under another) stays as it was. Running it twice changes nothing the
        second time: the messages left are judged again, in order, for as long as a
        pass stores any (a `Signed Out` received before the `Signed In` it needs,
        both waiting for a `Signed Up`, is legal only once the `Signed In` is stored).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        report = RetryReport()
        rows = list(self.rejections(code=code, account=account))
        while rows:
            stored = report.accepted + report.duplicate
            report.still_rejected, report.codes, report.ignored = 0, {}, 0  # of this pass
            for start in range(0, len(rows), batch_size):
                self._retry_chunk(rows[start : start + batch_size], report)
            if report.accepted + report.duplicate == stored:
                break
            rows = self._quarantined([row.id for row in rows])
        return report

    def _quarantined(self, row_ids: list[int]) -> list[QuarantinedMessage]:
        """Those of the quarantine rows ``row_ids`` still there, as they are now, in order
        (a pass of a retry reads back only the rows the pass before left)."""
        found: list[QuarantinedMessage] = []
        with self._reading(None) as conn:
            for part in repository.chunks(sorted(row_ids)):
                query = _QUARANTINED.where(quarantine.c.id.in_(part))
                found.extend(QuarantinedMessage(*row[:11]) for row in conn.execute(query))
        return found

    def _retry_chunk(self, chunk: list[QuarantinedMessage], report: RetryReport) -> None:
        """Judge ``chunk`` again in one transaction that releases its rows, or, when
        another run released some first, again without those (it stored them)."""
        report.begin()
        while chunk:
            subs = [_retry_submission(row) for row in chunk]

            def settle(
                conn: Connection, verdicts: list[Verdict], chunk: list[QuarantinedMessage] = chunk
            ) -> None:
                report.settle(conn, chunk, verdicts)

            try:
                self._submit(subs, None, quarantine=False, after=settle)
            except _Released as released:
                report.restore()
                with self._reading(None) as conn:
                    kept = repository.still_quarantined(conn, [row.id for row in chunk])
                if len(kept) == len(chunk):
                    # Nothing was released elsewhere after all: judging the same rows again
                    # would end the same way, for ever.
                    raise StoreError(
                        "the quarantine rows a retry judged were all still there, yet fewer"
                        " were deleted: nothing was changed"
                    ) from released
                chunk = [row for row in chunk if row.id in kept]
                continue
            break
        report.commit()

    @contextmanager
    def transaction(self, *, alone: bool = False) -> Iterator[Connection]:
        """One write transaction of this store's own for several submissions.

        Pass the connection it yields as ``connection=`` to the ``submit``
        methods: each submission then runs in a SAVEPOINT, and everything is
        committed together when the block ends (rolled back whole if it raises).
        Unlike an application's own transaction, the account states it writes are
        known to be committed at the end, so later submissions keep reading them
        from memory. Fewer, larger commits are what makes a bulk import fast on
        SQLite: every commit writes back each index page the batch touched.

        The accounts' head rows are written once, when the block ends, rather
        than by every submission that moves them: an import's account is moved
        by many of its chunks, and on PostgreSQL each head write is a new row
        version. Until then the states in memory are the truth for this
        transaction (``state(account, connection=...)`` reads them too).

        Two store transactions that append to the same accounts at once hold each
        other's next versions until they commit, so one of them keeps losing and
        ends with :class:`ConcurrencyError`. Run that one again with ``alone=True``:
        on PostgreSQL and MariaDB it then waits until no other store transaction
        runs and keeps the others waiting until it ends (an exclusive lock on the
        ``bulk_lock`` row, which every store transaction holds in share mode).
        Writers outside store transactions do not take that lock. On SQLite
        transactions already take turns.
        """
        self._check_open()
        overlay = _Overlay(self._heads)
        try:
            with self._write_engine.begin() as conn:
                if conn.dialect.name != "sqlite":
                    conn.execute(_TURN.with_for_update(read=not alone))
                conn.info[_OVERLAY] = overlay
                unlisten = overlay.listen(conn)
                began = conn.get_transaction()
                try:
                    yield conn
                    if overlay.lost is not None:
                        raise overlay.lost.again(())
                    if began is None or not began.is_active:
                        raise StoreError(
                            "the transaction of this Lifecycle.transaction() block was ended"
                            " on its connection (committed or rolled back) before the block"
                        )
                    overlay.write_heads(conn)
                finally:
                    unlisten()
                    # A lost connection is invalidated, and reading its `info` would try
                    # to reconnect, raising an error that hid why the transaction failed.
                    if not conn.invalidated:
                        del conn.info[_OVERLAY]
        except (DBAPIError, PoolTimeout, PendingRollbackError) as exc:
            raise database_error(exc) from exc
        self._heads.put(overlay.states())

    def close(self) -> None:
        """Release the connection pool (only when this object created the engine).

        The object cannot be used afterwards: it raises :class:`StoreError`. It had
        opened a new pool on its next use, so a store closed too early went on
        working, and held connections its owner believed released.
        """
        self._closed = True
        if self._owns_engine:
            self.engine.dispose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("this Lifecycle was closed: make a new one to use the store again")

    def __enter__(self) -> Lifecycle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the transaction ------------------------------------------------------------------

    def _submit(
        self,
        subs: list[Submission],
        connection: Connection | None,
        *,
        quarantine: bool = True,
        after: Callable[[Connection, list[Verdict]], None] | None = None,
    ) -> list[Verdict]:
        """Judge and write ``subs`` in one transaction, retrying lost races.

        ``after`` runs inside the same transaction, once the verdicts are known.
        """
        self._check_open()
        careful = self._careful
        last: Exception | None = None
        attempt = 0
        while attempt < self.max_attempts:
            # Judging again carefully (a stored messageId, a rejection it explains) is how
            # duplicates are found, not a lost race: it takes no attempt of its own.
            was_careful = careful
            attempt += 1
            try:
                if connection is None:
                    with self._write_engine.begin() as conn:
                        outcome = self._write(conn, subs, careful, quarantine, after, self._heads)
                    self._heads.put(outcome.states)
                else:
                    overlay = connection.info.get(_OVERLAY)
                    if overlay is not None and overlay.lost is not None:
                        raise overlay.lost.again(subs)
                    with connection.begin_nested():
                        outcome = self._write(
                            connection, subs, careful, quarantine, after, overlay or self._heads
                        )
                    if overlay is not None:
                        overlay.record(outcome)
                    else:
                        self._heads.discard(s.account for s in outcome.states)
                self._careful = careful and outcome.found_stored
                return outcome.verdicts
            except NeedsCare:
                careful = True
                if not was_careful:
                    attempt -= 1
            except IntegrityError as exc:
                careful, last = True, exc
                self._careful = True
                if not was_careful and "message_id" in str(exc.orig):
                    attempt -= 1  # a stored messageId met by an optimistic attempt
                    # is a duplicate to find, not a lost race
            except OperationalError as exc:
                if connection is not None and deadlocked(exc):
                    # The other transaction waits for rows this one wrote before the
                    # savepoint: retrying in it would only wait for the other again.
                    error = ConcurrencyError(_accounts(subs), attempt, deadlock=True)
                    overlay = connection.info.get(_OVERLAY)
                    if overlay is not None and lost_transaction(exc):
                        overlay.lost = _Lost(error)
                    raise error from exc
                if not is_transient(exc):
                    raise database_error(exc) from exc
                last = exc
            except (DBAPIError, PoolTimeout, PendingRollbackError) as exc:
                raise database_error(exc) from exc
        raise ConcurrencyError(_accounts(subs), self.max_attempts) from last

    def _write(
        self,
        conn: Connection,
        subs: list[Submission],
        careful: bool,
        quarantine: bool,
        after: Callable[[Connection, list[Verdict]], None] | None,
        heads: HeadCache,
    ) -> Outcome:
        if quarantine:
            # Asked of a careful submission too: it marks the lines as judged, and a line
            # not marked was taken for new input when it came again.
            careful = self._repeats.any_in(conn, subs) or careful
        outcome = write(
            conn,
            self.policy,
            heads,
            subs,
            careful=careful,
            snapshot_every=self.snapshot_every,
            quarantine=quarantine,
            forward=self.outbox,
            deferred=heads.written if isinstance(heads, _Overlay) else None,
        )
        if after is not None:
            after(conn, outcome.verdicts)
        return outcome

    def _stream(self, query: Any) -> Iterator[Any]:
        """Rows of ``query`` on a connection of their own, fetched in chunks."""
        with (
            self._reading(None) as conn,
            conn.execute(query, execution_options={"yield_per": 1000}) as result,
        ):
            yield from result

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot of the database from its first read."""
        with self._reading(None) as conn, one_snapshot(conn):
            yield conn

    @contextmanager
    def _reading(self, connection: Connection | None) -> Iterator[Connection]:
        self._check_open()
        try:
            if connection is not None:
                yield connection
            else:
                with self.engine.connect() as conn:
                    yield conn
        except (DBAPIError, PoolTimeout, PendingRollbackError) as exc:
            raise database_error(exc) from exc


# -- helpers ------------------------------------------------------------------------------

#: Where a connection from :meth:`Lifecycle.transaction` keeps its :class:`_Overlay`.
_OVERLAY = "lifecycle_overlay"
#: Head rows per statement at the end of a transaction (bounds the rows built at once).
_HEADS_PER_STATEMENT = 20_000


class _Overlay(HeadCache):
    """The states written in one :meth:`Lifecycle.transaction`, over the shared cache.

    They reach the shared cache only once the transaction commits: another
    thread must never see a state that may yet be rolled back. Their head rows
    are written once, by :meth:`write_heads` at the end of the transaction.

    The application may wrap submissions in savepoints of its own on the block's
    connection. A savepoint rolled back takes its events with it, so it takes their
    states too: every savepoint keeps what the states it changed were before, and
    its rollback puts them back (see :meth:`listen`). Otherwise later submissions
    were judged against states never stored, and the block's end wrote them as heads.
    """

    def __init__(self, shared: HeadCache) -> None:
        super().__init__(size=1 << 62)
        self._shared = shared
        self._recorded: dict[str, datetime] = {}
        #: Lost head rows rebuilt by submissions that appended nothing to their account:
        #: written at the end too, but not authoritative (another writer may append).
        self._rebuilt: dict[str, tuple[AccountState, datetime]] = {}
        #: Per open savepoint, innermost last: each account it changed, as it was before.
        self._savepoints: list[dict[str, _Before]] = []
        #: The deadlock that rolled the whole transaction back (MariaDB), if one did.
        self.lost: _Lost | None = None

    @property
    def written(self) -> Mapping[str, AccountState]:
        """The states this transaction appended to, by account (their heads not yet written)."""
        return self._states

    def record(self, outcome: Outcome) -> None:
        """Take a committed savepoint's new states, and when they were recorded."""
        undo = self._savepoints[-1] if self._savepoints else None
        for state in outcome.states:
            account = state.account
            if undo is not None and account not in undo:
                undo[account] = (
                    self._states.get(account),
                    self._recorded.get(account),
                    self._rebuilt.get(account),
                )
            if account in outcome.rebuilt_only:
                if account not in self._states:
                    self._rebuilt[account] = (state, outcome.recorded)
            else:
                self._states[account] = state
                self._recorded[account] = outcome.recorded
                self._rebuilt.pop(account, None)

    def listen(self, connection: Connection) -> Callable[[], None]:
        """Follow the savepoints and the commit of ``connection``; returns what stops
        following them.

        SQLAlchemy nests savepoints strictly: each release or rollback ends the
        innermost one open. The block's own commit comes after this stops; a commit
        before that is the application's, on the yielded connection, and the heads go
        with the events it commits (the block then ends in :class:`StoreError`).
        """
        hooks: list[tuple[str, Callable[..., None]]] = [
            ("savepoint", self._began),
            ("release_savepoint", self._released),
            ("rollback_savepoint", self._rolled_back),
            ("commit", self._committed),
        ]
        for name, hook in hooks:
            event.listen(connection, name, hook)

        def stop() -> None:
            for name, hook in hooks:
                event.remove(connection, name, hook)

        return stop

    def _committed(self, connection: Connection) -> None:
        if self.lost is None:
            self.write_heads(connection)

    def _began(self, *_: object) -> None:
        self._savepoints.append({})

    def _released(self, *_: object) -> None:
        """The innermost savepoint is kept: what it changed is the enclosing one's change."""
        if self._savepoints:
            undo = self._savepoints.pop()
            if self._savepoints:
                outer = self._savepoints[-1]
                for account, before in undo.items():
                    outer.setdefault(account, before)

    def _rolled_back(self, *_: object) -> None:
        """The innermost savepoint is undone: so are the states it changed."""
        if not self._savepoints:
            return
        for account, (state, recorded, rebuilt) in self._savepoints.pop().items():
            _put_back(self._states, account, state)
            _put_back(self._recorded, account, recorded)
            _put_back(self._rebuilt, account, rebuilt)

    def write_heads(self, connection: Connection) -> None:
        """Write the head row of every account this transaction moved or rebuilt."""
        rows = [head_row(s, self._recorded[a]) for a, s in self._states.items()]
        rows += [head_row(s, at) for a, (s, at) in self._rebuilt.items() if a not in self._states]
        for start in range(0, len(rows), _HEADS_PER_STATEMENT):
            repository.write_heads(connection, rows[start : start + _HEADS_PER_STATEMENT])

    def get(self, accounts: Iterable[str]) -> dict[str, AccountState]:
        """Written here first, else committed."""
        wanted = list(accounts)
        found = self._shared.get(wanted)
        found.update(super().get(wanted))
        return found

    def states(self) -> list[AccountState]:
        """Every state this transaction appended to."""
        return list(self._states.values())


#: An account's entries in an :class:`_Overlay` before a savepoint changed them.
_Before = tuple[AccountState | None, datetime | None, tuple[AccountState, datetime] | None]
_V = TypeVar("_V")


def _put_back(entries: dict[str, _V], account: str, before: _V | None) -> None:
    """Give ``account`` its entry ``before`` again (None: it had none)."""
    if before is None:
        entries.pop(account, None)
    else:
        entries[account] = before


@dataclass(frozen=True)
class _Lost:
    """A store transaction the database rolled back whole, in a deadlock (MariaDB).

    An application that caught the :class:`ConcurrencyError` and went on had its later
    submissions written in a new transaction of the server's, and the block's end wrote
    heads for the rolled-back events: a state the events do not give, by which an illegal
    event was then accepted. Whatever comes after it in the block is refused instead.
    """

    error: ConcurrencyError

    def again(self, subs: Sequence[Submission]) -> ConcurrencyError:
        """The error for a submission (or the block's end) after the rollback."""
        return ConcurrencyError(_accounts(subs) or self.error.accounts, 0, deadlock=True)


def _retry_submission(row: QuarantinedMessage) -> Submission:
    """A quarantined message as a submission again.

    A message that was read (any code but ``malformed_json``) is kept as its own
    JSON, whether it was a line or an item of a batch: it is that message again,
    even when it has a ``batch`` key of its own (read as a line, its inner batch
    had been judged instead). A malformed one keeps its whole line, whose item is
    picked out again.
    """
    if row.code != MALFORMED_JSON:
        try:
            message = orjson.loads(row.raw)
        except orjson.JSONDecodeError:
            message = None
        if type(message) is dict:
            return Submission(message, row.raw, row.source, row.line, row.batch_index, True)
    items = items_of(InputLine(row.source, row.line or 0, row.raw))
    if not items:
        return Submission(Malformed(EMPTY_BATCH), row.raw, row.source, row.line)
    it = items[row.batch_index or 0] if len(items) > 1 else items[0]
    return Submission(it.item, row.raw, row.source, row.line, row.batch_index, it.whole_line)


#: The largest position a store can hold (a signed 64-bit key on every backend).
_LAST_POSITION = (1 << 63) - 1


def _position(until: int | None) -> int | None:
    """``until`` as a bound the database takes: past the last possible position it is
    no bound (a larger number had overflowed the driver)."""
    if until is None:
        return None
    if not isinstance(until, int) or isinstance(until, bool):
        raise TypeError(f"until must be a position (an int), got {until!r}")
    return None if until >= _LAST_POSITION else until


def _utc(moment: datetime | None) -> datetime | None:
    """An instant as the naive UTC datetime the store compares with (naive means UTC).

    It is brought within the years every backend stores (the store records nothing
    outside them, so that changes no answer) and cannot overflow converting to UTC.
    """
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        # A string (an ISO instant, most likely) failed deep inside with "'str' object has
        # no attribute 'tzinfo'"; the command line parses --as-of itself.
        raise TypeError(f"as_of must be a datetime, got {type(moment).__name__}: {moment!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_naive(min(max(moment, EARLIEST_TIMESTAMP), LATEST_TIMESTAMP))


#: Every quarantine row, in the order received.
_QUARANTINED = select(*quarantine.c).order_by(quarantine.c.id)
#: Every account head's stored state, with its account.
_HEAD_STATES = select(account_heads.c.account, account_heads.c.state)
_HEAD_ROWS = select(
    account_heads.c.account, account_heads.c.version, account_heads.c.status, account_heads.c.state
)
#: The row store transactions lock: in share mode, or exclusively to run alone.
_TURN = select(bulk_lock.c.id).where(bulk_lock.c.id == 1)


def _differences(
    stored: AccountState | StoreError | None, truth: AccountState | None
) -> dict[str, tuple[Any, Any]]:
    """:func:`history.differences`; a stored row that is no state, or no row where the
    events have an account, is one difference (not one per field of the state)."""
    replayed = f"version {truth.version}" if truth is not None else None
    if isinstance(stored, StoreError):
        return {"state": (f"unreadable ({stored.__cause__!r})", replayed)}
    if stored is None and truth is not None:
        return {"state": ("missing", replayed)}
    return history.differences(stored, truth)


def _column_differences(columns: dict[str, Any], truth: AccountState) -> dict[str, Any]:
    """A head row's own version and status columns that disagree with the replayed state."""
    expected = {"version (column)": truth.version, "status (column)": truth.status}
    return {k: (v, expected[k]) for k, v in columns.items() if v != expected[k]}


def _submission(message: Mapping[str, Any]) -> Submission:
    """A message given from Python, with the JSON text it would be stored as."""
    if (wrong := not_an_object(message)) is not None:
        return Submission(*kept(wrong, _not_an_object_shown(message)))
    try:
        raw = orjson.dumps(message)
    except orjson.JSONEncodeError as exc:
        wide = _wide_ints(message) if "64-bit" in str(exc) else None
        if wide is None:
            # The encoder's own limit (or a cycle) is the depth rule's business.
            deep = "recursion" in str(exc).lower()
            unwritable = TOO_DEEP if deep else f"cannot be written as JSON ({exc})"
            return Submission(*kept(Malformed(unwritable), _shown(message)))
        raw = wide
    reason = refusal(raw, message)
    if reason is not None:
        return Submission(*kept(Malformed(reason), raw))
    # ``raw`` is the message's JSON: stored as its payload, not encoded a second time.
    return Submission(message, raw, whole_line=True)


def _wide_ints(message: Mapping[str, Any]) -> bytes | None:
    """``message`` as JSON when it holds an integer past 64 bits, which JSON allows and the
    fast encoder refuses (the gate accepts such a message: the store did not), or None
    when it cannot be written for another reason as well."""
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")  # a lone surrogate is no UTF-8: not writable either
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None


def _not_an_object_shown(value: object) -> bytes:
    """What the quarantine keeps of a value that is not an object: JSON's own kinds as
    their JSON, anything else (a dataclass, a set) as its ``repr``."""
    if is_json_value(value):
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass
    return _shown(value)


def _shown(message: object) -> bytes:
    """The quarantine's text of a message that is not JSON: its ``repr``, cut only in depth."""
    try:
        text = repr(message)
    except RecursionError:
        shown = reprlib.Repr()
        shown.maxlevel = MAX_DEPTH
        shown.maxdict = shown.maxlist = shown.maxtuple = shown.maxset = sys.maxsize
        shown.maxstring = shown.maxother = shown.maxlong = sys.maxsize
        text = shown.repr(message)
    return text.encode("utf-8", "backslashreplace")


def _accounts(subs: Iterable[Submission]) -> set[str]:
    """The accounts a submission touched, for a ``ConcurrencyError``."""
    return {a for s in subs if (a := s.account) is not None}
