"""Delivery while rows are requeued, backfilled or pruned: nothing sent twice, nothing lost,
and `relay status` counts each event once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from lifecycle.relay import Relay
from lifecycle.service import Lifecycle
from lifecycle.store import outbox as queue
from tests.relay.fake_segment import FakeSegment
from tests.relay.helpers import park_first, relay_for, while_a_relay_sends
from tests.store.helpers import msg, onboarding


def _two_relays_around(db_url: str, segment: FakeSegment, commit: Callable[[], None]) -> None:
    """A first relay sends (slowly) what it sees; ``commit`` runs while its request is in
    flight; then a second relay sends what it sees."""

    def commit_then_send(second: Relay) -> None:
        commit()
        second.run()

    while_a_relay_sends(db_url, segment, commit_then_send)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_requeue_committing_after_a_writer_sends_nothing_twice(
    db_url: str, segment: FakeSegment
) -> None:
    """docs/segment.md: "Requeuing while relays run is safe: it sends nothing twice."

    The requeue re-inserts the parked row, drawing its new id in its transaction; the
    application appends the account's next events meanwhile (higher ids, committed
    first). Relay 1 locks the account's head as it sees it (version 2) and sends 2..4.
    The requeue commits; relay 2 now sees the requeued row (lower id) as the head, finds
    it unlocked, and loads every row of the account in its window, 2..4 included.
    (On MariaDB the writer's insert waits for the requeue's locks, so it cannot pass it.)
    """
    history = onboarding("acct_1")
    with Lifecycle(db_url, create_schema=True) as store:
        park_first(store, db_url, segment, history)
        with store.engine.connect() as requeuing:
            transaction = requeuing.begin()
            assert queue.requeue(requeuing) == 1
            store.submit_many(history[1:])  # the application writes meanwhile
            _two_relays_around(db_url, segment, transaction.commit)
    assert Counter(segment.message_ids()) == {m["messageId"]: 1 for m in history}


@pytest.mark.parametrize("backend", ["postgres", "mariadb"], indirect=True)
def test_a_backfill_committing_after_a_writer_sends_nothing_twice(
    db_url: str, segment: FakeSegment
) -> None:
    """Several relays "never send the same event twice in normal operation".

    Events stored with ``outbox=False`` are backfilled; the backfill draws its ids, and
    the application appends the account's next event (a higher id) and commits first.
    Relay 1 locks that row (the only pending one it sees) and sends it. The backfill
    commits; relay 2 sees the backfilled rows as the account's head, unlocked, and loads
    the whole window of the account, the row in flight included.
    """
    history = onboarding("acct_1")
    later = msg("Signed Out", "u1", "acct_1")
    Lifecycle(db_url, create_schema=True).close()
    with Lifecycle(db_url, outbox=False) as quiet:
        quiet.submit_many(history)
    with (
        Lifecycle(db_url) as store,
        relay_for(db_url, segment) as relay,
        relay._write_engine.connect() as backfilling,
    ):
        transaction = backfilling.begin()
        rows = queue.unqueued(backfilling, 5000)
        queue.enqueue(backfilling, rows)
        assert store.submit(later).verdict == "accepted"
        _two_relays_around(db_url, segment, transaction.commit)
    assert Counter(segment.message_ids()) == {m["messageId"]: 1 for m in [*history, later]}


def test_status_counts_each_event_once_while_a_prune_runs(
    db_url: str, segment: FakeSegment
) -> None:
    """`relay status` counts delivered and pruned rows: a prune between its queries made
    the same events count as delivered and as pruned."""
    from datetime import timedelta

    from sqlalchemy import event

    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(onboarding("acct_1"))
    with relay_for(db_url, segment) as relay, relay_for(db_url, segment) as pruner:
        assert relay.run().delivered == 4
        fired: list[int] = []

        def prune_between(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
            if "GROUP BY" in statement and not fired:
                fired.append(pruner.prune(older_than=timedelta(0)))

        event.listen(relay.engine, "after_cursor_execute", prune_between)
        status = relay.status()
    assert fired == [4]
    assert status.delivered + status.pruned == 4, status


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_two_relays_on_sqlite_and_a_prune_lose_no_event(db_url: str, segment: FakeSegment) -> None:
    """docs/segment.md: on SQLite a second relay "sends every event twice ... though never
    out of order" — duplicates, not losses.

    Relay 1 reads rows 1..4 and waits for Segment's answer; relay 2 delivers them; a
    prune deletes them; the application stores new events, whose outbox rows SQLite
    numbers 1..4 again (the table has no AUTOINCREMENT). Relay 1's answer then marks
    "rows 1..4, if pending" delivered: the new events, never sent.
    """
    from datetime import timedelta

    first, later = onboarding("acct_1"), onboarding("acct_2")
    with Lifecycle(db_url, create_schema=True) as store:
        store.submit_many(first)

        def deliver_prune_and_write(two: Relay) -> None:
            assert two.run().delivered == 4
            assert two.prune(older_than=timedelta(0)) == 4
            store.submit_many(later)

        while_a_relay_sends(db_url, segment, deliver_prune_and_write)
        with relay_for(db_url, segment) as two:
            two.run()
    arrived = {m["messageId"] for m in segment.first_arrivals()}
    assert {m["messageId"] for m in later} <= arrived, "acct_2's events were never sent"
